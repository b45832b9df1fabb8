//! SSL methods: head layouts and a hand-computed head, seeded initialisation, the EMA target and
//! MoCo queue updates, CorInfoMax's per-task reset, MixCo / i-Mix terms against the pure losses,
//! and state save / restore.
//!
//! The strategies' loss values for every method are checked against PyTorch in
//! `tests/continual.rs`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cromo::continual::StrategyKind;
use cromo::losses::{
    byol_symmetric, corinfomax, ema_tau, imix_byol, imix_mix, imix_npair, mixco, mixco_mix,
    moco_v2_symmetric, ByolConfig, CorInfoMaxState,
};
use cromo::methods::{Method, MethodConfig, MethodKind, MixKind};
use cromo::models::heads::{Mlp, MlpSpec};
use cromo::models::Arch;
use rand::SeedableRng;
use std::collections::HashMap;

fn images(seed: u64, n: usize, hw: usize) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * hw * hw)
        .map(|_| rand::Rng::random_range(&mut rng, -2.0f32..2.0))
        .collect();
    Tensor::from_vec(v, (n, 3, hw, hw), &Device::Cpu).unwrap()
}

fn small(kind: MethodKind, mix: Option<MixKind>, seed: u64) -> Method {
    let mut cfg = MethodConfig::new(kind, Arch::SmallCnn);
    cfg.proj_hidden = 32;
    cfg.proj_out = 16;
    cfg.pred_hidden = 24;
    cfg.distill_hidden = 20;
    cfg.moco.queue_size = 12;
    cfg.mix = mix;
    Method::new(cfg, Arch::SmallCnn, &Device::Cpu, seed).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    vals(a)
        .iter()
        .zip(vals(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn state(m: &Method) -> HashMap<String, Tensor> {
    m.tensors().unwrap().into_iter().collect()
}

// ---- heads ---------------------------------------------------------------------------------

fn head_names(spec: &MlpSpec) -> Vec<(String, Vec<usize>)> {
    let vm = VarMap::new();
    Mlp::new(
        spec,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).pp("h"),
    )
    .unwrap();
    let mut out: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec()))
        .collect();
    out.sort();
    out
}

fn expect(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = list
        .iter()
        .map(|(n, s)| (format!("h.{n}"), s.to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn heads_have_pytorch_sequential_names() {
    // nn.Sequential(Linear, BatchNorm1d, ReLU, Linear, BatchNorm1d, ReLU, Linear) numbers its
    // modules 0..6; the ReLUs (2, 5) hold no tensors.
    assert_eq!(
        head_names(&MlpSpec::barlow(4, 5, 3)),
        expect(&[
            ("0.weight", &[5, 4]),
            ("0.bias", &[5]),
            ("1.weight", &[5]),
            ("1.bias", &[5]),
            ("1.running_mean", &[5]),
            ("1.running_var", &[5]),
            ("3.weight", &[5, 5]),
            ("3.bias", &[5]),
            ("4.weight", &[5]),
            ("4.bias", &[5]),
            ("4.running_mean", &[5]),
            ("4.running_var", &[5]),
            ("6.weight", &[3, 5]),
            ("6.bias", &[3]),
        ])
    );
    assert_eq!(
        head_names(&MlpSpec::simclr(4, 5, 3)),
        expect(&[
            ("0.weight", &[5, 4]),
            ("0.bias", &[5]),
            ("2.weight", &[3, 5]),
            ("2.bias", &[3]),
        ])
    );
    assert_eq!(
        head_names(&MlpSpec::corinfomax(4, 5, 3)),
        expect(&[
            ("0.weight", &[5, 4]),
            ("0.bias", &[5]),
            ("2.weight", &[5, 5]),
            ("2.bias", &[5]),
            ("4.weight", &[3, 5]),
        ])
    );
    assert_eq!(
        head_names(&MlpSpec::distill_predictor(3, 7)),
        expect(&[
            ("0.weight", &[7, 3]),
            ("0.bias", &[7]),
            ("1.weight", &[7]),
            ("1.bias", &[7]),
            ("1.running_mean", &[7]),
            ("1.running_var", &[7]),
            ("3.weight", &[3, 7]),
            ("3.bias", &[3]),
        ])
    );
    assert!(Mlp::new(
        &MlpSpec {
            dims: vec![4],
            batch_norm: false,
            last_bias: true
        },
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu)
    )
    .is_err());
}

#[test]
fn head_forward_matches_hand_computation() {
    // Linear(2→2) = identity, BatchNorm1d(2), ReLU, Linear(2→1) with w = [1, 2], b = 0.5.
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let spec = MlpSpec::byol_projector(2, 2, 1);
    let head = Mlp::new(&spec, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    {
        let data = vm.data().lock().unwrap();
        let set = |n: &str, v: &[f32], s: &[usize]| {
            data[n]
                .set(&Tensor::from_slice(v, s, &dev).unwrap())
                .unwrap()
        };
        set("0.weight", &[1.0, 0.0, 0.0, 1.0], &[2, 2]);
        set("0.bias", &[0.0, 0.0], &[2]);
        set("1.weight", &[1.0, 1.0], &[2]);
        set("1.bias", &[0.0, 0.0], &[2]);
        set("1.running_mean", &[0.0, 0.0], &[2]);
        set("1.running_var", &[1.0, 1.0], &[2]);
        set("3.weight", &[1.0, 2.0], &[1, 2]);
        set("3.bias", &[0.5], &[1]);
    }
    let x = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0], (2, 2), &dev).unwrap();
    let c = 1.0 / (1.0f32 + 1e-5).sqrt();
    // Train: batch mean (2, 3), biased variance (1, 1) → rows (−c, −c), (c, c) → ReLU.
    let y = head.forward(&x, true).unwrap();
    let want = [0.5, 3.0 * c + 0.5];
    assert!(
        vals(&y).iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{:?}",
        vals(&y)
    );
    // Running statistics moved by momentum 0.1 (unbiased variance 2).
    let data = vm.data().lock().unwrap();
    let rm = vals(data["1.running_mean"].as_tensor());
    let rv = vals(data["1.running_var"].as_tensor());
    assert!(
        (rm[0] - 0.2).abs() < 1e-6 && (rm[1] - 0.3).abs() < 1e-6,
        "{rm:?}"
    );
    assert!(rv.iter().all(|v| (v - 1.1).abs() < 1e-6), "{rv:?}");
    drop(data);
    // Eval: running statistics (0.2, 0.3) / (1.1, 1.1).
    let y = head.forward(&x, false).unwrap();
    let s = 1.0 / (1.1f32 + 1e-5).sqrt();
    let want = [
        (0.8 * s) + 2.0 * (1.7 * s) + 0.5,
        (2.8 * s) + 2.0 * (3.7 * s) + 0.5,
    ];
    assert!(
        vals(&y).iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5),
        "{:?}",
        vals(&y)
    );
    assert!(head
        .forward(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap(), true)
        .is_err());
}

#[test]
fn default_widths_follow_design() {
    let w = |k, a| {
        let c = MethodConfig::new(k, a);
        (c.proj_hidden, c.proj_out, c.pred_hidden)
    };
    use MethodKind::*;
    assert_eq!(w(SimClr, Arch::ResNet18Cifar), (2048, 128, 4096));
    assert_eq!(w(Byol, Arch::ResNet18Cifar), (4096, 256, 4096));
    assert_eq!(w(Barlow, Arch::ResNet18Cifar), (2048, 2048, 4096));
    assert_eq!(w(SimClr, Arch::SmallCnn), (1024, 128, 2048));
    assert_eq!(w(Byol, Arch::SmallCnn), (2048, 256, 2048));
    assert_eq!(w(Vicreg, Arch::SmallCnn), (1024, 1024, 2048));
    assert_eq!(w(CorInfoMax, Arch::SmallCnn), (1024, 64, 2048));
    assert_eq!(w(Moco, Arch::SmallCnn).1, 128);
    for k in MethodKind::ALL {
        assert_eq!(k.name().parse::<MethodKind>().unwrap(), k);
    }
    for k in StrategyKind::ALL {
        assert_eq!(k.name().parse::<StrategyKind>().unwrap(), k);
    }
    assert_eq!("mixco".parse::<MixKind>().unwrap(), MixKind::MixCo);
    assert!("simsiam".parse::<MethodKind>().is_err());
    assert!("ewc".parse::<StrategyKind>().is_err());
    // serde names are the command-line names.
    assert_eq!(
        serde_json::to_string(&StrategyKind::CroMoData).unwrap(),
        "\"cromo-data\""
    );
    assert_eq!(
        serde_json::to_string(&MethodKind::CorInfoMax).unwrap(),
        "\"corinfomax\""
    );
}

// ---- construction, initialisation, variables --------------------------------------------------

#[test]
fn seeded_initialisation_is_reproducible_and_pytorch_like() {
    let a = state(&small(MethodKind::Byol, None, 3));
    let b = state(&small(MethodKind::Byol, None, 3));
    let c = state(&small(MethodKind::Byol, None, 4));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(vals(t), vals(&b[name]), "{name} differs for one seed");
    }
    assert_ne!(
        vals(&a["backbone.stages.1.conv.weight"]),
        vals(&c["backbone.stages.1.conv.weight"])
    );
    // Kaiming normal, fan-out: std sqrt(2 / (64 · 9)).
    let w = vals(&a["backbone.stages.1.conv.weight"]);
    let std = (w.iter().map(|x| (x * x) as f64).sum::<f64>() / w.len() as f64).sqrt();
    let want = (2.0f64 / (64.0 * 9.0)).sqrt();
    assert!((std / want - 1.0).abs() < 0.05, "conv std {std} vs {want}");
    // nn.Linear: uniform in ±1/√fan_in (fan_in 256), std bound/√3.
    let w = vals(&a["projector.0.weight"]);
    let bound = 1.0 / 16.0;
    assert!(w.iter().all(|x| x.abs() <= bound));
    let std = (w.iter().map(|x| (x * x) as f64).sum::<f64>() / w.len() as f64).sqrt();
    assert!(
        (std / (bound as f64 / 3f64.sqrt()) - 1.0).abs() < 0.05,
        "linear std {std}"
    );
    assert!(vals(&a["projector.1.weight"]).iter().all(|&x| x == 1.0));
    assert!(vals(&a["projector.1.bias"]).iter().all(|&x| x == 0.0));
    assert!(vals(&a["backbone.stages.0.bn.running_var"])
        .iter()
        .all(|&x| x == 1.0));
    // The EMA target starts as an exact copy of the online encoder + projector.
    for (name, t) in &a {
        if let Some(rest) = name.strip_prefix("ema.") {
            assert_eq!(vals(t), vals(&a[rest]), "ema copy of {rest}");
        }
    }
    // After online weights are replaced (e.g. a pretrained encoder), sync_ema copies them.
    let mut m = small(MethodKind::Byol, None, 3);
    let name = "backbone.stages.0.conv.weight";
    let new = c[name].affine(2.0, 0.0).unwrap();
    m.set_tensors(&[(name.to_string(), new.clone())]).unwrap();
    assert_ne!(vals(&state(&m)[&format!("ema.{name}")]), vals(&new));
    m.sync_ema().unwrap();
    assert_eq!(vals(&state(&m)[&format!("ema.{name}")]), vals(&new));
}

#[test]
fn only_heads_and_backbone_are_variables() {
    for kind in MethodKind::ALL {
        let mut cfg = MethodConfig::new(kind, Arch::SmallCnn);
        cfg.proj_hidden = 8;
        cfg.proj_out = 4;
        cfg.pred_hidden = 8;
        cfg.distill_hidden = 8;
        cfg.moco.queue_size = 8;
        cfg.distill_predictor = true;
        let m = Method::new(cfg, Arch::SmallCnn, &Device::Cpu, 1).unwrap();
        let names: Vec<String> = m.varmap().data().lock().unwrap().keys().cloned().collect();
        for n in &names {
            assert!(
                [
                    "backbone.",
                    "projector.",
                    "predictor.",
                    "distill_predictor."
                ]
                .iter()
                .any(|p| n.starts_with(p)),
                "{kind}: {n} in the VarMap"
            );
        }
        assert_eq!(
            names.iter().any(|n| n.starts_with("predictor.")),
            kind.has_predictor()
        );
        assert!(names.iter().any(|n| n.starts_with("distill_predictor.")));
        let trainable = m.trainable_vars();
        assert!(trainable.iter().all(|(n, _)| !n.contains("running_")));
        assert_eq!(m.ema().is_some(), kind.has_ema());
        let st = state(&m);
        assert_eq!(st.contains_key("moco.queue.0"), kind == MethodKind::Moco);
        assert_eq!(
            st.contains_key("corinfomax.r1"),
            kind == MethodKind::CorInfoMax
        );
    }
}

#[test]
fn embeddings_have_the_documented_shapes() {
    let x = images(1, 5, 32);
    for kind in MethodKind::ALL {
        let m = small(kind, None, 2);
        let e = m.embed(&x, true).unwrap();
        assert_eq!(e.feats.dims(), &[5, 256]);
        assert_eq!(e.z.dims(), &[5, 16]);
        assert_eq!(e.p.is_some(), kind == MethodKind::Byol);
        if kind == MethodKind::Moco {
            let norms = vals(&e.z.sqr().unwrap().sum(1).unwrap());
            assert!(
                norms.iter().all(|n| (n - 1.0).abs() < 1e-5),
                "MoCo q is unit-norm"
            );
        }
        let t = m.embed_target(&x).unwrap();
        assert_eq!(t.is_some(), kind.has_ema());
        if let Some(t) = t {
            // A fresh target equals the online network (same weights, batch statistics).
            assert!(
                max_diff(&t, &e.z) < 1e-5,
                "{kind}: fresh target differs from online"
            );
        }
    }
    let m = small(MethodKind::SimClr, None, 2);
    assert!(m
        .embed(
            &Tensor::zeros((2, 3, 8), DType::F32, &Device::Cpu).unwrap(),
            true
        )
        .is_err());
    assert!(m
        .distill_predict(&Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap())
        .is_err());
}

// ---- state updates -----------------------------------------------------------------------------

#[test]
fn ema_update_follows_the_cosine_schedule_formula() {
    let mut m = small(MethodKind::Byol, None, 1);
    let name = "projector.0.weight";
    let shape = state(&m)[name].dims().to_vec();
    let full = |v: f32, s: &[usize]| Tensor::full(v, s, &Device::Cpu).unwrap();
    let rm = "projector.1.running_mean";
    let rm_shape = state(&m)[rm].dims().to_vec();
    let reset = |m: &mut Method| {
        m.set_tensors(&[
            (name.to_string(), full(1.0, &shape)),
            (format!("ema.{name}"), full(3.0, &shape)),
            (format!("ema.{rm}"), full(7.0, &rm_shape)),
        ])
        .unwrap();
    };
    // τ_k = 1 − (1 − 0.99)(cos(πk/K) + 1)/2: k = 5 of 10 gives 0.995, k = 0 gives 0.99, k = K 1.
    for (step, tau) in [(5usize, 0.995f64), (0, 0.99), (10, 1.0)] {
        reset(&mut m);
        assert!((ema_tau(&ByolConfig::default(), step, 10).unwrap() - tau).abs() < 1e-12);
        m.after_step(step, 10).unwrap();
        let st = state(&m);
        let want = (tau * 3.0 + (1.0 - tau) * 1.0) as f32;
        assert!(
            vals(&st[&format!("ema.{name}")])
                .iter()
                .all(|v| (v - want).abs() < 1e-6),
            "step {step}: EMA weight should be {want}"
        );
        // Online weights are untouched; the target's BatchNorm statistics are not averaged.
        assert!(vals(&st[name]).iter().all(|&v| v == 1.0));
        assert!(vals(&st[&format!("ema.{rm}")]).iter().all(|&v| v == 7.0));
    }
    assert!(m.after_step(11, 10).is_err());
}

#[test]
fn moco_queue_takes_the_keys_after_the_step() {
    let mut m = small(MethodKind::Moco, None, 1);
    let (x1, x2) = (images(1, 4, 16), images(2, 4, 16));
    let before = state(&m);
    let v = m.views(&x1, &x2).unwrap();
    let loss = m.ssl_loss(&v).unwrap();
    // The loss is the symmetric MoCo v2+ loss against the queues as they were.
    let want = moco_v2_symmetric(
        &v.z1,
        &v.z2,
        v.t1.as_ref().unwrap(),
        v.t2.as_ref().unwrap(),
        &before["moco.queue.0"],
        &before["moco.queue.1"],
        &m.config().moco,
    )
    .unwrap();
    assert!((scalar(&loss) - scalar(&want)).abs() < 1e-6);
    // Nothing moves before after_step.
    assert_eq!(
        vals(&state(&m)["moco.queue.0"]),
        vals(&before["moco.queue.0"])
    );
    m.after_step(0, 10).unwrap();
    let after = state(&m);
    for (q, t) in [("moco.queue.0", &v.t1), ("moco.queue.1", &v.t2)] {
        let t = t.as_ref().unwrap();
        assert_eq!(
            vals(&after[q].narrow(0, 0, 4).unwrap()),
            vals(t),
            "{q} rows 0..4"
        );
        assert_eq!(
            vals(&after[q].narrow(0, 4, 8).unwrap()),
            vals(&before[q].narrow(0, 4, 8).unwrap()),
            "{q}: older keys kept"
        );
    }
    let ptr: Vec<u32> = after["moco.queue_ptr"].to_vec1().unwrap();
    assert_eq!(ptr, vec![4, 4]);
    // A step whose staged keys are never committed (begin_task drops them) changes nothing.
    let v = m.views(&x1, &x2).unwrap();
    m.ssl_loss(&v).unwrap();
    m.begin_task().unwrap();
    m.after_step(1, 10).unwrap();
    assert_eq!(
        vals(&state(&m)["moco.queue.0"]),
        vals(&after["moco.queue.0"])
    );
}

#[test]
fn byol_loss_is_the_summed_symmetric_form() {
    let mut m = small(MethodKind::Byol, None, 1);
    let v = m.views(&images(1, 4, 16), &images(2, 4, 16)).unwrap();
    let loss = m.ssl_loss(&v).unwrap();
    let want = byol_symmetric(
        v.p1.as_ref().unwrap(),
        v.p2.as_ref().unwrap(),
        v.t1.as_ref().unwrap(),
        v.t2.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(scalar(&loss), scalar(&want));
    // BYOL's pair loss of a vector with itself is 0, and with its negation 4.
    let a = v.p1.as_ref().unwrap();
    assert!(scalar(&m.cross_loss(a, a, 0).unwrap()).abs() < 1e-6);
    assert!((scalar(&m.cross_loss(a, &a.neg().unwrap(), 0).unwrap()) - 4.0).abs() < 1e-5);
}

#[test]
fn corinfomax_statistics_update_and_reset_per_task() {
    let mut m = small(MethodKind::CorInfoMax, None, 1);
    let fresh = state(&m);
    let v = m.views(&images(1, 8, 16), &images(2, 8, 16)).unwrap();
    let loss = m.ssl_loss(&v).unwrap();
    let s0 = CorInfoMaxState {
        mu1: fresh["corinfomax.mu1"].clone(),
        mu2: fresh["corinfomax.mu2"].clone(),
        r1: fresh["corinfomax.r1"].clone(),
        r2: fresh["corinfomax.r2"].clone(),
    };
    let want = corinfomax(&v.z1, &v.z2, &s0, &m.config().corinfomax).unwrap();
    assert!((scalar(&loss) - scalar(&want.loss)).abs() < 1e-4 * scalar(&want.loss).abs());
    m.after_step(0, 10).unwrap();
    let stepped = state(&m);
    assert!(max_diff(&stepped["corinfomax.r1"], &want.state.r1) < 1e-6);
    assert!(max_diff(&stepped["corinfomax.r1"], &fresh["corinfomax.r1"]) > 1e-3);
    m.begin_task().unwrap();
    let reset = state(&m);
    for n in [
        "corinfomax.mu1",
        "corinfomax.r1",
        "corinfomax.r2",
        "corinfomax.pair.r1",
    ] {
        assert_eq!(vals(&reset[n]), vals(&fresh[n]), "{n} after begin_task");
    }
}

// ---- mix terms ---------------------------------------------------------------------------------

#[test]
fn mix_terms_equal_the_pure_losses_on_their_inputs() {
    let (x1, x2) = (images(1, 6, 16), images(2, 6, 16));
    for (kind, mix) in [
        (MethodKind::SimClr, MixKind::MixCo),
        (MethodKind::Moco, MixKind::MixCo),
        (MethodKind::Byol, MixKind::IMix),
        (MethodKind::Barlow, MixKind::IMix),
    ] {
        let m = small(kind, Some(mix), 1);
        let v = m.views(&x1, &x2).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let got = m.mix_loss(&x1, &v, &mut rng).unwrap().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let cfg = m.config();
        let want = match mix {
            MixKind::MixCo => {
                let b = mixco_mix(&x1, &mut rng).unwrap();
                let e = m.embed(&b.x_mix, true).unwrap();
                let (keys, queue) = match kind {
                    MethodKind::Moco => (
                        v.t2.clone().unwrap(),
                        Some(state(&m)["moco.queue.1"].clone()),
                    ),
                    _ => (v.z2.clone(), None),
                };
                mixco(&e.z, &keys, &b.lambdas, queue.as_ref(), &cfg.mixco)
                    .unwrap()
                    .affine(cfg.mixco.weight, 0.0)
                    .unwrap()
            }
            MixKind::IMix => {
                let b = imix_mix(&x1, &cfg.imix, &mut rng).unwrap();
                let e = m.embed(&b.x_mix, true).unwrap();
                match kind {
                    MethodKind::Byol => imix_byol(
                        e.p.as_ref().unwrap(),
                        v.t2.as_ref().unwrap(),
                        &b.lambdas,
                        &b.partners,
                    )
                    .unwrap(),
                    _ => imix_npair(&e.z, &v.z2, &b.lambdas, &b.partners, &cfg.imix).unwrap(),
                }
            }
        };
        assert!(
            (scalar(&got) - scalar(&want)).abs() < 1e-5,
            "{kind} {mix}: {} vs {}",
            scalar(&got),
            scalar(&want)
        );
    }
    let m = small(MethodKind::SimClr, None, 1);
    let v = m.views(&x1, &x2).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    assert!(m.mix_loss(&x1, &v, &mut rng).unwrap().is_none());
}

// ---- save / restore ---------------------------------------------------------------------------

#[test]
fn state_round_trips_through_tensors() {
    for kind in [MethodKind::Moco, MethodKind::CorInfoMax, MethodKind::Byol] {
        let mut a = small(kind, None, 1);
        let (x1, x2) = (images(1, 8, 16), images(2, 8, 16));
        for step in 0..2 {
            let v = a.views(&x1, &x2).unwrap();
            a.ssl_loss(&v).unwrap();
            a.after_step(step, 10).unwrap();
        }
        let saved = a.tensors().unwrap();
        let mut b = small(kind, None, 99);
        b.set_tensors(&saved).unwrap();
        let restored = b.tensors().unwrap();
        assert_eq!(saved.len(), restored.len());
        for ((n1, t1), (n2, t2)) in saved.iter().zip(&restored) {
            assert_eq!(n1, n2);
            assert_eq!(t1.dtype(), t2.dtype(), "{n1}");
            match t1.dtype() {
                DType::U32 => assert_eq!(
                    t1.to_vec1::<u32>().unwrap(),
                    t2.to_vec1::<u32>().unwrap(),
                    "{n1}"
                ),
                _ => assert_eq!(vals(t1), vals(t2), "{kind}: {n1} after restore"),
            }
        }
        // Restored and original continue identically.
        let (va, vb) = (a.views(&x1, &x2).unwrap(), b.views(&x1, &x2).unwrap());
        assert_eq!(
            scalar(&a.ssl_loss(&va).unwrap()),
            scalar(&b.ssl_loss(&vb).unwrap())
        );
    }
    let mut m = small(MethodKind::SimClr, None, 1);
    let err = m
        .set_tensors(&[(
            "ema.projector.0.weight".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        )])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ema.projector.0.weight"), "{err}");
    let err = m
        .set_tensors(&[(
            "projector.0.weight".into(),
            Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
        )])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

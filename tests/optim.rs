//! Optimisers and schedules against PyTorch, parameter groups, and bit-exact state round trips.
//!
//! The references are in `tests/fixtures/optim/optim.json`, written by
//! `tools/gen_optim_fixtures.py` (command in its header): `torch.optim.SGD` and
//! `torch.optim.AdamW` as shipped, a transcription of solo-learn's LARS, and solo-learn's
//! warm-up + cosine scheduler, each run on fixed parameters with a fixed sequence of 5 gradients
//! (one parameter without gradient at some steps, one all-zero gradient, one zero parameter).
//!
//! Tolerance for the optimisers, for every parameter tensor after every step and the final
//! state, with `e` PyTorch's tensor and `a` cromo's:
//! - float64: `|a − e| ≤ 1e-12 · max(|e|, 1e-2 · max|e|)` entry by entry (measured ≤ 2e-14);
//! - float32: `max|a − e| ≤ 1e-6 · max|e|` (relative to the tensor's scale; measured ≤ 2e-7,
//!   about one float32 ulp) and entry by entry `|a − e| ≤ 2e-5 · max(|e|, 1e-2 · max|e|)`.
//!   PyTorch's float32 CPU kernels evaluate `a + α·b` with a fused multiply-add (one rounding),
//!   cromo's with two; after a few steps that leaves 1–2 ulp of the operands' scale, which on an
//!   entry that has cancelled down to 1% of its tensor's scale is ~1e-6 of its own value.
//!
//! Both runs start from the same float32-representable values.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use cromo::learner::{
    is_bias_or_norm, scale_lr_by_batch, AdamWConfig, GroupSpec, LarsConfig, Optimizer,
    OptimizerConfig, ParamGroups, SgdConfig, WarmupCosine, SOLO_WARMUP_START_LR,
};
use cromo::Error;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optim/optim.json"
    );
    let text = std::fs::read_to_string(path).expect("read the optimiser fixture");
    serde_json::from_str(&text).expect("parse the optimiser fixture")
}

fn shape_data(v: &Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (shape, data)
}

fn tensor(v: &Value, dtype: DType) -> Tensor {
    let (shape, data) = shape_data(v);
    Tensor::from_vec(data, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// (max|a − e| / max|e|, largest `|a − e| / max(|e|, 1e-2 · max|e|)`).
fn errors(actual: &[f64], expected: &[f64]) -> (f64, f64) {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let floor = (1e-2 * scale).max(f64::MIN_POSITIVE);
    let mut abs = 0.0f64;
    let mut rel = 0.0f64;
    for (a, e) in actual.iter().zip(expected) {
        assert!(a.is_finite(), "non-finite value {a}");
        abs = abs.max((a - e).abs());
        rel = rel.max((a - e).abs() / e.abs().max(floor));
    }
    (abs / scale.max(f64::MIN_POSITIVE), rel)
}

/// Checks `actual` against PyTorch's `expected` with the tolerances of the module docs; returns
/// the two errors.
fn check(what: &str, actual: &Tensor, expected: &Value, dtype: DType) -> (f64, f64) {
    let (shape, e) = shape_data(expected);
    assert_eq!(actual.dims(), shape.as_slice(), "{what}: shape");
    let a = flat(actual);
    let (norm, elem) = errors(&a, &e);
    let (norm_tol, elem_tol) = if dtype == DType::F64 {
        (1e-12, 1e-12)
    } else {
        (1e-6, 2e-5)
    };
    assert!(
        norm <= norm_tol && elem <= elem_tol,
        "{what}: differs from PyTorch (scale-relative {norm:.2e}, entry-relative {elem:.2e})\n \
         cromo {a:?}\n torch {e:?}"
    );
    (norm, elem)
}

const BN_STATS: [&str; 2] = ["backbone.bn1.running_mean", "backbone.bn1.running_var"];

/// A VarMap holding the fixture's parameters (in `dtype`) plus BatchNorm running statistics.
fn varmap_from(params: &[(String, Tensor)], dtype: DType) -> VarMap {
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for (name, t) in params {
            let t = t.to_dtype(dtype).unwrap();
            data.insert(name.clone(), Var::from_tensor(&t).unwrap());
        }
        for (k, name) in BN_STATS.iter().enumerate() {
            let t = Tensor::new(&[0.5f32, -1.0, 2.0, 0.25], &Device::Cpu)
                .unwrap()
                .affine(1.0 + k as f64, 0.0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            data.insert(name.to_string(), Var::from_tensor(&t).unwrap());
        }
    }
    vm
}

fn fixture_params(fx: &Value) -> Vec<(String, Tensor)> {
    fx["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let n = n.as_str().unwrap().to_string();
            let t = tensor(&fx["params"][&n], DType::F32);
            (n, t)
        })
        .collect()
}

fn specs(fx: &Value, weight_decay: f64) -> Vec<GroupSpec> {
    fx["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            GroupSpec::new(g["prefix"].as_str().unwrap(), weight_decay)
                .with_lr_scale(g["lr_scale"].as_f64().unwrap())
        })
        .collect()
}

fn config_of(case: &Value) -> (OptimizerConfig, f64) {
    let c = &case["config"];
    let f = |k: &str| c[k].as_f64().unwrap();
    let b = |k: &str| c[k].as_bool().unwrap();
    let cfg = match case["kind"].as_str().unwrap() {
        "sgd" => OptimizerConfig::Sgd(SgdConfig {
            momentum: f("momentum"),
            nesterov: b("nesterov"),
        }),
        "lars" => OptimizerConfig::Lars(LarsConfig {
            momentum: f("momentum"),
            nesterov: b("nesterov"),
            eta: f("eta"),
            eps: f("eps"),
            clip_lr: b("clip_lr"),
        }),
        "adamw" => OptimizerConfig::AdamW(AdamWConfig {
            beta1: f("beta1"),
            beta2: f("beta2"),
            eps: f("eps"),
        }),
        k => panic!("unknown kind {k}"),
    };
    (cfg, f("weight_decay"))
}

/// The fixture's gradients of step `k` for the parameters of `vm`.
fn grads_at(fx: &Value, vm: &VarMap, k: usize, dtype: DType) -> GradStore {
    let mut grads = GradStore::default();
    let data = vm.data().lock().unwrap();
    for (name, g) in fx["grads"][k].as_object().unwrap() {
        let var = &data[name];
        grads.insert(var.as_tensor(), tensor(g, dtype));
    }
    grads
}

fn fx_tensor(params: &[(String, Tensor)], name: &str) -> Tensor {
    params.iter().find(|(n, _)| n == name).unwrap().1.clone()
}

fn var_tensor(vm: &VarMap, name: &str) -> Tensor {
    vm.data().lock().unwrap()[name].as_tensor().clone()
}

fn build(fx: &Value, case: &Value, vm: &VarMap) -> Box<dyn Optimizer> {
    let (cfg, wd) = config_of(case);
    let groups = ParamGroups::from_varmap(vm, &specs(fx, wd)).unwrap();
    cfg.build(groups).unwrap()
}

/// Every optimiser case, in f32 and f64, through the fused CPU kernels and the generic tensor-op
/// path: parameters after each of the 5 steps, and the final state, match PyTorch; BatchNorm
/// running statistics are never touched.
#[test]
fn optimizers_match_pytorch() {
    let fx = fixture();
    let params = fixture_params(&fx);
    let mut report = Vec::new();
    for case in fx["optimizers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let lrs: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (label, dtype) in [("f32", DType::F32), ("f64", DType::F64)] {
            let reference = &case[label];
            for fused in [true, false] {
                let path = if fused { "fused" } else { "generic" };
                let vm = varmap_from(&params, dtype);
                let stats_before: Vec<Vec<f64>> =
                    BN_STATS.iter().map(|n| flat(&var_tensor(&vm, n))).collect();
                let mut opt = build(&fx, case, &vm);
                opt.set_fused(fused);
                let (mut norm, mut elem) = (0.0f64, 0.0f64);
                for (k, &lr) in lrs.iter().enumerate() {
                    let grads = grads_at(&fx, &vm, k, dtype);
                    opt.step(&grads, lr).unwrap();
                    for (pname, expected) in reference["params"][k].as_object().unwrap() {
                        let actual = var_tensor(&vm, pname);
                        assert_eq!(actual.dtype(), dtype);
                        let what = format!("{name} {label} {path}: `{pname}` after step {k}");
                        let (n, e) = check(&what, &actual, expected, dtype);
                        (norm, elem) = (norm.max(n), elem.max(e));
                    }
                }
                let state: HashMap<String, Tensor> =
                    opt.state_tensors().unwrap().into_iter().collect();
                let expected_state = reference["state"].as_object().unwrap();
                let mut got_names: Vec<&String> = state.keys().collect();
                let mut want_names: Vec<&String> = expected_state.keys().collect();
                got_names.sort();
                want_names.sort();
                assert_eq!(got_names, want_names, "{name} {label}: state entries");
                for (sname, expected) in expected_state {
                    let what = format!("{name} {label} {path}: state `{sname}`");
                    let (n, e) = check(&what, &state[sname], expected, dtype);
                    (norm, elem) = (norm.max(n), elem.max(e));
                }
                for (n, before) in BN_STATS.iter().zip(&stats_before) {
                    assert_eq!(&flat(&var_tensor(&vm, n)), before, "{n} was modified");
                }
                report.push(format!(
                    "{name:>17} {label} {path:>7}: scale-relative {norm:.2e}, entry-relative {elem:.2e}"
                ));
            }
        }
    }
    println!("{}", report.join("\n"));
}

/// A parameter without gradient is left bit-identical and gets no state; the others move.
#[test]
fn parameters_without_gradient_are_skipped() {
    let fx = fixture();
    let params = fixture_params(&fx);
    for kind in ["sgd", "lars", "adamw"] {
        let case = fx["optimizers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == kind)
            .unwrap();
        let vm = varmap_from(&params, DType::F32);
        let mut opt = build(&fx, case, &vm);
        let before = flat(&var_tensor(&vm, "projector.0.bias"));
        // step 0 of the fixture has no gradient for projector.0.bias
        opt.step(&grads_at(&fx, &vm, 0, DType::F32), 0.1).unwrap();
        assert_eq!(flat(&var_tensor(&vm, "projector.0.bias")), before);
        assert_ne!(
            flat(&var_tensor(&vm, "backbone.bn1.bias")),
            flat(&fx_tensor(&params, "backbone.bn1.bias")),
            "{kind}: a parameter with a gradient did not move"
        );
        let names: Vec<String> = opt
            .state_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with("projector.0.bias")),
            "{kind}: {names:?}"
        );
        assert!(
            names.iter().any(|n| n.ends_with("backbone.bn1.bias")),
            "{kind}: {names:?}"
        );
        // an empty gradient store changes nothing
        let snapshot: Vec<Vec<f64>> = params
            .iter()
            .map(|(n, _)| flat(&var_tensor(&vm, n)))
            .collect();
        opt.step(&GradStore::default(), 0.1).unwrap();
        let after: Vec<Vec<f64>> = params
            .iter()
            .map(|(n, _)| flat(&var_tensor(&vm, n)))
            .collect();
        assert_eq!(snapshot, after);
    }
}

/// LARS on a hand-computed case: p = (3, 4), g = (0.6, 0.8), so ‖p‖ = 5, ‖g‖ = 1.
#[test]
fn lars_trust_ratio_hand_computed() {
    let run = |clip: bool, wd: f64, lr: f64| -> Vec<f64> {
        let vm = VarMap::new();
        let p = Var::from_tensor(&Tensor::new(&[[3.0f64, 4.0]], &Device::Cpu).unwrap()).unwrap();
        vm.data()
            .lock()
            .unwrap()
            .insert("backbone.fc.weight".into(), p.clone());
        let groups = ParamGroups::from_varmap(&vm, &[GroupSpec::new("backbone", wd)]).unwrap();
        let cfg = LarsConfig {
            momentum: 0.0,
            nesterov: false,
            eta: 0.02,
            eps: 0.0,
            clip_lr: clip,
        };
        let mut opt = OptimizerConfig::Lars(cfg).build(groups).unwrap();
        let mut grads = GradStore::default();
        grads.insert(
            p.as_tensor(),
            Tensor::new(&[[0.6f64, 0.8]], &Device::Cpu).unwrap(),
        );
        opt.step(&grads, lr).unwrap();
        flat(p.as_tensor())
    };
    let close = |a: &[f64], b: &[f64]| {
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12),
            "{a:?} vs {b:?}"
        );
    };
    // trust = 0.02·5/1 = 0.1; p − 1·0.1·g
    close(&run(false, 0.0, 1.0), &[2.94, 3.92]);
    // clip: trust/lr = 0.1/0.05 = 2 → 1; p − 0.05·g
    close(&run(true, 0.0, 0.05), &[2.97, 3.96]);
    // clip not binding: trust/lr = 0.1/0.5 = 0.2; p − 0.5·0.2·g = p − 0.1·g
    close(&run(true, 0.0, 0.5), &[2.94, 3.92]);
    // wd 0.1: trust = 0.1/(1 + 0.5) = 1/15; d = (g + 0.1 p)/15 = (0.9, 1.2)/15
    close(&run(false, 0.1, 1.0), &[3.0 - 0.06, 4.0 - 0.08]);
}

#[test]
fn parameter_groups_follow_the_rules() {
    let vm = VarMap::new();
    let dev = Device::Cpu;
    let add = |name: &str, shape: &[usize]| {
        let t = Tensor::ones(shape, DType::F32, &dev).unwrap();
        vm.data()
            .lock()
            .unwrap()
            .insert(name.into(), Var::from_tensor(&t).unwrap());
    };
    add("backbone.conv1.weight", &[4, 3, 3, 3]);
    add("backbone.bn1.weight", &[4]);
    add("backbone.bn1.bias", &[4]);
    add("backbone.bn1.running_mean", &[4]);
    add("backbone.bn1.running_var", &[4]);
    add("backbone.bn1.num_batches_tracked", &[]);
    add("backbone.fc.bias", &[1, 4]);
    add("backbone2.extra.weight", &[2, 2]);
    add("projector.0.weight", &[8, 4]);
    add("projector.0.bias", &[8]);
    add("predictor.0.weight", &[8, 8]);
    add("teacher.conv1.weight", &[4, 3, 3, 3]);

    assert!(is_bias_or_norm("backbone.bn1.weight", 1));
    assert!(is_bias_or_norm("backbone.fc.bias", 2));
    assert!(is_bias_or_norm("logit_scale", 0));
    assert!(!is_bias_or_norm("backbone.conv1.weight", 4));

    let groups = ParamGroups::from_varmap(
        &vm,
        &[
            GroupSpec::new("backbone.", 1e-4),
            GroupSpec::new("projector", 1e-5).with_lr_scale(2.0),
            GroupSpec::new("predictor", 1e-3).with_lars_exclude(true),
        ],
    )
    .unwrap();
    let names: Vec<&str> = groups.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "backbone.bn1.bias",
            "backbone.bn1.weight",
            "backbone.conv1.weight",
            "backbone.fc.bias",
            "projector.0.bias",
            "projector.0.weight",
            "predictor.0.weight",
        ]
    );
    let p = |n: &str| groups.get(n).unwrap().clone();
    assert!(groups.get("backbone.bn1.num_batches_tracked").is_none());
    assert!(
        groups.get("backbone2.extra.weight").is_none(),
        "prefix must end at a dot"
    );
    assert_eq!(
        (
            p("backbone.conv1.weight").weight_decay,
            p("backbone.conv1.weight").lars_adapt
        ),
        (1e-4, true)
    );
    for n in [
        "backbone.bn1.weight",
        "backbone.bn1.bias",
        "backbone.fc.bias",
        "projector.0.bias",
    ] {
        assert_eq!((p(n).weight_decay, p(n).lars_adapt), (0.0, false), "{n}");
    }
    assert_eq!(
        (
            p("projector.0.weight").weight_decay,
            p("projector.0.weight").group
        ),
        (1e-5, 1)
    );
    assert_eq!(
        (
            p("predictor.0.weight").weight_decay,
            p("predictor.0.weight").lars_adapt
        ),
        (1e-3, false)
    );
    assert_eq!(groups.num_elements(), 4 + 4 + 108 + 4 + 8 + 32 + 64);

    // biases and norms kept in when asked
    let g = ParamGroups::from_varmap(
        &vm,
        &[GroupSpec::new("backbone", 0.1).with_exclude_bias_n_norm(false)],
    )
    .unwrap();
    assert_eq!(
        (
            g.get("backbone.bn1.weight").unwrap().weight_decay,
            g.get("backbone.bn1.weight").unwrap().lars_adapt
        ),
        (0.1, true)
    );

    let invalid = |specs: &[GroupSpec], needle: &str| match ParamGroups::from_varmap(&vm, specs) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected an invalid-argument error with `{needle}`, got {other:?}"),
    };
    invalid(
        &[GroupSpec::new("classifier", 0.0)],
        "matches no trainable variable",
    );
    invalid(
        &[GroupSpec::new("", 0.0), GroupSpec::new("backbone", 0.0)],
        "two parameter groups",
    );
    invalid(&[GroupSpec::new("backbone", -1.0)], "weight_decay");
    invalid(
        &[GroupSpec::new("backbone", 0.0).with_lr_scale(f64::NAN)],
        "lr_scale",
    );
}

#[test]
fn bad_arguments_are_errors() {
    let vm = VarMap::new();
    let p = Var::from_tensor(&Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap()).unwrap();
    vm.data()
        .lock()
        .unwrap()
        .insert("backbone.w".into(), p.clone());
    let groups = || ParamGroups::from_varmap(&vm, &[GroupSpec::new("backbone", 0.0)]).unwrap();
    let is_invalid = |r: cromo::Result<Box<dyn Optimizer>>| {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{:?}", r.err())
    };
    is_invalid(
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 1.0,
            nesterov: false,
        })
        .build(groups()),
    );
    is_invalid(
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.0,
            nesterov: true,
        })
        .build(groups()),
    );
    is_invalid(
        OptimizerConfig::Lars(LarsConfig {
            eta: -0.1,
            ..Default::default()
        })
        .build(groups()),
    );
    is_invalid(
        OptimizerConfig::AdamW(AdamWConfig {
            beta2: 1.0,
            ..Default::default()
        })
        .build(groups()),
    );

    for cfg in [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::Lars(LarsConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ] {
        let mut opt = cfg.build(groups()).unwrap();
        let mut grads = GradStore::default();
        grads.insert(
            p.as_tensor(),
            Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        for lr in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                opt.step(&grads, lr),
                Err(Error::InvalidArgument(_))
            ));
        }
        let mut wrong = GradStore::default();
        wrong.insert(
            p.as_tensor(),
            Tensor::ones((3, 2), DType::F32, &Device::Cpu).unwrap(),
        );
        match opt.step(&wrong, 0.1) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("backbone.w"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let mut wrong = GradStore::default();
        wrong.insert(
            p.as_tensor(),
            Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap(),
        );
        assert!(opt.step(&wrong, 0.1).is_err());
        assert_eq!(
            flat(p.as_tensor()),
            vec![1.0; 6],
            "a failed step changed the parameter"
        );
    }
}

/// Runs the fixture's first `from..to` steps of `case` on `vm` with `opt`.
fn run_steps(
    fx: &Value,
    case: &Value,
    vm: &VarMap,
    opt: &mut dyn Optimizer,
    steps: std::ops::Range<usize>,
) {
    for k in steps {
        let lr = case["lrs"][k].as_f64().unwrap();
        opt.step(&grads_at(fx, vm, k, DType::F32), lr).unwrap();
    }
}

fn bits(vm: &VarMap) -> Vec<(String, Vec<u32>)> {
    let data = vm.data().lock().unwrap();
    let mut out: Vec<(String, Vec<u32>)> = data
        .iter()
        .map(|(n, v)| {
            let x: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            (n.clone(), x.iter().map(|f| f.to_bits()).collect())
        })
        .collect();
    out.sort();
    out
}

/// Save the parameters and the optimiser state after 2 steps to safetensors files, load both into
/// a fresh VarMap and a fresh optimiser, run the remaining 3 steps: parameters and state are
/// bit-identical to an uninterrupted 5-step run (every optimiser kind).
#[test]
fn state_save_load_continue_is_bit_exact() {
    let fx = fixture();
    let params = fixture_params(&fx);
    let dir = tempfile::tempdir().unwrap();
    for case in fx["optimizers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let vm_a = varmap_from(&params, DType::F32);
        let mut a = build(&fx, case, &vm_a);
        run_steps(&fx, case, &vm_a, a.as_mut(), 0..5);

        let vm_b = varmap_from(&params, DType::F32);
        let mut b = build(&fx, case, &vm_b);
        run_steps(&fx, case, &vm_b, b.as_mut(), 0..2);
        let params_file = dir.path().join(format!("{name}.params.safetensors"));
        let state_file = dir.path().join(format!("{name}.optim.safetensors"));
        cromo::models::weights::save_varmap(&vm_b, &params_file, DType::F32).unwrap();
        let state = b.state_tensors().unwrap();
        assert_eq!(
            state.is_empty(),
            name == "sgd_no_momentum",
            "{name}: state entries"
        );
        cromo::models::weights::save_tensors(&state, &state_file, DType::F32).unwrap();
        drop((b, vm_b));

        let loaded = candle_core::safetensors::load(&params_file, &Device::Cpu).unwrap();
        let mut loaded: Vec<(String, Tensor)> = loaded.into_iter().collect();
        loaded.retain(|(n, _)| !BN_STATS.contains(&n.as_str()));
        let vm_c = varmap_from(&loaded, DType::F32);
        let mut c = build(&fx, case, &vm_c);
        c.load_state(&candle_core::safetensors::load(&state_file, &Device::Cpu).unwrap())
            .unwrap();
        run_steps(&fx, case, &vm_c, c.as_mut(), 2..5);

        assert_eq!(
            bits(&vm_a),
            bits(&vm_c),
            "{name}: resumed parameters differ"
        );
        let sa = a.state_tensors().unwrap();
        let sc = c.state_tensors().unwrap();
        assert_eq!(sa.len(), sc.len());
        for ((na, ta), (nc, tc)) in sa.iter().zip(&sc) {
            assert_eq!(na, nc);
            let (fa, fc) = (flat(ta), flat(tc));
            assert!(
                fa.iter().zip(&fc).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}: state `{na}` differs after resume"
            );
        }
    }
}

#[test]
fn load_state_rejects_foreign_or_malformed_state() {
    let fx = fixture();
    let params = fixture_params(&fx);
    let find = |kind: &str| {
        fx["optimizers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == kind)
            .unwrap()
            .clone()
    };
    let (sgd_case, lars_case, adam_case) = (find("sgd"), find("lars"), find("adamw"));
    let vm = varmap_from(&params, DType::F32);
    let mut sgd = build(&fx, &sgd_case, &vm);
    run_steps(&fx, &sgd_case, &vm, sgd.as_mut(), 0..2);
    let sgd_state: HashMap<String, Tensor> = sgd.state_tensors().unwrap().into_iter().collect();
    let mut adam = build(&fx, &adam_case, &vm);
    run_steps(&fx, &adam_case, &vm, adam.as_mut(), 0..2);
    let adam_state: HashMap<String, Tensor> = adam.state_tensors().unwrap().into_iter().collect();

    let expect_err = |opt: &mut dyn Optimizer, state: &HashMap<String, Tensor>, needle: &str| {
        let before: Vec<(String, Vec<f64>)> = opt
            .state_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, flat(&t)))
            .collect();
        match opt.load_state(state) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains(needle), "`{needle}` not in: {msg}")
            }
            other => panic!("expected an error with `{needle}`, got {other:?}"),
        }
        let after: Vec<(String, Vec<f64>)> = opt
            .state_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, flat(&t)))
            .collect();
        assert_eq!(before, after, "a failed load changed the state");
    };

    // SGD momentum into LARS
    let mut lars = build(&fx, &lars_case, &vm);
    run_steps(&fx, &lars_case, &vm, lars.as_mut(), 0..1);
    expect_err(lars.as_mut(), &sgd_state, "sgd.momentum_buffer");
    // unknown parameter, BN running statistics
    for bad in [
        "sgd.momentum_buffer.backbone.fc9.weight",
        "sgd.momentum_buffer.backbone.bn1.running_mean",
        "sgd.velocity.backbone.bn1.weight",
    ] {
        let mut s = sgd_state.clone();
        s.insert(
            bad.to_string(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
        expect_err(sgd.as_mut(), &s, bad);
    }
    // wrong shape
    let mut s = sgd_state.clone();
    s.insert(
        "sgd.momentum_buffer.backbone.conv1.weight".into(),
        Tensor::zeros((4, 18), DType::F32, &Device::Cpu).unwrap(),
    );
    expect_err(sgd.as_mut(), &s, "shape");
    // AdamW: missing step, step not an integer >= 1
    let mut s = adam_state.clone();
    s.remove("adamw.step.backbone.conv1.weight");
    expect_err(adam.as_mut(), &s, "incomplete");
    let mut s = adam_state.clone();
    s.insert(
        "adamw.step.backbone.conv1.weight".into(),
        Tensor::new(0i64, &Device::Cpu).unwrap(),
    );
    expect_err(adam.as_mut(), &s, ">= 1");
    // the full state loads, and an empty map resets
    adam.load_state(&adam_state).unwrap();
    adam.load_state(&HashMap::new()).unwrap();
    assert!(adam.state_tensors().unwrap().is_empty());
}

/// Every schedule of the fixture (solo-learn's scheduler stepped per iteration) at every step.
#[test]
fn schedule_matches_pytorch_reference() {
    let fx = fixture();
    let mut worst = 0.0f64;
    for s in fx["schedules"].as_array().unwrap() {
        let c = &s["config"];
        let sched = WarmupCosine {
            base_lr: c["base_lr"].as_f64().unwrap(),
            warmup_start_lr: c["warmup_start_lr"].as_f64().unwrap(),
            min_lr: c["min_lr"].as_f64().unwrap(),
            warmup_steps: c["warmup_steps"].as_u64().unwrap(),
            total_steps: c["total_steps"].as_u64().unwrap(),
        };
        sched.validate().unwrap();
        for (t, e) in s["lrs"].as_array().unwrap().iter().enumerate() {
            let e = e.as_f64().unwrap();
            let a = sched.lr(t as u64);
            let err = (a - e).abs() / e.abs().max(1e-3 * sched.base_lr);
            assert!(err < 1e-12, "{c}: step {t}: {a} vs torch {e}");
            worst = worst.max(err);
        }
    }
    println!("schedules: max rel err {worst:.2e}");
}

#[test]
fn schedule_hand_values_and_errors() {
    let s = WarmupCosine::new(scale_lr_by_batch(0.3, 512), 10, 100).unwrap();
    assert_eq!(s.base_lr, 0.6);
    assert_eq!(s.warmup_start_lr, SOLO_WARMUP_START_LR);
    assert_eq!(s.lr(0), 3e-5);
    assert!((s.lr(9) - 0.6).abs() < 1e-15);
    assert_eq!(s.lr(10), 0.6);
    // halfway through the cosine: (55 − 10) / 90 = ½ → base / 2
    assert!((s.lr(55) - 0.3).abs() < 1e-15);
    assert!(s.lr(100).abs() < 1e-15);
    assert_eq!(s.lr(101), 0.0);
    assert_eq!(s.lr(u64::MAX), 0.0);
    let s = s
        .with_min_lr(0.01)
        .unwrap()
        .with_warmup_start_lr(0.0)
        .unwrap();
    assert_eq!(s.lr(0), 0.0);
    assert!((s.lr(55) - 0.305).abs() < 1e-15);
    assert_eq!(s.lr(500), 0.01);
    // no warm-up: starts at the base lr
    assert_eq!(WarmupCosine::new(0.1, 0, 10).unwrap().lr(0), 0.1);
    assert_eq!(scale_lr_by_batch(0.4, 128), 0.2);

    for bad in [
        WarmupCosine::new(0.1, 10, 10),
        WarmupCosine::new(-0.1, 0, 10),
        WarmupCosine::new(f64::NAN, 0, 10),
        WarmupCosine::new(0.1, 0, 10).and_then(|s| s.with_min_lr(0.2)),
    ] {
        assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
}

/// Cost of one step on a ResNet-18-sized parameter set (the CIFAR ResNet-18's conv and BN
/// shapes plus a 512-2048-256 projector: 12.6 M parameters in 54 tensors),
/// fused CPU kernels against the generic tensor-op path. Not a test: run with
/// `cargo test --release --test optim -- --ignored --nocapture step_cost`.
#[test]
#[ignore]
fn step_cost() {
    use std::time::Instant;
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let mut shapes: Vec<Vec<usize>> = vec![vec![64, 3, 3, 3]];
    for (c_in, c) in [(64, 64), (64, 128), (128, 256), (256, 512)] {
        shapes.extend([
            vec![c, c_in, 3, 3],
            vec![c, c, 3, 3],
            vec![c, c, 3, 3],
            vec![c, c, 3, 3],
        ]);
        shapes.extend(std::iter::repeat_n(vec![c], 8));
    }
    shapes.extend([
        vec![2048, 512],
        vec![2048],
        vec![2048],
        vec![256, 2048],
        vec![256],
    ]);
    let mut grads = GradStore::default();
    for (i, s) in shapes.iter().enumerate() {
        let v = Var::from_tensor(&Tensor::randn(0f32, 0.05, s.as_slice(), &dev).unwrap()).unwrap();
        grads.insert(
            v.as_tensor(),
            Tensor::randn(0f32, 0.01, s.as_slice(), &dev).unwrap(),
        );
        vm.data()
            .lock()
            .unwrap()
            .insert(format!("backbone.p{i}"), v);
    }
    let n: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    println!("{n} parameters in {} tensors", shapes.len());
    println!("{:>6} {:>8} {:>10}", "kind", "path", "ms/step");
    for cfg in [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::Lars(LarsConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ] {
        for fused in [true, false] {
            let groups =
                ParamGroups::from_varmap(&vm, &[GroupSpec::new("backbone", 1e-5)]).unwrap();
            let mut opt = cfg.build(groups).unwrap();
            opt.set_fused(fused);
            opt.step(&grads, 1e-3).unwrap();
            opt.step(&grads, 1e-3).unwrap();
            let reps = 10;
            let t0 = Instant::now();
            for _ in 0..reps {
                opt.step(&grads, 1e-3).unwrap();
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
            println!(
                "{:>6} {:>8} {ms:>10.1}",
                opt.kind(),
                if fused { "fused" } else { "generic" }
            );
        }
    }
}

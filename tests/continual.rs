//! Continual strategies: losses against PyTorch, the frozen teacher, CroMo-Mixup's mixed batch,
//! and one backward pass through every method × strategy.
//!
//! The PyTorch references are in `tests/fixtures/continual/strategies.json`, written by
//! `tools/gen_continual_fixtures.py` (command in its header): every method × strategy at task 1
//! on a tiny small-cnn student (8×8 images, n = 6, 4 buffer images, λ = 0.3) whose tensors, the
//! teacher's, the EMA target's, MoCo's queues and the images all come from the name-keyed
//! generator described there (reimplemented below). The reference is evaluated in float64 from
//! the float32 values; cromo runs in float32. Tolerance: `|a − e| ≤ 1e-5 · max(|e|, 1)` per term,
//! about ten times the largest deviation measured (8.6e-7: float32 rounding through four
//! convolution stages, BatchNorm over 6–10 samples and, for CorInfoMax, a log-determinant).

use candle_core::{DType, Device, Tensor};
use cromo::continual::{
    BufferViews, StepInput, Strategy, StrategyConfig, StrategyKind, Teacher, TeacherMode,
};
use cromo::methods::{Method, MethodConfig, MethodKind, MixKind};
use cromo::models::weights::is_bn_buffer;
use cromo::models::Arch;
use rand::SeedableRng;
use serde_json::Value;
use std::collections::HashSet;

const TOL: f64 = 1e-5;

// ---- the fixture's tensor generator ----------------------------------------------------------

fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator's values for a tensor called `name` (hashed) of `shape`, by recipe `leaf`.
fn gen(name: &str, shape: &[usize], leaf: &str) -> Tensor {
    let h = fnv1a64(name);
    let count: usize = shape.iter().product();
    let u: Vec<f64> = (0..count as u64)
        .map(|k| ((splitmix64(h.wrapping_add(k)) >> 11) as f64) * 2f64.powi(-53) * 2.0 - 1.0)
        .collect();
    let v: Vec<f64> = match (leaf, shape.len()) {
        ("weight", 2 | 4) => {
            let fan_in: usize = shape[1..].iter().product();
            let s = (3.0 / fan_in as f64).sqrt();
            u.iter().map(|x| x * s).collect()
        }
        ("weight", _) => u.iter().map(|x| 1.0 + 0.2 * x).collect(),
        ("bias" | "running_mean", _) => u.iter().map(|x| 0.1 * x).collect(),
        ("running_var", _) => u.iter().map(|x| 0.5 + x * x).collect(),
        ("queue", _) => {
            let d = shape[1];
            u.chunks(d)
                .flat_map(|row| {
                    let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                    row.iter().map(move |x| x / norm).collect::<Vec<_>>()
                })
                .collect()
        }
        ("image", _) => u.iter().map(|x| 1.5 * x).collect(),
        _ => panic!("no recipe {leaf}"),
    };
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn leaf(name: &str) -> &str {
    name.rsplit('.').next().unwrap()
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/continual/strategies.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the fixture"))
        .expect("parse the fixture")
}

/// The fixture's tiny method, every state tensor from the generator.
fn fixture_method(kind: MethodKind, c: &Value) -> Method {
    let mut cfg = MethodConfig::new(kind, Arch::SmallCnn);
    cfg.proj_hidden = c["proj_hidden"].as_u64().unwrap() as usize;
    cfg.proj_out = c["proj_out"].as_u64().unwrap() as usize;
    cfg.pred_hidden = c["pred_hidden"].as_u64().unwrap() as usize;
    cfg.distill_hidden = c["distill_hidden"].as_u64().unwrap() as usize;
    cfg.distill_predictor = true;
    cfg.moco.queue_size = c["queue_size"].as_u64().unwrap() as usize;
    cfg.moco.temperature = c["moco_temperature"].as_f64().unwrap();
    cfg.info_nce.temperature = c["simclr_temperature"].as_f64().unwrap();
    cfg.distill.temperature = c["distill_temperature"].as_f64().unwrap();
    let mut method = Method::new(cfg, Arch::SmallCnn, &Device::Cpu, 7).unwrap();
    let mut values = Vec::new();
    for (name, t) in method.tensors().unwrap() {
        if name.starts_with("corinfomax.") {
            continue; // fresh statistics, as the reference
        }
        if name.starts_with("moco.") {
            continue;
        }
        values.push((name.clone(), gen(&name, t.dims(), leaf(&name))));
    }
    if kind == MethodKind::Moco {
        let k = cfg_queue(c);
        let d = c["proj_out"].as_u64().unwrap() as usize;
        for q in ["moco.queue", "moco.frozen_queue"] {
            for v in 0..2 {
                let name = format!("{q}.{v}");
                values.push((name.clone(), gen(&name, &[k, d], "queue")));
            }
            values.push((
                format!("{q}_ptr"),
                Tensor::new(&[0u32, 0], &Device::Cpu).unwrap(),
            ));
        }
    }
    method.set_tensors(&values).unwrap();
    method
}

fn cfg_queue(c: &Value) -> usize {
    c["queue_size"].as_u64().unwrap() as usize
}

fn fixture_teacher(method: &Method, mode: TeacherMode) -> Teacher {
    let tensors: Vec<(String, Tensor)> = Teacher::snapshot(method, mode)
        .unwrap()
        .tensors()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let v = gen(&format!("teacher.{name}"), t.dims(), leaf(&name));
            (name, v)
        })
        .collect();
    Teacher::restore(method, &tensors, mode).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

#[test]
fn strategies_match_pytorch_fixture() {
    let fx = fixture();
    let c = &fx["config"];
    let (n, mb, hw) = (
        c["n"].as_u64().unwrap() as usize,
        c["buffer"].as_u64().unwrap() as usize,
        c["image_size"].as_u64().unwrap() as usize,
    );
    let x1 = gen("x1", &[n, 3, hw, hw], "image");
    let x2 = gen("x2", &[n, 3, hw, hw], "image");
    let b1 = gen("b1", &[mb, 3, hw, hw], "image");
    let b2 = gen("b2", &[mb, 3, hw, hw], "image");
    let tags = vec![0u32; mb];
    let mut worst = 0f64;
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 42);
    for case in cases {
        let kind: MethodKind = case["method"].as_str().unwrap().parse().unwrap();
        let skind: StrategyKind = case["strategy"].as_str().unwrap().parse().unwrap();
        let mode: TeacherMode = case["teacher"].as_str().unwrap().parse().unwrap();
        let mut method = fixture_method(kind, c);
        let teacher = fixture_teacher(&method, mode);
        let mut scfg = StrategyConfig::new(skind);
        scfg.mix_lambda = Some(c["mix_lambda"].as_f64().unwrap());
        let strategy = Strategy::new(scfg).unwrap();
        let input = StepInput {
            task: c["task"].as_u64().unwrap() as usize,
            x1: &x1,
            x2: &x2,
            buffer: Some(BufferViews {
                x1: &b1,
                x2: &b2,
                tasks: &tags,
            }),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let out = strategy
            .step(&mut method, Some(&teacher), &input, &mut rng)
            .unwrap();
        let label = format!("{kind} {skind} teacher {mode}");
        let terms = case["terms"].as_object().unwrap();
        let got = [
            ("total", Some(&out.loss.total)),
            ("ssl", Some(&out.loss.ssl)),
            ("distill", out.loss.distill.as_ref()),
            ("pnr_negative", out.loss.pnr_negative.as_ref()),
            ("mixed", out.loss.mixed.as_ref()),
        ];
        for (name, t) in got {
            match (terms.get(name), t) {
                (Some(e), Some(t)) => {
                    let (a, e) = (scalar(t), e.as_f64().unwrap());
                    let err = (a - e).abs() / e.abs().max(1.0);
                    worst = worst.max(err);
                    assert!(
                        err <= TOL,
                        "{label}: {name} = {a}, PyTorch {e} (relative error {err:.2e})"
                    );
                }
                (None, None) => {}
                (e, t) => panic!(
                    "{label}: term {name} present in PyTorch: {}, in cromo: {}",
                    e.is_some(),
                    t.is_some()
                ),
            }
        }
        assert!(out.loss.method_mix.is_none(), "{label}: no mix configured");
    }
    println!("largest relative error over all terms: {worst:.2e}");
}

// ---- small-cnn at 32×32: teacher, mixing, gradients ---------------------------------------

fn images(seed: u64, n: usize, hw: usize) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * hw * hw)
        .map(|_| rand::Rng::random_range(&mut rng, -2.0f32..2.0))
        .collect();
    Tensor::from_vec(v, (n, 3, hw, hw), &Device::Cpu).unwrap()
}

fn small_method(kind: MethodKind, mix: Option<MixKind>, seed: u64) -> Method {
    let mut cfg = MethodConfig::new(kind, Arch::SmallCnn);
    cfg.proj_hidden = 64;
    cfg.proj_out = 32;
    cfg.pred_hidden = 48;
    cfg.distill_hidden = 40;
    cfg.distill_predictor = true;
    cfg.moco.queue_size = 64;
    cfg.mix = mix;
    Method::new(cfg, Arch::SmallCnn, &Device::Cpu, seed).unwrap()
}

/// Plain SGD on the trainable variables, as a stand-in for the optimiser.
fn sgd(method: &Method, loss: &Tensor, lr: f64) {
    let grads = loss.backward().unwrap();
    for (_, var) in method.trainable_vars() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let new = var.as_tensor().sub(&g.affine(lr, 0.0).unwrap()).unwrap();
            var.set(&new).unwrap();
        }
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn teacher_is_bit_identical_after_student_steps() {
    let hw = 32;
    let (x1, x2) = (images(1, 8, hw), images(2, 8, hw));
    let (b1, b2) = (images(3, 4, hw), images(4, 4, hw));
    let probe = images(5, 4, hw);
    let tags = [0u32; 4];
    for (kind, skind) in [
        (MethodKind::Byol, StrategyKind::CroMo),
        (MethodKind::Barlow, StrategyKind::Cassle),
    ] {
        for mode in [TeacherMode::Eval, TeacherMode::Train] {
            let mut method = small_method(kind, None, 11);
            let teacher = Teacher::snapshot(&method, mode).unwrap();
            let before: Vec<(String, Vec<u32>)> = teacher
                .tensors()
                .unwrap()
                .iter()
                .map(|(n, t)| (n.clone(), bits(t)))
                .collect();
            let student_before = bits(&method.tensors().unwrap()[0].1);
            let probe_before = bits(&teacher.forward(&probe).unwrap());
            // The snapshot equals the student at the time it was taken.
            let student: std::collections::HashMap<String, Tensor> =
                method.tensors().unwrap().into_iter().collect();
            for (name, b) in &before {
                assert_eq!(&bits(&student[name]), b, "snapshot of {name}");
            }
            let strategy = Strategy::new(StrategyConfig::new(skind)).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            for step in 0..3 {
                let input = StepInput {
                    task: 1,
                    x1: &x1,
                    x2: &x2,
                    buffer: Some(BufferViews {
                        x1: &b1,
                        x2: &b2,
                        tasks: &tags,
                    }),
                };
                let out = strategy
                    .step(&mut method, Some(&teacher), &input, &mut rng)
                    .unwrap();
                sgd(&method, &out.loss.total, 0.05);
                method.after_step(step, 3).unwrap();
            }
            assert_ne!(
                bits(&method.tensors().unwrap()[0].1),
                student_before,
                "{kind} {skind}: the student must have changed"
            );
            let after = teacher.tensors().unwrap();
            let mut drifted = 0;
            for ((name, b), (name2, t)) in before.iter().zip(&after) {
                assert_eq!(name, name2);
                if is_bn_buffer(name) && mode == TeacherMode::Train {
                    drifted += (bits(t) != *b) as usize;
                } else {
                    assert_eq!(
                        &bits(t),
                        b,
                        "{kind} {skind} {mode}: teacher tensor {name} changed"
                    );
                }
            }
            match mode {
                TeacherMode::Eval => {
                    assert_eq!(bits(&teacher.forward(&probe).unwrap()), probe_before);
                }
                // The authors' train-mode teacher: weights fixed, BatchNorm statistics drift.
                TeacherMode::Train => assert!(drifted > 0, "train-mode statistics should drift"),
            }
        }
    }
}

#[test]
fn cromo_mixes_only_past_task_buffer_images() {
    // Current images are all 1.0; a buffer image of task k is all −(k + 1). Mixed pixels must be
    // λ·1 + (1 − λ)·(−(k + 1)) for the first m current images and the first m buffer images.
    let (n, hw) = (6, 32);
    let cur = Tensor::ones((n, 3, hw, hw), DType::F32, &Device::Cpu).unwrap();
    let tags = [1u32, 0, 1, 0, 2, 0, 1, 1];
    let buf: Vec<Tensor> = tags
        .iter()
        .map(|&k| Tensor::full(-(k as f32 + 1.0), (1, 3, hw, hw), &Device::Cpu).unwrap())
        .collect();
    let buf = Tensor::cat(&buf, 0).unwrap();
    for skind in [StrategyKind::CroMo, StrategyKind::CroMoData] {
        for (task, n_buf) in [(3usize, 4usize), (3, 8)] {
            let mut method = small_method(MethodKind::SimClr, None, 5);
            let teacher = Teacher::snapshot(&method, TeacherMode::Eval).unwrap();
            let strategy = Strategy::new(StrategyConfig::new(skind)).unwrap();
            let b = buf.narrow(0, 0, n_buf).unwrap();
            let input = StepInput {
                task,
                x1: &cur,
                x2: &cur,
                buffer: Some(BufferViews {
                    x1: &b,
                    x2: &b,
                    tasks: &tags[..n_buf],
                }),
            };
            let mut rng = rand::rngs::StdRng::seed_from_u64(9);
            let out = strategy
                .step(&mut method, Some(&teacher), &input, &mut rng)
                .unwrap();
            let m = n.min(n_buf);
            assert_eq!(out.batch.mixed, m);
            assert_eq!(out.batch.current, n);
            assert_eq!(out.batch.buffer_tasks, tags[..m].to_vec());
            let lambda = out.batch.lambda.unwrap();
            assert!((0.0..=1.0).contains(&lambda));
            let mix = out.mix.unwrap();
            assert_eq!(mix.lambda, lambda);
            for x in [&mix.x_mix1, &mix.x_mix2] {
                assert_eq!(x.dims(), &[m, 3, hw, hw]);
                for (i, &k) in tags[..m].iter().enumerate() {
                    let want = lambda as f32 + (1.0 - lambda as f32) * -(k as f32 + 1.0);
                    let row: Vec<f32> = x.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                    assert!(
                        row.iter().all(|v| (v - want).abs() < 1e-5),
                        "{skind}: mixed image {i} is not λ·current + (1 − λ)·buffer image {i}"
                    );
                }
            }
        }
        // A buffer image of the current task (or a later one) is refused.
        let mut method = small_method(MethodKind::SimClr, None, 5);
        let teacher = Teacher::snapshot(&method, TeacherMode::Eval).unwrap();
        let strategy = Strategy::new(StrategyConfig::new(skind)).unwrap();
        let b = buf.narrow(0, 0, 5).unwrap();
        let input = StepInput {
            task: 2,
            x1: &cur,
            x2: &cur,
            buffer: Some(BufferViews {
                x1: &b,
                x2: &b,
                tasks: &tags[..5],
            }),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let err = strategy
            .step(&mut method, Some(&teacher), &input, &mut rng)
            .expect_err("a task-2 image at task 2 must be refused")
            .to_string();
        assert!(err.contains("task 2"), "{err}");
    }
}

#[test]
fn cromo_lambda_is_beta_distributed_or_fixed() {
    let hw = 8;
    let (x, b) = (images(1, 4, hw), images(2, 4, hw));
    let tags = [0u32; 4];
    let mut method = small_method(MethodKind::Barlow, None, 2);
    let teacher = Teacher::snapshot(&method, TeacherMode::Eval).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let input = StepInput {
        task: 1,
        x1: &x,
        x2: &x,
        buffer: Some(BufferViews {
            x1: &b,
            x2: &b,
            tasks: &tags,
        }),
    };
    let strategy = Strategy::new(StrategyConfig::new(StrategyKind::CroMo)).unwrap();
    let lambdas: Vec<f64> = (0..40)
        .map(|_| {
            strategy
                .step(&mut method, Some(&teacher), &input, &mut rng)
                .unwrap()
                .batch
                .lambda
                .unwrap()
        })
        .collect();
    // Beta(1, 1) = U(0, 1): 40 draws span most of the interval and are not constant.
    let lo = lambdas.iter().cloned().fold(1.0, f64::min);
    let hi = lambdas.iter().cloned().fold(0.0, f64::max);
    assert!(lo < 0.2 && hi > 0.8, "λ range [{lo}, {hi}]");
    let mut cfg = StrategyConfig::new(StrategyKind::CroMo);
    cfg.mix_lambda = Some(0.7);
    let fixed = Strategy::new(cfg).unwrap();
    let out = fixed
        .step(&mut method, Some(&teacher), &input, &mut rng)
        .unwrap();
    assert_eq!(out.batch.lambda, Some(0.7));
}

fn grad_check(
    kind: MethodKind,
    skind: StrategyKind,
    mix: Option<MixKind>,
    x: &[Tensor; 4],
    tags: &[u32],
) {
    let label = format!("{kind} {skind} mix {mix:?}");
    let mut method = small_method(kind, mix, 21);
    let teacher = Teacher::snapshot(&method, TeacherMode::Eval).unwrap();
    let strategy = Strategy::new(StrategyConfig::new(skind)).unwrap();
    let input = StepInput {
        task: 1,
        x1: &x[0],
        x2: &x[1],
        buffer: Some(BufferViews {
            x1: &x[2],
            x2: &x[3],
            tasks: tags,
        }),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let out = strategy
        .step(&mut method, Some(&teacher), &input, &mut rng)
        .unwrap();
    let total = scalar(&out.loss.total);
    assert!(total.is_finite(), "{label}: loss {total}");
    assert_eq!(out.loss.method_mix.is_some(), mix.is_some(), "{label}");
    let grads = out.loss.total.backward().unwrap();
    let trainable: HashSet<String> = method
        .trainable_vars()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // Every trainable tensor of the parts the loss uses has a finite gradient.
    for (name, var) in method.trainable_vars() {
        let used = !name.starts_with("distill_predictor.") || skind.needs_distill_predictor();
        match grads.get(var.as_tensor()) {
            Some(g) => {
                let s = scalar(&g.sqr().unwrap().sum_all().unwrap());
                assert!(s.is_finite(), "{label}: gradient of {name} is not finite");
            }
            None => assert!(!used, "{label}: no gradient for {name}"),
        }
    }
    // State never gets a gradient: online BatchNorm statistics, EMA target, teacher.
    let data = method.varmap().data().lock().unwrap();
    for (name, var) in data.iter() {
        assert!(
            [
                "backbone.",
                "projector.",
                "predictor.",
                "distill_predictor."
            ]
            .iter()
            .any(|p| name.starts_with(p)),
            "{label}: unexpected variable {name} in the student's VarMap"
        );
        if !trainable.contains(name) {
            assert!(
                is_bn_buffer(name),
                "{label}: {name} neither trainable nor a BN buffer"
            );
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{label}: gradient on {name}"
            );
        }
    }
    if let Some(ema) = method.ema() {
        for (name, var) in ema.varmap().data().lock().unwrap().iter() {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{label}: gradient on ema.{name}"
            );
        }
    }
    for (name, t) in teacher.tensors().unwrap() {
        assert!(
            grads.get(&t).is_none(),
            "{label}: gradient on teacher {name}"
        );
    }
}

#[test]
fn every_method_and_strategy_backpropagates_into_trainable_vars_only() {
    let hw = 32;
    let x = [
        images(1, 8, hw),
        images(2, 8, hw),
        images(3, 4, hw),
        images(4, 4, hw),
    ];
    let tags = [0u32; 4];
    for kind in MethodKind::ALL {
        for skind in StrategyKind::ALL {
            grad_check(kind, skind, None, &x, &tags);
        }
        for mix in [MixKind::MixCo, MixKind::IMix] {
            grad_check(kind, StrategyKind::CroMo, Some(mix), &x, &tags);
        }
    }
}

#[test]
fn strategies_refuse_missing_inputs() {
    let hw = 8;
    let x = images(1, 4, hw);
    let tags = [0u32; 4];
    let method_cfg = |dp: bool| {
        let mut c = MethodConfig::new(MethodKind::SimClr, Arch::SmallCnn);
        c.proj_hidden = 16;
        c.proj_out = 8;
        c.distill_predictor = dp;
        c
    };
    let mut with_g = Method::new(method_cfg(true), Arch::SmallCnn, &Device::Cpu, 1).unwrap();
    let mut without_g = Method::new(method_cfg(false), Arch::SmallCnn, &Device::Cpu, 1).unwrap();
    let teacher = Teacher::snapshot(&with_g, TeacherMode::Eval).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let no_buffer = StepInput {
        task: 1,
        x1: &x,
        x2: &x,
        buffer: None,
    };
    let cassle = Strategy::new(StrategyConfig::new(StrategyKind::Cassle)).unwrap();
    let err = cassle
        .step(&mut with_g, None, &no_buffer, &mut rng)
        .err()
        .unwrap();
    assert!(err.to_string().contains("teacher"), "{err}");
    let err = cassle
        .step(&mut without_g, Some(&teacher), &no_buffer, &mut rng)
        .err()
        .unwrap();
    assert!(err.to_string().contains("distillation predictor"), "{err}");
    let er = Strategy::new(StrategyConfig::new(StrategyKind::Replay)).unwrap();
    let err = er
        .step(&mut with_g, None, &no_buffer, &mut rng)
        .err()
        .unwrap();
    assert!(err.to_string().contains("buffer"), "{err}");
    // Task 0 is plain SSL: no teacher, no buffer, no predictor needed.
    let task0 = StepInput {
        task: 0,
        ..no_buffer
    };
    for skind in StrategyKind::ALL {
        let s = Strategy::new(StrategyConfig::new(skind)).unwrap();
        let out = s.step(&mut without_g, None, &task0, &mut rng).unwrap();
        assert!(out.loss.distill.is_none() && out.loss.mixed.is_none() && !out.batch.teacher);
    }
    // Mis-shaped buffer views.
    let small = images(2, 4, 4);
    let bad = StepInput {
        task: 1,
        x1: &x,
        x2: &x,
        buffer: Some(BufferViews {
            x1: &small,
            x2: &small,
            tasks: &tags,
        }),
    };
    assert!(er.step(&mut with_g, None, &bad, &mut rng).is_err());
    // Invalid configurations.
    let mut c = StrategyConfig::new(StrategyKind::CroMo);
    c.mix_lambda = Some(1.5);
    assert!(Strategy::new(c).is_err());
    let mut c = StrategyConfig::new(StrategyKind::Pnr);
    c.distill_weight = Some(f64::NAN);
    assert!(Strategy::new(c).is_err());
    // PNR with VICReg and w ≥ λ_d would be unbounded below.
    let mut vcfg = MethodConfig::new(MethodKind::Vicreg, Arch::SmallCnn);
    vcfg.proj_hidden = 16;
    vcfg.proj_out = 8;
    vcfg.distill_predictor = true;
    let mut vic = Method::new(vcfg, Arch::SmallCnn, &Device::Cpu, 1).unwrap();
    let vteacher = Teacher::snapshot(&vic, TeacherMode::Eval).unwrap();
    let mut c = StrategyConfig::new(StrategyKind::Pnr);
    c.pnr_negative_weight = Some(25.0);
    let err = Strategy::new(c)
        .unwrap()
        .step(&mut vic, Some(&vteacher), &no_buffer, &mut rng)
        .err()
        .unwrap();
    assert!(err.to_string().contains("unbounded"), "{err}");
}

#[test]
fn teacher_restore_round_trips_and_checks_names() {
    let method = small_method(MethodKind::Byol, None, 3);
    let teacher = Teacher::snapshot(&method, TeacherMode::Eval).unwrap();
    let saved = teacher.tensors().unwrap();
    let again = Teacher::restore(&method, &saved, TeacherMode::Eval).unwrap();
    let x = images(1, 4, 16);
    assert_eq!(
        bits(&teacher.forward(&x).unwrap()),
        bits(&again.forward(&x).unwrap())
    );
    assert!(Teacher::restore(&method, &saved[1..], TeacherMode::Eval).is_err());
    let mut extra = saved.clone();
    extra.push((
        "predictor.0.weight".to_string(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    ));
    let err = Teacher::restore(&method, &extra, TeacherMode::Eval)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("predictor.0.weight"), "{err}");
    // The teacher is independent of the student: changing the student leaves it as it was.
    let before = bits(&again.forward(&x).unwrap());
    for (_, var) in method.trainable_vars() {
        var.set(&var.as_tensor().affine(0.5, 0.1).unwrap()).unwrap();
    }
    assert_eq!(bits(&again.forward(&x).unwrap()), before);
}

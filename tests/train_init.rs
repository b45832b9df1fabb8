//! `cromo train` from given encoder weights (`--init`), frozen encoder BatchNorm (`--bn frozen`)
//! and the retention probe, end to end on the shipped CIFAR-10 subset (tiny budgets).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use cromo::eval::read_report;
use cromo::learner::trainer::{
    load_data, load_retention, retention_accuracy, BnMode, EvalKind, RetentionConfig, RunEnd,
    TrainConfig, Trainer,
};
use cromo::models::weights;

mod common;

use common::subset;

fn tiny_config(strategy: &str) -> TrainConfig {
    let mut c = common::tiny_train_config(strategy);
    c.eval = EvalKind::Both;
    c.seed = 5;
    c
}

fn run_to_end(cfg: TrainConfig, out: &Path) {
    let data = load_data(&cfg).unwrap();
    let mut t = Trainer::new(cfg, data, &Device::Cpu, out)
        .unwrap()
        .quiet(true);
    assert_eq!(t.run().unwrap(), RunEnd::Finished);
}

fn tensors(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A run started from another run's final encoder measures, before its first task, exactly the
/// accuracies the other run ended with (same data, same split, same probe); with `--bn frozen`
/// the encoder's running statistics stay those of the start while its weights train.
#[test]
fn init_from_a_run_starts_where_it_ended_and_frozen_bn_keeps_the_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    run_to_end(tiny_config("finetune"), &a);
    let ra = read_report(&a).unwrap();
    let last = ra.tasks.last().unwrap();

    let b = dir.path().join("b");
    let mut cfg = tiny_config("cassle");
    cfg.init = Some(a.join("encoder.safetensors"));
    cfg.bn = BnMode::Frozen;
    run_to_end(cfg, &b);
    let rb = read_report(&b).unwrap();
    let init = rb.init.as_ref().expect("starting encoder evaluated");
    assert_eq!(init.la, last.la, "LA of the starting encoder");
    assert_eq!(init.knn, last.knn, "kNN of the starting encoder");
    assert!(
        rb.notes
            .iter()
            .any(|n| n.contains("encoder initialised from") && n.contains("20 tensors loaded")),
        "{:?}",
        rb.notes
    );

    // The random-init baseline is measured too (run a: no --init).
    assert!(ra.init.as_ref().and_then(|i| i.la).is_some());

    let wa = tensors(&a.join("encoder.safetensors"));
    let wb = tensors(&b.join("encoder.safetensors"));
    let (mut stats, mut trained) = (0, 0);
    for (name, ta) in &wa {
        let tb = &wb[name];
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            assert!(same(ta, tb), "{name} changed although BatchNorm was frozen");
            stats += 1;
        } else if name.ends_with("conv.weight") && !same(ta, tb) {
            trained += 1;
        }
    }
    assert!(stats >= 8, "{stats} running statistics compared");
    assert!(trained >= 1, "no convolution weight was trained");
}

/// Starting from weights that do not fit is an error naming the tensor, and leaves no run
/// folder behind; a classifier head in the file is skipped and reported.
#[test]
fn init_file_problems_are_named_and_a_head_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let mut c = tiny_config("finetune");
    c.tasks = 1;
    c.eval = EvalKind::None;
    c.eval_init = false;
    run_to_end(c.clone(), &a);
    let enc = tensors(&a.join("encoder.safetensors"));

    // One tensor missing.
    let mut missing = enc.clone();
    let gone = missing
        .keys()
        .find(|k| k.ends_with("conv.weight"))
        .unwrap()
        .clone();
    missing.remove(&gone);
    let pm = dir.path().join("missing.safetensors");
    candle_core::safetensors::save(&missing, &pm).unwrap();
    let mut cfg = c.clone();
    cfg.init = Some(pm.clone());
    let out = dir.path().join("never");
    let data = load_data(&cfg).unwrap();
    let err = Trainer::new(cfg, data, &Device::Cpu, &out)
        .err()
        .expect("missing tensor must fail")
        .to_string();
    assert!(
        err.contains(&gone) && err.contains("missing.safetensors"),
        "{err}"
    );
    assert!(!out.exists(), "a failed start left {}", out.display());

    // A head is skipped and reported.
    let mut with_head = enc.clone();
    let d = 256;
    with_head.insert(
        "fc.weight".into(),
        Tensor::zeros((10, d), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    with_head.insert(
        "fc.bias".into(),
        Tensor::zeros(10, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let ph = dir.path().join("head.safetensors");
    candle_core::safetensors::save(&with_head, &ph).unwrap();
    let exe = env!("CARGO_BIN_EXE_cromo");
    let o = Command::new(exe)
        .args([
            "train",
            "--data",
            subset().to_str().unwrap(),
            "--arch",
            "small-cnn",
            "--tasks",
            "1",
            "--batch",
            "16",
            "--epochs-per-task",
            "1",
            "--images-per-class",
            "20",
            "--test-images-per-class",
            "5",
            "--max-steps-per-task",
            "1",
            "--eval",
            "none",
            "--no-eval-init",
            "--init",
            ph.to_str().unwrap(),
            "--out",
            dir.path().join("h").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("20 tensors loaded")
            && stderr.contains("classifier head skipped (fc.bias, fc.weight)"),
        "{stderr}"
    );
}

/// The retention probe is measured before the first task and after each, on the held-out set
/// resized to the training size, and equals the probe fitted directly on the same encoder.
#[test]
fn retention_probe_before_and_after_every_task() {
    let r = RetentionConfig {
        data: subset().to_str().unwrap().into(),
        data_root: None,
        images_per_class: 12,
        test_images_per_class: 6,
    };
    // Resized to another training size: every image is 40x40, 12 + 6 per class.
    let (tr, te) = load_retention(&r, 40, 40, 3).unwrap();
    assert_eq!(
        (tr.height, tr.width, tr.channels, tr.len()),
        (40, 40, 3, 120)
    );
    assert_eq!((te.height, te.width, te.len()), (40, 40, 60));

    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let mut base = tiny_config("finetune");
    base.tasks = 1;
    base.eval = EvalKind::None;
    base.eval_init = false;
    run_to_end(base, &a);

    let b = dir.path().join("b");
    let mut cfg = tiny_config("er");
    cfg.buffer = 40;
    cfg.buffer_batch = 8;
    cfg.eval = EvalKind::Linear;
    cfg.eval_init = false;
    cfg.init = Some(a.join("encoder.safetensors"));
    cfg.retention = Some(r.clone());
    run_to_end(cfg, &b);
    let rb = read_report(&b).unwrap();
    let start = rb
        .init
        .as_ref()
        .and_then(|i| i.retention)
        .expect("initial retention");
    assert!(
        rb.init.as_ref().unwrap().la.is_none(),
        "--no-eval-init: no LA at start"
    );
    assert_eq!(rb.tasks.len(), 2);
    for row in &rb.tasks {
        let v = row.retention.expect("retention after every task");
        assert!((0.0..=1.0).contains(&v));
    }
    // Independently: the same encoder, the same sets at the training size.
    let enc = weights::load_encoder(
        a.join("encoder.safetensors"),
        "small-cnn".parse().unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let sets = load_retention(&r, 32, 32, 3).unwrap();
    let direct = retention_accuracy(enc.encoder.as_ref(), &sets, &Device::Cpu).unwrap();
    assert_eq!(start, direct);
    let md = std::fs::read_to_string(b.join("report.md")).unwrap();
    assert!(md.contains("| retention |") && md.contains("initial retention-probe accuracy"));
}

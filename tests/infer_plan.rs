//! Inference plans (src/infer/plan.rs): built from the weights alone, with BatchNorm folded
//! into the convolutions, the reference executor `run_cpu` must reproduce the candle models of
//! src/models (BatchNorm applied separately, eval mode) on every architecture, with and without
//! a head, and the folded linear probe must reproduce `LinearProbe::logits`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{max_abs, max_abs_diff, random_input, random_weights};
use cromo::eval::LinearProbe;
use cromo::infer::plan::{
    same_padding, Activation, Conv, Head, InferencePlan, Layer, Op, Pad, Padding,
};
use cromo::models::{build_encoder, Arch, Classifier};

/// Input sizes per architecture: one even, one odd (asymmetric TF "same" padding, ceil sizes).
fn sizes(arch: Arch) -> [(usize, usize); 2] {
    match arch {
        Arch::ResNet18 => [(64, 64), (45, 38)],
        Arch::ResNet18Cifar => [(32, 32), (19, 23)],
        Arch::EfficientNetLite0 => [(64, 64), (57, 50)],
        Arch::SmallCnn => [(32, 32), (17, 22)],
    }
}

#[test]
fn plan_matches_the_candle_encoder_on_every_arch() {
    for (ai, arch) in Arch::ALL.into_iter().enumerate() {
        let w = random_weights(arch, None, 10 + ai as u64);
        let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
        let enc = build_encoder(arch, vb).unwrap();
        let plan = InferencePlan::from_weights(arch, &w, None).unwrap();
        assert_eq!(plan.out_dim(), arch.feature_dim());
        for (si, (h, wd)) in sizes(arch).into_iter().enumerate() {
            let x = random_input(100 + si as u64, 2, h, wd);
            let want = enc.forward_t(&x, false).unwrap();
            let got = plan.run_cpu(&x).unwrap();
            let d = max_abs_diff(&got, &want);
            println!(
                "{arch} {h}x{wd}: max diff {d:.2e}, output scale {:.2}",
                max_abs(&want)
            );
            assert!(max_abs(&want) > 0.1, "{arch}: degenerate output");
            assert!(
                d <= 1e-4,
                "{arch} {h}x{wd}: plan differs from the model by {d}"
            );
        }
    }
}

#[test]
fn plan_with_the_checkpoint_head_matches_the_classifier() {
    for (ai, arch) in [Arch::ResNet18, Arch::EfficientNetLite0]
        .into_iter()
        .enumerate()
    {
        let w = random_weights(arch, Some(10), 20 + ai as u64);
        let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
        let clf = Classifier::new(arch, vb, 10).unwrap();
        let plan = InferencePlan::from_weights(arch, &w, Some(Head::Checkpoint)).unwrap();
        assert_eq!(plan.out_dim(), 10);
        let x = random_input(7, 2, 48, 48);
        let want = clf.logits(&x).unwrap();
        let d = max_abs_diff(&plan.run_cpu(&x).unwrap(), &want);
        assert!(d <= 1e-4, "{arch}: logits differ by {d}");
    }
}

#[test]
fn folded_probe_matches_linear_probe_logits() {
    let arch = Arch::SmallCnn;
    let w = random_weights(arch, None, 30);
    let (c, d) = (3, arch.feature_dim());
    let u = common::uniform(31, c * d + c + 2 * d);
    let probe = LinearProbe {
        dim: d,
        weight: u[..c * d].to_vec(),
        bias: u[c * d..c * d + c].to_vec(),
        mean: u[c * d + c..c * d + c + d]
            .iter()
            .map(|x| 0.5 * x)
            .collect(),
        std: u[c * d + c + d..].iter().map(|x| 0.2 + x.abs()).collect(),
        classes: vec![2, 5, 7],
        class_names: vec!["a".into(), "b".into(), "c".into()],
        fit_info: None,
    };
    let enc_plan = InferencePlan::from_weights(arch, &w, None).unwrap();
    let plan = InferencePlan::from_weights(arch, &w, Some(Head::Probe(&probe))).unwrap();
    let x = random_input(32, 3, 32, 32);
    let feats = enc_plan.run_cpu(&x).unwrap();
    let want = probe.logits_tensor(&feats).unwrap();
    let got = plan.run_cpu(&x).unwrap();
    let diff = max_abs_diff(&got, &want);
    assert!(
        diff <= 1e-4 * max_abs(&want).max(1.0),
        "probe logits differ by {diff}"
    );
}

#[test]
fn plans_have_the_expected_fused_structure() {
    let count = |p: &InferencePlan| {
        let convs = p
            .layers()
            .iter()
            .filter(|l| matches!(l.op, Op::Conv(_)))
            .count();
        let dw = p
            .layers()
            .iter()
            .filter(|l| matches!(&l.op, Op::Conv(c) if c.depthwise))
            .count();
        let res = p.layers().iter().filter(|l| l.residual.is_some()).count();
        let pools = p
            .layers()
            .iter()
            .filter(|l| matches!(l.op, Op::MaxPool(_)))
            .count();
        (convs, dw, res, pools)
    };
    let eff = random_weights(Arch::EfficientNetLite0, Some(1000), 1);
    let p =
        InferencePlan::from_weights(Arch::EfficientNetLite0, &eff, Some(Head::Checkpoint)).unwrap();
    // stem + block 0 (dw, project) + 15 blocks x (expand, dw, project) + head = 49 convolutions,
    // 16 depthwise; skips in blocks with stride 1 and equal widths: 1+1+2+2+3 = 9.
    assert_eq!(count(&p), (49, 16, 9, 0));
    assert!(matches!(p.layers().last().unwrap().op, Op::Linear(_)));
    assert_eq!(p.out_dim(), 1000);
    let s = p.shapes(224, 224).unwrap();
    assert_eq!((s[s.len() - 3].c, s[s.len() - 3].h), (1280, 7));
    assert_eq!(
        p.shapes(225, 225).unwrap()[1].h,
        113,
        "TF same: ceil(225 / 2)"
    );
    let r = random_weights(Arch::ResNet18, None, 2);
    let p = InferencePlan::from_weights(Arch::ResNet18, &r, None).unwrap();
    // conv1 + 8 blocks x 2 + 3 downsamples; residual on every block's second conv.
    assert_eq!(count(&p), (20, 0, 8, 1));
    let s = p.shapes(224, 224).unwrap();
    assert_eq!((s[2].c, s[2].h), (64, 56), "after the max-pool");
    let rc = random_weights(Arch::ResNet18Cifar, None, 3);
    let p = InferencePlan::from_weights(Arch::ResNet18Cifar, &rc, None).unwrap();
    assert_eq!(count(&p), (20, 0, 8, 0));
}

#[test]
fn tf_same_padding_values() {
    // TF: out = ceil(in / s); pad = max((out - 1) * s + k - in, 0), extra at the end.
    assert_eq!(same_padding(224, 3, 2), (0, 1));
    assert_eq!(same_padding(224, 5, 2), (1, 2));
    assert_eq!(same_padding(7, 3, 2), (1, 1));
    assert_eq!(same_padding(56, 5, 1), (2, 2));
    assert_eq!(same_padding(1, 5, 2), (2, 2));
    let p = Padding::Same.resolve(224, 7, 5, 2);
    assert_eq!((p.top, p.bottom, p.left, p.right), (1, 2, 2, 2));
}

#[test]
fn bad_weights_and_inputs_are_clear_errors() {
    let arch = Arch::SmallCnn;
    let mut w = random_weights(arch, None, 40);
    w.remove("stages.2.bn.running_var");
    let e = InferencePlan::from_weights(arch, &w, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stages.2.bn.running_var"), "{e}");
    let mut w = random_weights(arch, None, 41);
    w.insert(
        "stages.1.conv.weight".into(),
        Tensor::zeros((64, 31, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = InferencePlan::from_weights(arch, &w, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stages.1.conv.weight") && e.contains("[64, 31, 3, 3]"),
        "{e}"
    );
    let w = random_weights(arch, None, 42);
    let e = InferencePlan::from_weights(arch, &w, Some(Head::Checkpoint)).unwrap_err();
    assert!(e.to_string().contains("fc.weight"), "{e}");
    let plan = InferencePlan::from_weights(arch, &w, None).unwrap();
    let unpadded = Layer {
        name: "valid".into(),
        op: Op::Conv(Conv {
            cin: 3,
            cout: 2,
            k: 3,
            stride: 1,
            padding: Padding::Explicit(Pad::default()),
            depthwise: false,
            weight: Tensor::zeros((2, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
            bias: Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
            act: Activation::None,
        }),
        input: 0,
        residual: None,
    };
    let small = InferencePlan::new(arch, 3, vec![unpadded]).unwrap();
    let e = small
        .run_cpu(&random_input(1, 1, 2, 5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("too small") && e.contains("`valid`"), "{e}");
    let gray = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let e = plan.run_cpu(&gray).unwrap_err().to_string();
    assert!(e.contains("channels"), "{e}");
    // A file: load names the file when the weights do not fit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let w = random_weights(Arch::SmallCnn, None, 43);
    candle_core::safetensors::save(&w, &path).unwrap();
    let e = InferencePlan::load(&path, Arch::ResNet18, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("enc.safetensors"), "{e}");
    assert!(InferencePlan::load(&path, Arch::SmallCnn, None).is_ok());
}

//! Coding-rate reduction against NumPy (tests/fixtures/eval/coding_rate.json, made by
//! tools/gen_eval_fixtures.py with slogdet on the d×d forms) and a hand-computed case.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use cromo::eval::{
    coding_rate, coding_rate_reduction, coding_rate_reduction_views, feature_rows, DEFAULT_EPS,
};

fn fixture() -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/coding_rate.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// Two orthonormal samples e1, e2 in d = 2, m = 2, ε = 0.1:
/// R = ½ log det(I + 2/(2·0.01) I) = ½ · 2 · log 101 = log 101.
/// Each sample its own group (tr Πⱼ = 1): R_c = 2 · 1/(2·2) · log(1 + 2/(1·0.01)) = ½ log 201.
#[test]
fn hand_computed_orthonormal_case() {
    let z = [1.0f32, 0.0, 0.0, 1.0];
    let r = coding_rate(&z, 2, 0.1, false).unwrap();
    assert!((r - 101f64.ln()).abs() < 1e-12, "{r}");
    let rr = coding_rate_reduction(&z, 2, &[0, 1], 0.1, false).unwrap();
    assert!((rr.r - 101f64.ln()).abs() < 1e-12);
    assert!((rr.rc - 0.5 * 201f64.ln()).abs() < 1e-12, "{rr:?}");
    assert!((rr.delta - (101f64.ln() - 0.5 * 201f64.ln())).abs() < 1e-12);
    // Both samples in one group: R_c = 2/(2·2) · log det(I + 2/(2·0.01) I) = R, so ΔR = 0.
    let one = coding_rate_reduction(&z, 2, &[0, 0], 0.1, false).unwrap();
    assert!(one.delta.abs() < 1e-12, "{one:?}");
}

#[test]
fn matches_numpy_in_both_gram_regimes() {
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let d = case["d"].as_u64().unwrap() as usize;
        let eps = case["eps"].as_f64().unwrap();
        assert_eq!(eps, DEFAULT_EPS);
        let z1 = floats(&case["z1"]);
        let z2 = floats(&case["z2"]);
        for (key, normalize) in [("raw", false), ("normalized", true)] {
            let got = coding_rate_reduction_views(&z1, &z2, d, eps, normalize).unwrap();
            let want = &case[key];
            let (r, rc, delta) = (
                want["r"].as_f64().unwrap(),
                want["rc"].as_f64().unwrap(),
                want["delta"].as_f64().unwrap(),
            );
            println!("{name} {key}: cromo {got:?} numpy R {r} Rc {rc} ΔR {delta}");
            assert!(rel_close(got.r, r, 1e-9), "{name} {key} R");
            assert!(rel_close(got.rc, rc, 1e-9), "{name} {key} Rc");
            assert!(rel_close(got.delta, delta, 1e-9), "{name} {key} ΔR");
            // R alone, through the public single-rate function.
            let mut z = z1.clone();
            z.extend_from_slice(&z2);
            assert!(rel_close(
                coding_rate(&z, d, eps, normalize).unwrap(),
                r,
                1e-9
            ));
        }
    }
}

#[test]
fn feature_maps_are_average_pooled() {
    let fx = fixture();
    let fm = &fx["feature_map"];
    let shape: Vec<usize> = fm["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let t1 = Tensor::from_vec(floats(&fm["x1"]), shape.as_slice(), &Device::Cpu).unwrap();
    let t2 = Tensor::from_vec(floats(&fm["x2"]), shape.as_slice(), &Device::Cpu).unwrap();
    let (p1, d1) = feature_rows(&t1).unwrap();
    let (p2, d2) = feature_rows(&t2).unwrap();
    assert_eq!(
        (d1, d2, p1.len()),
        (shape[1], shape[1], shape[0] * shape[1])
    );
    // Pooling by hand for the first sample's first channel.
    let hw = shape[2] * shape[3];
    let x1 = floats(&fm["x1"]);
    let mean = x1[..hw].iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
    assert!((p1[0] as f64 - mean).abs() < 1e-6);
    let got = coding_rate_reduction_views(&p1, &p2, d1, 0.1, true).unwrap();
    let want = fm["pooled_normalized"]["delta"].as_f64().unwrap();
    println!("pooled feature map ΔR: cromo {} numpy {want}", got.delta);
    assert!(rel_close(got.delta, want, 1e-5));
    // (B, D) passes through; other ranks are refused.
    let flat = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (2, 3), &Device::Cpu).unwrap();
    assert_eq!(
        feature_rows(&flat).unwrap(),
        (vec![1., 2., 3., 4., 5., 6.], 3)
    );
    let r3 = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(feature_rows(&r3).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    assert!(coding_rate(&[1.0, 2.0, 3.0], 2, 0.1, false).is_err());
    assert!(coding_rate(&[1.0, f32::INFINITY], 2, 0.1, false).is_err());
    assert!(coding_rate(&[1.0, 2.0], 2, 0.0, false).is_err());
    assert!(coding_rate(&[0.0, 0.0], 2, 0.1, true).is_err());
    assert!(coding_rate(&[], 2, 0.1, false).is_err());
    assert!(coding_rate_reduction(&[1.0, 0.0, 0.0, 1.0], 2, &[0], 0.1, false).is_err());
    assert!(
        coding_rate_reduction_views(&[1.0, 0.0], &[1.0, 0.0, 0.0, 1.0], 2, 0.1, false).is_err()
    );
}

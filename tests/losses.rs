//! SSL losses against PyTorch (values and gradients) and against closed-form cases.
//!
//! The PyTorch references are in `tests/fixtures/losses/losses.json`, written by
//! `tools/gen_loss_fixtures.py` (command in its header) from float32 inputs, evaluated in float64.
//!
//! Tolerance: every entry `a` of a cromo result (f32) must satisfy
//! `|a − e| ≤ 1e-4 · max(|e|, floor)` against the reference `e`, where `floor` is 1e-2 × the
//! largest `|e|` of the same tensor (so entries that are near zero by cancellation are held to
//! 1e-6 of the tensor's scale rather than to their own tiny magnitude); for scalar values the
//! floor is 1e-2 (an absolute error of at most 1e-6).

use candle_core::{DType, Device, Tensor, Var};
use cromo::losses::*;
use cromo::Error;
use rand::SeedableRng;
use serde_json::Value;
use std::collections::HashMap;
use std::f64::consts::LN_2;

const REL_TOL: f64 = 1e-4;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/losses/losses.json"
    );
    let text = std::fs::read_to_string(path).expect("read the loss fixture");
    serde_json::from_str(&text).expect("parse the loss fixture")
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

fn tensor_f32(v: &Value) -> Tensor {
    let (shape, data) = shape_data(v);
    let data: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn tensor_u32(v: &Value) -> Tensor {
    let (shape, data) = shape_data(v);
    let data: Vec<u32> = data.iter().map(|&x| x as u32).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    assert_eq!(
        t.dims(),
        &[] as &[usize],
        "expected a scalar, got {:?}",
        t.dims()
    );
    t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

/// Largest `|a − e| / max(|e|, floor)` over the entries; panics on a shape mismatch.
fn rel_err(actual: &[f64], expected: &[f64], floor: f64) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| {
            assert!(a.is_finite(), "non-finite result {a}");
            (a - e).abs() / e.abs().max(floor)
        })
        .fold(0.0, f64::max)
}

fn check_scalar(case: &str, what: &str, actual: f64, expected: f64) -> f64 {
    let err = rel_err(&[actual], &[expected], 1e-2);
    assert!(
        err <= REL_TOL,
        "{case}: {what} = {actual}, PyTorch {expected} (rel err {err:.2e})"
    );
    err
}

fn check_tensor(case: &str, what: &str, actual: &Tensor, expected: &Value) -> f64 {
    let (shape, e) = shape_data(expected);
    assert_eq!(actual.dims(), shape.as_slice(), "{case}: {what} shape");
    let a = flat(actual);
    let scale = e.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = rel_err(&a, &e, 1e-2 * scale.max(f64::MIN_POSITIVE));
    assert!(
        err <= REL_TOL,
        "{case}: {what} differs from PyTorch (rel err {err:.2e})\n cromo {a:?}\n torch {e:?}"
    );
    err
}

/// Every fixture case: value, extra outputs, gradients of the differentiable inputs and the
/// absence of gradient into detached inputs.
#[test]
fn losses_match_pytorch_values_and_gradients() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 18, "fixture has only {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let loss = case["loss"].as_str().unwrap();
        let cfg = &case["config"];
        let inputs = case["inputs"].as_object().unwrap();
        let float_names: Vec<&str> = case["grads"]
            .as_object()
            .unwrap()
            .keys()
            .map(|s| s.as_str())
            .chain(
                case["no_grad"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap()),
            )
            .collect();
        // Differentiable inputs (and those that must not be differentiated) are Vars.
        let vars: HashMap<&str, Var> = float_names
            .iter()
            .map(|&n| (n, Var::from_tensor(&tensor_f32(&inputs[n])).unwrap()))
            .collect();
        let t = |n: &str| -> Tensor {
            match vars.get(n) {
                Some(v) => v.as_tensor().clone(),
                None => tensor_f32(&inputs[n]),
            }
        };
        let f = |k: &str| cfg[k].as_f64().unwrap();
        let mut outputs: HashMap<String, Tensor> = HashMap::new();
        let value: Tensor = match loss {
            "info_nce" => {
                let extra = inputs.get("extra_negatives").map(|_| t("extra_negatives"));
                let c = InfoNceConfig {
                    temperature: f("temperature"),
                };
                info_nce(&t("z1"), &t("z2"), extra.as_ref(), &c).unwrap()
            }
            "cassle_simclr_distill" => {
                let c = InfoNceConfig {
                    temperature: f("temperature"),
                };
                cassle_simclr_distill(&t("g1"), &t("g2"), &t("f1"), &t("f2"), &c).unwrap()
            }
            "pnr_simclr" => {
                let c = InfoNceConfig {
                    temperature: f("temperature"),
                };
                let terms = pnr_simclr(
                    &t("z1"),
                    &t("z2"),
                    &t("p1"),
                    &t("p2"),
                    &t("f1"),
                    &t("f2"),
                    &c,
                )
                .unwrap();
                outputs.insert("main".into(), terms.main.clone());
                outputs.insert("reg".into(), terms.reg.clone());
                terms.total().unwrap()
            }
            "moco_v2" => {
                let c = MocoConfig {
                    temperature: f("temperature"),
                    ..Default::default()
                };
                moco_v2(&t("q"), &t("k"), &t("queue"), &c).unwrap()
            }
            "moco_v2_symmetric" => {
                let c = MocoConfig {
                    temperature: f("temperature"),
                    ..Default::default()
                };
                moco_v2_symmetric(
                    &t("q1"),
                    &t("q2"),
                    &t("k1"),
                    &t("k2"),
                    &t("queue1"),
                    &t("queue2"),
                    &c,
                )
                .unwrap()
            }
            "byol" => byol(&t("p"), &t("z_target")).unwrap(),
            "byol_symmetric" => {
                byol_symmetric(&t("p1"), &t("p2"), &t("z1_target"), &t("z2_target")).unwrap()
            }
            "barlow" => {
                let c: BarlowConfig = serde_json::from_value(cfg.clone()).unwrap();
                barlow(&t("z1"), &t("z2"), &c).unwrap()
            }
            "vicreg" => {
                let terms = vicreg(&t("z1"), &t("z2"), &VicregConfig::default()).unwrap();
                outputs.insert("invariance".into(), terms.invariance);
                outputs.insert("variance".into(), terms.variance);
                outputs.insert("covariance".into(), terms.covariance);
                terms.total
            }
            "corinfomax_two_steps" => {
                let c: CorInfoMaxConfig = serde_json::from_value(cfg.clone()).unwrap();
                let s0 = CorInfoMaxState::new(16, &c, DType::F32, &Device::Cpu).unwrap();
                let a = corinfomax(&t("z1a"), &t("z2a"), &s0, &c).unwrap();
                outputs.insert("step1_loss".into(), a.loss.clone());
                outputs.insert("step1_mu1".into(), a.state.mu1.clone());
                outputs.insert("step1_mu2".into(), a.state.mu2.clone());
                outputs.insert("step1_r1".into(), a.state.r1.clone());
                outputs.insert("step1_r2".into(), a.state.r2.clone());
                let b = corinfomax(&t("z1b"), &t("z2b"), &a.state, &c).unwrap();
                outputs.insert("cov_loss".into(), b.cov_loss);
                outputs.insert("inv_loss".into(), b.inv_loss);
                outputs.insert("mu1".into(), b.state.mu1);
                outputs.insert("mu2".into(), b.state.mu2);
                outputs.insert("r1".into(), b.state.r1);
                outputs.insert("r2".into(), b.state.r2);
                b.loss
            }
            "corinfomax" => {
                let c: CorInfoMaxConfig = serde_json::from_value(cfg.clone()).unwrap();
                let s = CorInfoMaxState {
                    mu1: t("mu1"),
                    mu2: t("mu2"),
                    r1: t("r1"),
                    r2: t("r2"),
                };
                let o = corinfomax(&t("z1"), &t("z2"), &s, &c).unwrap();
                outputs.insert("cov_loss".into(), o.cov_loss);
                outputs.insert("inv_loss".into(), o.inv_loss);
                outputs.insert("mu1".into(), o.state.mu1);
                outputs.insert("mu2".into(), o.state.mu2);
                outputs.insert("r1".into(), o.state.r1);
                outputs.insert("r2".into(), o.state.r2);
                o.loss
            }
            "mixco" => {
                let c: MixcoConfig = serde_json::from_value(cfg.clone()).unwrap();
                let extra = inputs.get("extra_negatives").map(|_| t("extra_negatives"));
                mixco(&t("z_mix"), &t("keys"), &t("lambdas"), extra.as_ref(), &c).unwrap()
            }
            "imix_npair" => {
                let c: ImixConfig = serde_json::from_value(cfg.clone()).unwrap();
                let partners = tensor_u32(&inputs["partners"]);
                imix_npair(&t("q_mix"), &t("keys"), &t("lambdas"), &partners, &c).unwrap()
            }
            "imix_byol" => {
                let partners = tensor_u32(&inputs["partners"]);
                imix_byol(&t("p_mix"), &t("z_target"), &t("lambdas"), &partners).unwrap()
            }
            other => panic!("{name}: fixture names an unknown loss {other:?}"),
        };
        let mut worst = check_scalar(
            name,
            "value",
            scalar(&value),
            case["value"].as_f64().unwrap(),
        );
        for (k, expected) in case["outputs"].as_object().unwrap() {
            let actual = outputs
                .get(k.as_str())
                .unwrap_or_else(|| panic!("{name}: no cromo output {k}"));
            let err = match expected {
                Value::Number(x) => check_scalar(name, k, scalar(actual), x.as_f64().unwrap()),
                _ => check_tensor(name, k, actual, expected),
            };
            worst = worst.max(err);
        }
        let grads = value.backward().unwrap();
        for (k, expected) in case["grads"].as_object().unwrap() {
            let g = grads
                .get(vars[k.as_str()].as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient reached {k}"));
            worst = worst.max(check_tensor(name, &format!("d/d{k}"), g, expected));
        }
        for k in case["no_grad"].as_array().unwrap() {
            let k = k.as_str().unwrap();
            if let Some(g) = grads.get(vars[k].as_tensor()) {
                let m = flat(g).iter().fold(0.0f64, |m, x| m.max(x.abs()));
                assert!(m == 0.0, "{name}: a gradient of size {m} leaked into {k}");
            }
        }
        println!("{name}: max rel err {worst:.2e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Closed-form cases
// ---------------------------------------------------------------------------------------------

fn mat(rows: &[&[f32]]) -> Tensor {
    let d = rows[0].len();
    let v: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(v, (rows.len(), d), &Device::Cpu).unwrap()
}

/// Rows `offset..offset+n` of the `dim`-dimensional identity (orthonormal vectors).
fn basis(n: usize, offset: usize, dim: usize) -> Tensor {
    Tensor::eye(dim, DType::F32, &Device::Cpu)
        .unwrap()
        .narrow(0, offset, n)
        .unwrap()
}

fn close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-5 * expected.abs().max(1.0),
        "{what}: {actual} != {expected}"
    );
}

#[test]
fn info_nce_closed_forms() {
    let n = 4;
    // All 2n embeddings mutually orthogonal: every logit is 0, loss = log(2n − 1) at any τ.
    let z1 = basis(n, 0, 2 * n + 5);
    let z2 = basis(n, n, 2 * n + 5);
    let c1 = InfoNceConfig { temperature: 1.0 };
    close(
        scalar(&info_nce(&z1, &z2, None, &c1).unwrap()),
        ((2 * n - 1) as f64).ln(),
        "orthogonal",
    );
    // Five more orthogonal extra negatives join every denominator: log(2n − 1 + 5).
    let extra = basis(5, 2 * n, 2 * n + 5);
    close(
        scalar(&info_nce(&z1, &z2, Some(&extra), &c1).unwrap()),
        ((2 * n - 1 + 5) as f64).ln(),
        "orthogonal + extra",
    );
    // Identical views, samples orthogonal: loss = log(1 + (2n − 2) e^{−1/τ}); scaling a row does
    // not matter (cosine similarity).
    let t = 0.5;
    let z = basis(n, 0, n).affine(3.0, 0.0).unwrap();
    let v =
        scalar(&info_nce(&z, &basis(n, 0, n), None, &InfoNceConfig { temperature: t }).unwrap());
    close(
        v,
        (1.0 + (2 * n - 2) as f64 * (-1.0 / t).exp()).ln(),
        "aligned",
    );
}

#[test]
fn cassle_and_pnr_closed_forms() {
    let n = 3;
    let c = InfoNceConfig { temperature: 0.5 };
    // g = f, the 2n vectors orthonormal: each direction is −log(e^{2}/(e^{2} + 2n − 1)).
    let g1 = basis(n, 0, 2 * n);
    let g2 = basis(n, n, 2 * n);
    let v = scalar(&cassle_simclr_distill(&g1, &g2, &g1, &g2, &c).unwrap());
    let e = (2.0f64).exp();
    close(v, (1.0 + (2 * n - 1) as f64 / e).ln(), "cassle distill");
    // PNR with z, p, f all orthonormal and distinct (d = 6n): every logit is 0.
    // main: 2n−1 current + 2n−1 frozen candidates -> log(4n − 2); reg: 0 − log(4n − 2).
    let d = 6 * n;
    let terms = pnr_simclr(
        &basis(n, 0, d),
        &basis(n, n, d),
        &basis(n, 2 * n, d),
        &basis(n, 3 * n, d),
        &basis(n, 4 * n, d),
        &basis(n, 5 * n, d),
        &c,
    )
    .unwrap();
    let l = ((4 * n - 2) as f64).ln();
    close(scalar(&terms.main), l, "pnr main");
    close(scalar(&terms.reg), l, "pnr reg");
    // p = f: the positive p·f = 1 is not in the denominator, so reg = −2 + log(4n − 2) (< 0 for
    // small n) — the property that lets PNR's regulariser go negative.
    let terms = pnr_simclr(
        &basis(n, 0, d),
        &basis(n, n, d),
        &basis(n, 4 * n, d),
        &basis(n, 5 * n, d),
        &basis(n, 4 * n, d),
        &basis(n, 5 * n, d),
        &c,
    )
    .unwrap();
    close(scalar(&terms.reg), -2.0 + l, "pnr reg with p = f");
}

#[test]
fn moco_closed_form() {
    // q = k, queue orthogonal to q: loss = log(1 + K e^{−1/τ}).
    let (n, k) = (3, 5);
    let q = basis(n, 0, n + k);
    let queue = basis(k, n, n + k);
    let c = MocoConfig::default();
    let v = scalar(&moco_v2(&q, &q, &queue, &c).unwrap());
    close(
        v,
        (1.0 + k as f64 * (-1.0 / c.temperature).exp()).ln(),
        "moco",
    );
    let s = scalar(&moco_v2_symmetric(&q, &q, &q, &q, &queue, &queue, &c).unwrap());
    close(s, v, "symmetric moco of identical views");
}

#[test]
fn byol_closed_forms_and_schedule() {
    let z = mat(&[&[1.0, 2.0, 0.0], &[0.0, -1.0, 3.0]]);
    let neg = z.neg().unwrap();
    close(
        scalar(&byol(&z.affine(2.0, 0.0).unwrap(), &z).unwrap()),
        0.0,
        "aligned",
    );
    close(scalar(&byol(&neg, &z).unwrap()), 4.0, "opposite");
    // The symmetrised loss is the SUM of both directions: range 0..8.
    close(
        scalar(&byol_symmetric(&neg, &neg, &z, &z).unwrap()),
        8.0,
        "symmetric opposite",
    );
    // Target detached inside the loss.
    let target = Var::from_tensor(&z).unwrap();
    let p = Var::from_tensor(&neg.affine(1.0, 0.5).unwrap()).unwrap();
    let grads = byol(p.as_tensor(), target.as_tensor())
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(p.as_tensor()).is_some());
    assert!(
        grads.get(target.as_tensor()).is_none(),
        "gradient reached the BYOL target"
    );

    let c = ByolConfig::default();
    close(ema_tau(&c, 0, 100).unwrap(), 0.99, "tau at 0");
    close(ema_tau(&c, 100, 100).unwrap(), 1.0, "tau at K");
    close(ema_tau(&c, 50, 100).unwrap(), 0.995, "tau at K/2");
    // 1 − (1 − 0.99)(cos(π/4) + 1)/2 at k = K/4.
    close(
        ema_tau(&c, 25, 100).unwrap(),
        1.0 - 0.01 * ((std::f64::consts::FRAC_PI_4).cos() + 1.0) / 2.0,
        "tau at K/4",
    );
    assert!(ema_tau(&c, 0, 0).is_err());
    assert!(ema_tau(&c, 101, 100).is_err());
}

/// Columns with zero mean, biased variance 1 and no correlation (n = 4, d = 2).
fn whitened() -> Tensor {
    mat(&[&[1.0, 1.0], &[1.0, -1.0], &[-1.0, 1.0], &[-1.0, -1.0]])
}

#[test]
fn barlow_closed_forms() {
    let z = whitened();
    // BatchNorm form: C = I/(1 + 1e-5), loss = 2 (1 − 1/(1 + 1e-5))² ≈ 2e-10.
    let v = scalar(&barlow(&z, &z, &BarlowConfig::default()).unwrap());
    assert!(v.abs() < 1e-8, "whitened identical views give {v}");
    // Unbiased-std form (CroMo): ẑ = z·sqrt(3/4), C = (3/4) I, loss = d (1/n)² = 2/16.
    let c = BarlowConfig {
        norm: BarlowNorm::UnbiasedStd,
        ..Default::default()
    };
    close(scalar(&barlow(&z, &z, &c).unwrap()), 0.125, "unbiased std");
    // z2 = −z1: C = −I, loss = Σ (1 − (−1))² = 4d = 8; the CIFAR scale multiplies by 0.1.
    let neg = z.neg().unwrap();
    let c = BarlowConfig {
        bn_eps: 0.0,
        ..BarlowConfig::cifar()
    };
    close(
        scalar(&barlow(&z, &neg, &c).unwrap()),
        0.8,
        "anti-correlated, scale 0.1",
    );
    // Off-diagonal only: z2 swaps z1's columns, C = [[0,1],[1,0]], loss = 2 + 2 λ_off.
    let swapped = mat(&[&[1.0, 1.0], &[-1.0, 1.0], &[1.0, -1.0], &[-1.0, -1.0]]);
    let c = BarlowConfig {
        bn_eps: 0.0,
        ..Default::default()
    };
    close(
        scalar(&barlow(&z, &swapped, &c).unwrap()),
        2.0 + 2.0 * 5e-3,
        "swapped",
    );
}

#[test]
fn vicreg_closed_forms() {
    // Unbiased variance 1 per column, uncorrelated, identical views: every term is 0.
    let z = whitened().affine((3.0f64 / 4.0).sqrt(), 0.0).unwrap();
    let t = vicreg(&z, &z, &VicregConfig::default()).unwrap();
    assert!(scalar(&t.total).abs() < 1e-6, "total {}", scalar(&t.total));
    // Collapse (all zeros): variance = 2 · (1 − sqrt(1e-4)) = 1.98, total = 25 · 1.98.
    let zeros = Tensor::zeros((5, 3), DType::F32, &Device::Cpu).unwrap();
    let t = vicreg(&zeros, &zeros, &VicregConfig::default()).unwrap();
    close(scalar(&t.variance), 1.98, "collapsed variance");
    close(scalar(&t.total), 49.5, "collapsed total");
    // Fully correlated columns (x, x): Cov_01 = Var = 4/3 per view, covariance term
    // = 2 views · 2 entries · (4/3)² / d.
    let c = mat(&[&[1.0, 1.0], &[1.0, 1.0], &[-1.0, -1.0], &[-1.0, -1.0]]);
    let t = vicreg(&c, &c, &VicregConfig::default()).unwrap();
    close(
        scalar(&t.covariance),
        2.0 * 2.0 * (16.0 / 9.0) / 2.0,
        "correlated covariance",
    );
    close(scalar(&t.invariance), 0.0, "invariance");
}

#[test]
fn corinfomax_closed_forms_and_state() {
    // No normalisation, no memory (λ = 0): R' = batch covariance. z = 2 · whitened gives
    // R' = 4 I, so cov_loss = −2 · log det(4 I₂) / 2 = −4 log 2 (ε = 0), inv = 0.
    let z = whitened().affine(2.0, 0.0).unwrap();
    let cfg = CorInfoMaxConfig {
        la_r: 0.0,
        la_mu: 0.0,
        eps: 0.0,
        normalize: false,
        ..Default::default()
    };
    let s0 = CorInfoMaxState::new(2, &cfg, DType::F32, &Device::Cpu).unwrap();
    let o = corinfomax(&z, &z, &s0, &cfg).unwrap();
    close(scalar(&o.cov_loss), -4.0 * LN_2, "cov_loss");
    close(scalar(&o.inv_loss), 0.0, "inv_loss");
    close(scalar(&o.loss), -4.0 * LN_2, "loss");
    // λ_R = 0.25 is the weight of the OLD covariance: R' = 0.25 I + 0.75 · 4 I = 3.25 I, and the
    // mean update uses the batch mean (0 here) with weight 0.75: μ' = 0.25 μ.
    let cfg = CorInfoMaxConfig {
        la_r: 0.25,
        la_mu: 0.25,
        ..cfg
    };
    let s = CorInfoMaxState {
        mu1: Tensor::new(&[4.0f32, -8.0], &Device::Cpu).unwrap(),
        mu2: Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap(),
        r1: Tensor::eye(2, DType::F32, &Device::Cpu).unwrap(),
        r2: Tensor::eye(2, DType::F32, &Device::Cpu).unwrap(),
    };
    let o = corinfomax(&z, &z, &s, &cfg).unwrap();
    assert_eq!(flat(&o.state.mu1), vec![1.0, -2.0]);
    // View 1 is centred with the updated mean (1, −2): R' = 0.25 I + 0.75 (4 I + μ'μ'ᵀ).
    let r1 = flat(&o.state.r1);
    let expect = [
        0.25 + 0.75 * 5.0,
        0.75 * -2.0,
        0.75 * -2.0,
        0.25 + 0.75 * 8.0,
    ];
    for (a, e) in r1.iter().zip(expect) {
        close(*a, e, "R1 update");
    }
    assert_eq!(flat(&o.state.r2), vec![3.25, 0.0, 0.0, 3.25]);
}

#[test]
fn logdet_value_gradient_and_errors() {
    // det [[4, 2], [2, 3]] = 8; ∂ log det / ∂A = A⁻¹ = [[3, −2], [−2, 4]] / 8.
    let a = Var::from_tensor(&mat(&[&[4.0, 2.0], &[2.0, 3.0]])).unwrap();
    let v = logdet_spd(a.as_tensor(), 0.0).unwrap();
    close(scalar(&v), 8f64.ln(), "logdet");
    let g = flat(v.backward().unwrap().get(a.as_tensor()).unwrap());
    for (x, e) in g.iter().zip([3.0 / 8.0, -2.0 / 8.0, -2.0 / 8.0, 4.0 / 8.0]) {
        close(*x, e, "logdet gradient");
    }
    // ε is added to the diagonal.
    let v = logdet_spd(&mat(&[&[1.0, 0.0], &[0.0, 1.0]]), 1.0).unwrap();
    close(scalar(&v), 2.0 * LN_2, "logdet with eps");
    // Indefinite and non-square matrices are errors, not NaN.
    let e = logdet_spd(&mat(&[&[1.0, 2.0], &[2.0, 1.0]]), 0.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("positive definite"), "{e}");
    assert!(logdet_spd(&mat(&[&[1.0, 2.0, 3.0]]), 0.0).is_err());
    let nan = mat(&[&[f32::NAN, 0.0], &[0.0, 1.0]]);
    assert!(logdet_spd(&nan, 0.0).is_err());
}

#[test]
fn mixco_and_imix_closed_forms() {
    let m = 3;
    let tau = 0.05f64;
    let c = MixcoConfig::default();
    let lam = Tensor::new(&[0.2f32, 0.5, 1.0], &Device::Cpu).unwrap();
    // Mixed queries orthogonal to all 2m keys: uniform softmax, loss = log(2m) for any λ.
    let v = scalar(
        &mixco(
            &basis(m, 2 * m, 3 * m),
            &basis(2 * m, 0, 3 * m),
            &lam,
            None,
            &c,
        )
        .unwrap(),
    );
    close(v, ((2 * m) as f64).ln(), "mixco orthogonal");
    // Query i = key i, keys orthonormal, λ = 1: loss = log(1 + (2m − 1) e^{−1/τ_mix}).
    let ones = Tensor::ones(m, DType::F32, &Device::Cpu).unwrap();
    let keys = basis(2 * m, 0, 2 * m);
    let v = scalar(&mixco(&basis(m, 0, 2 * m), &keys, &ones, None, &c).unwrap());
    close(
        v,
        (1.0 + (2 * m - 1) as f64 * (-1.0 / tau).exp()).ln(),
        "mixco aligned",
    );
    // Same with λ = 0: all target mass on key i + m, whose logit is 0 while key i has 1/τ:
    // loss = 1/τ + log(1 + (2m − 1) e^{−1/τ}).
    let zeros = Tensor::zeros(m, DType::F32, &Device::Cpu).unwrap();
    let v = scalar(&mixco(&basis(m, 0, 2 * m), &keys, &zeros, None, &c).unwrap());
    close(
        v,
        1.0 / tau + (1.0 + (2 * m - 1) as f64 * (-1.0 / tau).exp()).ln(),
        "mixco λ=0",
    );

    // i-Mix N-pair, orthogonal queries: log(n) for any λ and partners.
    let n = 4;
    let partners = Tensor::new(&[1u32, 0, 3, 2], &Device::Cpu).unwrap();
    let lam = Tensor::new(&[0.5f32, 0.7, 0.9, 1.0], &Device::Cpu).unwrap();
    let cfg = ImixConfig::default();
    let v = scalar(
        &imix_npair(
            &basis(n, n, 2 * n),
            &basis(n, 0, 2 * n),
            &lam,
            &partners,
            &cfg,
        )
        .unwrap(),
    );
    close(v, (n as f64).ln(), "imix npair orthogonal");
    // i-Mix BYOL with p_i = z_i, z orthonormal: cos(p_i, z_i) = 1, cos(p_i, z_π(i)) = 0,
    // loss = mean 2 − 2 λ_i.
    let z = basis(n, 0, n);
    let v = scalar(&imix_byol(&z, &z, &lam, &partners).unwrap());
    close(v, 2.0 - 2.0 * (0.5 + 0.7 + 0.9 + 1.0) / 4.0, "imix byol");
    // λ = 1 reduces i-Mix BYOL to plain BYOL.
    let p = mat(&[&[1.0, 2.0, 3.0], &[0.5, -1.0, 2.0]]);
    let t = mat(&[&[0.0, 1.0, 1.0], &[2.0, 0.5, -1.0]]);
    let ones = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
    let swap = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
    close(
        scalar(&imix_byol(&p, &t, &ones, &swap).unwrap()),
        scalar(&byol(&p, &t).unwrap()),
        "imix byol λ=1",
    );
}

#[test]
fn mixing_helpers_follow_their_formulas() {
    let x = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
        .unwrap()
        .reshape((8, 3))
        .unwrap();
    let xv = x.to_vec2::<f32>().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let b = mixco_mix(&x, &mut rng).unwrap();
    let lam: Vec<f32> = b.lambdas.to_vec1().unwrap();
    assert_eq!(b.x_mix.dims(), &[4, 3]);
    let mixed = b.x_mix.to_vec2::<f32>().unwrap();
    for i in 0..4 {
        assert!((0.0..1.0).contains(&lam[i]));
        for j in 0..3 {
            let e = lam[i] * xv[i][j] + (1.0 - lam[i]) * xv[i + 4][j];
            assert!((mixed[i][j] - e).abs() < 1e-4, "mixco x_mix[{i}][{j}]");
        }
    }
    // Same seed, same batch.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    assert_eq!(
        mixco_mix(&x, &mut rng)
            .unwrap()
            .lambdas
            .to_vec1::<f32>()
            .unwrap(),
        lam
    );
    assert!(
        mixco_mix(&x.narrow(0, 0, 7).unwrap(), &mut rng).is_err(),
        "odd batch"
    );

    let cfg = ImixConfig::default();
    let b = imix_mix(&x, &cfg, &mut rng).unwrap();
    let lam: Vec<f32> = b.lambdas.to_vec1().unwrap();
    let mut perm: Vec<u32> = b.partners.to_vec1().unwrap();
    let mixed = b.x_mix.to_vec2::<f32>().unwrap();
    for i in 0..8 {
        assert!((0.5..=1.0).contains(&lam[i]), "folded λ = {}", lam[i]);
        let p = perm[i] as usize;
        for j in 0..3 {
            let e = lam[i] * xv[i][j] + (1.0 - lam[i]) * xv[p][j];
            assert!((mixed[i][j] - e).abs() < 1e-4, "imix x_mix[{i}][{j}]");
        }
    }
    perm.sort();
    assert_eq!(
        perm,
        (0..8).collect::<Vec<u32>>(),
        "partners form a permutation"
    );
    // Unfolded Beta(1, 1) draws fall on both sides of 0.5.
    let cfg = ImixConfig {
        fold_lambda: false,
        ..cfg
    };
    let lam: Vec<f32> = imix_mix(
        &Tensor::zeros((64, 2), DType::F32, &Device::Cpu).unwrap(),
        &cfg,
        &mut rng,
    )
    .unwrap()
    .lambdas
    .to_vec1()
    .unwrap();
    assert!(lam.iter().any(|&l| l < 0.5) && lam.iter().any(|&l| l > 0.5));
}

#[test]
fn key_queue_is_a_fifo_ring() {
    let rows = |v: &[f32]| Tensor::from_vec(v.to_vec(), (v.len() / 2, 2), &Device::Cpu).unwrap();
    let mut q = KeyQueue::new(Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
    q.enqueue(&rows(&[1., 1., 2., 2., 3., 3.])).unwrap();
    assert_eq!(q.ptr(), 3);
    q.enqueue(&rows(&[4., 4., 5., 5.])).unwrap();
    assert_eq!(q.ptr(), 1);
    // Row 3 took key 4, row 0 wrapped around to key 5: the four newest keys remain.
    assert_eq!(
        q.keys().to_vec2::<f32>().unwrap(),
        vec![vec![5., 5.], vec![2., 2.], vec![3., 3.], vec![4., 4.]]
    );
    // A full-size batch replaces everything.
    q.enqueue(&rows(&[6., 6., 7., 7., 8., 8., 9., 9.])).unwrap();
    assert_eq!(q.ptr(), 1);
    assert_eq!(
        q.keys().to_vec2::<f32>().unwrap(),
        vec![vec![9., 9.], vec![6., 6.], vec![7., 7.], vec![8., 8.]]
    );
    assert!(
        q.enqueue(&rows(&[0.; 10])).is_err(),
        "batch larger than the queue"
    );
    assert!(q
        .enqueue(&Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap())
        .is_err());
    assert!(
        KeyQueue::from_parts(Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap(), 4).is_err()
    );
    // Random initial queue: unit rows, reproducible from the seed.
    let a = KeyQueue::random(16, 8, 3, DType::F32, &Device::Cpu).unwrap();
    let b = KeyQueue::random(16, 8, 3, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(flat(a.keys()), flat(b.keys()));
    for r in a.keys().to_vec2::<f32>().unwrap() {
        let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    // Enqueued keys are detached.
    let k = Var::from_tensor(&rows(&[1., 0.])).unwrap();
    let mut q = KeyQueue::new(Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
    q.enqueue(k.as_tensor()).unwrap();
    let grads = q.keys().sum_all().unwrap().backward().unwrap();
    assert!(
        grads.get(k.as_tensor()).is_none(),
        "the queue kept a gradient path"
    );
}

fn assert_invalid<T: std::fmt::Debug>(r: cromo::Result<T>, needle: &str) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            assert!(
                msg.contains(needle),
                "message {msg:?} does not mention {needle:?}"
            )
        }
        other => panic!("expected an InvalidArgument error mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn bad_shapes_and_arguments_are_errors_not_panics() {
    let z = Tensor::ones((4, 3), DType::F32, &Device::Cpu).unwrap();
    let other = Tensor::ones((5, 3), DType::F32, &Device::Cpu).unwrap();
    let vec3 = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    let wrong_d = Tensor::ones((4, 2), DType::F32, &Device::Cpu).unwrap();
    let f64z = z.to_dtype(DType::F64).unwrap();
    let ints = Tensor::ones((4, 3), DType::U32, &Device::Cpu).unwrap();
    let ic = InfoNceConfig::default();
    assert_invalid(info_nce(&z, &other, None, &ic), "info_nce");
    assert_invalid(info_nce(&vec3, &vec3, None, &ic), "(n, d)");
    assert_invalid(info_nce(&z, &f64z, None, &ic), "F64");
    assert_invalid(info_nce(&ints, &ints, None, &ic), "floating-point");
    assert_invalid(info_nce(&z, &z, Some(&wrong_d), &ic), "extra_negatives");
    assert_invalid(
        info_nce(&z, &z, None, &InfoNceConfig { temperature: 0.0 }),
        "temperature",
    );
    assert_invalid(cassle_simclr_distill(&z, &z, &z, &other, &ic), "cassle");
    assert_invalid(
        pnr_simclr(&z, &z, &wrong_d, &wrong_d, &z, &z, &ic),
        "pnr_simclr",
    );
    let mc = MocoConfig::default();
    assert_invalid(moco_v2(&z, &other, &z, &mc), "moco_v2");
    assert_invalid(moco_v2(&z, &z, &wrong_d, &mc), "queue");
    assert_invalid(byol(&z, &other), "byol");
    assert_invalid(byol_symmetric(&z, &z, &z, &wrong_d), "byol");
    assert_invalid(barlow(&z, &other, &BarlowConfig::default()), "barlow");
    assert_invalid(
        barlow(
            &z.narrow(0, 0, 1).unwrap(),
            &z.narrow(0, 0, 1).unwrap(),
            &BarlowConfig::default(),
        ),
        "at least 2",
    );
    assert_invalid(vicreg(&z, &wrong_d, &VicregConfig::default()), "vicreg");
    let cc = CorInfoMaxConfig::default();
    let s = CorInfoMaxState::new(5, &cc, DType::F32, &Device::Cpu).unwrap();
    assert_invalid(corinfomax(&z, &z, &s, &cc), "state");
    assert_invalid(corinfomax(&z, &other, &s, &cc), "corinfomax");
    let lam = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
    let xc = MixcoConfig::default();
    assert_invalid(
        mixco(&wrong_d.narrow(0, 0, 2).unwrap(), &z, &lam, None, &xc),
        "keys",
    );
    assert_invalid(
        mixco(&z.narrow(0, 0, 2).unwrap(), &other, &lam, None, &xc),
        "keys",
    );
    assert_invalid(
        mixco(&z.narrow(0, 0, 2).unwrap(), &z, &vec3, None, &xc),
        "lambdas",
    );
    let lam4 = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
    let bad_partner = Tensor::new(&[0u32, 1, 2, 4], &Device::Cpu).unwrap();
    let short_partner = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    assert_invalid(
        imix_npair(&z, &z, &lam4, &bad_partner, &ImixConfig::default()),
        "partner index 4",
    );
    assert_invalid(imix_byol(&z, &z, &lam4, &short_partner), "partners");
    assert_invalid(imix_byol(&z, &other, &lam4, &short_partner), "imix_byol");
}

#[test]
fn losses_accept_f64_and_agree_with_f32() {
    let fx = fixture();
    let case = &fx["cases"][0];
    let z1 = tensor_f32(&case["inputs"]["z1"]);
    let z2 = tensor_f32(&case["inputs"]["z2"]);
    let (d1, d2) = (
        z1.to_dtype(DType::F64).unwrap(),
        z2.to_dtype(DType::F64).unwrap(),
    );
    let ic = InfoNceConfig::default();
    close(
        scalar(&info_nce(&d1, &d2, None, &ic).unwrap()),
        scalar(&info_nce(&z1, &z2, None, &ic).unwrap()),
        "info_nce f64 vs f32",
    );
    let bc = BarlowConfig::default();
    close(
        scalar(&barlow(&d1, &d2, &bc).unwrap()),
        scalar(&barlow(&z1, &z2, &bc).unwrap()),
        "barlow f64 vs f32",
    );
    let cc = CorInfoMaxConfig::default();
    let s64 = CorInfoMaxState::new(16, &cc, DType::F64, &Device::Cpu).unwrap();
    let s32 = CorInfoMaxState::new(16, &cc, DType::F32, &Device::Cpu).unwrap();
    let o64 = corinfomax(&d1, &d2, &s64, &cc).unwrap();
    assert_eq!(o64.loss.dtype(), DType::F64);
    close(
        scalar(&o64.loss),
        scalar(&corinfomax(&z1, &z2, &s32, &cc).unwrap().loss),
        "corinfomax f64 vs f32",
    );
}

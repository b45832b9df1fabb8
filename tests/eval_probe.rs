//! Linear probe: separable data, scikit-learn parity on the UCI digits, save/load.

use std::io::Read;
use std::path::PathBuf;

use cromo::eval::{LinearProbe, ProbeConfig, StopReason};
use cromo::Error;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("CROMO_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    dir.is_dir().then_some(dir)
}

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Three classes (global ids 2, 5, 7) around centres 10 apart in 6-d, each point within 1 of
/// its centre: linearly separable by construction.
fn separable(n_per: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let d = 6;
    let centres: [[f32; 6]; 3] = [
        [10.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 10.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 10.0, 0.0, 0.0, 0.0],
    ];
    let ids = [2u32, 5, 7];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..3 * n_per {
        let k = i % 3;
        let mut v: Vec<f32> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        let r: f32 = rng.random_range(0.0..1.0);
        for (j, a) in v.iter_mut().enumerate() {
            *a = centres[k][j] + *a / norm * r;
        }
        x.extend(v);
        y.push(ids[k]);
    }
    (x, y)
}

#[test]
fn separable_features_are_classified_perfectly() {
    let (x, y) = separable(100, 1);
    let (xt, yt) = separable(50, 2);
    let probe = LinearProbe::fit(&x, 6, &y, &ProbeConfig::default()).unwrap();
    assert_eq!(probe.classes, vec![2, 5, 7]);
    assert_eq!(probe.class_names, vec!["2", "5", "7"]);
    let info = probe.fit_info.clone().unwrap();
    assert!(info.converged, "{info:?}");
    assert_eq!(info.train_accuracy, 1.0);
    assert_eq!(probe.accuracy(&x, &y).unwrap(), 1.0);
    assert_eq!(probe.accuracy(&xt, &yt).unwrap(), 1.0);
    assert_eq!(probe.predict(&xt).unwrap(), yt);
}

#[test]
fn fit_is_deterministic() {
    let (x, y) = separable(40, 3);
    let a = LinearProbe::fit(&x, 6, &y, &ProbeConfig::default()).unwrap();
    let b = LinearProbe::fit(&x, 6, &y, &ProbeConfig::default()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn standardisation_uses_population_std_and_keeps_constant_dimensions() {
    // Dimension 0: values 1, 3 (mean 2, population std 1); dimension 1: constant 5 (std -> 1).
    let x = [1.0f32, 5.0, 3.0, 5.0];
    let probe = LinearProbe::fit(&x, 2, &[0, 1], &ProbeConfig::default()).unwrap();
    assert_eq!(probe.mean, vec![2.0, 5.0]);
    assert_eq!(probe.std, vec![1.0, 1.0]);
    // The constant dimension carries no signal, so its weight stays 0 (its gradient is 0).
    assert_eq!(probe.weight[1], 0.0);
    assert_eq!(probe.weight[3], 0.0);
}

#[test]
fn declared_classes_without_rows_get_a_column() {
    let (x, y) = separable(20, 4);
    let cfg = ProbeConfig {
        classes: Some(vec![7, 5, 2, 9]),
        class_names: (0..10).map(|i| format!("c{i}")).collect(),
        ..ProbeConfig::default()
    };
    let probe = LinearProbe::fit(&x, 6, &y, &cfg).unwrap();
    assert_eq!(probe.classes, vec![2, 5, 7, 9]);
    assert_eq!(probe.class_names, vec!["c2", "c5", "c7", "c9"]);
    assert_eq!(probe.logits(&x).unwrap().len(), 60 * 4);
    assert_eq!(probe.accuracy(&x, &y).unwrap(), 1.0);
}

#[test]
fn bad_inputs_are_errors() {
    let (x, y) = separable(5, 5);
    let cfg = ProbeConfig::default();
    let err = |r: cromo::Result<LinearProbe>| r.unwrap_err().to_string();
    assert!(err(LinearProbe::fit(&x[..7], 6, &y, &cfg)).contains("whole number of rows"));
    assert!(err(LinearProbe::fit(&x, 6, &y[..3], &cfg)).contains("15 feature rows but 3 labels"));
    let mut xn = x.clone();
    xn[8] = f32::NAN;
    assert!(err(LinearProbe::fit(&xn, 6, &y, &cfg)).contains("row 1 dimension 2"));
    let only = ProbeConfig {
        classes: Some(vec![2, 5]),
        ..ProbeConfig::default()
    };
    assert!(err(LinearProbe::fit(&x, 6, &y, &only)).contains("label 7"));
    let probe = LinearProbe::fit(&x, 6, &y, &cfg).unwrap();
    assert!(probe
        .accuracy(&x, &[3; 15])
        .unwrap_err()
        .to_string()
        .contains("label 3"));
}

fn read_digits(dir: &std::path::Path) -> (Vec<f32>, Vec<u32>) {
    let path = dir.join("digits.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vec<f32> = line.split(',').map(|s| s.trim().parse().unwrap()).collect();
        assert_eq!(v.len(), 65);
        x.extend_from_slice(&v[..64]);
        y.push(v[64] as u32);
    }
    (x, y)
}

fn take(x: &[f32], y: &[u32], idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for &i in idx {
        xs.extend_from_slice(&x[i * 64..(i + 1) * 64]);
        ys.push(y[i]);
    }
    (xs, ys)
}

/// scikit-learn's StandardScaler + LogisticRegression(C) on a fixed split of the UCI digits
/// (tools/gen_eval_fixtures.py): same optimum (objective and weights), test accuracy within a
/// point. λ = 1/(C·N) makes our mean-CE objective sklearn's divided by C·N.
#[test]
fn digits_match_scikit_learn() {
    let Some(dir) = shared_data() else {
        println!("skipping: shared data folder not found (set CROMO_SHARED_DATA)");
        return;
    };
    if !dir.join("digits.csv.gz").is_file() {
        println!("skipping: {} has no digits.csv.gz", dir.display());
        return;
    }
    let fx = fixture("digits_probe.json");
    let (x, y) = read_digits(&dir);
    assert_eq!(y.len(), 1797);
    let idx = |k: &str| -> Vec<usize> {
        fx[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let (xtr, ytr) = take(&x, &y, &idx("train_idx"));
    let (xte, yte) = take(&x, &y, &idx("test_idx"));
    let c = fx["C"].as_f64().unwrap();
    let lambda = 1.0 / (c * ytr.len() as f64);
    assert!((lambda - fx["lambda"].as_f64().unwrap()).abs() < 1e-15);
    let cfg = ProbeConfig {
        l2: lambda,
        // Tighter than the defaults, as the fixture's sklearn fit (tol 1e-12): the biases of
        // confidently predicted classes have little curvature and settle last.
        grad_tol: 1e-7,
        loss_rel_tol: 1e-13,
        ..ProbeConfig::default()
    };
    let probe = LinearProbe::fit(&xtr, 64, &ytr, &cfg).unwrap();
    let info = probe.fit_info.clone().unwrap();
    assert!(info.converged, "{info:?}");
    assert_ne!(info.stop, StopReason::MaxIter);

    let sk_obj = fx["objective"].as_f64().unwrap();
    println!(
        "objective: cromo {:.9}, sklearn {sk_obj:.9}; {info:?}",
        info.loss
    );
    assert!(
        (info.loss - sk_obj).abs() <= 1e-6 * sk_obj,
        "objective {} vs sklearn {sk_obj}",
        info.loss
    );
    // Strictly convex problem: the minimisers agree too.
    let sk_w: Vec<f64> = fx["weight"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let sk_b: Vec<f64> = fx["bias"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let max_w = probe
        .weight
        .iter()
        .zip(&sk_w)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    // The softmax is unchanged by adding a constant to every bias and the bias is not
    // penalised, so only the centred biases are determined.
    let centred = |v: Vec<f64>| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.into_iter().map(move |x| x - m)
    };
    let max_b = centred(probe.bias.iter().map(|&v| v as f64).collect())
        .zip(centred(sk_b))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let w_scale = sk_w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    println!("max |ΔW| = {max_w:.2e} (max |W| = {w_scale:.3}), max |Δb| = {max_b:.2e}");
    assert!(max_w <= 1e-4 * w_scale, "weights differ by {max_w}");
    assert!(max_b <= 1e-4 * w_scale, "biases differ by {max_b}");

    let train_acc = probe.accuracy(&xtr, &ytr).unwrap();
    let test_acc = probe.accuracy(&xte, &yte).unwrap();
    let sk_test = fx["test_accuracy"].as_f64().unwrap();
    println!(
        "test accuracy: cromo {test_acc:.4}, sklearn {sk_test:.4}; train {train_acc:.4} vs {:.4}",
        fx["train_accuracy"].as_f64().unwrap()
    );
    assert!((test_acc - sk_test).abs() <= 0.01);
}

#[test]
fn save_load_round_trip_is_exact() {
    let (x, y) = separable(30, 6);
    let cfg = ProbeConfig {
        class_names: (0..8).map(|i| format!("class {i}")).collect(),
        ..ProbeConfig::default()
    };
    let probe = LinearProbe::fit(&x, 6, &y, &cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.safetensors");
    probe.save(&path).unwrap();
    // Only the file itself: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("probe.safetensors")]);
    let back = LinearProbe::load(&path).unwrap();
    assert_eq!(back, probe);
    assert_eq!(back.logits(&x).unwrap(), probe.logits(&x).unwrap());
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let e = LinearProbe::load(&missing).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("nope.safetensors"));

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file").unwrap();
    let e = LinearProbe::load(&garbage).unwrap_err().to_string();
    assert!(
        e.contains("garbage.safetensors") && e.contains("not a readable safetensors"),
        "{e}"
    );

    // A valid safetensors file that is not a probe.
    let other = dir.path().join("other.safetensors");
    let data = [0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    std::fs::write(
        &other,
        safetensors::serialize(vec![("x", view)], None).unwrap(),
    )
    .unwrap();
    let e = LinearProbe::load(&other).unwrap_err().to_string();
    assert!(
        e.contains("other.safetensors") && e.contains("not a cromo linear probe"),
        "{e}"
    );

    // A probe whose bias has the wrong length.
    let (x, y) = separable(5, 7);
    let probe = LinearProbe::fit(&x, 6, &y, &ProbeConfig::default()).unwrap();
    let good = dir.path().join("good.safetensors");
    probe.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "bias")
        .collect();
    let short = [0u8; 8];
    tensors.push((
        "bias".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &short).unwrap(),
    ));
    let bad = dir.path().join("bad_bias.safetensors");
    std::fs::write(
        &bad,
        safetensors::serialize(tensors, meta.metadata().clone()).unwrap(),
    )
    .unwrap();
    let e = LinearProbe::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad_bias.safetensors") && e.contains("tensor `bias` has shape [2]"),
        "{e}"
    );

    // Truncated file.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let e = LinearProbe::load(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
}

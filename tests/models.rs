//! Encoders and weights I/O against independent references.
//!
//! The reference outputs in `tests/fixtures/models/*.json` were computed by PyTorch
//! (torchvision ResNet-18, timm `tf_efficientnet_lite0`, the small-cnn `nn.Module`) with
//! `tools/gen_model_fixtures.py` (its header has the exact command). The random weights are not
//! committed: both the script and this file implement the same counter-based PRNG, and this file
//! rebuilds the tensors from the *PyTorch* state_dict names, shapes and recipes stored in the
//! fixture, writes them to a temporary safetensors file with the `safetensors` crate and loads that
//! through cromo's strict loader.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cromo::models::weights::{
    self, expected_tensors, format_inspect, inspect, load_classifier, load_encoder, load_varmap,
    save_varmap, trainable_vars, TensorInfo,
};
use cromo::models::{build_encoder, Arch};
use cromo::Error;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// PRNG shared with tools/gen_model_fixtures.py

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// u(seed, k) in [-1, 1).
fn uniform(seed: u64, k: u64) -> f64 {
    let bits = splitmix64((seed << 32).wrapping_add(k)) >> 11;
    bits as f64 * 2f64.powi(-53) * 2.0 - 1.0
}

#[test]
fn prng_matches_python_reference_values() {
    // values printed by tools/gen_model_fixtures.py's `splitmix64_scalar` and `uniform`
    // (splitmix64(0) is also the published first output of splitmix64 seeded with 0)
    assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    assert_eq!(splitmix64(1), 0x910A_2DEC_8902_5CC1);
    assert_eq!(uniform(7, 0), 0.4754112364090186);
    assert_eq!(uniform(7, 1), -0.7949626165686565);
    assert_eq!(uniform(7, 2), 0.30513975981161634);
    assert_eq!(uniform(10, 5), -0.7081426852293407);
}

// ---------------------------------------------------------------------------------------------
// fixtures

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn fixture(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `../shared/models` (or `$CROMO_SHARED_MODELS`), None with a printed reason when absent.
fn shared_models() -> Option<PathBuf> {
    let dir = match std::env::var_os("CROMO_SHARED_MODELS") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("CROMO_SHARED_DATA") {
            Some(d) => PathBuf::from(d).join("../models"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models"),
        },
    };
    let file = dir.join("efficientnet_lite0.safetensors");
    if file.is_file() {
        Some(dir)
    } else {
        println!("skipping: {} not found", file.display());
        None
    }
}

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// {"shape": [...], "data": [...]} -> Tensor
fn packed(v: &Value) -> Tensor {
    Tensor::from_vec(floats(&v["data"]), shape_of(&v["shape"]), &Device::Cpu).unwrap()
}

/// The weights of a fixture, rebuilt from its PyTorch names, shapes and PRNG recipes.
fn fixture_weights(fx: &Value) -> Vec<(String, Tensor)> {
    let seed = fx["weights"]["seed"].as_u64().unwrap();
    let mut k = 0u64;
    let mut out = Vec::new();
    for t in fx["weights"]["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap().to_string();
        let shape = shape_of(&t["shape"]);
        let numel: usize = shape.iter().product();
        let init = t["init"].as_str().unwrap();
        if init == "counter" {
            out.push((
                name,
                Tensor::zeros(shape, DType::I64, &Device::Cpu).unwrap(),
            ));
            continue;
        }
        let mut data = Vec::with_capacity(numel);
        for _ in 0..numel {
            let u = uniform(seed, k);
            k += 1;
            let v = match init {
                "fan_in" => {
                    let gain = t["gain"].as_u64().unwrap() as f64;
                    let fan_in = t["fan_in"].as_u64().unwrap() as f64;
                    u * (gain / fan_in).sqrt()
                }
                "bias" | "bn_bias" | "bn_mean" => 0.1 * u,
                "bn_weight" => 1.0 + 0.1 * u,
                "bn_var" => 0.5 + u * u,
                other => panic!("unknown recipe {other}"),
            };
            data.push(v as f32);
        }
        out.push((name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap()));
    }
    out
}

fn fixture_input(fx: &Value) -> Tensor {
    let seed = fx["input"]["seed"].as_u64().unwrap();
    let shape = shape_of(&fx["input"]["shape"]);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u64).map(|k| uniform(seed, k) as f32).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Writes tensors with the `safetensors` crate directly (not through cromo's saver).
fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) {
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The early map summarised like the fixture: spatial mean (B,C) and x[:, :, ::s, ::s].
fn early_summary(early: &Tensor, stride: usize) -> (Tensor, Tensor) {
    let mean = early.mean((2, 3)).unwrap();
    let (b, c, h, w) = early.dims4().unwrap();
    let rows: Vec<u32> = (0..h).step_by(stride).map(|i| i as u32).collect();
    let cols: Vec<u32> = (0..w).step_by(stride).map(|i| i as u32).collect();
    let ri = Tensor::new(rows.as_slice(), &Device::Cpu).unwrap();
    let ci = Tensor::new(cols.as_slice(), &Device::Cpu).unwrap();
    let sub = early
        .index_select(&ri, 2)
        .unwrap()
        .index_select(&ci, 3)
        .unwrap();
    assert_eq!(sub.dims(), &[b, c, rows.len(), cols.len()]);
    (mean, sub)
}

/// Compares pooled / early (/ logits) with the fixture's `outputs` object; returns the max diffs.
fn check_outputs(
    what: &str,
    out: &Value,
    pooled: &Tensor,
    early: &Tensor,
    logits: Option<&Tensor>,
    tol: f32,
) -> f32 {
    assert_eq!(
        early.dims(),
        shape_of(&out["early_shape"]).as_slice(),
        "{what}: early shape"
    );
    let stride = out["early_sub_stride"].as_u64().unwrap() as usize;
    let (mean, sub) = early_summary(early, stride);
    let mut worst = 0f32;
    let mut cmp = |name: &str, got: &Tensor, key: &str| {
        let d = max_abs_diff(got, &packed(&out[key]));
        println!("{what}: {name} max-abs-diff {d:.3e}");
        assert!(
            d <= tol,
            "{what}: {name} differs from PyTorch by {d} > {tol}"
        );
        worst = worst.max(d);
    };
    cmp("pooled", pooled, "pooled");
    cmp("early mean", &mean, "early_mean");
    cmp("early sub", &sub, "early_sub");
    if let Some(l) = logits {
        cmp("logits", l, "logits");
    }
    worst
}

// ---------------------------------------------------------------------------------------------
// architectures vs PyTorch

fn resnet_vs_torchvision(fixture_name: &str, arch: Arch) {
    let fx = fixture(fixture_name);
    assert_eq!(fx["arch"], arch.name());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.safetensors");
    let tensors = fixture_weights(&fx);
    write_safetensors(&file, &tensors);

    // cromo's names are exactly the PyTorch state_dict's (minus the integer counters)
    let want: HashSet<String> = tensors
        .iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, _)| n.clone())
        .collect();
    let got: HashSet<String> = expected_tensors(arch, Some(1000))
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(got, want);

    let loaded = load_classifier(&file, arch, &Device::Cpu).unwrap();
    assert_eq!(loaded.weights.report.num_classes, Some(1000));
    assert_eq!(loaded.weights.report.ignored_counters, 20);
    assert!(loaded.weights.report.skipped.is_empty());
    let x = fixture_input(&fx);
    let logits = loaded.classifier.logits(&x).unwrap();
    let f = loaded.classifier.encoder().features(&x, false).unwrap();
    check_outputs(
        arch.name(),
        &fx["outputs"],
        &f.pooled,
        &f.early,
        Some(&logits),
        1e-4,
    );

    // forward_t gives the same pooled feature as features()
    let pooled = loaded.classifier.encoder().forward_t(&x, false).unwrap();
    assert_eq!(max_abs_diff(&pooled, &f.pooled), 0.0);

    // the encoder alone: the head is reported as skipped, not loaded
    let enc = load_encoder(&file, arch, &Device::Cpu).unwrap();
    assert_eq!(enc.weights.report.skipped, ["fc.bias", "fc.weight"]);
    assert_eq!(enc.encoder.arch(), arch);
    assert_eq!(enc.encoder.feature_dim(), 512);
    let pooled = enc.encoder.forward_t(&x, false).unwrap();
    assert_eq!(max_abs_diff(&pooled, &f.pooled), 0.0);
}

#[test]
fn resnet18_imagenet_stem_matches_torchvision() {
    resnet_vs_torchvision("resnet18.json", Arch::ResNet18);
}

#[test]
fn resnet18_cifar_stem_matches_torchvision() {
    resnet_vs_torchvision("resnet18-cifar.json", Arch::ResNet18Cifar);
}

fn small_cnn_file(dir: &Path) -> (Value, PathBuf, Vec<(String, Tensor)>) {
    let fx = fixture("small-cnn.json");
    let file = dir.join("small.safetensors");
    let tensors = fixture_weights(&fx);
    write_safetensors(&file, &tensors);
    (fx, file, tensors)
}

#[test]
fn small_cnn_matches_pytorch_in_eval_and_train_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, file, _) = small_cnn_file(dir.path());
    let x = fixture_input(&fx);

    let enc = load_encoder(&file, Arch::SmallCnn, &Device::Cpu).unwrap();
    assert_eq!(enc.weights.report.ignored_counters, 4);
    let f = enc.encoder.features(&x, false).unwrap();
    check_outputs(
        "small-cnn eval",
        &fx["outputs"],
        &f.pooled,
        &f.early,
        None,
        1e-5,
    );

    // train mode: batch statistics, and the running statistics in the VarMap move like PyTorch's
    let f = enc.encoder.features(&x, true).unwrap();
    check_outputs(
        "small-cnn train",
        &fx["outputs_train"],
        &f.pooled,
        &f.early,
        None,
        1e-5,
    );
    let vars = enc.weights.varmap.data().lock().unwrap();
    for (name, want) in fx["running_after_train"].as_object().unwrap() {
        let d = max_abs_diff(vars[name].as_tensor(), &packed(want));
        println!("{name} after one train step: max-abs-diff {d:.3e}");
        assert!(d <= 1e-5, "{name}: {d}");
    }
}

#[test]
fn efficientnet_lite0_real_weights_match_timm() {
    let Some(dir) = shared_models() else { return };
    let file = dir.join("efficientnet_lite0.safetensors");
    let loaded = load_classifier(&file, Arch::EfficientNetLite0, &Device::Cpu).unwrap();
    let r = &loaded.weights.report;
    assert_eq!(r.num_classes, Some(1000));
    // 296 tensors = 247 float tensors + 49 BatchNorm counters
    assert_eq!((r.loaded, r.ignored_counters), (247, 49));
    let mut worst = 0f32;
    for size in [224, 64, 32] {
        let fx = fixture(&format!("efficientnet-lite0-{size}.json"));
        let x = fixture_input(&fx);
        let logits = loaded.classifier.logits(&x).unwrap();
        let f = loaded.classifier.encoder().features(&x, false).unwrap();
        let what = format!("efficientnet-lite0 {size}x{size}");
        worst = worst.max(check_outputs(
            &what,
            &fx["outputs"],
            &f.pooled,
            &f.early,
            Some(&logits),
            1e-3,
        ));
        let top1 = logits
            .get(0)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        assert_eq!(
            top1 as u64,
            fx["top5"][0].as_u64().unwrap(),
            "{what}: top-1"
        );
    }
    println!("efficientnet-lite0: worst max-abs-diff vs timm {worst:.3e}");
}

// ---------------------------------------------------------------------------------------------
// dtypes

/// Rounds every float tensor through `dtype` and back to f32.
fn rounded(tensors: &[(String, Tensor)], dtype: DType) -> Vec<(String, Tensor)> {
    tensors
        .iter()
        .map(|(n, t)| {
            let t = if t.dtype() == DType::F32 {
                t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap()
            } else {
                t.clone()
            };
            (n.clone(), t)
        })
        .collect()
}

#[test]
fn f16_and_bf16_files_load_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, _, tensors) = small_cnn_file(dir.path());
    let x = fixture_input(&fx);
    let want = packed(&fx["outputs"]["pooled"]);
    // Bounds: f16 keeps 11 significant bits (relative rounding error <= 2^-11 = 4.9e-4 per weight),
    // bf16 keeps 8 (<= 2^-8 = 3.9e-3). The pooled features are <= 0.8 in magnitude; errors of four
    // conv + BN layers add up to a few times the per-weight error: 4 * 4.9e-4 * 0.8 = 1.6e-3 for
    // f16 and 4 * 3.9e-3 * 0.8 = 1.3e-2 for bf16.
    for (dtype, bound) in [(DType::F16, 1.6e-3f32), (DType::BF16, 1.3e-2)] {
        let low: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, t)| {
                let t = if t.dtype() == DType::F32 {
                    t.to_dtype(dtype).unwrap()
                } else {
                    t.clone()
                };
                (n.clone(), t)
            })
            .collect();
        let low_file = dir.path().join(format!("{dtype:?}.safetensors"));
        write_safetensors(&low_file, &low);
        assert!(inspect(&low_file)
            .unwrap()
            .iter()
            .filter(|r| r.dtype != "I64")
            .all(|r| r.dtype == format!("{dtype:?}").to_uppercase()));
        let enc = load_encoder(&low_file, Arch::SmallCnn, &Device::Cpu).unwrap();
        let got = enc.encoder.forward_t(&x, false).unwrap();
        assert_eq!(got.dtype(), DType::F32);

        // the conversion is exact: same result as an f32 file holding the rounded values
        let ref_file = dir.path().join(format!("{dtype:?}-as-f32.safetensors"));
        write_safetensors(&ref_file, &rounded(&tensors, dtype));
        let reference = load_encoder(&ref_file, Arch::SmallCnn, &Device::Cpu).unwrap();
        let r = reference.encoder.forward_t(&x, false).unwrap();
        assert_eq!(max_abs_diff(&got, &r), 0.0, "{dtype:?}");

        let d = max_abs_diff(&got, &want);
        println!(
            "{dtype:?} weights: pooled max-abs-diff vs PyTorch f32 {d:.3e} (bound {bound:.1e})"
        );
        assert!(d <= bound, "{dtype:?}: {d} > {bound}");
        assert!(
            d > 0.0,
            "{dtype:?}: rounding had no effect, the file was not {dtype:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// strict loading and bad files

fn weights_msg(e: Error) -> String {
    match e {
        Error::Weights { .. } => e.to_string(),
        other => panic!("expected Error::Weights, got {other:?}"),
    }
}

#[test]
fn strict_loading_names_missing_unexpected_and_misshaped_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture("resnet18-cifar.json");
    let mut tensors = fixture_weights(&fx);
    tensors.retain(|(n, _)| n != "layer2.0.downsample.1.running_var");
    tensors.push((
        "extra.weight".into(),
        Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
    ));
    for (n, t) in tensors.iter_mut() {
        if n == "layer3.1.conv2.weight" {
            *t = Tensor::zeros((256, 256, 1, 1), DType::F32, &Device::Cpu).unwrap();
        }
    }
    let file = dir.path().join("broken.safetensors");
    write_safetensors(&file, &tensors);
    let msg = weights_msg(
        load_encoder(&file, Arch::ResNet18Cifar, &Device::Cpu)
            .err()
            .unwrap(),
    );
    println!("{msg}");
    assert!(msg.contains(&file.display().to_string()), "names the file");
    assert!(
        msg.contains("1 missing, 1 unexpected, 1 mis-shaped"),
        "{msg}"
    );
    assert!(
        msg.contains("missing (1): layer2.0.downsample.1.running_var"),
        "{msg}"
    );
    assert!(msg.contains("unexpected (1): extra.weight"), "{msg}");
    assert!(msg.contains("layer3.1.conv2.weight is [256, 256, 1, 1] in the file, resnet18-cifar needs [256, 256, 3, 3]"), "{msg}");
    assert!(
        !msg.contains("looks like"),
        "right family, no wrong-arch hint: {msg}"
    );
}

#[test]
fn wrong_architecture_gets_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture("resnet18.json");
    let file = dir.path().join("resnet18.safetensors");
    write_safetensors(&file, &fixture_weights(&fx));

    let msg = weights_msg(
        load_encoder(&file, Arch::EfficientNetLite0, &Device::Cpu)
            .err()
            .unwrap(),
    );
    let first = msg.lines().next().unwrap();
    println!("{first}");
    assert!(first.contains("does not fit efficientnet-lite0"), "{first}");
    assert!(first.contains("looks like resnet18 weights"), "{first}");
    // 245 encoder tensors missing; 102 ResNet tensors + 20 counters of unknown BatchNorms
    assert!(first.contains("245 missing, 122 unexpected"), "{first}");
    // long lists are capped
    assert!(msg.contains("... and 233 more"), "{msg}");

    // ImageNet-stem weights for the CIFAR stem: only conv1 differs
    let msg = weights_msg(
        load_encoder(&file, Arch::ResNet18Cifar, &Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        msg.contains("0 missing, 0 unexpected, 1 mis-shaped"),
        "{msg}"
    );
    assert!(msg.contains("conv1.weight is [64, 3, 7, 7]"), "{msg}");
    assert!(msg.contains("looks like resnet18 weights"), "{msg}");

    // an encoder-only file has no head to classify with
    let (_, small, _) = small_cnn_file(dir.path());
    let msg = weights_msg(
        load_classifier(&small, Arch::SmallCnn, &Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(msg.contains("no classifier head `fc.*`"), "{msg}");
}

#[test]
fn truncated_corrupt_and_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file, _) = small_cnn_file(dir.path());
    let bytes = std::fs::read(&file).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half.safetensors", bytes[..bytes.len() / 2].to_vec()),
        ("header-cut.safetensors", bytes[..100].to_vec()),
        ("tiny.safetensors", bytes[..5].to_vec()),
        ("empty.safetensors", vec![]),
        ("not-json.safetensors", {
            let mut b = 16u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"this is not json");
            b
        }),
    ];
    for (name, data) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        for e in [
            load_encoder(&p, Arch::SmallCnn, &Device::Cpu)
                .err()
                .unwrap(),
            inspect(&p).err().unwrap(),
        ] {
            let msg = e.to_string();
            println!("{msg}");
            assert!(matches!(e, Error::BadData { .. }), "{name}: {e:?}");
            assert!(msg.contains(name), "{msg}");
        }
    }
    let p = dir.path().join("absent.safetensors");
    for e in [
        load_encoder(&p, Arch::SmallCnn, &Device::Cpu)
            .err()
            .unwrap(),
        inspect(&p).err().unwrap(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("absent.safetensors"));
    }
}

// ---------------------------------------------------------------------------------------------
// saving, VarMap, inspect

fn to_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn save_then_load_is_bit_identical_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file, tensors) = small_cnn_file(dir.path());
    let loaded = load_varmap(&file, Arch::SmallCnn, false, DType::F32, &Device::Cpu).unwrap();

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let saved = out_dir.join("saved.safetensors");
    save_varmap(&loaded.varmap, &saved, DType::F32).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left behind");

    // the saved file holds the original tensors bit for bit (counters are not written)
    let back = candle_core::safetensors::load(&saved, &Device::Cpu).unwrap();
    let originals: Vec<_> = tensors
        .iter()
        .filter(|(_, t)| t.dtype() == DType::F32)
        .collect();
    assert_eq!(back.len(), originals.len());
    for (name, t) in originals {
        assert_eq!(to_bits(&back[name]), to_bits(t), "{name}");
    }
    // and loads again strictly into an identical VarMap
    let again = load_varmap(&saved, Arch::SmallCnn, false, DType::F32, &Device::Cpu).unwrap();
    let a = weights::named_tensors(&loaded.varmap);
    let b = weights::named_tensors(&again.varmap);
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(to_bits(ta), to_bits(tb), "{na}");
    }

    // f16 / bf16 saving converts
    for dtype in [DType::F16, DType::BF16] {
        let p = out_dir.join("low.safetensors");
        save_varmap(&loaded.varmap, &p, dtype).unwrap();
        let rows = inspect(&p).unwrap();
        assert!(rows
            .iter()
            .all(|r| r.dtype == format!("{dtype:?}").to_uppercase()));
    }
    // saving into a missing folder fails with the path and leaves nothing
    let bad = dir.path().join("no/such/dir/x.safetensors");
    let e = save_varmap(&loaded.varmap, &bad, DType::F32).err().unwrap();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("x.safetensors"),
        "{e}"
    );
    // a non-float target dtype is refused
    assert!(save_varmap(&loaded.varmap, out_dir.join("i.safetensors"), DType::U8).is_err());
}

#[test]
fn trainable_vars_leave_out_batchnorm_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file, _) = small_cnn_file(dir.path());
    let loaded = load_varmap(&file, Arch::SmallCnn, false, DType::F32, &Device::Cpu).unwrap();
    let all = weights::named_tensors(&loaded.varmap);
    assert_eq!(all.len(), 20); // 4 x (conv weight + BN weight, bias, running mean, running var)
    let tv = trainable_vars(&loaded.varmap, "");
    let names: Vec<&str> = tv.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "stages.0.bn.bias",
            "stages.0.bn.weight",
            "stages.0.conv.weight",
            "stages.1.bn.bias",
            "stages.1.bn.weight",
            "stages.1.conv.weight",
            "stages.2.bn.bias",
            "stages.2.bn.weight",
            "stages.2.conv.weight",
            "stages.3.bn.bias",
            "stages.3.bn.weight",
            "stages.3.conv.weight",
        ]
    );
    // 3*32*9 + 32*64*9 + 64*128*9 + 128*256*9 conv weights + 2*(32+64+128+256) BN affine
    let params: usize = tv.iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(params, 864 + 18_432 + 73_728 + 294_912 + 960);

    // prefixes: load under `backbone`, ask for that group only
    let vm = VarMap::new();
    weights::load_into(
        &file,
        Arch::SmallCnn,
        false,
        &vm,
        "backbone",
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let tv = trainable_vars(&vm, "backbone");
    assert_eq!(tv.len(), 12);
    assert!(tv[0].0.starts_with("backbone.stages.0."));
    assert!(trainable_vars(&vm, "back").is_empty());
    let enc = build_encoder(
        Arch::SmallCnn,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).pp("backbone"),
    )
    .unwrap();
    assert_eq!(vm.all_vars().len(), 20, "building reused the loaded vars");
    let x = Tensor::ones((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(enc.forward_t(&x, false).unwrap().dims(), &[1, 256]);
}

#[test]
fn inspect_gives_the_exact_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("small.safetensors");
    let dev = Device::Cpu;
    let tensors = vec![
        (
            "layer10.w".to_string(),
            Tensor::zeros((2, 3), DType::F32, &dev).unwrap(),
        ),
        (
            "layer2.w".to_string(),
            Tensor::zeros((1000, 4, 1, 1), DType::F16, &dev).unwrap(),
        ),
        (
            "a.bias".to_string(),
            Tensor::zeros(3, DType::BF16, &dev).unwrap(),
        ),
        (
            "bn.num_batches_tracked".to_string(),
            Tensor::zeros((), DType::I64, &dev).unwrap(),
        ),
    ];
    write_safetensors(&p, &tensors);
    let rows = inspect(&p).unwrap();
    assert_eq!(
        rows[0],
        TensorInfo {
            name: "a.bias".into(),
            dtype: "BF16".into(),
            shape: vec![3],
            numel: 3,
            bytes: 6
        }
    );
    let table = format_inspect(&rows);
    print!("{table}");
    let want = "\
name                    dtype  shape            elements
a.bias                  BF16   [3]                     3
bn.num_batches_tracked  I64    []                      1
layer2.w                F16    [1000, 4, 1, 1]     4,000
layer10.w               F32    [2, 3]                  6
total: 4 tensors, 4,010 elements, 8,038 bytes (BF16: 1 tensor, 3 elements; F16: 1 tensor, \
4,000 elements; F32: 1 tensor, 6 elements; I64: 1 tensor, 1 element)
";
    assert_eq!(table, want);
}

// ---------------------------------------------------------------------------------------------
// architecture facts, construction, gradients

#[test]
fn arch_names_and_facts() {
    for a in Arch::ALL {
        assert_eq!(a.to_string().parse::<Arch>().unwrap(), a);
    }
    assert_eq!("small-cnn".parse::<Arch>().unwrap(), Arch::SmallCnn);
    let e = "resnet50".parse::<Arch>().err().unwrap().to_string();
    assert!(
        e.contains("resnet50") && e.contains("efficientnet-lite0"),
        "{e}"
    );
    let dims: Vec<usize> = Arch::ALL.iter().map(|a| a.feature_dim()).collect();
    assert_eq!(dims, [512, 512, 1280, 256]);
    let sizes: Vec<usize> = Arch::ALL.iter().map(|a| a.input_size()).collect();
    assert_eq!(sizes, [224, 32, 224, 32]);
    assert_eq!(Arch::ResNet18.mean(), [0.485, 0.456, 0.406]);
    assert_eq!(Arch::ResNet18.std(), [0.229, 0.224, 0.225]);
    assert_eq!(Arch::SmallCnn.mean(), [0.4914, 0.4822, 0.4465]);
    assert_eq!(Arch::ResNet18Cifar.std(), [0.2470, 0.2435, 0.2616]);
    assert_eq!(Arch::EfficientNetLite0.mean(), [0.5; 3]);
    assert_eq!(Arch::EfficientNetLite0.std(), [0.5; 3]);
}

#[test]
fn expected_tensor_counts_match_the_reference_models() {
    let count = |a, h| {
        let t = expected_tensors(a, h).unwrap();
        (
            t.len(),
            t.iter()
                .map(|t| t.shape.iter().product::<usize>())
                .sum::<usize>(),
        )
    };
    // torchvision resnet18(): 102 state_dict float tensors, 11,689,512 parameters + 9,600 BN stats
    assert_eq!(count(Arch::ResNet18, Some(1000)), (102, 11_689_512 + 9_600));
    // efficientnet_lite0.safetensors: 247 float tensors, 4.65 M parameters + stats (checked
    // against the real file in efficientnet_lite0_real_weights_match_timm)
    assert_eq!(count(Arch::EfficientNetLite0, Some(1000)).0, 247);
    assert_eq!(count(Arch::SmallCnn, None), (20, 388_896 + 960));
}

#[test]
fn every_trainable_var_gets_a_gradient() {
    let dev = Device::Cpu;
    for arch in [Arch::SmallCnn, Arch::EfficientNetLite0, Arch::ResNet18Cifar] {
        let vm = VarMap::new();
        let enc = build_encoder(arch, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let n_expected = expected_tensors(arch, None).unwrap().len();
        assert_eq!(
            vm.all_vars().len(),
            n_expected,
            "{arch}: fresh VarMap holds every tensor"
        );
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev).unwrap();
        let f = enc.features(&x, true).unwrap();
        assert_eq!(f.pooled.dims(), &[2, arch.feature_dim()]);
        let loss = f.pooled.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in trainable_vars(&vm, "") {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "{arch}: no gradient for {name}");
        }
    }
}

#[test]
fn early_maps_have_the_documented_shapes() {
    let dev = Device::Cpu;
    let cases = [
        (Arch::ResNet18, 64, vec![1, 64, 16, 16]),
        (Arch::ResNet18Cifar, 32, vec![1, 64, 32, 32]),
        (Arch::EfficientNetLite0, 64, vec![1, 24, 16, 16]),
        (Arch::EfficientNetLite0, 30, vec![1, 24, 8, 8]),
        (Arch::SmallCnn, 32, vec![1, 32, 32, 32]),
    ];
    for (arch, size, early) in cases {
        let enc = build_encoder(arch, VarBuilder::zeros(DType::F32, &dev)).unwrap();
        let x = Tensor::zeros((1, 3, size, size), DType::F32, &dev).unwrap();
        let f = enc.features(&x, false).unwrap();
        assert_eq!(f.early.dims(), early.as_slice(), "{arch} {size}");
        assert_eq!(f.pooled.dims(), &[1, arch.feature_dim()]);
    }
}

// ---------------------------------------------------------------------------------------------
// real photos through the shipped EfficientNet-Lite0 (facts from shared/models/README.md)

/// `$CROMO_SHARED_DATA` or `../shared/data`, None with a printed reason when absent.
fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("CROMO_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join("photos").is_dir() {
        Some(dir)
    } else {
        println!("skipping: {} not found", dir.join("photos").display());
        None
    }
}

/// Shorter side to 256 (bilinear), centre crop 224, scale to [0,1], normalise -> (1,3,224,224).
fn photo_tensor(path: &Path, arch: Arch) -> Tensor {
    use image::imageops::{crop_imm, resize, FilterType};
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let scale = 256.0 / w.min(h) as f64;
    let (nw, nh) = (
        (w as f64 * scale).round() as u32,
        (h as f64 * scale).round() as u32,
    );
    let img = resize(&img, nw, nh, FilterType::Triangle);
    let img = crop_imm(&img, (nw - 224) / 2, (nh - 224) / 2, 224, 224).to_image();
    let (mean, std) = (arch.mean(), arch.std());
    let mut data = vec![0f32; 3 * 224 * 224];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f32 / 255.0;
            data[c * 224 * 224 + (y * 224 + x) as usize] = (v - mean[c]) / std[c];
        }
    }
    Tensor::from_vec(data, (1, 3, 224, 224), &Device::Cpu).unwrap()
}

#[test]
fn efficientnet_lite0_classifies_the_shipped_photos() {
    let (Some(models), Some(data)) = (shared_models(), shared_data()) else {
        return;
    };
    let arch = Arch::EfficientNetLite0;
    let loaded = load_classifier(
        models.join("efficientnet_lite0.safetensors"),
        arch,
        &Device::Cpu,
    )
    .unwrap();
    let top5 = |name: &str| -> Vec<u32> {
        let x = photo_tensor(&data.join("photos").join(name), arch);
        let logits = loaded.classifier.logits(&x).unwrap().get(0).unwrap();
        let mut idx: Vec<(f32, u32)> = logits
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .zip(0u32..)
            .collect();
        idx.sort_by(|a, b| b.0.total_cmp(&a.0));
        let t: Vec<u32> = idx[..5].iter().map(|p| p.1).collect();
        println!("{name}: top-5 {t:?}");
        t
    };
    let cat = top5("chelsea.png");
    assert!(
        cat.iter().any(|c| (281..=285).contains(c)),
        "chelsea: {cat:?}"
    );
    assert_eq!(top5("coffee.png")[0], 967, "coffee: espresso");
    assert_eq!(top5("rocket.jpg")[0], 657, "rocket: missile");
}

#[test]
fn loading_into_a_built_model_updates_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, file, _) = small_cnn_file(dir.path());
    let x = fixture_input(&fx);
    let dev = Device::Cpu;
    // a model built first on fresh (randomly initialised) variables ...
    let vm = VarMap::new();
    let enc = build_encoder(
        Arch::SmallCnn,
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )
    .unwrap();
    let want = packed(&fx["outputs"]["pooled"]);
    let before = enc.forward_t(&x, false).unwrap();
    assert!(max_abs_diff(&before, &want) > 1e-2);
    // ... computes the reference output once the checkpoint is loaded into its VarMap
    let report =
        weights::load_into(&file, Arch::SmallCnn, false, &vm, "", DType::F32, &dev).unwrap();
    assert_eq!(report.loaded, 20);
    assert_eq!(vm.all_vars().len(), 20);
    let after = enc.forward_t(&x, false).unwrap();
    assert!(max_abs_diff(&after, &want) <= 1e-5);

    // a VarMap holding a variable of another shape under a loaded name is refused untouched
    let vm = VarMap::new();
    vm.data().lock().unwrap().insert(
        "stages.0.conv.weight".into(),
        candle_core::Var::zeros((1, 1), DType::F32, &dev).unwrap(),
    );
    let e = weights::load_into(&file, Arch::SmallCnn, false, &vm, "", DType::F32, &dev)
        .err()
        .unwrap();
    assert!(e.to_string().contains("stages.0.conv.weight"), "{e}");
    assert_eq!(vm.all_vars().len(), 1, "nothing inserted on error");
}

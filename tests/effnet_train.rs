//! EfficientNet-Lite0 trains: one SGD step from the shipped weights (train-mode BatchNorm,
//! ReLU6, depthwise 3×3 / 5×5 convolutions, TensorFlow "same" padding, 64×64 input) against
//! PyTorch (timm `tf_efficientnet_lite0`, `tools/gen_effnet_train_fixture.py`), and the
//! gradients against central finite differences.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cromo::models::{build_encoder, weights, Arch, Encoder};
use serde_json::Value;

mod common;

/// u(seed, k) over `shape` (the PRNG of tools/gen_model_fixtures.py), f32.
fn prng(seed: u64, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(common::uniform(seed, n), shape, &Device::Cpu).unwrap()
}

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/efficientnet-lite0-train-step.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn data(v: &Value) -> Vec<f32> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

struct Net {
    encoder: Box<dyn Encoder>,
    vars: HashMap<String, Var>,
    _varmap: VarMap,
}

fn shipped() -> Net {
    shipped_as(DType::F32)
}

/// The shipped encoder with its variables as `dtype` (f64: converted from the f32 file).
fn shipped_as(dtype: DType) -> Net {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/efficientnet_lite0.safetensors");
    let w = weights::load_varmap(
        &path,
        Arch::EfficientNetLite0,
        false,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let varmap = VarMap::new();
    for (name, var) in w.varmap.data().lock().unwrap().iter() {
        let t = var.as_tensor().to_dtype(dtype).unwrap();
        varmap
            .data()
            .lock()
            .unwrap()
            .insert(name.clone(), Var::from_tensor(&t).unwrap());
    }
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let encoder = build_encoder(Arch::EfficientNetLite0, vb).unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    Net {
        encoder,
        vars,
        _varmap: varmap,
    }
}

/// 0.5 mean (f − R)² over the pooled features in train mode.
fn loss(net: &Net, x: &Tensor, r: &Tensor) -> Tensor {
    let f = net.encoder.forward_t(x, true).unwrap();
    assert_eq!(f.dims(), &[8, 1280]);
    (f - r)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .affine(0.5, 0.0)
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn one_sgd_step_matches_pytorch() {
    let fx = fixture();
    let lr = fx["lr"].as_f64().unwrap();
    let net = shipped();
    let x = prng(31, &[8, 3, 64, 64]);
    let r = prng(32, &[8, 1280]);
    let l = loss(&net, &x, &r);
    let lv = l.to_scalar::<f32>().unwrap() as f64;
    let want = fx["loss"].as_f64().unwrap();
    println!("loss: cromo {lv:.7}, PyTorch {want:.7}");
    assert!(
        (lv - want).abs() <= 1e-4 * want.abs(),
        "loss {lv} vs {want}"
    );
    let grads = l.backward().unwrap();

    let tensors = fx["tensors"].as_object().unwrap();
    assert!(tensors.len() >= 10);
    for (name, t) in tensors {
        let var = net
            .vars
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        let updated = data(&t["updated"]);
        let now: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        if t.get("grad").is_none() {
            // A running statistic: updated by the train-mode forward itself.
            let d = max_abs_diff(&now, &updated);
            println!("{name}: running statistic max |Δ| {d:.2e}");
            assert!(d <= 1e-3, "{name}: running statistic differs by {d}");
            continue;
        }
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want_g = data(&t["grad"]);
        let gscale = want_g.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let dg = max_abs_diff(&g, &want_g);
        let stepped: Vec<f32> = now.iter().zip(&g).map(|(w, g)| w - lr as f32 * g).collect();
        // float32 accumulation through 16 blocks of train-mode BatchNorm: up to ~3e-3 of the
        // largest gradient in the first layers (the f64 test shows the computation is exact).
        let dw = max_abs_diff(&stepped, &updated);
        println!(
            "{name}: grad max |Δ| {dg:.2e} (max |g| {gscale:.2e}), updated weight max |Δ| {dw:.2e}"
        );
        assert!(
            dg <= 5e-3 * gscale,
            "{name}: gradient differs by {dg} (scale {gscale})"
        );
        assert!(dw <= 1e-3, "{name}: updated weights differ by {dw}");
    }
}

/// In f64 the gradients equal PyTorch's (computed in f64) to rounding: what remains in f32 is
/// accumulation error, not a different computation.
#[test]
fn f64_gradients_equal_pytorch() {
    let fx = fixture();
    let net = shipped_as(DType::F64);
    let x = prng(31, &[8, 3, 64, 64]).to_dtype(DType::F64).unwrap();
    let r = prng(32, &[8, 1280]).to_dtype(DType::F64).unwrap();
    let l = loss(&net, &x, &r);
    let lv = l.to_scalar::<f64>().unwrap();
    let want = fx["loss"].as_f64().unwrap();
    assert!((lv - want).abs() <= 1e-7 * want, "loss {lv} vs {want}");
    let grads = l.backward().unwrap();
    for (name, t) in fx["tensors"].as_object().unwrap() {
        let Some(gw) = t.get("grad") else { continue };
        let want_g = data(gw);
        let g: Vec<f32> = grads
            .get(net.vars[name].as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let gscale = want_g.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let dg = max_abs_diff(&g, &want_g);
        println!("{name}: f64 grad max |Δ| {dg:.2e} (max |g| {gscale:.2e})");
        // The fixture stores 9 significant digits of float32 values.
        assert!(dg <= 1e-6 * gscale, "{name}: f64 gradient differs by {dg}");
    }
}

/// Central differences in f64 (step 1e-6: the network has ReLU6 kinks, so steps of 1e-4 or more measure
/// a secant, not the gradient — PyTorch's own f64 differences show the same) on single weights of
/// every kind of layer agree with the analytic gradient.
#[test]
fn gradients_match_finite_differences() {
    let net = shipped_as(DType::F64);
    let x = prng(31, &[8, 3, 64, 64]).to_dtype(DType::F64).unwrap();
    let r = prng(32, &[8, 1280]).to_dtype(DType::F64).unwrap();
    let grads = loss(&net, &x, &r).backward().unwrap();
    let probes: [(&str, usize); 7] = [
        ("_conv_stem.weight", 5),
        ("_bn0.weight", 3),
        ("_blocks.0._depthwise_conv.weight", 40),
        ("_blocks.3._depthwise_conv.weight", 77),
        ("_blocks.1._expand_conv.weight", 123),
        ("_blocks.10._project_conv.weight", 1000),
        ("_bn1.bias", 17),
    ];
    let eps = 1e-6;
    for (name, i) in probes {
        let var = &net.vars[name];
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let shape = var.as_tensor().dims().to_vec();
        let orig: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let at = |delta: f64| -> f64 {
            let mut w = orig.clone();
            w[i] += delta;
            var.set(&Tensor::from_vec(w, shape.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            loss(&net, &x, &r).to_scalar::<f64>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        var.set(&Tensor::from_vec(orig, shape.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
        println!(
            "{name}[{i}]: analytic {:.6e}, finite difference {fd:.6e}",
            g[i]
        );
        assert!(
            (fd - g[i]).abs() <= 1e-3 * g[i].abs() + 1e-9,
            "{name}[{i}]: analytic {} vs finite difference {fd}",
            g[i]
        );
    }
}

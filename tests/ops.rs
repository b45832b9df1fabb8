//! `cromo::ops` against independent references:
//! * convolution values and gradients against candle's own `conv2d` differentiated by candle's
//!   autograd, on shapes that cover stride, symmetric and asymmetric padding, 1×1, rectangular
//!   kernels, groups, depthwise 3×3 / 5×5 at stride 1 and 2, multi-sample GEMM chunks and both
//!   threading modes; and against central finite differences in f64;
//! * BatchNorm train / eval values, gradients and running statistics against a PyTorch fixture
//!   (`tests/fixtures/ops/batch_norm.json`, written by `tools/gen_ops_fixtures.py`, exact command
//!   in its header), against candle's ops (candle_nn's BatchNorm, autograd of the op chain) and
//!   against finite differences in f64.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cromo::ops::{
    add_relu, batch_norm_eval, batch_norm_eval_reference, batch_norm_train,
    batch_norm_train_reference, conv2d, conv2d_reference, Activation, BatchNorm, ConvParams,
    Padding,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn randn(rng: &mut StdRng, shape: &[usize], scale: f64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            // Box-Muller: N(0, 1)
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random();
            scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// |a − b|∞ ≤ tol · max(1, |b|∞).
fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let d = max_diff(a, b);
    let scale = max_abs(b).max(1.0);
    assert!(
        d <= tol * scale,
        "{what}: max |diff| {d:e} > {tol:e} x {scale:.3}"
    );
}

// ---------------------------------------------------------------------------------------------
// convolution vs candle

struct ConvCase {
    x: [usize; 4],
    w: [usize; 4],
    p: ConvParams,
    x_needs_grad: bool,
}

fn case(
    x: [usize; 4],
    cout: usize,
    k: (usize, usize),
    stride: usize,
    pad: Padding,
    groups: usize,
) -> ConvCase {
    ConvCase {
        x,
        w: [cout, x[1] / groups, k.0, k.1],
        p: ConvParams::new(stride, 0)
            .with_padding(pad)
            .with_groups(groups),
        x_needs_grad: true,
    }
}

fn conv_cases() -> Vec<ConvCase> {
    let u = Padding::uniform;
    let tf = |t, b, l, r| Padding::new(t, b, l, r);
    let mut v = vec![
        case([2, 3, 9, 7], 8, (3, 3), 1, u(1), 1),
        case([3, 4, 8, 8], 6, (3, 3), 2, u(1), 1),
        case([2, 6, 7, 9], 4, (1, 1), 1, u(0), 1), // pointwise: GEMM on the input
        case([2, 6, 7, 9], 4, (1, 1), 2, u(0), 1), // ResNet downsample
        case([1, 4, 10, 10], 5, (5, 5), 2, tf(1, 2, 1, 2), 1), // TF "same", asymmetric
        // (candle's own conv backward takes the output padding of H for W too, so the reference
        // needs H and W to leave the same remainder under the stride.)
        case([2, 3, 11, 11], 4, (3, 3), 2, tf(0, 1, 0, 1), 1),
        case([2, 3, 8, 7], 5, (3, 2), 1, tf(1, 1, 0, 1), 1), // rectangular kernel
        case([2, 3, 12, 12], 4, (7, 7), 2, u(3), 1),         // ResNet ImageNet stem
        case([2, 6, 7, 7], 9, (3, 3), 1, u(1), 3),           // grouped
        case([2, 4, 6, 6], 8, (3, 3), 1, u(1), 4),           // depthwise, multiplier 2
        case([2, 6, 9, 8], 6, (3, 3), 1, u(1), 6),           // depthwise 3x3 s1
        case([2, 5, 11, 11], 5, (3, 3), 2, tf(0, 1, 0, 1), 5), // depthwise 3x3 s2, TF same
        case([2, 4, 9, 9], 4, (5, 5), 1, u(2), 4),           // depthwise 5x5 s1
        case([2, 4, 12, 12], 4, (5, 5), 2, tf(1, 2, 1, 2), 4), // depthwise 5x5 s2, TF same
        case([1, 3, 7, 7], 3, (3, 3), 2, u(1), 3),           // depthwise, odd sizes
        // Several samples per GEMM (small output planes), batch not a multiple of the chunk.
        case([13, 8, 6, 6], 16, (3, 3), 2, u(1), 1),
        case([9, 16, 4, 4], 8, (1, 1), 1, u(0), 1),
        case([4, 16, 16, 16], 32, (3, 3), 1, u(1), 1),
        case([1, 8, 17, 17], 8, (3, 3), 1, u(1), 1), // batch 1: threads inside the GEMM
    ];
    // The first layer of an encoder: the images need no gradient.
    let mut first = case([4, 3, 8, 8], 8, (3, 3), 1, u(1), 1);
    first.x_needs_grad = false;
    v.push(first);
    v
}

#[test]
fn conv2d_values_and_gradients_match_candle() {
    // One thread: every GEMM runs alone; three: chunks of the batch in parallel, or (batch 1)
    // threads inside the GEMM. Both paths run whatever this machine has.
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| conv_matches_candle(threads));
    }
}

fn conv_matches_candle(threads: usize) {
    let mut rng = StdRng::seed_from_u64(1);
    for (i, c) in conv_cases().iter().enumerate() {
        let what = format!(
            "{threads} threads, case {i}: x {:?} w {:?} {:?}",
            c.x, c.w, c.p
        );
        let fan_in = (c.w[1] * c.w[2] * c.w[3]) as f64;
        let x0 = randn(&mut rng, &c.x, 1.0, DType::F32);
        let w0 = randn(&mut rng, &c.w, 1.0 / fan_in.sqrt(), DType::F32);
        let (xv, wv) = (
            Var::from_tensor(&x0).unwrap(),
            Var::from_tensor(&w0).unwrap(),
        );
        let x = if c.x_needs_grad {
            xv.as_tensor().clone()
        } else {
            x0.clone()
        };
        let ours = conv2d(&x, wv.as_tensor(), &c.p).unwrap();
        let want = conv2d_reference(&x, wv.as_tensor(), &c.p).unwrap();
        assert_close(&ours, &want, 1e-4, &format!("{what}: forward"));
        // L = Σ y ⊙ r, so dL/dy = r.
        let r = randn(&mut rng, ours.dims(), 1.0, DType::F32);
        let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_want = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let dw = g_ours.get(wv.as_tensor()).expect("weight gradient");
        assert_close(
            dw,
            g_want.get(wv.as_tensor()).unwrap(),
            1e-4,
            &format!("{what}: dW"),
        );
        if c.x_needs_grad {
            let dx = g_ours.get(xv.as_tensor()).expect("input gradient");
            assert_close(
                dx,
                g_want.get(xv.as_tensor()).unwrap(),
                1e-4,
                &format!("{what}: dX"),
            );
        } else {
            assert!(
                g_ours.get(&x).is_none(),
                "{what}: no gradient for the images"
            );
        }
    }
}

#[test]
fn conv2d_hand_computed_case() {
    // x = 1..9 as a 3x3 image, w = [[1, 0], [0, -1]], padding (top 0, bottom 1, left 0,
    // right 1), stride 2: outputs at (0,0), (0,2), (2,0), (2,2) of the padded image
    // y(i,j) = x(i,j) − x(i+1,j+1)  (0 outside):  (1−5, 3−0, 7−0, 9−0).
    let dev = Device::Cpu;
    let x = Tensor::arange(1f32, 10., &dev)
        .unwrap()
        .reshape((1, 1, 3, 3))
        .unwrap();
    let w = Tensor::new(&[[[[1f32, 0.], [0., -1.]]]], &dev).unwrap();
    let p = ConvParams::new(2, 0).with_padding(Padding::new(0, 1, 0, 1));
    let y = conv2d(&x, &w, &p).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got, vec![-4., 3., 7., 9.]);
}

/// Central differences of L = Σ conv2d(x, w) ⊙ r in f64 against the op's own gradients.
#[test]
fn conv2d_gradients_match_finite_differences_f64() {
    let mut rng = StdRng::seed_from_u64(2);
    let cases = [
        case([2, 3, 5, 4], 4, (3, 3), 1, Padding::uniform(1), 1),
        case([1, 2, 6, 5], 2, (3, 3), 2, Padding::new(0, 1, 1, 0), 1),
        case([2, 4, 4, 4], 4, (3, 3), 1, Padding::uniform(1), 4),
        case([1, 3, 7, 7], 3, (5, 5), 2, Padding::new(1, 2, 1, 2), 3),
        case([2, 4, 3, 3], 2, (1, 1), 1, Padding::uniform(0), 2),
        // non-square inputs at stride 2 (which candle's own backward gets wrong)
        case([1, 2, 7, 6], 2, (3, 3), 2, Padding::uniform(1), 2),
        case([2, 2, 6, 9], 3, (3, 3), 2, Padding::new(0, 1, 1, 1), 1),
    ];
    for (i, c) in cases.iter().enumerate() {
        let x = Var::from_tensor(&randn(&mut rng, &c.x, 1.0, DType::F64)).unwrap();
        let w = Var::from_tensor(&randn(&mut rng, &c.w, 0.5, DType::F64)).unwrap();
        let y = conv2d(x.as_tensor(), w.as_tensor(), &c.p).unwrap();
        let r = randn(&mut rng, y.dims(), 1.0, DType::F64);
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            (conv2d(x, w, &c.p).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (which, var) in [("x", &x), ("w", &w)] {
            let analytic: Vec<f64> = g
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let h = 1e-5;
            for k in 0..base.len() {
                let mut plus = base.clone();
                plus[k] += h;
                let mut minus = base.clone();
                minus[k] -= h;
                let t = |v: Vec<f64>| Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap();
                let (lp, lm) = if which == "x" {
                    (
                        loss(&t(plus), w.as_tensor()),
                        loss(&t(minus), w.as_tensor()),
                    )
                } else {
                    (
                        loss(x.as_tensor(), &t(plus)),
                        loss(x.as_tensor(), &t(minus)),
                    )
                };
                let numeric = (lp - lm) / (2.0 * h);
                assert!(
                    (numeric - analytic[k]).abs() <= 1e-7 * (1.0 + numeric.abs()),
                    "case {i} d{which}[{k}]: finite difference {numeric} vs gradient {}",
                    analytic[k]
                );
            }
        }
    }
}

#[test]
fn conv2d_rejects_bad_shapes_with_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 5, 5), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((6, 4, 3, 3), DType::F32, &dev).unwrap();
    // kernel larger than the padded input
    let big = Tensor::zeros((6, 4, 7, 7), DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &big, &ConvParams::new(1, 0)).is_err());
    // channels not matching the groups
    assert!(conv2d(&x, &w, &ConvParams::new(1, 1).with_groups(3)).is_err());
    let w2 = Tensor::zeros((6, 3, 3, 3), DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w2, &ConvParams::new(1, 1)).is_err());
    // stride 0, wrong rank, dtype mismatch
    assert!(conv2d(&x, &w, &ConvParams::new(0, 1)).is_err());
    let x3 = Tensor::zeros((4, 5, 5), DType::F32, &dev).unwrap();
    assert!(conv2d(&x3, &w, &ConvParams::new(1, 1)).is_err());
    let w64 = w.to_dtype(DType::F64).unwrap();
    assert!(conv2d(&x, &w64, &ConvParams::new(1, 1)).is_err());
    // and a good call works
    assert_eq!(
        conv2d(&x, &w, &ConvParams::new(2, 1)).unwrap().dims(),
        &[1, 6, 3, 3]
    );
}

// ---------------------------------------------------------------------------------------------
// BatchNorm vs PyTorch

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops/batch_norm.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run tools/gen_ops_fixtures.py", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// A BatchNorm built the way the models build theirs (VarMap-backed `VarBuilder`), with the
/// fixture's parameters and running statistics copied into the map's variables.
fn bn_from_fixture(case: &Value, varmap: &VarMap) -> BatchNorm {
    let weight = tensor(&case["weight"]);
    let c = weight.dims()[0];
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    let eps = case["eps"].as_f64().unwrap();
    let bn = BatchNorm::new(c, eps, vb.pp("bn")).unwrap();
    let data = varmap.data().lock().unwrap();
    for (name, key) in [
        ("bn.weight", "weight"),
        ("bn.bias", "bias"),
        ("bn.running_mean", "running_mean0"),
        ("bn.running_var", "running_var0"),
    ] {
        data[name].set(&tensor(&case[key])).unwrap();
    }
    assert_eq!(case["momentum"].as_f64().unwrap(), bn.momentum());
    bn
}

#[test]
fn batch_norm_matches_pytorch_fixture() {
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let varmap = VarMap::new();
        let bn = bn_from_fixture(case, &varmap);
        let vars = varmap.data().lock().unwrap().clone();
        let (wv, bv) = (&vars["bn.weight"], &vars["bn.bias"]);
        for (t, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let what = format!("{name} step {t}");
            let x = Var::from_tensor(&tensor(&step["x"])).unwrap();
            let y = bn.forward_train(x.as_tensor()).unwrap();
            assert_close(&y, &tensor(&step["y"]), 1e-4, &format!("{what}: y"));
            // The running statistics live in the VarMap, updated in place.
            assert_close(
                vars["bn.running_mean"].as_tensor(),
                &tensor(&step["running_mean"]),
                1e-5,
                &format!("{what}: running_mean"),
            );
            assert_close(
                vars["bn.running_var"].as_tensor(),
                &tensor(&step["running_var"]),
                1e-5,
                &format!("{what}: running_var"),
            );
            let r = tensor(&step["r"]);
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            // dx scales with γ/σ; the inputs have σ ≈ 2, so 1e-4 absolute is tight.
            assert_close(
                g.get(x.as_tensor()).unwrap(),
                &tensor(&step["dx"]),
                1e-4,
                &format!("{what}: dx"),
            );
            assert_close(
                g.get(wv.as_tensor()).unwrap(),
                &tensor(&step["dweight"]),
                1e-4,
                &format!("{what}: dweight"),
            );
            assert_close(
                g.get(bv.as_tensor()).unwrap(),
                &tensor(&step["dbias"]),
                1e-4,
                &format!("{what}: dbias"),
            );
            // Running statistics are state, not parameters: no gradient reaches them.
            assert!(g.get(vars["bn.running_mean"].as_tensor()).is_none());
        }
        let ev = &case["eval"];
        let x = Var::from_tensor(&tensor(&ev["x"])).unwrap();
        let rm_before = vars["bn.running_mean"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        let y = bn.forward_eval(x.as_tensor()).unwrap();
        assert_close(&y, &tensor(&ev["y"]), 1e-4, &format!("{name} eval: y"));
        assert_eq!(
            vars["bn.running_mean"]
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap(),
            rm_before,
            "{name}: eval mode leaves the running statistics alone"
        );
        let r = tensor(&ev["r"]);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (t, key) in [
            (x.as_tensor(), "dx"),
            (wv.as_tensor(), "dweight"),
            (bv.as_tensor(), "dbias"),
        ] {
            assert_close(
                g.get(t).unwrap(),
                &tensor(&ev[key]),
                1e-4,
                &format!("{name} eval: {key}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm vs candle and vs finite differences

#[test]
fn batch_norm_matches_candle_ops_and_hand_formula() {
    let mut rng = StdRng::seed_from_u64(3);
    for shape in [
        vec![8usize, 5, 6, 7],
        vec![64, 32],
        vec![3, 4, 1, 1],
        vec![5, 3, 9],
    ] {
        let c = shape[1];
        let x =
            Var::from_tensor(&(randn(&mut rng, &shape, 3.0, DType::F32) + 10.0).unwrap()).unwrap();
        let gamma =
            Var::from_tensor(&(randn(&mut rng, &[c], 0.3, DType::F32) + 1.0).unwrap()).unwrap();
        let beta = Var::from_tensor(&randn(&mut rng, &[c], 0.3, DType::F32)).unwrap();
        let eps = 1e-5;
        let id = Activation::Identity;
        let (y, st) =
            batch_norm_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps, id).unwrap();
        let (y_ref, st_ref) =
            batch_norm_train_reference(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps, id)
                .unwrap();
        let what = format!("shape {shape:?}");
        assert_close(&y, &y_ref, 1e-4, &format!("{what}: y"));
        assert_close(&st.mean, &st_ref.mean, 1e-5, &format!("{what}: mean"));
        assert_close(&st.var, &st_ref.var, 1e-4, &format!("{what}: var"));
        assert_eq!(st.count, shape[0] * shape[2..].iter().product::<usize>());

        // Hand formula on channel 0 in f64.
        let xs: Vec<f64> = x
            .as_tensor()
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let s: usize = shape[2..].iter().product();
        let vals: Vec<f64> = (0..shape[0])
            .flat_map(|n| xs[n * c * s..n * c * s + s].to_vec())
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
        let st_mean: Vec<f32> = st.mean.to_vec1().unwrap();
        let st_var: Vec<f32> = st.var.to_vec1().unwrap();
        assert!((st_mean[0] as f64 - m).abs() < 1e-4 * m.abs().max(1.0));
        assert!((st_var[0] as f64 - v).abs() < 1e-4 * v.max(1.0));

        // candle_nn's own BatchNorm (a chain of candle ops) on the same values.
        let cbn = candle_nn::BatchNorm::new(
            c,
            Tensor::zeros(c, DType::F32, &Device::Cpu).unwrap(),
            Tensor::ones(c, DType::F32, &Device::Cpu).unwrap(),
            gamma.as_tensor().clone(),
            beta.as_tensor().clone(),
            eps,
        )
        .unwrap();
        if shape.len() >= 3 {
            let y_nn = cbn.forward_train(x.as_tensor()).unwrap();
            assert_close(&y, &y_nn, 1e-4, &format!("{what}: y vs candle_nn"));
        }

        // Gradients vs candle's autograd of the op chain.
        let r = randn(&mut rng, &shape, 1.0, DType::F32);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (&y_ref * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (t, name) in [
            (x.as_tensor(), "dx"),
            (gamma.as_tensor(), "dgamma"),
            (beta.as_tensor(), "dbeta"),
        ] {
            assert_close(
                g.get(t).unwrap(),
                g_ref.get(t).unwrap(),
                1e-4,
                &format!("{what}: {name}"),
            );
        }

        // Eval mode vs the formula through candle ops.
        let rm = randn(&mut rng, &[c], 1.0, DType::F32);
        let rv = (randn(&mut rng, &[c], 0.2, DType::F32).abs().unwrap() + 0.5).unwrap();
        let ye = batch_norm_eval(
            x.as_tensor(),
            gamma.as_tensor(),
            beta.as_tensor(),
            &rm,
            &rv,
            eps,
            id,
        )
        .unwrap();
        let mut bshape = vec![1usize; shape.len()];
        bshape[1] = c;
        let bs = |t: &Tensor| t.reshape(bshape.as_slice()).unwrap();
        let ye_ref = x
            .as_tensor()
            .broadcast_sub(&bs(&rm))
            .unwrap()
            .broadcast_div(&bs(&(&rv + eps).unwrap().sqrt().unwrap()))
            .unwrap()
            .broadcast_mul(&bs(gamma.as_tensor()))
            .unwrap()
            .broadcast_add(&bs(beta.as_tensor()))
            .unwrap();
        assert_close(&ye, &ye_ref, 1e-4, &format!("{what}: eval y"));
        let g = (&ye * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (&ye_ref * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (t, name) in [
            (x.as_tensor(), "eval dx"),
            (gamma.as_tensor(), "eval dgamma"),
            (beta.as_tensor(), "eval dbeta"),
        ] {
            assert_close(
                g.get(t).unwrap(),
                g_ref.get(t).unwrap(),
                1e-4,
                &format!("{what}: {name}"),
            );
        }
    }
}

#[test]
fn batch_norm_train_gradients_match_finite_differences_f64() {
    let mut rng = StdRng::seed_from_u64(4);
    for shape in [vec![3usize, 2, 2, 3], vec![5, 3]] {
        let c = shape[1];
        let x = Var::from_tensor(&randn(&mut rng, &shape, 1.0, DType::F64)).unwrap();
        let gamma =
            Var::from_tensor(&(randn(&mut rng, &[c], 0.3, DType::F64) + 1.0).unwrap()).unwrap();
        let beta = Var::from_tensor(&randn(&mut rng, &[c], 0.3, DType::F64)).unwrap();
        let r = randn(&mut rng, &shape, 1.0, DType::F64);
        let eps = 1e-3;
        let loss = |x: &Tensor, g: &Tensor, b: &Tensor| -> f64 {
            let (y, _) = batch_norm_train(x, g, b, eps, Activation::Identity).unwrap();
            (y * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (y, _) = batch_norm_train(
            x.as_tensor(),
            gamma.as_tensor(),
            beta.as_tensor(),
            eps,
            Activation::Identity,
        )
        .unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (vi, var) in [&x, &gamma, &beta].into_iter().enumerate() {
            let analytic: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let h = 1e-6;
            for k in 0..base.len() {
                let t = |d: f64| {
                    let mut v = base.clone();
                    v[k] += d;
                    Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()
                };
                let args = |d: f64| match vi {
                    0 => (t(d), gamma.as_tensor().clone(), beta.as_tensor().clone()),
                    1 => (x.as_tensor().clone(), t(d), beta.as_tensor().clone()),
                    _ => (x.as_tensor().clone(), gamma.as_tensor().clone(), t(d)),
                };
                let (a, b, cc) = args(h);
                let lp = loss(&a, &b, &cc);
                let (a, b, cc) = args(-h);
                let lm = loss(&a, &b, &cc);
                let numeric = (lp - lm) / (2.0 * h);
                assert!(
                    (numeric - analytic[k]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "shape {shape:?} arg {vi} [{k}]: finite difference {numeric} vs {}",
                    analytic[k]
                );
            }
        }
    }
}

#[test]
fn batch_norm_rejects_bad_input_with_errors() {
    let dev = Device::Cpu;
    let g = Tensor::ones(3, DType::F32, &dev).unwrap();
    let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
    // one value per channel
    let id = Activation::Identity;
    let x1 = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
    assert!(batch_norm_train(&x1, &g, &b, 1e-5, id).is_err());
    // wrong channel count, rank 1
    let x = Tensor::zeros((4, 5, 2, 2), DType::F32, &dev).unwrap();
    assert!(batch_norm_train(&x, &g, &b, 1e-5, id).is_err());
    let v = Tensor::zeros(3, DType::F32, &dev).unwrap();
    assert!(batch_norm_train(&v, &g, &b, 1e-5, id).is_err());
    // a negative running variance beyond eps
    let xe = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    let rv = Tensor::new(&[1f32, -1., 1.], &dev).unwrap();
    assert!(batch_norm_eval(&xe, &g, &b, &b, &rv, 1e-5, id).is_err());
    // add_relu operands of different shapes
    assert!(add_relu(&x, &xe).is_err());
}

/// `act(BN(x))` fused (ReLU, ReLU6) against BatchNorm followed by candle's own activation, in
/// both modes, values and gradients; and the residual `relu(a + b)` against candle's ops.
#[test]
fn fused_activations_match_candle_ops() {
    let mut rng = StdRng::seed_from_u64(5);
    for shape in [vec![6usize, 4, 5, 5], vec![16, 8]] {
        let c = shape[1];
        // Spread so that both ReLU6 bounds are hit.
        let x = Var::from_tensor(&randn(&mut rng, &shape, 3.0, DType::F32)).unwrap();
        let gamma =
            Var::from_tensor(&(randn(&mut rng, &[c], 1.0, DType::F32) + 3.0).unwrap()).unwrap();
        let beta =
            Var::from_tensor(&(randn(&mut rng, &[c], 1.0, DType::F32) + 1.0).unwrap()).unwrap();
        let rm = randn(&mut rng, &[c], 1.0, DType::F32);
        let rv = (randn(&mut rng, &[c], 0.2, DType::F32).abs().unwrap() + 0.5).unwrap();
        let r = randn(&mut rng, &shape, 1.0, DType::F32);
        let (xt, gt, bt) = (x.as_tensor(), gamma.as_tensor(), beta.as_tensor());
        for act in [Activation::Relu, Activation::Relu6] {
            for train in [true, false] {
                let what = format!("{shape:?} {act:?} train {train}");
                let (ours, want) = if train {
                    let (y, _) = batch_norm_train(xt, gt, bt, 1e-5, act).unwrap();
                    let (z, _) =
                        batch_norm_train_reference(xt, gt, bt, 1e-5, Activation::Identity).unwrap();
                    (y, act.apply(&z).unwrap())
                } else {
                    let y = batch_norm_eval(xt, gt, bt, &rm, &rv, 1e-5, act).unwrap();
                    let z =
                        batch_norm_eval_reference(xt, gt, bt, &rm, &rv, 1e-5, Activation::Identity)
                            .unwrap();
                    (y, act.apply(&z).unwrap())
                };
                assert_close(&ours, &want, 1e-4, &format!("{what}: y"));
                let g = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
                for (t, name) in [(xt, "dx"), (gt, "dgamma"), (bt, "dbeta")] {
                    assert_close(
                        g.get(t).unwrap(),
                        gw.get(t).unwrap(),
                        1e-4,
                        &format!("{what}: {name}"),
                    );
                }
            }
        }
        // Some outputs must sit on each side of the ReLU6 bounds for this to test anything.
        let (y6, _) = batch_norm_train(xt, gt, bt, 1e-5, Activation::Relu6).unwrap();
        let v: Vec<f32> = y6.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.contains(&0.0) && v.contains(&6.0));
        assert!(v.iter().any(|&a| a > 0.0 && a < 6.0));
    }
    let a = Var::from_tensor(&randn(&mut rng, &[3, 4, 5, 6], 1.0, DType::F32)).unwrap();
    let b = Var::from_tensor(&randn(&mut rng, &[3, 4, 5, 6], 1.0, DType::F32)).unwrap();
    let r = randn(&mut rng, &[3, 4, 5, 6], 1.0, DType::F32);
    let ours = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let want = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
    assert_close(&ours, &want, 0.0, "add_relu");
    let g = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for t in [a.as_tensor(), b.as_tensor()] {
        assert_close(g.get(t).unwrap(), gw.get(t).unwrap(), 0.0, "add_relu grad");
    }
}

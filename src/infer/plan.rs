//! Inference plans: a frozen encoder (and optionally its classifier head or a linear probe) as one
//! small graph of fused layers, built once from the *weights* and executed by a backend.
//!
//! A plan is a list of [`Layer`]s over numbered values: value 0 is the input image batch
//! (B,3,H,W), layer `i` reads value `layer.input` (and optionally `layer.residual`) and writes
//! value `i + 1`; the last value is the output. Every convolution carries its BatchNorm folded
//! into its weight and bias (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`), and its epilogue
//! computes `act(conv(x) + b' + residual)`. The linear probe's standardisation is folded into its
//! linear layer the same way (`W' = W/σ`, `b' = b − W'·μ`).
//!
//! Plans are built from tensor names ([`TensorSource`]: a `VarMap` or a name → tensor map), not
//! from the model structs, so any backend can run them: [`InferencePlan::run_cpu`] is the
//! reference executor on candle ops; `crate::gpu` runs the same plan through WGSL shaders.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::eval::LinearProbe;
use crate::models::Arch;
use crate::{Error, Result};

/// The activation applied last in a layer's epilogue (after bias and residual).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The code the shaders use (`0` none, `1` ReLU, `2` ReLU6).
    pub fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
        }
    }

    /// Applies the activation to a candle tensor.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::None => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::Relu6 => x.clamp(0f32, 6f32)?,
        })
    }
}

/// Explicit zero padding of a feature map: rows above / below, columns left / right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    /// The same padding on all four sides.
    pub fn uniform(p: usize) -> Self {
        Pad {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// How a convolution or pooling window pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Fixed per-side padding (PyTorch `padding=p` is `Pad::uniform(p)`).
    Explicit(Pad),
    /// TensorFlow "same": output `ceil(size / stride)`, total padding
    /// `max((out − 1)·stride + k − size, 0)` split with the extra row / column at the bottom /
    /// right; depends on the input size, so it is resolved per input by [`Padding::resolve`].
    Same,
}

impl Padding {
    /// The explicit padding for an `h × w` input and a `k × k` window of stride `stride`.
    pub fn resolve(self, h: usize, w: usize, k: usize, stride: usize) -> Pad {
        match self {
            Padding::Explicit(p) => p,
            Padding::Same => {
                let (top, bottom) = same_padding(h, k, stride);
                let (left, right) = same_padding(w, k, stride);
                Pad {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
        }
    }
}

/// TensorFlow "same" padding of one dimension of size `size`: (before, after).
pub fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride.max(1));
    let total = (out.saturating_sub(1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Output size of a window of `k` with `stride` over `size + pad_before + pad_after`, or `None`
/// when the window does not fit.
fn window_out(size: usize, before: usize, after: usize, k: usize, stride: usize) -> Option<usize> {
    let padded = size + before + after;
    (padded >= k && stride > 0).then(|| (padded - k) / stride + 1)
}

/// A 2-D convolution with BatchNorm folded in: regular (`groups = 1`) or depthwise
/// (`groups = cin = cout`), square kernel.
#[derive(Clone, Debug)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: Padding,
    /// Depthwise (one k×k filter per channel) rather than a full convolution.
    pub depthwise: bool,
    /// (cout, cin, k, k), or (cout, 1, k, k) when depthwise; f32 on the CPU.
    pub weight: Tensor,
    /// (cout), f32 on the CPU.
    pub bias: Tensor,
    pub act: Activation,
}

/// Which kernel family a convolution runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvKind {
    /// Full k×k convolution (direct).
    Direct,
    /// One k×k filter per channel.
    Depthwise,
    /// 1×1, stride 1, no padding: a matrix product (cout × cin)·(cin × H·W) per image.
    Pointwise,
}

impl Conv {
    /// The kernel family this convolution maps to.
    pub fn kind(&self) -> ConvKind {
        if self.depthwise {
            ConvKind::Depthwise
        } else if self.k == 1
            && self.stride == 1
            && self.padding.resolve(1, 1, 1, 1) == Pad::default()
        {
            ConvKind::Pointwise
        } else {
            ConvKind::Direct
        }
    }
}

/// Max-pooling over k×k windows; padded positions never win (they count as −∞).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool {
    pub k: usize,
    pub stride: usize,
    pub padding: Padding,
}

/// `y = act(x·Wᵀ + b)` on (B, din) rows.
#[derive(Clone, Debug)]
pub struct Linear {
    pub din: usize,
    pub dout: usize,
    /// (dout, din), f32 on the CPU.
    pub weight: Tensor,
    /// (dout), f32 on the CPU.
    pub bias: Tensor,
    pub act: Activation,
}

/// What a layer computes.
#[derive(Clone, Debug)]
pub enum Op {
    /// (B,cin,H,W) -> (B,cout,H',W'), fused bias + residual + activation.
    Conv(Conv),
    /// (B,C,H,W) -> (B,C,H',W').
    MaxPool(MaxPool),
    /// (B,C,H,W) -> (B,C): mean over the spatial dimensions.
    GlobalAvgPool,
    /// (B,din) -> (B,dout).
    Linear(Linear),
}

/// One fused layer: `value[i + 1] = op(value[input]) (+ value[residual])`.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The checkpoint name the layer came from (e.g. `layer1.0.conv1`), for messages.
    pub name: String,
    pub op: Op,
    /// Index of the value this layer reads (0 = the input image batch).
    pub input: usize,
    /// Index of a value of the output's shape added before the activation (convolutions only).
    pub residual: Option<usize>,
}

/// The shape of one value of a plan for one input: `(channels, height, width)` per image; flat
/// vectors (after global pooling) have `height = width = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl ValueShape {
    /// Elements per image.
    pub fn numel(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// What the plan's classifier is, if any.
#[derive(Clone, Copy, Debug)]
pub enum Head<'a> {
    /// The checkpoint's own head (`fc` / `_fc` by [`Arch::head_prefix`]).
    Checkpoint,
    /// A linear probe on the pooled feature (standardisation folded into the linear layer).
    Probe(&'a LinearProbe),
}

/// Named tensors a plan is built from.
pub trait TensorSource {
    /// The tensor called `name`, if present.
    fn tensor(&self, name: &str) -> Option<Tensor>;
}

impl TensorSource for VarMap {
    fn tensor(&self, name: &str) -> Option<Tensor> {
        let data = self.data().lock().expect("VarMap lock poisoned");
        data.get(name).map(|v| v.as_tensor().clone())
    }
}

impl TensorSource for HashMap<String, Tensor> {
    fn tensor(&self, name: &str) -> Option<Tensor> {
        self.get(name).cloned()
    }
}

/// An encoder (+ head) as fused layers; see the module documentation.
#[derive(Clone, Debug)]
pub struct InferencePlan {
    arch: Arch,
    layers: Vec<Layer>,
    in_channels: usize,
    out_dim: usize,
}

impl InferencePlan {
    /// A plan from explicit layers reading `in_channels`-channel images. Checks that every layer
    /// reads earlier values, that residuals are only on convolutions and that channel counts
    /// chain; spatial sizes are checked per input by [`InferencePlan::shapes`].
    pub fn new(arch: Arch, in_channels: usize, layers: Vec<Layer>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::invalid("inference plan: no layers"));
        }
        let mut plan = Self {
            arch,
            layers,
            in_channels,
            out_dim: 0,
        };
        // Channel consistency with a nominal input large enough for every window.
        let mut chans = vec![in_channels];
        let mut flat = vec![false];
        for (i, l) in plan.layers.iter().enumerate() {
            let bad = |msg: String| {
                Error::invalid(format!("inference plan, layer {i} `{}`: {msg}", l.name))
            };
            if l.input > i || l.residual.is_some_and(|r| r > i) {
                return Err(bad("reads a value that is not computed yet".into()));
            }
            let (c, is_flat) = (chans[l.input], flat[l.input]);
            let (out_c, out_flat) = match &l.op {
                Op::Conv(cv) => {
                    check_conv(cv).map_err(&bad)?;
                    if is_flat || c != cv.cin {
                        return Err(bad(format!(
                            "takes {} channels, its input has {c}{}",
                            cv.cin,
                            if is_flat { " (flat)" } else { "" }
                        )));
                    }
                    (cv.cout, false)
                }
                Op::MaxPool(p) => {
                    if is_flat || p.k == 0 || p.stride == 0 {
                        return Err(bad("max-pool needs a feature map, k > 0, stride > 0".into()));
                    }
                    (c, false)
                }
                Op::GlobalAvgPool => {
                    if is_flat {
                        return Err(bad("global pooling of a flat vector".into()));
                    }
                    (c, true)
                }
                Op::Linear(li) => {
                    check_linear(li).map_err(&bad)?;
                    if li.din != c {
                        return Err(bad(format!("takes {} features, its input has {c}", li.din)));
                    }
                    (li.dout, true)
                }
            };
            if let Some(r) = l.residual {
                if !matches!(l.op, Op::Conv(_)) {
                    return Err(bad("only convolutions take a residual".into()));
                }
                if chans[r] != out_c || flat[r] {
                    return Err(bad(format!(
                        "residual value {r} has {} channels, the output {out_c}",
                        chans[r]
                    )));
                }
            }
            chans.push(out_c);
            flat.push(out_flat);
        }
        plan.out_dim = *chans.last().expect("non-empty");
        Ok(plan)
    }

    /// Builds the plan of `arch` from `weights` (PyTorch state_dict names, BatchNorm running
    /// statistics included), folding every BatchNorm into its convolution. `head`: none (the
    /// output is the pooled feature (B,D)), the checkpoint's head or a linear probe (the output
    /// is logits (B,C)).
    pub fn from_weights(
        arch: Arch,
        weights: &dyn TensorSource,
        head: Option<Head>,
    ) -> Result<Self> {
        let mut b = Builder {
            arch,
            src: weights,
            layers: Vec::new(),
            chans: vec![3],
        };
        let pooled = match arch {
            Arch::ResNet18 | Arch::ResNet18Cifar => b.resnet18(arch == Arch::ResNet18)?,
            Arch::EfficientNetLite0 => b.efficientnet_lite0()?,
            Arch::SmallCnn => b.small_cnn()?,
        };
        match head {
            None => {}
            Some(Head::Checkpoint) => {
                let p = arch.head_prefix();
                let w = b.get(&format!("{p}.weight"))?;
                let bias = b.get(&format!("{p}.bias"))?;
                b.linear(p, pooled, w, bias)?;
            }
            Some(Head::Probe(probe)) => {
                let (w, bias) = fold_probe(probe)?;
                b.linear("probe", pooled, w, bias)?;
            }
        }
        Self::new(arch, 3, b.layers)
    }

    /// Loads `path` strictly for `arch` (see [`crate::models::weights::load_varmap`]) and builds
    /// its plan; with `head = Some(Head::Checkpoint)` the file must hold the classifier head.
    pub fn load(path: &Path, arch: Arch, head: Option<Head>) -> Result<Self> {
        let with_head = matches!(head, Some(Head::Checkpoint));
        let w =
            crate::models::weights::load_varmap(path, arch, with_head, DType::F32, &Device::Cpu)?;
        Self::from_weights(arch, &w.varmap, head).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    /// The architecture the plan was built for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The fused layers, in execution order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Channels of the input images.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Channels of the output (the feature dimension or the number of classes); the output
    /// rows have this width when the plan ends in a pooling or linear layer.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Per-image shape of every value (index 0 = the input) for an `h × w` input; an error
    /// names the first layer whose window does not fit or whose residual does not match.
    pub fn shapes(&self, h: usize, w: usize) -> Result<Vec<ValueShape>> {
        let mut shapes = vec![ValueShape {
            c: self.in_channels,
            h,
            w,
        }];
        for (i, l) in self.layers.iter().enumerate() {
            let s = shapes[l.input];
            let too_small = || {
                Error::invalid(format!(
                    "inference plan, layer {i} `{}`: input {}x{} is too small for its window",
                    l.name, s.h, s.w
                ))
            };
            let out = match &l.op {
                Op::Conv(cv) => {
                    let p = cv.padding.resolve(s.h, s.w, cv.k, cv.stride);
                    ValueShape {
                        c: cv.cout,
                        h: window_out(s.h, p.top, p.bottom, cv.k, cv.stride)
                            .ok_or_else(too_small)?,
                        w: window_out(s.w, p.left, p.right, cv.k, cv.stride)
                            .ok_or_else(too_small)?,
                    }
                }
                Op::MaxPool(mp) => {
                    let p = mp.padding.resolve(s.h, s.w, mp.k, mp.stride);
                    if p.top >= mp.k || p.bottom >= mp.k || p.left >= mp.k || p.right >= mp.k {
                        return Err(too_small());
                    }
                    ValueShape {
                        c: s.c,
                        h: window_out(s.h, p.top, p.bottom, mp.k, mp.stride)
                            .ok_or_else(too_small)?,
                        w: window_out(s.w, p.left, p.right, mp.k, mp.stride)
                            .ok_or_else(too_small)?,
                    }
                }
                Op::GlobalAvgPool => ValueShape { c: s.c, h: 1, w: 1 },
                Op::Linear(li) => ValueShape {
                    c: li.dout,
                    h: 1,
                    w: 1,
                },
            };
            if let Some(r) = l.residual {
                if shapes[r] != out {
                    return Err(Error::invalid(format!(
                        "inference plan, layer {i} `{}`: residual {:?} does not match output {:?}",
                        l.name, shapes[r], out
                    )));
                }
            }
            shapes.push(out);
        }
        Ok(shapes)
    }

    /// Reference executor on candle ops (any device): (B,C,H,W) -> (B, out_dim).
    pub fn run_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.in_channels {
            return Err(Error::invalid(format!(
                "inference plan: input has {c} channels, the plan takes {}",
                self.in_channels
            )));
        }
        self.shapes(h, w)?;
        let mut values: Vec<Tensor> = vec![x.to_dtype(DType::F32)?];
        for l in &self.layers {
            let res = l.residual.map(|r| &values[r]);
            let y = run_op_cpu(&l.op, &values[l.input], res)?;
            values.push(y);
        }
        let out = values.pop().expect("non-empty");
        let b = out.dim(0)?;
        Ok(out.reshape((b, out.elem_count() / b.max(1)))?)
    }
}

fn check_conv(cv: &Conv) -> std::result::Result<(), String> {
    let wshape = if cv.depthwise {
        if cv.cin != cv.cout {
            return Err(format!(
                "depthwise with {} in, {} out channels",
                cv.cin, cv.cout
            ));
        }
        vec![cv.cout, 1, cv.k, cv.k]
    } else {
        vec![cv.cout, cv.cin, cv.k, cv.k]
    };
    if cv.k == 0 || cv.stride == 0 {
        return Err("kernel and stride must be positive".into());
    }
    if cv.weight.dims() != wshape.as_slice() || cv.bias.dims() != [cv.cout] {
        return Err(format!(
            "weight {:?} / bias {:?}, expected {wshape:?} / [{}]",
            cv.weight.dims(),
            cv.bias.dims(),
            cv.cout
        ));
    }
    Ok(())
}

fn check_linear(li: &Linear) -> std::result::Result<(), String> {
    if li.weight.dims() != [li.dout, li.din] || li.bias.dims() != [li.dout] {
        return Err(format!(
            "weight {:?} / bias {:?}, expected [{}, {}] / [{}]",
            li.weight.dims(),
            li.bias.dims(),
            li.dout,
            li.din,
            li.dout
        ));
    }
    Ok(())
}

/// Pads the last two dimensions of (B,C,H,W) with `value`.
fn pad_with(x: &Tensor, p: Pad, value: f32) -> Result<Tensor> {
    if p == Pad::default() {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return Ok(x
            .pad_with_zeros(2, p.top, p.bottom)?
            .pad_with_zeros(3, p.left, p.right)?);
    }
    let (b, c, h, w) = x.dims4()?;
    let full = |hh: usize, ww: usize| Tensor::full(value, (b, c, hh, ww), x.device());
    let mut rows = Vec::new();
    if p.top > 0 {
        rows.push(full(p.top, w)?);
    }
    rows.push(x.clone());
    if p.bottom > 0 {
        rows.push(full(p.bottom, w)?);
    }
    let x = Tensor::cat(&rows, 2)?;
    let hp = h + p.top + p.bottom;
    let mut cols = Vec::new();
    if p.left > 0 {
        cols.push(full(hp, p.left)?);
    }
    cols.push(x);
    if p.right > 0 {
        cols.push(full(hp, p.right)?);
    }
    Ok(Tensor::cat(&cols, 3)?)
}

/// Reference (candle) computation of one layer: `op(x)`, plus `residual` before the activation.
/// Shapes: see [`Op`]; the residual has the output's shape.
pub fn run_op_cpu(op: &Op, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    let dev = x.device();
    let (y, act) = match op {
        Op::Conv(cv) => {
            let (_, _, h, w) = x.dims4()?;
            let p = cv.padding.resolve(h, w, cv.k, cv.stride);
            let xp = pad_with(x, p, 0.0)?;
            let groups = if cv.depthwise { cv.cin } else { 1 };
            let y = xp.conv2d(&cv.weight.to_device(dev)?, 0, cv.stride, 1, groups)?;
            let b = cv.bias.to_device(dev)?.reshape((1, cv.cout, 1, 1))?;
            (y.broadcast_add(&b)?, cv.act)
        }
        Op::MaxPool(mp) => {
            let (_, _, h, w) = x.dims4()?;
            let p = mp.padding.resolve(h, w, mp.k, mp.stride);
            let xp = pad_with(x, p, f32::NEG_INFINITY)?;
            (
                xp.max_pool2d_with_stride(mp.k, mp.stride)?,
                Activation::None,
            )
        }
        Op::GlobalAvgPool => (x.mean((2, 3))?, Activation::None),
        Op::Linear(li) => {
            let b = x.dim(0)?;
            let x2 = x.reshape((b, li.din))?;
            let y = x2
                .matmul(&li.weight.to_device(dev)?.t()?)?
                .broadcast_add(&li.bias.to_device(dev)?.reshape((1, li.dout))?)?;
            (y, li.act)
        }
    };
    let y = match residual {
        Some(r) => (y + r)?,
        None => y,
    };
    act.apply(&y)
}

/// The probe's standardise + linear as one linear layer: `W' = W/σ`, `b' = b − W'·μ` (in f64).
fn fold_probe(p: &LinearProbe) -> Result<(Tensor, Tensor)> {
    let (c, d) = (p.num_classes(), p.dim);
    if p.weight.len() != c * d || p.bias.len() != c || p.mean.len() != d || p.std.len() != d {
        return Err(Error::invalid(format!(
            "linear probe: inconsistent sizes (weight {}, bias {}, mean {}, std {} for {c} classes x {d})",
            p.weight.len(),
            p.bias.len(),
            p.mean.len(),
            p.std.len()
        )));
    }
    let mut w = vec![0f32; c * d];
    let mut b = vec![0f32; c];
    for k in 0..c {
        let mut acc = p.bias[k] as f64;
        for j in 0..d {
            let wk = p.weight[k * d + j] as f64 / p.std[j] as f64;
            w[k * d + j] = wk as f32;
            acc -= wk * p.mean[j] as f64;
        }
        b[k] = acc as f32;
    }
    Ok((
        Tensor::from_vec(w, (c, d), &Device::Cpu)?,
        Tensor::from_vec(b, c, &Device::Cpu)?,
    ))
}

/// EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, output channels).
const EFFNET_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// Walks an architecture's tensor names and emits fused layers.
struct Builder<'a> {
    arch: Arch,
    src: &'a dyn TensorSource,
    layers: Vec<Layer>,
    /// Channels of each value so far.
    chans: Vec<usize>,
}

impl Builder<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self.src.tensor(name).ok_or_else(|| {
            Error::invalid(format!(
                "inference plan for {}: no tensor `{name}` in the weights",
                self.arch
            ))
        })?;
        Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)
    }

    fn push(
        &mut self,
        name: &str,
        op: Op,
        input: usize,
        residual: Option<usize>,
        c: usize,
    ) -> usize {
        self.layers.push(Layer {
            name: name.to_string(),
            op,
            input,
            residual,
        });
        self.chans.push(c);
        self.chans.len() - 1
    }

    /// Convolution `conv` (no bias) followed by BatchNorm `bn`, folded; returns the new value.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        input: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        depthwise: bool,
        eps: f64,
        act: Activation,
        residual: Option<usize>,
    ) -> Result<usize> {
        let cin = self.chans[input];
        let w = self.get(&format!("{conv}.weight"))?;
        let dims = w.dims().to_vec();
        let cout = dims.first().copied().unwrap_or(0);
        let expect = if depthwise {
            vec![cin, 1, k, k]
        } else {
            vec![cout, cin, k, k]
        };
        if dims != expect {
            return Err(Error::invalid(format!(
                "inference plan for {}: `{conv}.weight` is {dims:?}, expected {expect:?}",
                self.arch
            )));
        }
        let bnt = |leaf: &str| -> Result<Tensor> {
            let t = self.get(&format!("{bn}.{leaf}"))?;
            if t.dims() != [cout] {
                return Err(Error::invalid(format!(
                    "inference plan for {}: `{bn}.{leaf}` is {:?}, expected [{cout}]",
                    self.arch,
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F64)?)
        };
        let (gamma, beta, mean, var) = (
            bnt("weight")?,
            bnt("bias")?,
            bnt("running_mean")?,
            bnt("running_var")?,
        );
        let scale = (gamma / (var + eps)?.sqrt()?)?;
        let weight = w
            .to_dtype(DType::F64)?
            .broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?
            .to_dtype(DType::F32)?;
        let bias = (beta - (mean * &scale)?)?.to_dtype(DType::F32)?;
        let op = Op::Conv(Conv {
            cin,
            cout,
            k,
            stride,
            padding,
            depthwise,
            weight,
            bias,
            act,
        });
        Ok(self.push(conv, op, input, residual, cout))
    }

    fn linear(&mut self, name: &str, input: usize, weight: Tensor, bias: Tensor) -> Result<usize> {
        let din = self.chans[input];
        let dims = weight.dims().to_vec();
        if dims.len() != 2 || dims[1] != din || bias.dims() != [dims[0]] {
            return Err(Error::invalid(format!(
                "inference plan for {}: head `{name}` weight {dims:?} / bias {:?} does not take \
                 {din}-d features",
                self.arch,
                bias.dims()
            )));
        }
        let dout = dims[0];
        let op = Op::Linear(Linear {
            din,
            dout,
            weight,
            bias,
            act: Activation::None,
        });
        Ok(self.push(name, op, input, None, dout))
    }

    fn global_pool(&mut self, input: usize) -> usize {
        let c = self.chans[input];
        self.push("global_avg_pool", Op::GlobalAvgPool, input, None, c)
    }

    /// torchvision ResNet-18; returns the pooled value.
    fn resnet18(&mut self, imagenet_stem: bool) -> Result<usize> {
        const EPS: f64 = 1e-5;
        let (k, s, p) = if imagenet_stem { (7, 2, 3) } else { (3, 1, 1) };
        let pad = |p| Padding::Explicit(Pad::uniform(p));
        let mut x = self.conv_bn(
            "conv1",
            "bn1",
            0,
            k,
            s,
            pad(p),
            false,
            EPS,
            Activation::Relu,
            None,
        )?;
        if imagenet_stem {
            let mp = MaxPool {
                k: 3,
                stride: 2,
                padding: pad(1),
            };
            x = self.push("maxpool", Op::MaxPool(mp), x, None, self.chans[x]);
        }
        for (li, w) in [64usize, 128, 256, 512].into_iter().enumerate() {
            for bi in 0..2 {
                let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                let n = format!("layer{}.{bi}", li + 1);
                let cin = self.chans[x];
                let h = self.conv_bn(
                    &format!("{n}.conv1"),
                    &format!("{n}.bn1"),
                    x,
                    3,
                    stride,
                    pad(1),
                    false,
                    EPS,
                    Activation::Relu,
                    None,
                )?;
                let shortcut = if stride != 1 || cin != w {
                    self.conv_bn(
                        &format!("{n}.downsample.0"),
                        &format!("{n}.downsample.1"),
                        x,
                        1,
                        stride,
                        pad(0),
                        false,
                        EPS,
                        Activation::None,
                        None,
                    )?
                } else {
                    x
                };
                x = self.conv_bn(
                    &format!("{n}.conv2"),
                    &format!("{n}.bn2"),
                    h,
                    3,
                    1,
                    pad(1),
                    false,
                    EPS,
                    Activation::Relu,
                    Some(shortcut),
                )?;
            }
        }
        Ok(self.global_pool(x))
    }

    /// `small-cnn`: four 3×3 conv-BN-ReLU stages; returns the pooled value.
    fn small_cnn(&mut self) -> Result<usize> {
        let mut x = 0;
        for (i, s) in [1usize, 2, 2, 2].into_iter().enumerate() {
            x = self.conv_bn(
                &format!("stages.{i}.conv"),
                &format!("stages.{i}.bn"),
                x,
                3,
                s,
                Padding::Explicit(Pad::uniform(1)),
                false,
                1e-5,
                Activation::Relu,
                None,
            )?;
        }
        Ok(self.global_pool(x))
    }

    /// EfficientNet-Lite0 (`efficientnet_pytorch` names); returns the pooled value.
    fn efficientnet_lite0(&mut self) -> Result<usize> {
        const EPS: f64 = 1e-3;
        let r6 = Activation::Relu6;
        let same = Padding::Same;
        let mut x = self.conv_bn("_conv_stem", "_bn0", 0, 3, 2, same, false, EPS, r6, None)?;
        let mut i = 0;
        for (repeats, k, stride, expand, cout) in EFFNET_STAGES {
            for r in 0..repeats {
                let s = if r == 0 { stride } else { 1 };
                let n = format!("_blocks.{i}");
                let cin = self.chans[x];
                let mut h = x;
                if expand != 1 {
                    h = self.conv_bn(
                        &format!("{n}._expand_conv"),
                        &format!("{n}._bn0"),
                        h,
                        1,
                        1,
                        same,
                        false,
                        EPS,
                        r6,
                        None,
                    )?;
                }
                h = self.conv_bn(
                    &format!("{n}._depthwise_conv"),
                    &format!("{n}._bn1"),
                    h,
                    k,
                    s,
                    same,
                    true,
                    EPS,
                    r6,
                    None,
                )?;
                let skip = (s == 1 && cin == cout).then_some(x);
                x = self.conv_bn(
                    &format!("{n}._project_conv"),
                    &format!("{n}._bn2"),
                    h,
                    1,
                    1,
                    same,
                    false,
                    EPS,
                    Activation::None,
                    skip,
                )?;
                if self.chans[x] != cout {
                    return Err(Error::invalid(format!(
                        "inference plan for {}: `{n}._project_conv` gives {} channels, expected {cout}",
                        self.arch, self.chans[x]
                    )));
                }
                i += 1;
            }
        }
        x = self.conv_bn("_conv_head", "_bn1", x, 1, 1, same, false, EPS, r6, None)?;
        Ok(self.global_pool(x))
    }
}

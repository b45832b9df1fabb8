//! Projector and predictor MLPs of the SSL methods, and CaSSLe's distillation predictor.
//!
//! Every head is a PyTorch `nn.Sequential` of `Linear`, `BatchNorm1d` and `ReLU` modules, and its
//! tensors carry the Sequential's indices under the head's prefix, exactly as a PyTorch
//! `state_dict()` names them: a Barlow Twins projector built under `projector` holds
//! `projector.0.{weight,bias}` (Linear), `projector.1.{weight,bias,running_mean,running_var}`
//! (BatchNorm1d), index 2 is the ReLU (no tensors), `projector.3` the next Linear, and so on.
//!
//! | head (`--method`)           | layers                                   | default widths (ResNet-18 / small-cnn) |
//! |-----------------------------|------------------------------------------|------------------------------|
//! | SimCLR, MoCo v2+ projector  | Linear–ReLU–Linear                       | d–2048–128 / d–1024–128      |
//! | BYOL projector              | Linear–BN–ReLU–Linear                    | d–4096–256 / d–2048–256      |
//! | BYOL predictor              | Linear–BN–ReLU–Linear                    | 256–4096–256 / 256–2048–256  |
//! | Barlow Twins, VICReg        | Linear–BN–ReLU–Linear–BN–ReLU–Linear     | d–2048–2048–2048 / d–1024–1024–1024 |
//! | CorInfoMax                  | Linear–ReLU–Linear–ReLU–Linear (no bias) | d–2048–2048–64 / d–1024–1024–64 |
//! | CaSSLe distillation `g`     | Linear–BN–ReLU–Linear                    | D–2048–D (D = projector output) |
//!
//! The SimCLR / MoCo / BYOL / Barlow / VICReg heads and `g` are solo-learn's and CaSSLe's; the
//! CorInfoMax projector is CroMo-Mixup's (`models/ssl.py`, `infomax`). Linear layers are
//! initialised like PyTorch's `nn.Linear` (weight and bias uniform in ±1/√fan_in), BatchNorm1d
//! with weight 1, bias 0, running mean 0, running variance 1 (eps 1e-5, momentum 0.1).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use crate::ops::{Activation, BatchNorm};
use crate::{Error, Result};

/// The shape of an MLP head: `dims = [in, h1, …, out]` gives `dims.len() − 1` Linear layers;
/// every Linear but the last is followed by an optional BatchNorm1d and a ReLU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlpSpec {
    /// Widths from input to output, at least two entries, all positive.
    pub dims: Vec<usize>,
    /// A BatchNorm1d after every hidden Linear.
    pub batch_norm: bool,
    /// Whether the last Linear has a bias.
    pub last_bias: bool,
}

impl MlpSpec {
    /// SimCLR projector (solo-learn): `d–w–out`, Linear–ReLU–Linear.
    pub fn simclr(d: usize, w: usize, out: usize) -> Self {
        Self {
            dims: vec![d, w, out],
            batch_norm: false,
            last_bias: true,
        }
    }

    /// MoCo v2+ projector (solo-learn): `d–w–out`, Linear–ReLU–Linear.
    pub fn moco(d: usize, w: usize, out: usize) -> Self {
        Self::simclr(d, w, out)
    }

    /// BYOL projector (solo-learn): `d–h–out`, Linear–BN–ReLU–Linear.
    pub fn byol_projector(d: usize, h: usize, out: usize) -> Self {
        Self {
            dims: vec![d, h, out],
            batch_norm: true,
            last_bias: true,
        }
    }

    /// BYOL predictor (solo-learn): `out–h–out`, Linear–BN–ReLU–Linear.
    pub fn byol_predictor(out: usize, h: usize) -> Self {
        Self::byol_projector(out, h, out)
    }

    /// Barlow Twins projector (solo-learn): `d–w–w–out`, Linear–BN–ReLU–Linear–BN–ReLU–Linear.
    pub fn barlow(d: usize, w: usize, out: usize) -> Self {
        Self {
            dims: vec![d, w, w, out],
            batch_norm: true,
            last_bias: true,
        }
    }

    /// VICReg projector (solo-learn): as [`MlpSpec::barlow`].
    pub fn vicreg(d: usize, w: usize, out: usize) -> Self {
        Self::barlow(d, w, out)
    }

    /// CorInfoMax projector (CroMo-Mixup / corinfomax-ssl): `d–w–w–out`,
    /// Linear–ReLU–Linear–ReLU–Linear, the last Linear without bias.
    pub fn corinfomax(d: usize, w: usize, out: usize) -> Self {
        Self {
            dims: vec![d, w, w, out],
            batch_norm: false,
            last_bias: false,
        }
    }

    /// CaSSLe's distillation predictor `g`: `d–h–d`, Linear–BN–ReLU–Linear.
    pub fn distill_predictor(d: usize, h: usize) -> Self {
        Self::byol_projector(d, h, d)
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.dims.last().copied().unwrap_or(0)
    }

    fn check(&self) -> Result<()> {
        if self.dims.len() < 2 || self.dims.contains(&0) {
            return Err(Error::invalid(format!(
                "MLP head: widths {:?} must list at least an input and an output width, all positive",
                self.dims
            )));
        }
        Ok(())
    }
}

/// One module of the Sequential.
#[derive(Clone, Debug)]
enum Layer {
    Linear(Linear),
    BatchNorm(BatchNorm),
    Relu,
}

/// An MLP head: `(B, in) -> (B, out)`; BatchNorm1d uses batch statistics (and updates its
/// running statistics) in train mode, the running statistics in eval mode.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Layer>,
    spec: MlpSpec,
}

impl Mlp {
    /// Builds the head under `vb` (whose prefix is the head's name, e.g. `vb.pp("projector")`),
    /// with Sequential indices as tensor names. Tensors absent from a `VarMap`-backed builder are
    /// created with PyTorch's default initialisation.
    pub fn new(spec: &MlpSpec, vb: VarBuilder) -> Result<Self> {
        spec.check()?;
        let mut layers = Vec::new();
        let n_linear = spec.dims.len() - 1;
        for i in 0..n_linear {
            let (fan_in, fan_out) = (spec.dims[i], spec.dims[i + 1]);
            let last = i + 1 == n_linear;
            let lv = vb.pp(layers.len().to_string());
            let bound = 1.0 / (fan_in as f64).sqrt();
            let init = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let weight = lv.get_with_hints((fan_out, fan_in), "weight", init)?;
            let bias = if !last || spec.last_bias {
                Some(lv.get_with_hints(fan_out, "bias", init)?)
            } else {
                None
            };
            layers.push(Layer::Linear(Linear::new(weight, bias)));
            if !last {
                if spec.batch_norm {
                    let bv = vb.pp(layers.len().to_string());
                    layers.push(Layer::BatchNorm(BatchNorm::new(fan_out, 1e-5, bv)?));
                }
                layers.push(Layer::Relu);
            }
        }
        Ok(Self {
            layers,
            spec: spec.clone(),
        })
    }

    /// The widths and layout this head was built with.
    pub fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.spec.out_dim()
    }

    /// `(B, in) -> (B, out)`; `train` selects batch statistics in BatchNorm1d.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match x.dims() {
            &[_, d] if d == self.spec.in_dim() => {}
            dims => {
                return Err(Error::invalid(format!(
                    "MLP head {:?}: input must be (B, {}), got {dims:?}",
                    self.spec.dims,
                    self.spec.in_dim()
                )))
            }
        }
        Ok(self.forward_t(x, train)?)
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            y = match &self.layers[i] {
                Layer::Linear(l) => l.forward(&y)?,
                // BatchNorm1d followed by ReLU: one fused op.
                Layer::BatchNorm(bn) if matches!(self.layers.get(i + 1), Some(Layer::Relu)) => {
                    i += 1;
                    bn.forward_act(&y, train, Activation::Relu)?
                }
                Layer::BatchNorm(bn) => bn.forward_act(&y, train, Activation::Identity)?,
                Layer::Relu => y.relu()?,
            };
            i += 1;
        }
        Ok(y)
    }
}

//! Deep copies of encoder + projector: the EMA target of BYOL / MoCo (here) and the frozen
//! teacher of the continual strategies (`crate::continual::Teacher`, built on [`NetCopy`]).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::set_var;
use crate::models::heads::{Mlp, MlpSpec};
use crate::models::weights::{is_bn_buffer, natural_cmp};
use crate::models::{build_encoder, Arch, Encoder};
use crate::{Error, Result};

/// An encoder + projector whose tensors live in their own [`VarMap`] (never handed to an
/// optimiser), filled with deep copies of another network's `backbone.*` / `projector.*`
/// tensors (new storage: later changes to either side never reach the other).
pub(crate) struct NetCopy {
    varmap: VarMap,
    backbone: Box<dyn Encoder>,
    projector: Mlp,
}

impl NetCopy {
    /// Copies every `backbone.` and `projector.` tensor of `src` (parameters and BatchNorm
    /// running statistics) and builds `arch` + a `spec` projector on the copies.
    pub(crate) fn snapshot(
        src: &VarMap,
        arch: Arch,
        spec: &MlpSpec,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let from = src.data().lock().map_err(|_| lock_error())?;
            let mut to = varmap.data().lock().map_err(|_| lock_error())?;
            for (name, var) in from.iter() {
                if name.starts_with("backbone.") || name.starts_with("projector.") {
                    // `detach` gives a non-variable view; `Var::from_tensor` then copies it into
                    // fresh storage.
                    let copy = Var::from_tensor(&var.as_tensor().detach())?;
                    to.insert(name.clone(), copy);
                }
            }
        }
        Self::build(varmap, arch, spec, device)
    }

    /// Builds the network on `varmap`, which must hold every tensor it asks for (with the right
    /// shapes) and nothing else under `backbone.` / `projector.`.
    pub(crate) fn build(
        varmap: VarMap,
        arch: Arch,
        spec: &MlpSpec,
        device: &Device,
    ) -> Result<Self> {
        let before = varmap.data().lock().map_err(|_| lock_error())?.len();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let backbone = build_encoder(arch, vb.pp("backbone"))?;
        let projector = Mlp::new(spec, vb.pp("projector"))?;
        let after = varmap.data().lock().map_err(|_| lock_error())?.len();
        if after != before {
            return Err(Error::invalid(format!(
                "copy of a {arch} network: {} tensors were missing from the source",
                after - before
            )));
        }
        Ok(Self {
            varmap,
            backbone,
            projector,
        })
    }

    /// `(B,3,H,W) -> (feats (B,D), z (B,d))`; `train` selects batch statistics in BatchNorm
    /// (and updates this copy's running statistics).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_parts(x, train, train)
    }

    /// As [`NetCopy::forward`] with the encoder's BatchNorm mode (`backbone_train`) apart from
    /// the projector's (`head_train`).
    pub(crate) fn forward_parts(
        &self,
        x: &Tensor,
        backbone_train: bool,
        head_train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let feats = self.backbone.forward_t(x, backbone_train)?;
        let z = self.projector.forward(&feats, head_train)?;
        Ok((feats, z))
    }

    pub(crate) fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// All tensors (current values), sorted by name.
    pub(crate) fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let data = self.varmap.data().lock().map_err(|_| lock_error())?;
        let mut out: Vec<(String, Tensor)> = data
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        Ok(out)
    }

    /// Overwrites one tensor by name (shape must match).
    pub(crate) fn set_tensor(&self, name: &str, t: &Tensor) -> Result<()> {
        let data = self.varmap.data().lock().map_err(|_| lock_error())?;
        let var = data
            .get(name)
            .ok_or_else(|| Error::invalid(format!("network copy: no tensor named `{name}`")))?;
        set_var(var, t, name)
    }
}

/// The EMA target network of BYOL and MoCo: a copy of the online encoder + projector, moved
/// towards the online weights after every step and never trained.
pub struct EmaNet {
    net: NetCopy,
}

impl EmaNet {
    /// A target equal to the online network's current `backbone.*` / `projector.*` tensors.
    pub(crate) fn snapshot(
        online: &VarMap,
        arch: Arch,
        spec: &MlpSpec,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            net: NetCopy::snapshot(online, arch, spec, device)?,
        })
    }

    /// `(B,3,H,W) -> (feats (B,D), z (B,d))`, not detached (the caller detaches).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.net.forward(x, train)
    }

    /// As [`EmaNet::forward`], with the encoder's BatchNorms in train mode only when both
    /// `train` and `backbone_bn_train` hold (see `MethodConfig::backbone_bn_train`).
    pub fn forward_bn(
        &self,
        x: &Tensor,
        train: bool,
        backbone_bn_train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.net.forward_parts(x, train && backbone_bn_train, train)
    }

    /// The target's own VarMap (names as the online network's, without prefix changes).
    pub fn varmap(&self) -> &VarMap {
        self.net.varmap()
    }

    /// Current target tensors, sorted by name.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.net.tensors()
    }

    pub(crate) fn set_tensor(&self, name: &str, t: &Tensor) -> Result<()> {
        self.net.set_tensor(name, t)
    }

    /// `θ_t ← τ θ_t + (1 − τ) θ_o` for every trainable tensor of the target (BatchNorm running
    /// statistics excluded), θ_o read from `online` under the same name.
    pub(crate) fn update(&self, online: &VarMap, tau: f64) -> Result<()> {
        let src = online.data().lock().map_err(|_| lock_error())?;
        let dst = self.net.varmap.data().lock().map_err(|_| lock_error())?;
        for (name, t) in dst.iter() {
            if is_bn_buffer(name) {
                continue;
            }
            let o = src.get(name).ok_or_else(|| {
                Error::invalid(format!("EMA update: online network has no tensor `{name}`"))
            })?;
            let new = t
                .as_tensor()
                .affine(tau, 0.0)?
                .add(&o.as_tensor().detach().affine(1.0 - tau, 0.0)?)?;
            t.set(&new)?;
        }
        Ok(())
    }
}

fn lock_error() -> Error {
    Error::invalid("internal: a VarMap lock is poisoned")
}

//! CorInfoMax: log-determinant of the running correlation of each view plus an invariance term,
//! with running statistics that are method state (reset at every task).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::vicreg::mse;
use super::{MethodConfig, Views};
use crate::losses::{barlow, corinfomax, l2_normalize, CorInfoMaxConfig, CorInfoMaxState};
use crate::{Error, Result};

/// The running statistics of the SSL loss (`main`) and of the distillation loss (`pair`, the
/// role of `old_covarince_loss` in CroMo-Mixup's trainer), with the updates staged this step.
#[derive(Debug, Clone)]
pub(crate) struct CorInfoMaxStates {
    main: CorInfoMaxState,
    pair: CorInfoMaxState,
    pending_main: Option<CorInfoMaxState>,
    pending_pair: Option<CorInfoMaxState>,
}

impl CorInfoMaxStates {
    /// Fresh statistics (zero means, `R = r_ini · I`).
    pub(crate) fn new(cfg: &MethodConfig, device: &Device) -> Result<Self> {
        let s = CorInfoMaxState::new(
            cfg.proj_out,
            &cfg.corinfomax,
            candle_core::DType::F32,
            device,
        )?;
        Ok(Self {
            main: s.clone(),
            pair: s,
            pending_main: None,
            pending_pair: None,
        })
    }

    /// Takes the staged statistics.
    pub(crate) fn commit(&mut self) {
        if let Some(s) = self.pending_main.take() {
            self.main = s;
        }
        if let Some(s) = self.pending_pair.take() {
            self.pair = s;
        }
    }

    pub(crate) fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (prefix, s) in [("corinfomax", &self.main), ("corinfomax.pair", &self.pair)] {
            for (n, t) in [
                ("mu1", &s.mu1),
                ("mu2", &s.mu2),
                ("r1", &s.r1),
                ("r2", &s.r2),
            ] {
                out.push((format!("{prefix}.{n}"), t.clone()));
            }
        }
        out
    }

    pub(crate) fn set_tensors(&mut self, parts: &HashMap<String, Tensor>) -> Result<()> {
        for (name, t) in parts {
            let (state, leaf) = if let Some(leaf) = name.strip_prefix("corinfomax.pair.") {
                (&mut self.pair, leaf)
            } else if let Some(leaf) = name.strip_prefix("corinfomax.") {
                (&mut self.main, leaf)
            } else {
                return Err(unknown(name));
            };
            let slot = match leaf {
                "mu1" => &mut state.mu1,
                "mu2" => &mut state.mu2,
                "r1" => &mut state.r1,
                "r2" => &mut state.r2,
                _ => return Err(unknown(name)),
            };
            if slot.dims() != t.dims() {
                return Err(Error::invalid(format!(
                    "method corinfomax: `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    slot.dims()
                )));
            }
            *slot = t
                .to_dtype(slot.dtype())?
                .to_device(slot.device())?
                .copy()?
                .detach();
        }
        self.pending_main = None;
        self.pending_pair = None;
        Ok(())
    }
}

fn unknown(name: &str) -> Error {
    Error::invalid(format!("method corinfomax: no state tensor named `{name}`"))
}

/// The CorInfoMax loss of `(z¹, z²)` against the running statistics; stages the updated
/// statistics.
pub(crate) fn ssl(
    cfg: &CorInfoMaxConfig,
    state: &mut CorInfoMaxStates,
    v: &Views,
) -> Result<Tensor> {
    let out = corinfomax(&v.z1, &v.z2, &state.main, cfg)?;
    state.pending_main = Some(out.state);
    Ok(out.loss)
}

/// CaSSLe-style distillation for CorInfoMax, a symmetrised form of CroMo-Mixup's
/// (`train_cassle_infomax`, which takes the log-det term on (g¹, f¹) with its own running
/// statistics and the invariance term on (g², f²)). With ĝ, f̂ the L2-normalised vectors:
///
/// `inv_weight · ½ [mse(ĝ¹, f̂¹) + mse(ĝ², f̂²)] + cov_weight · ½ · cov(ĝ¹, ĝ²)`
///
/// where `cov(ĝ¹, ĝ²) = −[log det(R'¹ + εI) + log det(R'² + εI)] / d` is CorInfoMax's log-det
/// term on the pair statistics (R'ᵛ the running covariance of ĝᵛ, updated with this batch and
/// staged; the frozen outputs have no gradient, so their log-det would be a constant).
pub(crate) fn distill(
    cfg: &CorInfoMaxConfig,
    state: &mut CorInfoMaxStates,
    g: [&Tensor; 2],
    f: [&Tensor; 2],
) -> Result<Tensor> {
    let gn = [l2_normalize(g[0])?, l2_normalize(g[1])?];
    let fn_ = [l2_normalize(f[0])?, l2_normalize(f[1])?];
    let inv = mse(&gn[0], &fn_[0])?
        .add(&mse(&gn[1], &fn_[1])?)?
        .affine(0.5, 0.0)?;
    let cov_cfg = CorInfoMaxConfig {
        normalize: false,
        inv_weight: 0.0,
        cov_weight: 1.0,
        ..*cfg
    };
    let out = corinfomax(&gn[0], &gn[1], &state.pair, &cov_cfg)?;
    state.pending_pair = Some(out.state);
    Ok(inv
        .affine(cfg.inv_weight, 0.0)?
        .add(&out.cov_loss.affine(0.5 * cfg.cov_weight, 0.0)?)?)
}

/// CroMo-Mixup's mixed-term loss for CorInfoMax: `barlow(norm a, norm b)` with
/// [`MethodConfig::barlow`] (its trainer's `cross_loss = BarlowTwinsLoss(...)`).
pub(crate) fn cross(cfg: &MethodConfig, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    barlow(&l2_normalize(a)?, &l2_normalize(b)?, &cfg.barlow)
}

/// `inv_weight · ½ [mse(ĝ¹, f̂²) + mse(ĝ², f̂¹)]`: the distillation's invariance term with the
/// views crossed, PNR's pseudo-negative for CorInfoMax (our extension; PNR has no CorInfoMax).
pub(crate) fn pnr_negative(
    cfg: &CorInfoMaxConfig,
    g: [&Tensor; 2],
    f: [&Tensor; 2],
) -> Result<Tensor> {
    let gn = [l2_normalize(g[0])?, l2_normalize(g[1])?];
    let fn_ = [l2_normalize(f[0])?, l2_normalize(f[1])?];
    Ok(mse(&gn[0], &fn_[1])?
        .add(&mse(&gn[1], &fn_[0])?)?
        .affine(0.5 * cfg.inv_weight, 0.0)?)
}

//! MoCo v2+: queries from the online network, keys from the EMA network, one FIFO key queue per
//! view (solo-learn's `MoCoV2Plus`), and PNR's MoCo form with a second queue pair of frozen keys.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::{MethodConfig, Views};
use crate::losses::{l2_normalize, moco_v2, moco_v2_symmetric, KeyQueue, MocoConfig};
use crate::{Error, Result};

/// MoCo's queues and the keys staged by the current step.
#[derive(Debug, Clone)]
pub(crate) struct MocoState {
    /// Key queues of view 1 and view 2.
    queues: [KeyQueue; 2],
    /// PNR's queues of frozen-model keys (view 1, view 2), created by the first PNR step.
    frozen: Option<[KeyQueue; 2]>,
    pending: Option<[Tensor; 2]>,
    pending_frozen: Option<[Tensor; 2]>,
    seed: u64,
}

impl MocoState {
    /// Two queues of `cfg.moco.queue_size` random unit keys (seeded from `seed`).
    pub(crate) fn new(cfg: &MethodConfig, device: &Device, seed: u64) -> Result<Self> {
        Ok(Self {
            queues: random_pair(cfg, device, seed, 0)?,
            frozen: None,
            pending: None,
            pending_frozen: None,
            seed,
        })
    }

    /// The key queue of view `v` (0 or 1), `(K, d)` unit rows.
    pub(crate) fn queue(&self, v: usize) -> Result<&Tensor> {
        self.queues
            .get(v)
            .map(|q| q.keys())
            .ok_or_else(|| Error::invalid(format!("moco: view index {v} must be 0 or 1")))
    }

    /// Enqueues the staged keys (key queues, then PNR's frozen queues).
    pub(crate) fn commit(&mut self) -> Result<()> {
        if let Some([k1, k2]) = self.pending.take() {
            self.queues[0].enqueue(&k1)?;
            self.queues[1].enqueue(&k2)?;
        }
        if let Some([f1, f2]) = self.pending_frozen.take() {
            if let Some(q) = &mut self.frozen {
                q[0].enqueue(&f1)?;
                q[1].enqueue(&f2)?;
            }
        }
        Ok(())
    }

    pub(crate) fn discard_pending(&mut self) {
        self.pending = None;
        self.pending_frozen = None;
    }

    fn stage_keys(&mut self, k1: &Tensor, k2: &Tensor) -> Result<()> {
        let cap = self.queues[0].len();
        if k1.dims()[0] > cap {
            return Err(Error::invalid(format!(
                "moco: a batch of {} keys does not fit a queue of {cap}",
                k1.dims()[0]
            )));
        }
        self.pending = Some([k1.detach(), k2.detach()]);
        Ok(())
    }

    pub(crate) fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![
            ("moco.queue.0".to_string(), self.queues[0].keys().clone()),
            ("moco.queue.1".to_string(), self.queues[1].keys().clone()),
            (
                "moco.queue_ptr".to_string(),
                ptr_tensor(&self.queues, self.queues[0].keys().device())?,
            ),
        ];
        if let Some(f) = &self.frozen {
            out.push(("moco.frozen_queue.0".to_string(), f[0].keys().clone()));
            out.push(("moco.frozen_queue.1".to_string(), f[1].keys().clone()));
            out.push((
                "moco.frozen_queue_ptr".to_string(),
                ptr_tensor(f, f[0].keys().device())?,
            ));
        }
        Ok(out)
    }

    /// Replaces queues from named parts (see `Method::tensors`); a queue and its pointer must be
    /// given together or not at all.
    pub(crate) fn set_tensors(
        &mut self,
        parts: &HashMap<String, Tensor>,
        cfg: &MethodConfig,
        device: &Device,
    ) -> Result<()> {
        for name in parts.keys() {
            let known = [
                "moco.queue.0",
                "moco.queue.1",
                "moco.queue_ptr",
                "moco.frozen_queue.0",
                "moco.frozen_queue.1",
                "moco.frozen_queue_ptr",
            ];
            if !known.contains(&name.as_str()) {
                return Err(Error::invalid(format!(
                    "method moco: no state tensor named `{name}`"
                )));
            }
        }
        let (k, d) = (cfg.moco.queue_size, cfg.proj_out);
        if let Some(q) = read_pair(parts, "moco.queue", k, d, device)? {
            self.queues = q;
        }
        if let Some(q) = read_pair(parts, "moco.frozen_queue", k, d, device)? {
            self.frozen = Some(q);
        }
        self.discard_pending();
        Ok(())
    }

    fn frozen_queues(&mut self, cfg: &MethodConfig, device: &Device) -> Result<&[KeyQueue; 2]> {
        if self.frozen.is_none() {
            self.frozen = Some(random_pair(cfg, device, self.seed, 1)?);
        }
        self.frozen
            .as_ref()
            .ok_or_else(|| Error::invalid("internal: frozen queues missing"))
    }
}

fn random_pair(
    cfg: &MethodConfig,
    device: &Device,
    seed: u64,
    which: u64,
) -> Result<[KeyQueue; 2]> {
    let (k, d) = (cfg.moco.queue_size, cfg.proj_out);
    let s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (which << 32);
    Ok([
        KeyQueue::random(k, d, s ^ 1, DType::F32, device)?,
        KeyQueue::random(k, d, s ^ 2, DType::F32, device)?,
    ])
}

fn ptr_tensor(q: &[KeyQueue; 2], device: &Device) -> Result<Tensor> {
    Ok(Tensor::new(
        &[q[0].ptr() as u32, q[1].ptr() as u32],
        device,
    )?)
}

fn read_pair(
    parts: &HashMap<String, Tensor>,
    prefix: &str,
    k: usize,
    d: usize,
    device: &Device,
) -> Result<Option<[KeyQueue; 2]>> {
    let names = [
        format!("{prefix}.0"),
        format!("{prefix}.1"),
        format!("{prefix}_ptr"),
    ];
    let given: Vec<Option<&Tensor>> = names.iter().map(|n| parts.get(n)).collect();
    if given.iter().all(Option::is_none) {
        return Ok(None);
    }
    let (Some(q0), Some(q1), Some(ptr)) = (given[0], given[1], given[2]) else {
        return Err(Error::invalid(format!(
            "method moco: `{}`, `{}` and `{}` must be given together",
            names[0], names[1], names[2]
        )));
    };
    for (q, n) in [(q0, &names[0]), (q1, &names[1])] {
        if q.dims() != [k, d] {
            return Err(Error::invalid(format!(
                "method moco: `{n}` has shape {:?}, the queue is ({k}, {d})",
                q.dims()
            )));
        }
    }
    let ptrs: Vec<u32> = ptr
        .to_dtype(DType::U32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    if ptrs.len() != 2 {
        return Err(Error::invalid(format!(
            "method moco: `{}` must hold two write positions, got {:?}",
            names[2],
            ptr.dims()
        )));
    }
    let load = |q: &Tensor, p: u32| -> Result<KeyQueue> {
        KeyQueue::from_parts(
            q.to_dtype(DType::F32)?.to_device(device)?.copy()?.detach(),
            p as usize,
        )
    };
    Ok(Some([load(q0, ptrs[0])?, load(q1, ptrs[1])?]))
}

fn keys(v: &Views) -> Result<(&Tensor, &Tensor)> {
    match (&v.t1, &v.t2) {
        (Some(k1), Some(k2)) => Ok((k1, k2)),
        _ => Err(Error::invalid("moco: the views need EMA keys t1, t2")),
    }
}

/// Symmetric MoCo v2+ loss `½ [moco(q¹, k², queue²) + moco(q², k¹, queue¹)]` with `q = z`,
/// `k = t` (both already normalised by the method); stages `k¹ → queue¹`, `k² → queue²`.
pub(crate) fn ssl(cfg: &MethodConfig, state: &mut MocoState, v: &Views) -> Result<Tensor> {
    let (k1, k2) = keys(v)?;
    let loss = moco_v2_symmetric(
        &v.z1,
        &v.z2,
        k1,
        k2,
        state.queue(0)?,
        state.queue(1)?,
        &cfg.moco,
    )?;
    state.stage_keys(k1, k2)?;
    Ok(loss)
}

/// `moco_v2(norm a, norm b, queue of view)`: the MoCo loss of anchor `a` against target `b`
/// with the view's key queue as negatives.
pub(crate) fn cross(
    cfg: &MethodConfig,
    state: &MocoState,
    a: &Tensor,
    b: &Tensor,
    view: usize,
) -> Result<Tensor> {
    moco_v2(
        &l2_normalize(a)?,
        &l2_normalize(b)?,
        state.queue(view)?,
        &cfg.moco,
    )
}

/// PNR's MoCo loss (`moco_pnr_loss_func` of the PNR code), returned as (main, regulariser).
///
/// With q = z (normalised), k = t, ĝ = norm(g), f̂ = norm(f), the key queues Q¹, Q² and PNR's
/// queues of frozen keys F¹, F², one direction is
/// * main `moco(q¹, k², [Q²; F²])` at the MoCo temperature,
/// * regulariser `moco(ĝ¹, f̂¹, [Q²; F²])` at the distillation temperature,
///
/// and each term is the mean of that direction and the mirrored one (q², k¹, ĝ², f̂², [Q¹; F¹]).
/// Stages `k → Q` and `f̂ → F` (view by view) for [`MocoState::commit`].
pub(crate) fn pnr(
    cfg: &MethodConfig,
    state: &mut MocoState,
    v: &Views,
    g: [&Tensor; 2],
    f: [&Tensor; 2],
) -> Result<(Tensor, Tensor)> {
    let (k1, k2) = keys(v)?;
    let device = v.z1.device().clone();
    let g = [l2_normalize(g[0])?, l2_normalize(g[1])?];
    let f = [l2_normalize(f[0])?, l2_normalize(f[1])?];
    let frozen = state.frozen_queues(cfg, &device)?.clone();
    let neg = [
        Tensor::cat(&[state.queues[0].keys(), frozen[0].keys()], 0)?,
        Tensor::cat(&[state.queues[1].keys(), frozen[1].keys()], 0)?,
    ];
    let distill_cfg = MocoConfig {
        temperature: cfg.distill.temperature,
        ..cfg.moco
    };
    let main = moco_v2(&v.z1, k2, &neg[1], &cfg.moco)?
        .add(&moco_v2(&v.z2, k1, &neg[0], &cfg.moco)?)?
        .affine(0.5, 0.0)?;
    let reg = moco_v2(&g[0], &f[0], &neg[1], &distill_cfg)?
        .add(&moco_v2(&g[1], &f[1], &neg[0], &distill_cfg)?)?
        .affine(0.5, 0.0)?;
    state.stage_keys(k1, k2)?;
    state.pending_frozen = Some([f[0].detach(), f[1].detach()]);
    Ok((main, reg))
}

//! MoCo v2 / v2+ contrastive loss against a FIFO queue of keys, and the queue itself.
//!
//! As in solo-learn's `mocov2plus_loss_func`, the loss takes *already L2-normalised* queries,
//! keys and queue rows (the method normalises its projections once and reuses them for the
//! queue). Keys come from the EMA encoder and the queue is a constant: both are detached here.

use super::{check_matrix, check_pair, check_positive, check_same_dtype, row_dot, sim};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// MoCo v2+ hyper-parameters (solo-learn's CIFAR recipe).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MocoConfig {
    /// Softmax temperature τ (0.2).
    pub temperature: f64,
    /// Number of keys K kept per view (32768).
    pub queue_size: usize,
    /// EMA momentum of the key encoder, `m = 0.99` (DESIGN §3); scheduled towards 1 with
    /// [`super::ema_tau`] like BYOL's.
    pub momentum: f64,
}

impl Default for MocoConfig {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            queue_size: 32768,
            momentum: 0.99,
        }
    }
}

/// MoCo v2 loss of one query view against the keys of the other view and a queue.
///
/// `q`: `(n, d)` L2-normalised queries (online encoder); `k`: `(n, d)` L2-normalised keys (EMA
/// encoder, detached here); `queue`: `(K, d)` L2-normalised past keys (detached); `-> ()`.
///
/// `loss = mean_i CE([q_i·k_i, q_i·queue_1, …, q_i·queue_K] / τ, target 0)`.
pub fn moco_v2(q: &Tensor, k: &Tensor, queue: &Tensor, cfg: &MocoConfig) -> Result<Tensor> {
    const LOSS: &str = "moco_v2";
    let (n, d) = check_pair(q, k, LOSS, ("q", "k"))?;
    let (_, dq) = check_matrix(queue, LOSS, "queue")?;
    check_same_dtype(q, queue, LOSS, ("q", "queue"))?;
    if dq != d {
        return Err(Error::invalid(format!(
            "{LOSS}: `queue` {:?} must have d = {d} columns like `q` {:?}",
            queue.dims(),
            q.dims()
        )));
    }
    check_positive(cfg.temperature, LOSS, "temperature")?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    let inv_t = 1.0 / cfg.temperature;
    let l_pos = row_dot(q, &k.detach())?.affine(inv_t, 0.0)?.unsqueeze(1)?;
    let l_neg = sim(q, &queue.detach())?.affine(inv_t, 0.0)?;
    let lse = super::logsumexp_blocks(&[(&l_pos, None), (&l_neg, None)])?;
    Ok(lse.sub(&l_pos.squeeze(1)?)?.mean_all()?)
}

/// Symmetrised MoCo v2+ loss with one queue per view (solo-learn's `MoCoV2Plus`):
/// `½ [moco_v2(q1, k2, queue2) + moco_v2(q2, k1, queue1)]`.
///
/// `q1`, `q2`: `(n, d)` normalised queries of views 1 and 2; `k1`, `k2`: `(n, d)` normalised
/// keys; `queue1`, `queue2`: `(K, d)` queues of past view-1 and view-2 keys; `-> ()`. After the
/// step the caller enqueues `k1` into `queue1` and `k2` into `queue2`.
pub fn moco_v2_symmetric(
    q1: &Tensor,
    q2: &Tensor,
    k1: &Tensor,
    k2: &Tensor,
    queue1: &Tensor,
    queue2: &Tensor,
    cfg: &MocoConfig,
) -> Result<Tensor> {
    let a = moco_v2(q1, k2, queue2, cfg)?;
    let b = moco_v2(q2, k1, queue1, cfg)?;
    Ok(a.add(&b)?.affine(0.5, 0.0)?)
}

/// A FIFO ring of `K` keys of dimension `d`: plain data owned by the MoCo method.
///
/// Enqueueing a batch of `b ≤ K` keys overwrites the `b` oldest rows (wrapping around the end),
/// so after any sequence of enqueues the queue holds the `K` most recent keys.
#[derive(Debug, Clone)]
pub struct KeyQueue {
    keys: Tensor,
    ptr: usize,
}

impl KeyQueue {
    /// A queue holding `keys` `(K, d)`, the next write at row 0.
    pub fn new(keys: Tensor) -> Result<Self> {
        Self::from_parts(keys, 0)
    }

    /// A queue restored from its parts (e.g. a checkpoint): `keys` `(K, d)`, next write at `ptr`.
    pub fn from_parts(keys: Tensor, ptr: usize) -> Result<Self> {
        let (k, _) = check_matrix(&keys, "KeyQueue", "keys")?;
        if k == 0 {
            return Err(Error::invalid("KeyQueue: a queue needs at least one row"));
        }
        if ptr >= k {
            return Err(Error::invalid(format!(
                "KeyQueue: write position {ptr} is outside a queue of {k} rows"
            )));
        }
        Ok(Self {
            keys: keys.detach(),
            ptr,
        })
    }

    /// `size` keys of dimension `dim` drawn from a standard normal with `seed` and
    /// L2-normalised, as MoCo initialises its queue. `-> (size, dim)`.
    pub fn random(
        size: usize,
        dim: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if size == 0 || dim == 0 {
            return Err(Error::invalid(format!(
                "KeyQueue::random: size {size} and dim {dim} must both be positive"
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(size * dim);
        for _ in 0..size {
            let row: Vec<f32> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.extend(row.iter().map(|x| x / norm));
        }
        let keys = Tensor::from_vec(v, (size, dim), device)?.to_dtype(dtype)?;
        Self::new(keys)
    }

    /// The stored keys, `(K, d)`, in storage order (not age order).
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Row index the next enqueued key is written to.
    pub fn ptr(&self) -> usize {
        self.ptr
    }

    /// Capacity K.
    pub fn len(&self) -> usize {
        self.keys.dims()[0]
    }

    /// Always false: a queue has at least one row.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Key dimension d.
    pub fn dim(&self) -> usize {
        self.keys.dims()[1]
    }

    /// Writes `batch` `(b, d)`, `b ≤ K`, over the `b` oldest keys (detached, converted to the
    /// queue's dtype and device).
    pub fn enqueue(&mut self, batch: &Tensor) -> Result<()> {
        let (b, d) = check_matrix(batch, "KeyQueue::enqueue", "batch")?;
        let (k, dk) = (self.len(), self.dim());
        if d != dk || b > k {
            return Err(Error::invalid(format!(
                "KeyQueue::enqueue: batch {:?} must have at most {k} rows of d = {dk}",
                batch.dims()
            )));
        }
        if b == 0 {
            return Ok(());
        }
        let batch = batch
            .detach()
            .to_dtype(self.keys.dtype())?
            .to_device(self.keys.device())?;
        let first = b.min(k - self.ptr);
        let mut keys = self.keys.slice_assign(
            &[self.ptr..self.ptr + first, 0..d],
            &batch.narrow(0, 0, first)?,
        )?;
        if first < b {
            keys = keys.slice_assign(&[0..b - first, 0..d], &batch.narrow(0, first, b - first)?)?;
        }
        self.keys = keys;
        self.ptr = (self.ptr + b) % k;
        Ok(())
    }
}

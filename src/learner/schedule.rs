//! Learning-rate schedules: linear warm-up then cosine decay, as a pure function of the step.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// solo-learn's default `scheduler.warmup_start_lr` (3e-5). Older solo-learn releases (the ones
/// CaSSLe forked) defaulted to 0.003 and Lightning Bolts to 0; pass the one a run should match.
pub const SOLO_WARMUP_START_LR: f64 = 3e-5;

/// The batch size the base learning rates of the papers refer to (`lr × batch / 256`).
pub const REFERENCE_BATCH: usize = 256;

/// solo-learn's `LinearWarmupCosineAnnealingLR` stepped once per iteration, in closed form.
/// For step `t`, warm-up length `W`, total `T` (`W < T`):
/// - `t < W`: `warmup_start_lr + t · (base_lr − warmup_start_lr) / max(W − 1, 1)` (reaches
///   `base_lr` at `t = W − 1`, as solo-learn does);
/// - `W ≤ t ≤ T`: `min_lr + ½ (base_lr − min_lr)(1 + cos(π (t − W) / (T − W)))`;
/// - `t > T`: `min_lr` (solo-learn's cosine would rise again past its end; a stream that runs
///   longer than planned keeps the floor instead).
///
/// With `W = 0` the schedule starts at `base_lr` (solo-learn does the same).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate, reached at the end of the warm-up.
    pub base_lr: f64,
    /// Learning rate at step 0 when there is a warm-up.
    pub warmup_start_lr: f64,
    /// Floor reached at `total_steps` (solo-learn `min_lr`, default 0).
    pub min_lr: f64,
    /// Number of warm-up steps `W`.
    pub warmup_steps: u64,
    /// Step `T` at which the cosine reaches `min_lr`.
    pub total_steps: u64,
}

impl WarmupCosine {
    /// A schedule from `base_lr` with solo-learn's defaults: warm-up from
    /// [`SOLO_WARMUP_START_LR`], cosine down to 0. Errors as [`WarmupCosine::validate`].
    pub fn new(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Result<Self> {
        let s = WarmupCosine {
            base_lr,
            warmup_start_lr: SOLO_WARMUP_START_LR,
            min_lr: 0.0,
            warmup_steps,
            total_steps,
        };
        s.validate()?;
        Ok(s)
    }

    /// The same schedule warming up from `lr`.
    pub fn with_warmup_start_lr(mut self, lr: f64) -> Result<Self> {
        self.warmup_start_lr = lr;
        self.validate()?;
        Ok(self)
    }

    /// The same schedule decaying to `lr`.
    pub fn with_min_lr(mut self, lr: f64) -> Result<Self> {
        self.min_lr = lr;
        self.validate()?;
        Ok(self)
    }

    /// Errors: a learning rate that is negative or not finite, `min_lr > base_lr`, or
    /// `warmup_steps >= total_steps`.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("base_lr", self.base_lr),
            ("warmup_start_lr", self.warmup_start_lr),
            ("min_lr", self.min_lr),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(format!(
                    "schedule: {what} must be finite and >= 0, got {v}"
                )));
            }
        }
        if self.min_lr > self.base_lr {
            return Err(Error::invalid(format!(
                "schedule: min_lr {} exceeds base_lr {}",
                self.min_lr, self.base_lr
            )));
        }
        if self.warmup_steps >= self.total_steps {
            return Err(Error::invalid(format!(
                "schedule: warmup_steps ({}) must be smaller than total_steps ({})",
                self.warmup_steps, self.total_steps
            )));
        }
        Ok(())
    }

    /// The learning rate at step `step` (0-based: the lr of the first update is `lr(0)`).
    pub fn lr(&self, step: u64) -> f64 {
        let (w, t) = (self.warmup_steps, self.total_steps);
        if step < w {
            let span = (w - 1).max(1) as f64;
            return self.warmup_start_lr
                + step as f64 * (self.base_lr - self.warmup_start_lr) / span;
        }
        if step >= t {
            return self.min_lr;
        }
        let progress = (step - w) as f64 / (t - w) as f64;
        self.min_lr
            + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// The linear scaling rule of the papers: `base_lr × batch_size / 256` (e.g. LARS lr 0.3 at
/// batch 512 → 0.6). solo-learn scales only the peak lr this way, not `min_lr` nor
/// `warmup_start_lr`.
pub fn scale_lr_by_batch(base_lr: f64, batch_size: usize) -> f64 {
    base_lr * batch_size as f64 / REFERENCE_BATCH as f64
}

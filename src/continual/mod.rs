//! Continual strategies: what loss a training step of task t optimises, given the current batch,
//! the replay buffer's images, the student ([`Method`]) and the frozen [`Teacher`].
//!
//! | `--strategy` | task t ≥ 1 loss (`shared/DESIGN.md` §3)                                   | needs |
//! |--------------|-----------------------------------------------------------------------------|-------|
//! | `finetune`   | `L_SSL(z¹, z²)`                                                             | — |
//! | `er`         | `L_SSL` on the concatenation of the current batch and m buffer images        | buffer |
//! | `cassle`     | `L_SSL + λ_d · L_distill(g(z), f(x))`                                       | teacher, g |
//! | `pnr`        | PNR: InfoNCE methods replace `L_SSL`; the others add CaSSLe's term − w · pseudo-negative | teacher, g |
//! | `cromo`      | `L_SSL + λ_d · L_distill + ½ Σᵥ [λ L(z_mixᵥ, z_tᵥ) + (1 − λ) L(z_mixᵥ, f(x_Mᵥ))]` | teacher, g, buffer |
//! | `cromo-data` | CroMo-Mixup* : as `cromo` with the current model's own output for the buffer image instead of the frozen model's | teacher, g, buffer |
//!
//! Task 0 is plain SSL for every strategy (no teacher exists yet, the buffer is empty). A
//! strategy is a configuration plus pure step logic: [`Strategy::step`] takes the two views of
//! the current batch and, when it needs them, two views of buffer images the loop drew *from
//! past tasks* (with their task tags, checked), the student, the teacher and a random generator,
//! and returns the loss terms and the batch composition. It reads nothing of the loop's state.
//! The student's staged state (queues, running statistics) is committed by the loop calling
//! [`Method::after_step`] after the optimiser step.
//!
//! Every strategy adds the method's MixCo / i-Mix term (when configured) on the current batch
//! (on the concatenated batch for ER).

mod cassle;
mod cromo_mixup;
mod finetune;
mod pnr;
mod replay;
pub mod teacher;

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::methods::{check_images, Method, MethodKind};
use crate::{Error, Result};

pub use teacher::{Teacher, TeacherMode};

/// The continual strategies, named on the command line by `--strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StrategyKind {
    /// Fine-tune: the SSL loss alone.
    #[serde(rename = "finetune")]
    FineTune,
    /// Experience replay: the SSL loss on current + buffer images.
    #[serde(rename = "er")]
    Replay,
    /// CaSSLe: SSL + distillation through a predictor to the frozen model.
    #[serde(rename = "cassle")]
    Cassle,
    /// PNR: pseudo-negative regularisation.
    #[serde(rename = "pnr")]
    Pnr,
    /// CroMo-Mixup: CaSSLe + cross-task data mixup with cross-model feature mixup.
    #[serde(rename = "cromo")]
    CroMo,
    /// CroMo-Mixup*: CaSSLe + cross-task data mixup without the cross-model term.
    #[serde(rename = "cromo-data")]
    CroMoData,
}

impl StrategyKind {
    /// All strategies, in command-line order.
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::FineTune,
        StrategyKind::Replay,
        StrategyKind::Cassle,
        StrategyKind::Pnr,
        StrategyKind::CroMo,
        StrategyKind::CroMoData,
    ];

    /// The command-line name (`finetune er cassle pnr cromo cromo-data`).
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::FineTune => "finetune",
            StrategyKind::Replay => "er",
            StrategyKind::Cassle => "cassle",
            StrategyKind::Pnr => "pnr",
            StrategyKind::CroMo => "cromo",
            StrategyKind::CroMoData => "cromo-data",
        }
    }

    /// Whether tasks t ≥ 1 need the frozen teacher.
    pub fn needs_teacher(self) -> bool {
        matches!(
            self,
            StrategyKind::Cassle
                | StrategyKind::Pnr
                | StrategyKind::CroMo
                | StrategyKind::CroMoData
        )
    }

    /// Whether the method must be built with CaSSLe's distillation predictor `g`
    /// ([`crate::methods::MethodConfig::distill_predictor`]).
    pub fn needs_distill_predictor(self) -> bool {
        self.needs_teacher()
    }

    /// Whether tasks t ≥ 1 need buffer images.
    pub fn needs_buffer(self) -> bool {
        matches!(
            self,
            StrategyKind::Replay | StrategyKind::CroMo | StrategyKind::CroMoData
        )
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
                Error::invalid(format!(
                    "unknown strategy `{s}` (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// A strategy's hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyConfig {
    /// Which strategy.
    pub kind: StrategyKind,
    /// λ_d of the distillation term; `None` = the method's default
    /// ([`MethodKind::default_distill_weight`]: 1, VICReg 25).
    pub distill_weight: Option<f64>,
    /// PNR's pseudo-negative weight w for the non-contrastive methods; `None` = the method's
    /// default ([`MethodKind::default_pnr_negative_weight`]).
    pub pnr_negative_weight: Option<f64>,
    /// CroMo-Mixup's λ: `Some(x)` fixes it (`--mix-lambda`; CroMo's Barlow trainer uses 0.7),
    /// `None` draws λ ~ Beta(α, α) once per step.
    pub mix_lambda: Option<f64>,
    /// α of the Beta distribution of λ (1.0: uniform).
    pub mix_alpha: f64,
    /// Buffer images the loop draws per step for `er`, `cromo`, `cromo-data` (m = 64 on CIFAR).
    pub buffer_batch: usize,
}

impl StrategyConfig {
    /// Defaults: method-default weights, λ ~ Beta(1, 1), m = 64.
    pub fn new(kind: StrategyKind) -> Self {
        Self {
            kind,
            distill_weight: None,
            pnr_negative_weight: None,
            mix_lambda: None,
            mix_alpha: 1.0,
            buffer_batch: 64,
        }
    }
}

/// Two augmented views of m buffer images and the task each image came from.
#[derive(Clone, Copy, Debug)]
pub struct BufferViews<'a> {
    /// View 1, (m,3,H,W).
    pub x1: &'a Tensor,
    /// View 2, (m,3,H,W).
    pub x2: &'a Tensor,
    /// Task of each of the m images (from `ReplayBuffer::task_of`); every entry must be below
    /// the current task.
    pub tasks: &'a [u32],
}

/// What one step sees.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    /// Index of the current task (0 = the first).
    pub task: usize,
    /// View 1 of the current batch, (n,3,H,W).
    pub x1: &'a Tensor,
    /// View 2 of the current batch, (n,3,H,W).
    pub x2: &'a Tensor,
    /// Buffer images, for the strategies that replay them at tasks ≥ 1.
    pub buffer: Option<BufferViews<'a>>,
}

/// The loss terms of a step, each as it enters the total (weights and signs applied), so that
/// `total` is the sum of the terms present. All are scalars.
#[derive(Clone, Debug)]
pub struct LossTerms {
    /// What the optimiser minimises.
    pub total: Tensor,
    /// The method's own loss on the current batch (on current + buffer for ER; PNR's main term
    /// for SimCLR / MoCo).
    pub ssl: Tensor,
    /// `λ_d · L_distill` (CaSSLe, CroMo, and PNR's CaSSLe part; PNR's regulariser for SimCLR /
    /// MoCo).
    pub distill: Option<Tensor>,
    /// PNR's `−w · pseudo-negative` (non-contrastive methods).
    pub pnr_negative: Option<Tensor>,
    /// CroMo-Mixup's `½ Σᵥ L_CroMo(z_mixᵥ, …)`.
    pub mixed: Option<Tensor>,
    /// The method's MixCo / i-Mix term.
    pub method_mix: Option<Tensor>,
}

/// Which images a step used.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchComposition {
    /// Current-task images n.
    pub current: usize,
    /// Buffer images trained on as plain samples (ER).
    pub replayed: usize,
    /// Buffer images mixed with the first `mixed` current images (CroMo).
    pub mixed: usize,
    /// Tasks of the buffer images used (replayed or mixed), in batch order.
    pub buffer_tasks: Vec<u32>,
    /// CroMo's λ of this step.
    pub lambda: Option<f64>,
    /// Whether the frozen teacher was run.
    pub teacher: bool,
}

/// CroMo's mixed inputs of a step, for inspection: `x_mixᵥ = λ x_tᵥ[:m] + (1 − λ) x_Mᵥ[:m]`.
#[derive(Clone, Debug)]
pub struct MixRecord {
    /// λ.
    pub lambda: f64,
    /// Mixed view 1, (m,3,H,W).
    pub x_mix1: Tensor,
    /// Mixed view 2, (m,3,H,W).
    pub x_mix2: Tensor,
}

/// A step's result.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The loss and its terms.
    pub loss: LossTerms,
    /// What the batch was made of.
    pub batch: BatchComposition,
    /// CroMo's mixed inputs.
    pub mix: Option<MixRecord>,
}

/// A continual strategy (configuration + step logic; stateless).
#[derive(Clone, Debug)]
pub struct Strategy {
    cfg: StrategyConfig,
}

impl Strategy {
    /// Validates `cfg`.
    pub fn new(cfg: StrategyConfig) -> Result<Self> {
        let name = cfg.kind.name();
        for (what, w) in [
            ("distill_weight", cfg.distill_weight),
            ("pnr_negative_weight", cfg.pnr_negative_weight),
        ] {
            if let Some(w) = w {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(Error::invalid(format!(
                        "strategy {name}: {what} must be finite and non-negative, got {w}"
                    )));
                }
            }
        }
        if let Some(l) = cfg.mix_lambda {
            if !(0.0..=1.0).contains(&l) {
                return Err(Error::invalid(format!(
                    "strategy {name}: mix_lambda must lie in [0, 1], got {l}"
                )));
            }
        }
        if !(cfg.mix_alpha.is_finite() && cfg.mix_alpha > 0.0) {
            return Err(Error::invalid(format!(
                "strategy {name}: mix_alpha must be positive, got {}",
                cfg.mix_alpha
            )));
        }
        if cfg.kind.needs_buffer() && cfg.buffer_batch == 0 {
            return Err(Error::invalid(format!(
                "strategy {name}: buffer_batch must be positive"
            )));
        }
        Ok(Self { cfg })
    }

    /// The strategy's kind.
    pub fn kind(&self) -> StrategyKind {
        self.cfg.kind
    }

    /// Its configuration.
    pub fn config(&self) -> &StrategyConfig {
        &self.cfg
    }

    /// How many buffer images the loop should draw (from tasks before `task`) for a step of
    /// `task`: [`StrategyConfig::buffer_batch`] for ER / CroMo at t ≥ 1, else 0.
    pub fn buffer_batch(&self, task: usize) -> usize {
        if task >= 1 && self.cfg.kind.needs_buffer() {
            self.cfg.buffer_batch
        } else {
            0
        }
    }

    /// λ_d for `method`.
    pub fn distill_weight(&self, method: MethodKind) -> f64 {
        self.cfg
            .distill_weight
            .unwrap_or_else(|| method.default_distill_weight())
    }

    /// PNR's w for `method`.
    pub fn pnr_negative_weight(&self, method: MethodKind) -> f64 {
        self.cfg
            .pnr_negative_weight
            .unwrap_or_else(|| method.default_pnr_negative_weight())
    }

    /// One training step's loss. `teacher` must be given for tasks ≥ 1 of the strategies that
    /// need it, `input.buffer` for ER / CroMo at tasks ≥ 1 (images of past tasks only); both are
    /// ignored at task 0, which is plain SSL. The student runs in train mode; its state updates
    /// are staged for [`Method::after_step`].
    pub fn step<R: Rng + ?Sized>(
        &self,
        method: &mut Method,
        teacher: Option<&Teacher>,
        input: &StepInput,
        rng: &mut R,
    ) -> Result<StepOutput> {
        check_images(input.x1, "x1")?;
        if input.x1.dims() != input.x2.dims() {
            return Err(Error::invalid(format!(
                "strategy {}: the two views must have one shape, got {:?} and {:?}",
                self.cfg.kind,
                input.x1.dims(),
                input.x2.dims()
            )));
        }
        if input.task == 0 || self.cfg.kind == StrategyKind::FineTune {
            return finetune::step(method, input, rng);
        }
        let teacher = if self.cfg.kind.needs_teacher() {
            if !method.config().distill_predictor {
                return Err(Error::invalid(format!(
                    "strategy {}: the method must be built with its distillation predictor \
                     (MethodConfig::distill_predictor = true)",
                    self.cfg.kind
                )));
            }
            Some(teacher.ok_or_else(|| {
                Error::invalid(format!(
                    "strategy {} at task {}: needs the frozen teacher of the previous task",
                    self.cfg.kind, input.task
                ))
            })?)
        } else {
            None
        };
        let buffer = if self.cfg.kind.needs_buffer() {
            Some(self.check_buffer(input)?)
        } else {
            None
        };
        match (self.cfg.kind, teacher, buffer) {
            (StrategyKind::Replay, _, Some(b)) => replay::step(method, input, &b, rng),
            (StrategyKind::Cassle, Some(t), _) => cassle::step(self, method, t, input, rng),
            (StrategyKind::Pnr, Some(t), _) => pnr::step(self, method, t, input, rng),
            (StrategyKind::CroMo, Some(t), Some(b)) => {
                cromo_mixup::step(self, method, t, input, &b, true, rng)
            }
            (StrategyKind::CroMoData, Some(t), Some(b)) => {
                cromo_mixup::step(self, method, t, input, &b, false, rng)
            }
            _ => Err(Error::invalid(format!(
                "internal: strategy {} lacks an input it checked",
                self.cfg.kind
            ))),
        }
    }

    /// The buffer views must be there, match the current views' image shape, and come from
    /// tasks before the current one.
    fn check_buffer<'a>(&self, input: &StepInput<'a>) -> Result<BufferViews<'a>> {
        let name = self.cfg.kind.name();
        let b = input.buffer.ok_or_else(|| {
            Error::invalid(format!(
                "strategy {name} at task {}: needs buffer images of past tasks",
                input.task
            ))
        })?;
        let m = check_images(b.x1, "buffer x1")?;
        if b.x1.dims() != b.x2.dims() || b.x1.dims()[1..] != input.x1.dims()[1..] {
            return Err(Error::invalid(format!(
                "strategy {name}: buffer views {:?} / {:?} must match each other and the current \
                 images {:?} in (C, H, W)",
                b.x1.dims(),
                b.x2.dims(),
                input.x1.dims()
            )));
        }
        if b.tasks.len() != m {
            return Err(Error::invalid(format!(
                "strategy {name}: {} task tags for {m} buffer images",
                b.tasks.len()
            )));
        }
        if let Some(bad) = b.tasks.iter().find(|&&t| t as usize >= input.task) {
            return Err(Error::invalid(format!(
                "strategy {name} at task {}: a buffer image of task {bad} is not from a past task",
                input.task
            )));
        }
        Ok(b)
    }
}

/// The method's loss and mix term on two views (the whole of Fine-tune; ER on the concatenated
/// batch).
pub(crate) fn plain_terms<R: Rng + ?Sized>(
    method: &mut Method,
    x1: &Tensor,
    x2: &Tensor,
    rng: &mut R,
) -> Result<(Tensor, Option<Tensor>)> {
    let v = method.views(x1, x2)?;
    let ssl = method.ssl_loss(&v)?;
    let mix = method.mix_loss(x1, &v, rng)?;
    Ok((ssl, mix))
}

/// Sums the present terms into [`LossTerms`].
pub(crate) fn assemble(
    ssl: Tensor,
    distill: Option<Tensor>,
    pnr_negative: Option<Tensor>,
    mixed: Option<Tensor>,
    method_mix: Option<Tensor>,
) -> Result<LossTerms> {
    let mut total = ssl.clone();
    for t in [&distill, &pnr_negative, &mixed, &method_mix]
        .into_iter()
        .flatten()
    {
        total = total.add(t)?;
    }
    Ok(LossTerms {
        total,
        ssl,
        distill,
        pnr_negative,
        mixed,
        method_mix,
    })
}

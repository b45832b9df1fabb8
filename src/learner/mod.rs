//! The learner's machinery: optimisers over parameter groups, learning-rate schedules, the
//! class-incremental trainer behind `cromo train` and its crash-safe checkpoints.
//!
//! [`optim`]: SGD with momentum, LARS and AdamW over candle `Var`s grouped by VarMap prefix, with
//! state that can be checkpointed and restored bit-exactly; [`schedule`]: warm-up + cosine.

pub mod checkpoint;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use optim::{
    is_bias_or_norm, AdamW, AdamWConfig, GroupSpec, Lars, LarsConfig, Optimizer, OptimizerConfig,
    Param, ParamGroups, Sgd, SgdConfig,
};
pub use schedule::{scale_lr_by_batch, WarmupCosine, REFERENCE_BATCH, SOLO_WARMUP_START_LR};

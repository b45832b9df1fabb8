//! Evaluation: linear probes and kNN on cached features, the continual-learning metrics of
//! DESIGN §4 (LA, TP, WP, task-aware accuracy, accuracy matrix, forgetting, BWT, FWT), the
//! coding-rate-reduction monitor (UMM), run reports (JSON, Markdown, PNG plots) and the
//! comparison table across runs.
//!
//! Everything here works on plain features (`&[f32]` row-major `N×D`, or CPU candle tensors) and
//! predictions; it knows nothing of models or training, so it can be driven by `cromo train`,
//! `cromo eval` or a user's own loop.
//!
//! Accuracies are fractions in `[0, 1]` everywhere in the API and in `report.json`; the Markdown
//! and the plots show percentages.

mod coding_rate;
mod compare;
mod knn;
mod metrics;
mod plot;
mod probe;
mod report;

pub use coding_rate::{
    coding_rate, coding_rate_reduction, coding_rate_reduction_views, feature_rows, RateReduction,
    DEFAULT_EPS,
};
pub use compare::{compare, write_compare};
pub use knn::{KnnConfig, KnnIndex};
pub use metrics::{
    per_task_accuracy, prediction_metrics, task_aware_accuracy, AccuracyMatrix, PredictionMetrics,
    TaskSplit,
};
pub use probe::{FitInfo, LinearProbe, ProbeConfig, StopReason};
pub use report::{
    peak_rss_mb, read_report, write_report, CodingRatePoint, InitRow, RunReport, TaskRow, Timings,
    PLOT_CODING_RATE, PLOT_MATRIX, PLOT_TASKS, REPORT_JSON, REPORT_MD,
};

use crate::{Error, Result};

pub(crate) use crate::fsutil::write_atomic;

/// Checks that `data` holds whole rows of `dim` values and returns the row count.
pub(crate) fn rows_of(data: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(Error::invalid(format!("{what}: feature dimension is 0")));
    }
    if data.len() % dim != 0 {
        return Err(Error::invalid(format!(
            "{what}: {} values is not a whole number of rows of {dim} features",
            data.len()
        )));
    }
    Ok(data.len() / dim)
}

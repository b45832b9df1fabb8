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
    peak_rss_mb, read_report, write_report, CodingRatePoint, RunReport, TaskRow, Timings,
    PLOT_CODING_RATE, PLOT_MATRIX, PLOT_TASKS, REPORT_JSON, REPORT_MD,
};

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed and synced,
/// then renamed over `path`. On error the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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

//! Run reports: `report.json` (the machine-readable record), `report.md` (tables a person reads)
//! and PNG plots, all written atomically into a run directory.
//!
//! Accuracies are fractions in `[0, 1]` in the JSON and percentages in the Markdown and plots.
//! Tasks are numbered from 0 in the JSON and from 1 ("task 1" is the first) where a person reads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::AccuracyMatrix;
use super::{plot, write_atomic};
use crate::{Error, Result};

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// SSL method, e.g. `barlow`, `simclr`, `byol`.
    pub method: String,
    /// Continual strategy, e.g. `finetune`, `er`, `cassle`, `pnr`, `cromo-mixup`.
    pub strategy: String,
    /// The run's full configuration (as the CLI resolved it).
    pub config: serde_json::Value,
    /// One row per completed task, in order.
    pub tasks: Vec<TaskRow>,
    /// `A[i][j]`: linear accuracy on task j's classes after training task i.
    pub accuracy_matrix: AccuracyMatrix,
    /// ΔR of an early and the last layer, per epoch.
    pub coding_rate: Vec<CodingRatePoint>,
    /// Wall-clock times.
    pub timings: Timings,
    /// Training throughput (images through the encoder per second of training).
    pub images_per_s: Option<f64>,
    /// Peak resident memory of the process (VmHWM), MB.
    pub peak_rss_mb: Option<f64>,
    /// Free-form remarks (e.g. "frozen teacher in train mode").
    #[serde(default)]
    pub notes: Vec<String>,
    /// The encoder as it started (random or `--init` weights), evaluated before the first task.
    #[serde(default)]
    pub init: Option<InitRow>,
}

/// Metrics of the encoder before any training (fractions; `None` where not measured).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InitRow {
    /// Task-agnostic linear accuracy over all classes of the run's data.
    pub la: Option<f64>,
    /// kNN accuracy over all classes of the run's data.
    pub knn: Option<f64>,
    /// Retention-probe accuracy on the held-out data set.
    pub retention: Option<f64>,
}

/// Metrics after training one task (fractions; `None` where not measured).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskRow {
    /// Task index (0-based).
    pub task: usize,
    /// Global class ids of this task.
    pub classes: Vec<u32>,
    /// Task-agnostic linear accuracy over all classes seen so far.
    pub la: Option<f64>,
    /// Task prediction.
    pub tp: Option<f64>,
    /// Within-task prediction.
    pub wp: Option<f64>,
    /// Task-aware linear accuracy.
    pub task_aware: Option<f64>,
    /// kNN accuracy over all classes seen so far.
    pub knn: Option<f64>,
    /// Average forgetting after this task.
    pub forgetting: Option<f64>,
    /// Backward transfer after this task.
    pub bwt: Option<f64>,
    /// Seconds spent training this task.
    pub train_s: Option<f64>,
    /// Linear-probe accuracy on the held-out retention data set (`--retention-probe`): how much
    /// of the general features the encoder started with survives.
    #[serde(default)]
    pub retention: Option<f64>,
}

/// ΔR (nats) at the end of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CodingRatePoint {
    /// Task index (0-based).
    pub task: usize,
    /// Epoch within the task (0-based).
    pub epoch: usize,
    /// ΔR of the early layer's (pooled) features.
    pub early: f64,
    /// ΔR of the last layer's features.
    pub last: f64,
}

/// Wall-clock seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Whole run.
    pub total_s: f64,
    /// Training (all tasks).
    pub train_s: f64,
    /// Evaluation (feature extraction, probes, kNN).
    pub eval_s: f64,
}

impl RunReport {
    /// The last task's row, if any.
    pub fn final_row(&self) -> Option<&TaskRow> {
        self.tasks.last()
    }

    /// Fills each row's `forgetting` and `bwt` from the accuracy matrix.
    pub fn fill_forgetting(&mut self) {
        for row in &mut self.tasks {
            row.forgetting = self.accuracy_matrix.forgetting(row.task);
            row.bwt = self.accuracy_matrix.bwt(row.task);
        }
    }
}

/// Peak resident set size of this process in MB (`VmHWM` of `/proc/self/status`); `None` where
/// that file does not exist (not Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let kb: f64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(kb / 1024.0),
        _ => None,
    }
}

/// File names written by [`write_report`].
pub const REPORT_JSON: &str = "report.json";
/// Markdown report.
pub const REPORT_MD: &str = "report.md";
/// Accuracy-matrix heat-map.
pub const PLOT_MATRIX: &str = "accuracy_matrix.png";
/// LA, task-aware accuracy, kNN and forgetting per task.
pub const PLOT_TASKS: &str = "accuracy_per_task.png";
/// ΔR curves per epoch.
pub const PLOT_CODING_RATE: &str = "coding_rate.png";

/// Writes `report.json`, `report.md` and the PNG plots (accuracy matrix, accuracy/forgetting per
/// task, ΔR per epoch — a plot whose data is empty is left out) into `dir` (created if missing).
/// Each file is written to a temporary name and renamed. Returns the paths written.
pub fn write_report(dir: impl AsRef<Path>, report: &RunReport) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    validate(report)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();

    let json_path = dir.join(REPORT_JSON);
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| Error::invalid(format!("report: cannot serialise: {e}")))?;
    // Non-finite floats become `null` in JSON and would not read back: refuse them here.
    serde_json::from_slice::<RunReport>(&json).map_err(|e| {
        Error::invalid(format!(
            "report: a value is not a finite number and cannot be stored in JSON ({e})"
        ))
    })?;

    let t = report.accuracy_matrix.num_tasks();
    let has_matrix = report
        .accuracy_matrix
        .rows
        .iter()
        .flatten()
        .any(|v| v.is_some());
    let mut plots: Vec<&str> = Vec::new();
    if has_matrix {
        let p = dir.join(PLOT_MATRIX);
        write_atomic(&p, &plot::accuracy_matrix_png(&report.accuracy_matrix, &p)?)?;
        written.push(p);
        plots.push(PLOT_MATRIX);
    }
    if !report.tasks.is_empty() {
        let p = dir.join(PLOT_TASKS);
        write_atomic(&p, &plot::per_task_png(report, &p)?)?;
        written.push(p);
        plots.push(PLOT_TASKS);
    }
    if !report.coding_rate.is_empty() {
        let p = dir.join(PLOT_CODING_RATE);
        write_atomic(&p, &plot::coding_rate_png(&report.coding_rate, &p)?)?;
        written.push(p);
        plots.push(PLOT_CODING_RATE);
    }
    let md_path = dir.join(REPORT_MD);
    write_atomic(&md_path, markdown(report, t, &plots).as_bytes())?;
    written.push(md_path);
    // report.json last: its presence marks a complete report.
    write_atomic(&json_path, &json)?;
    written.push(json_path);
    Ok(written)
}

/// Reads `dir/report.json`; errors name the file (missing, unreadable, not a report).
pub fn read_report(dir: impl AsRef<Path>) -> Result<RunReport> {
    let path = dir.as_ref().join(REPORT_JSON);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.clone(),
            what: "run report (report.json) of a run directory".into(),
        },
        _ => Error::io(&path, e),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_data(&path, format!("not a cromo run report: {e}")))
}

fn validate(report: &RunReport) -> Result<()> {
    let t = report.accuracy_matrix.num_tasks();
    if let Some((i, r)) = report
        .accuracy_matrix
        .rows
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != t)
    {
        return Err(Error::invalid(format!(
            "report: accuracy matrix row {i} has {} entries, expected {t}",
            r.len()
        )));
    }
    let frac = |name: &str, task: usize, v: Option<f64>| -> Result<()> {
        match v {
            Some(x) if !(0.0..=1.0).contains(&x) => Err(Error::invalid(format!(
                "report: task {task} {name} = {x} is not a fraction in [0, 1]"
            ))),
            _ => Ok(()),
        }
    };
    for row in &report.tasks {
        frac("LA", row.task, row.la)?;
        frac("TP", row.task, row.tp)?;
        frac("WP", row.task, row.wp)?;
        frac("task-aware accuracy", row.task, row.task_aware)?;
        frac("kNN accuracy", row.task, row.knn)?;
    }
    for (i, r) in report.accuracy_matrix.rows.iter().enumerate() {
        for (j, v) in r.iter().enumerate() {
            frac(&format!("A[{i}][{j}]"), i, *v)?;
        }
    }
    Ok(())
}

pub(crate) fn pct(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{:.2}", 100.0 * x),
        None => "–".into(),
    }
}

/// Seconds as `45.2 s`, `12 min 05 s` or `1 h 02 min`.
pub(crate) fn duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        let m = (s / 60.0).floor();
        format!("{m:.0} min {:02.0} s", (s - 60.0 * m).floor())
    } else {
        let h = (s / 3600.0).floor();
        format!("{h:.0} h {:02.0} min", ((s - 3600.0 * h) / 60.0).floor())
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn markdown(r: &RunReport, t: usize, plots: &[&str]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Run report: {} + {}\n", r.method, r.strategy);
    let _ = writeln!(
        s,
        "Accuracies in %, tasks numbered from 1. LA = task-agnostic linear accuracy over all \
         classes seen so far, TP = task prediction, WP = within-task prediction (LA = TP × WP), \
         task-aware = logits masked to the true task's classes, kNN = temperature-weighted \
         cosine k-NN vote (k and τ in the configuration; defaults 20 and 0.07), \
         forgetting = mean over earlier tasks of (best accuracy since learned − accuracy now), \
         BWT = mean of (accuracy now − accuracy right after learning).\n"
    );
    let last = r.final_row();
    let _ = writeln!(s, "## Summary\n");
    let _ = writeln!(s, "| measure | value |\n| --- | ---: |");
    let _ = writeln!(s, "| tasks completed | {} |", r.tasks.len());
    let _ = writeln!(s, "| final LA | {} |", pct(last.and_then(|x| x.la)));
    let _ = writeln!(s, "| final TP | {} |", pct(last.and_then(|x| x.tp)));
    let _ = writeln!(s, "| final WP | {} |", pct(last.and_then(|x| x.wp)));
    let _ = writeln!(
        s,
        "| final task-aware accuracy | {} |",
        pct(last.and_then(|x| x.task_aware))
    );
    let _ = writeln!(
        s,
        "| final kNN accuracy | {} |",
        pct(last.and_then(|x| x.knn))
    );
    let _ = writeln!(
        s,
        "| final forgetting | {} |",
        pct(last.and_then(|x| x.forgetting))
    );
    let _ = writeln!(s, "| final BWT | {} |", pct(last.and_then(|x| x.bwt)));
    if let Some(i) = &r.init {
        let _ = writeln!(s, "| initial encoder: LA, all classes | {} |", pct(i.la));
        let _ = writeln!(s, "| initial encoder: kNN, all classes | {} |", pct(i.knn));
        if i.retention.is_some() {
            let _ = writeln!(
                s,
                "| initial retention-probe accuracy | {} |",
                pct(i.retention)
            );
        }
    }
    if last.is_some_and(|x| x.retention.is_some()) {
        let _ = writeln!(
            s,
            "| final retention-probe accuracy | {} |",
            pct(last.and_then(|x| x.retention))
        );
    }
    let _ = writeln!(s, "| total time | {} |", duration(r.timings.total_s));
    let _ = writeln!(s, "| training time | {} |", duration(r.timings.train_s));
    let _ = writeln!(s, "| evaluation time | {} |", duration(r.timings.eval_s));
    let _ = writeln!(s, "| training images/s | {} |", opt(r.images_per_s, 1));
    let _ = writeln!(s, "| peak memory (RSS) | {} MB |", opt(r.peak_rss_mb, 0));

    if !r.tasks.is_empty() {
        let _ = writeln!(s, "\n## Per task\n");
        let _ = writeln!(
            s,
            "| task | classes | LA | TP | WP | task-aware | kNN | forgetting | BWT | retention | train time |"
        );
        let _ = writeln!(
            s,
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for row in &r.tasks {
            let classes: Vec<String> = row.classes.iter().map(u32::to_string).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.task + 1,
                classes.join(" "),
                pct(row.la),
                pct(row.tp),
                pct(row.wp),
                pct(row.task_aware),
                pct(row.knn),
                pct(row.forgetting),
                pct(row.bwt),
                pct(row.retention),
                row.train_s.map_or("–".into(), duration)
            );
        }
    }

    if t > 0 {
        let _ = writeln!(
            s,
            "\n## Accuracy matrix\n\nA[i][j] = accuracy (%) on task j's classes after training task i \
             (– = not measured).\n"
        );
        let mut head = String::from("| after task ↓ / on task → |");
        let mut rule = String::from("| --- |");
        for j in 0..t {
            let _ = write!(head, " {} |", j + 1);
            rule.push_str(" ---: |");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for (i, row) in r.accuracy_matrix.rows.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|v| pct(*v)).collect();
            let _ = writeln!(s, "| {} | {} |", i + 1, cells.join(" | "));
        }
    }

    if !r.coding_rate.is_empty() {
        let _ = writeln!(
            s,
            "\n## Coding-rate reduction ΔR per epoch\n\nΔR (nats; each sample's two views form one \
             group; ε in the configuration, default 0.1) of an early layer and the last layer. A falling last-layer ΔR while the \
             early one holds signals overfitting (UMM).\n"
        );
        let _ = writeln!(
            s,
            "| task | epoch | early ΔR | last ΔR |\n| ---: | ---: | ---: | ---: |"
        );
        for p in &r.coding_rate {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} |",
                p.task + 1,
                p.epoch + 1,
                p.early,
                p.last
            );
        }
    }

    if !plots.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for p in plots {
            let _ = writeln!(s, "![{p}]({p})\n");
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(s, "\n## Configuration\n\n```json");
    let _ = writeln!(
        s,
        "{}",
        serde_json::to_string_pretty(&r.config).unwrap_or_else(|_| "null".into())
    );
    let _ = writeln!(s, "```");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_parsed_in_kb() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2.0));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(45.24), "45.2 s");
        assert_eq!(duration(725.0), "12 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}

//! The comparison table across runs, in the form of the CroMo-Mixup paper's table: one row per
//! run with its method, strategy and final LA, WP, TP, forgetting and time.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{duration, pct, read_report};
use super::write_atomic;
use crate::{Error, Result};

/// One Markdown table, a row per run directory (in the order given), from each directory's
/// `report.json`: run (directory name), method, strategy, and after the last task LA, WP, TP,
/// forgetting (%), and the run's total time. Errors name a directory lacking `report.json`.
pub fn compare<P: AsRef<Path>>(run_dirs: &[P]) -> Result<String> {
    if run_dirs.is_empty() {
        return Err(Error::invalid("compare: no run directory given"));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| run | method | strategy | tasks | LA | WP | TP | forgetting | time |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for dir in run_dirs {
        let dir = dir.as_ref();
        let r = read_report(dir)?;
        let last = r.final_row();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&name),
            cell(&r.method),
            cell(&r.strategy),
            r.tasks.len(),
            pct(last.and_then(|x| x.la)),
            pct(last.and_then(|x| x.wp)),
            pct(last.and_then(|x| x.tp)),
            pct(last.and_then(|x| x.forgetting)),
            duration(r.timings.total_s)
        );
    }
    let _ = writeln!(
        s,
        "\nLA, WP, TP and forgetting in % after the last task (LA = task-agnostic linear \
         accuracy, WP = within-task, TP = task prediction; LA = TP × WP)."
    );
    Ok(s)
}

/// [`compare`], also written atomically to `out`; returns the table.
pub fn write_compare<P: AsRef<Path>>(run_dirs: &[P], out: impl AsRef<Path>) -> Result<String> {
    let table = compare(run_dirs)?;
    write_atomic(out.as_ref(), table.as_bytes())?;
    Ok(table)
}

/// Escapes a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

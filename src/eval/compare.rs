//! The comparison table across runs, in the form of the CroMo-Mixup paper's table: one row per
//! run with its method, strategy and final LA, WP, TP, forgetting and time.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{duration, pct, read_report};
use super::write_atomic;
use crate::{Error, Result};

/// One Markdown table, a row per run directory (in the order given), from each directory's
/// `report.json`: run (directory name), method, strategy, and after the last task LA, WP, TP,
/// forgetting (%), and the run's total time. When any run measured its starting encoder, a
/// column gives that LA (the random-init or pretrained baseline); when any run has a retention
/// probe, two columns give its accuracy at the start and after the last task. Errors name a
/// directory lacking `report.json`.
pub fn compare<P: AsRef<Path>>(run_dirs: &[P]) -> Result<String> {
    if run_dirs.is_empty() {
        return Err(Error::invalid("compare: no run directory given"));
    }
    let mut reports = Vec::with_capacity(run_dirs.len());
    for dir in run_dirs {
        reports.push((dir.as_ref(), read_report(dir.as_ref())?));
    }
    let has_start = reports
        .iter()
        .any(|(_, r)| r.init.as_ref().is_some_and(|i| i.la.is_some()));
    let has_retention = reports.iter().any(|(_, r)| {
        r.init.as_ref().is_some_and(|i| i.retention.is_some())
            || r.tasks.iter().any(|t| t.retention.is_some())
    });
    let mut head = String::from("| run | method | strategy | tasks | LA | WP | TP | forgetting |");
    let mut rule = String::from("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    if has_start {
        head.push_str(" LA at start |");
        rule.push_str(" ---: |");
    }
    if has_retention {
        head.push_str(" retention at start | retention |");
        rule.push_str(" ---: | ---: |");
    }
    head.push_str(" time |");
    rule.push_str(" ---: |");
    let mut s = String::new();
    let _ = writeln!(s, "{head}\n{rule}");
    for (dir, r) in &reports {
        let last = r.final_row();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&name),
            cell(&r.method),
            cell(&r.strategy),
            r.tasks.len(),
            pct(last.and_then(|x| x.la)),
            pct(last.and_then(|x| x.wp)),
            pct(last.and_then(|x| x.tp)),
            pct(last.and_then(|x| x.forgetting)),
        );
        if has_start {
            let _ = write!(s, " {} |", pct(r.init.as_ref().and_then(|i| i.la)));
        }
        if has_retention {
            let _ = write!(
                s,
                " {} | {} |",
                pct(r.init.as_ref().and_then(|i| i.retention)),
                pct(last.and_then(|x| x.retention))
            );
        }
        let _ = writeln!(s, " {} |", duration(r.timings.total_s));
    }
    let _ = writeln!(
        s,
        "\nLA, WP, TP and forgetting in % after the last task (LA = task-agnostic linear \
         accuracy, WP = within-task, TP = task prediction; LA = TP × WP).{}{}",
        if has_start {
            " LA at start: the encoder before the first task, over all classes."
        } else {
            ""
        },
        if has_retention {
            " Retention: linear-probe accuracy on the held-out retention data set."
        } else {
            ""
        }
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

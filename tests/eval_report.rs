//! Run reports (JSON, Markdown, PNG plots) and the comparison table.

use std::path::Path;

use cromo::eval::{
    compare, read_report, write_compare, write_report, AccuracyMatrix, CodingRatePoint, InitRow,
    RunReport, TaskRow, Timings, PLOT_CODING_RATE, PLOT_MATRIX, PLOT_TASKS, REPORT_JSON, REPORT_MD,
};
use cromo::Error;

/// A 3-task run: A = [[0.9, –, –], [0.7, 0.85, –], [0.6, 0.75, 0.8]].
/// Forgetting after task 2 (0-based 1): 0.9 − 0.7 = 0.2; after task 3: ((0.9 − 0.6) +
/// (0.85 − 0.75)) / 2 = 0.2. BWT after task 3: ((0.6 − 0.9) + (0.75 − 0.85)) / 2 = −0.2.
fn sample_report(method: &str, strategy: &str, la_last: f64) -> RunReport {
    let mut m = AccuracyMatrix::new(3);
    m.set_row(0, &[Some(0.9), None, None]).unwrap();
    m.set_row(1, &[Some(0.7), Some(0.85), None]).unwrap();
    m.set_row(2, &[Some(0.6), Some(0.75), Some(0.8)]).unwrap();
    let row = |task: usize, la: f64, tp: f64| TaskRow {
        task,
        classes: vec![2 * task as u32, 2 * task as u32 + 1],
        la: Some(la),
        tp: Some(tp),
        wp: Some(la / tp),
        task_aware: Some(0.95 - 0.05 * task as f64),
        knn: Some(la - 0.03),
        forgetting: None,
        bwt: None,
        train_s: Some(100.0 + task as f64),
        retention: None,
    };
    let mut coding_rate = Vec::new();
    for task in 0..3 {
        for epoch in 0..4 {
            let x = (task * 4 + epoch) as f64;
            coding_rate.push(CodingRatePoint {
                task,
                epoch,
                early: 20.0 + 2.0 * (1.0 - (-x / 3.0).exp()),
                last: 60.0 + 10.0 * (x / 4.0).sin() - 0.5 * x,
            });
        }
    }
    let mut r = RunReport {
        method: method.into(),
        strategy: strategy.into(),
        config: serde_json::json!({"arch": "small-cnn", "epochs": 4, "seed": 0}),
        tasks: vec![row(0, 0.9, 1.0), row(1, 0.75, 0.9), row(2, la_last, 0.8)],
        accuracy_matrix: m,
        coding_rate,
        timings: Timings {
            total_s: 4000.0,
            train_s: 3600.0,
            eval_s: 400.0,
        },
        images_per_s: Some(812.5),
        peak_rss_mb: cromo::eval::peak_rss_mb(),
        notes: vec!["frozen teacher in eval mode".into()],
        init: None,
    };
    r.fill_forgetting();
    r
}

fn png_size(path: &Path) -> (u32, u32, usize) {
    let img = image::open(path).unwrap().to_rgb8();
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    (img.width(), img.height(), colours.len())
}

#[test]
fn report_files_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run-a");
    let r = sample_report("barlow", "cassle", 0.65);
    assert!((r.tasks[1].forgetting.unwrap() - 0.2).abs() < 1e-12);
    assert!((r.tasks[2].forgetting.unwrap() - 0.2).abs() < 1e-12);
    assert!((r.tasks[2].bwt.unwrap() + 0.2).abs() < 1e-12);
    assert_eq!(r.tasks[0].forgetting, None);
    let written = write_report(&run, &r).unwrap();
    assert_eq!(written.len(), 5);
    let mut names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expect = vec![
        PLOT_MATRIX,
        PLOT_TASKS,
        PLOT_CODING_RATE,
        REPORT_JSON,
        REPORT_MD,
    ];
    expect.sort();
    assert_eq!(names, expect, "no temporary file left behind");

    assert_eq!(read_report(&run).unwrap(), r);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join(REPORT_JSON)).unwrap()).unwrap();
    assert_eq!(
        json["accuracy_matrix"]["rows"][1][1],
        serde_json::json!(0.85)
    );
    assert_eq!(json["tasks"][2]["la"], serde_json::json!(0.65));

    let md = std::fs::read_to_string(run.join(REPORT_MD)).unwrap();
    println!("{md}");
    assert!(md.starts_with("# Run report: barlow + cassle"));
    assert!(md.contains("| final LA | 65.00 |"));
    assert!(md.contains("| final forgetting | 20.00 |"));
    assert!(md.contains("| total time | 1 h 06 min |"));
    // Per-task row of task 3: LA 65, TP 80, WP 81.25, task-aware 85, kNN 62, forgetting 20, BWT −20,
    // no retention probe.
    assert!(
        md.contains(
            "| 3 | 4 5 | 65.00 | 80.00 | 81.25 | 85.00 | 62.00 | 20.00 | -20.00 | – | 1 min 42 s |"
        ),
        "{md}"
    );
    assert!(md.contains("| 2 | 70.00 | 85.00 | – |"));
    // Last ΔR point: early 20 + 2(1 − e^{−11/3}) = 21.949, last 60 + 10 sin(11/4) − 5.5 = 58.317.
    assert!(md.contains("| 3 | 4 | 21.949 | 58.317 |"), "{md}");
    assert!(md.contains("![accuracy_matrix.png](accuracy_matrix.png)"));
    assert!(md.contains("\"arch\": \"small-cnn\""));

    for name in [PLOT_MATRIX, PLOT_TASKS, PLOT_CODING_RATE] {
        let (w, h, colours) = png_size(&run.join(name));
        assert!(w >= 400 && h >= 400, "{name}: {w}×{h}");
        assert!(colours > 20, "{name} looks blank ({colours} colours)");
    }
}

#[test]
fn reports_without_optional_parts_skip_their_plots() {
    let dir = tempfile::tempdir().unwrap();
    let r = RunReport {
        method: "simclr".into(),
        strategy: "finetune".into(),
        tasks: vec![TaskRow {
            task: 0,
            classes: vec![0, 1],
            knn: Some(0.5),
            ..TaskRow::default()
        }],
        accuracy_matrix: AccuracyMatrix::new(1),
        ..RunReport::default()
    };
    let written = write_report(dir.path(), &r).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec![PLOT_TASKS, REPORT_MD, REPORT_JSON]);
    assert_eq!(read_report(dir.path()).unwrap(), r);
}

#[test]
fn invalid_reports_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = sample_report("barlow", "er", 0.6);
    r.coding_rate[0].last = f64::NAN;
    let e = write_report(dir.path(), &r).unwrap_err().to_string();
    assert!(e.contains("not a finite number"), "{e}");
    let mut r2 = sample_report("barlow", "er", 0.6);
    r2.tasks[0].la = Some(90.0); // a percentage where a fraction belongs
    assert!(write_report(dir.path(), &r2).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn compare_builds_one_row_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("barlow-finetune");
    let b = dir.path().join("barlow-cromo");
    write_report(&a, &sample_report("barlow", "finetune", 0.6)).unwrap();
    write_report(&b, &sample_report("barlow", "cromo-mixup", 0.7)).unwrap();
    let table = compare(&[&a, &b]).unwrap();
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "| run | method | strategy | tasks | LA | WP | TP | forgetting | time |"
    );
    // WP = LA / TP = 0.6 / 0.8 = 75 %.
    assert_eq!(
        lines[2],
        "| barlow-finetune | barlow | finetune | 3 | 60.00 | 75.00 | 80.00 | 20.00 | 1 h 06 min |"
    );
    assert_eq!(
        lines[3],
        "| barlow-cromo | barlow | cromo-mixup | 3 | 70.00 | 87.50 | 80.00 | 20.00 | 1 h 06 min |"
    );
    let out = dir.path().join("compare.md");
    assert_eq!(write_compare(&[&a, &b], &out).unwrap(), table);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), table);

    // A directory without report.json is named in the error.
    let empty = dir.path().join("not-a-run");
    std::fs::create_dir(&empty).unwrap();
    let e = compare(&[&a, &empty]).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }));
    assert!(e.to_string().contains("not-a-run/report.json"), "{e}");
    // A report.json that is not a report.
    std::fs::write(empty.join("report.json"), "{\"hello\": 1}").unwrap();
    let e = compare(&[&empty]).unwrap_err().to_string();
    assert!(
        e.contains("not-a-run/report.json") && e.contains("not a cromo run report"),
        "{e}"
    );
    assert!(compare::<&Path>(&[]).is_err());
}

/// Writes the sample report's plots where a person can look at them:
/// `EVAL_PLOTS_DIR=/tmp/plots cargo test --release --test eval_report -- --ignored`.
#[test]
#[ignore]
fn write_sample_plots_for_inspection() {
    let dir = std::env::var("EVAL_PLOTS_DIR").unwrap_or_else(|_| "/tmp/cromo-eval-plots".into());
    let mut r = sample_report("barlow", "cassle", 0.65);
    write_report(&dir, &r).unwrap();
    // A 10-task matrix too.
    let t = 10;
    let mut m = AccuracyMatrix::new(t);
    for i in 0..t {
        for j in 0..=i {
            m.set(i, j, 0.9 - 0.04 * (i - j) as f64 - 0.01 * j as f64)
                .unwrap();
        }
    }
    r.accuracy_matrix = m;
    r.tasks = (0..t)
        .map(|i| TaskRow {
            task: i,
            classes: vec![i as u32],
            la: Some(0.9 - 0.03 * i as f64),
            tp: Some(0.95 - 0.02 * i as f64),
            wp: Some(0.9),
            task_aware: Some(0.93 - 0.01 * i as f64),
            knn: None,
            ..TaskRow::default()
        })
        .collect();
    r.fill_forgetting();
    write_report(format!("{dir}/ten-tasks"), &r).unwrap();
    println!("plots in {dir}");
}

/// With a starting-encoder evaluation and a retention probe in one run, the table gains their
/// columns (a run without them shows dashes), report.md its rows.
#[test]
fn compare_and_report_show_start_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("scratch");
    let b = dir.path().join("pretrained");
    write_report(&a, &sample_report("barlow", "finetune", 0.6)).unwrap();
    let mut rb = sample_report("barlow", "cassle", 0.7);
    rb.init = Some(InitRow {
        la: Some(0.55),
        knn: Some(0.5),
        retention: Some(0.8125),
    });
    for (i, t) in rb.tasks.iter_mut().enumerate() {
        t.retention = Some(0.8 - 0.1 * i as f64);
    }
    write_report(&b, &rb).unwrap();
    let table = compare(&[&a, &b]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "| run | method | strategy | tasks | LA | WP | TP | forgetting | LA at start | retention at start | retention | time |"
    );
    assert_eq!(
        lines[2],
        "| scratch | barlow | finetune | 3 | 60.00 | 75.00 | 80.00 | 20.00 | – | – | – | 1 h 06 min |"
    );
    assert_eq!(
        lines[3],
        "| pretrained | barlow | cassle | 3 | 70.00 | 87.50 | 80.00 | 20.00 | 55.00 | 81.25 | 60.00 | 1 h 06 min |"
    );
    let md = std::fs::read_to_string(b.join(REPORT_MD)).unwrap();
    assert!(
        md.contains("| initial retention-probe accuracy | 81.25 |"),
        "{md}"
    );
    assert!(
        md.contains("| final retention-probe accuracy | 60.00 |"),
        "{md}"
    );
    assert_eq!(read_report(&b).unwrap(), rb);
}

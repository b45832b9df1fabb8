//! The class-incremental trainer end to end on the shipped CIFAR-10 subset (tiny budgets):
//! checkpoints, exact resume after a stop or a SIGKILL, bad input.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::Device;
use cromo::learner::checkpoint::{Checkpoint, MANIFEST};
use cromo::learner::trainer::{load_data, EvalKind, RunEnd, TrainConfig, Trainer};

mod common;

use common::subset;

/// A tiny CroMo-Mixup run: 2 tasks, batch 16, 3 steps per task, 30 images per class.
fn tiny_config(strategy: &str) -> TrainConfig {
    let mut c = common::tiny_train_config(strategy);
    c.buffer = 40;
    c.buffer_batch = 8;
    c.eval = EvalKind::Linear;
    c.seed = 7;
    c
}

fn run_to_end(cfg: TrainConfig, out: &Path) -> RunEnd {
    let data = load_data(&cfg).unwrap();
    let mut t = Trainer::new(cfg, data, &Device::Cpu, out)
        .unwrap()
        .quiet(true);
    t.run().unwrap()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn stop_and_resume_gives_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    assert_eq!(run_to_end(tiny_config("cromo"), &whole), RunEnd::Finished);

    let staged = dir.path().join("staged");
    let mut cfg = tiny_config("cromo");
    cfg.stop_after_task = Some(0);
    assert_eq!(run_to_end(cfg, &staged), RunEnd::Stopped { after_task: 0 });
    let ck = Checkpoint::read(&staged).unwrap();
    assert_eq!(ck.position.task, 1);
    assert_eq!(ck.position.task_step, 0);
    assert_eq!(ck.report.tasks.len(), 1);

    let mut t = Trainer::resume(&staged, None, &Device::Cpu, None)
        .unwrap()
        .quiet(true);
    assert_eq!(t.run().unwrap(), RunEnd::Finished);
    assert_eq!(
        bytes(&whole.join("encoder.safetensors")),
        bytes(&staged.join("encoder.safetensors")),
        "resumed run must end with the uninterrupted run's weights"
    );
    let a = cromo::eval::read_report(&whole).unwrap();
    let b = cromo::eval::read_report(&staged).unwrap();
    assert_eq!(a.accuracy_matrix, b.accuracy_matrix);
    assert_eq!(a.tasks.len(), 2);
    let la = a.tasks[1].la.unwrap();
    assert!((0.0..=1.0).contains(&la));
}

#[test]
fn mid_task_checkpoints_keep_only_the_latest_and_hold_teacher_and_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config("cassle");
    cfg.max_steps_per_task = Some(4);
    cfg.checkpoint_every = 2;
    cfg.eval = EvalKind::None;
    let out = dir.path().join("run");
    run_to_end(cfg, &out);
    let dirs: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "older checkpoints are removed: {dirs:?}");
    // The run is complete: the last checkpoint is a task boundary (no optimiser, no teacher).
    let ck = Checkpoint::read(&out).unwrap();
    assert_eq!(ck.position.task, 2);
    assert!(!dirs[0].join("optimizer.safetensors").exists());
}

#[test]
fn corrupt_checkpoint_is_reported_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = tiny_config("er");
    cfg.stop_after_task = Some(0);
    cfg.eval = EvalKind::None;
    run_to_end(cfg, &out);
    let ck = Checkpoint::read(&out).unwrap();
    assert_eq!(ck.position.task, 1);
    // Flip one byte of the buffer file.
    let ckdir = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let buf = ckdir.join("buffer.bin");
    let mut b = bytes(&buf);
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&buf, &b).unwrap();
    let err = Checkpoint::read(&out)
        .err()
        .expect("corruption detected")
        .to_string();
    assert!(
        err.contains("buffer.bin") && err.contains("checksum"),
        "{err}"
    );
    // Truncate the state file.
    b[mid] ^= 0x40;
    std::fs::write(&buf, &b).unwrap();
    let state = ckdir.join("state.safetensors");
    let s = bytes(&state);
    std::fs::write(&state, &s[..s.len() - 10]).unwrap();
    let err = Trainer::resume(&out, None, &Device::Cpu, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("state.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn a_fresh_run_refuses_a_folder_holding_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = tiny_config("finetune");
    cfg.stop_after_task = Some(0);
    cfg.eval = EvalKind::None;
    run_to_end(cfg.clone(), &out);
    let data = load_data(&cfg).unwrap();
    let err = Trainer::new(cfg, data, &Device::Cpu, &out)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn bad_configurations_are_errors() {
    let mut c = tiny_config("cromo");
    c.tasks = 3; // 10 classes do not split into 3 tasks
    assert!(load_data(&c).is_err());
    let mut c = tiny_config("cromo");
    c.buffer = 0;
    assert!(c.validate().is_err());
    let mut c = tiny_config("finetune");
    c.batch = 1;
    assert!(c.validate().is_err());
    let mut c = tiny_config("finetune");
    c.batch = 1000; // more than a task's images
    let data = load_data(&c).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(c, data, &Device::Cpu, dir.path())
        .and_then(|mut t| t.run())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fewer than one batch"), "{err}");
    let mut c = tiny_config("finetune");
    c.data = "/no/such/data.tar.zst".into();
    let err = load_data(&c).err().unwrap().to_string();
    assert!(err.contains("/no/such/data.tar.zst"), "{err}");
}

/// Kills `cromo train` with SIGKILL once a mid-task checkpoint exists, resumes it, and checks
/// the result equals an uninterrupted run.
#[test]
fn sigkill_mid_task_then_resume_matches_an_uninterrupted_run() {
    let exe = env!("CARGO_BIN_EXE_cromo");
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--data",
            subset().to_str().unwrap(),
            "--arch",
            "small-cnn",
            "--method",
            "barlow",
            "--strategy",
            "cromo",
            "--tasks",
            "2",
            "--epochs-per-task",
            "1",
            "--batch",
            "16",
            "--buffer",
            "40",
            "--buffer-batch",
            "8",
            "--images-per-class",
            "30",
            "--test-images-per-class",
            "10",
            "--max-steps-per-task",
            "6",
            "--checkpoint-every",
            "1",
            "--eval",
            "none",
            "--seed",
            "3",
            "--threads",
            "2",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(out.display().to_string());
        v
    };
    let whole = dir.path().join("whole");
    let st = Command::new(exe).args(args(&whole)).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let killed = dir.path().join("killed");
    let mut child = Command::new(exe)
        .args(args(&killed))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run is inside task 2 (a checkpoint of task index 1 exists), then kill.
    let t0 = Instant::now();
    loop {
        if let Ok(ck) = Checkpoint::read(&killed) {
            if ck.position.task == 1 && ck.position.task_step >= 2 {
                break;
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("run ended ({s}) before it could be killed mid-task");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no mid-task checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // No partial files: every file the manifest names verifies, no temporary file is left.
    let ck = Checkpoint::read(&killed).expect("the last checkpoint is whole");
    assert!(ck.position.task == 1);
    for entry in walk(&killed) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.contains(".tmp"),
            "temporary file left: {}",
            entry.display()
        );
    }
    assert!(killed.join(MANIFEST).is_file());
    let st = Command::new(exe)
        .args([
            "train",
            "--threads",
            "2",
            "--resume",
            killed.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        bytes(&whole.join("encoder.safetensors")),
        bytes(&killed.join("encoder.safetensors")),
        "killed + resumed run must end with the uninterrupted run's weights"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A run's outputs feed the other commands: `cromo eval` re-scores its encoder, `cromo compare`
/// tabulates it, and `cromo infer --probe` classifies photos with its encoder + linear probe.
#[test]
fn run_outputs_work_with_eval_compare_and_infer() {
    let exe = env!("CARGO_BIN_EXE_cromo");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = tiny_config("finetune");
    cfg.eval = EvalKind::Both;
    run_to_end(cfg, &out);
    let report = cromo::eval::read_report(&out).unwrap();
    let last = report.tasks.last().unwrap();

    let o = Command::new(exe)
        .args([
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--eval",
            "both",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    // The same encoder on the same data gives the LA the run reported after its last task.
    let la = format!("{:.2}", 100.0 * last.la.unwrap());
    assert!(text.contains(&la), "eval table {text} lacks LA {la}");

    let table = dir.path().join("cmp.md");
    let o = Command::new(exe)
        .args([
            "compare",
            out.to_str().unwrap(),
            "--out",
            table.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(&table).unwrap();
    assert!(md.contains("finetune") && md.contains("barlow"), "{md}");

    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos/coffee.png");
    let o = Command::new(exe)
        .args([
            "infer",
            photo.to_str().unwrap(),
            "--arch",
            "small-cnn",
            "--model",
            out.join("encoder.safetensors").to_str().unwrap(),
            "--probe",
            out.join("probe.safetensors").to_str().unwrap(),
            "--top-k",
            "10",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for name in cromo::data::CIFAR10_CLASSES {
        assert!(text.contains(name), "{text} lacks {name}");
    }
}

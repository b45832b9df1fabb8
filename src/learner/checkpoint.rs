//! Crash-safe checkpoints of a training run.
//!
//! Layout inside the run folder:
//! ```text
//! checkpoint.json                       manifest: config, position, report so far, file checksums
//! checkpoints/t<task>-s<step>/
//!     state.safetensors                 the method: trainable tensors, BN statistics, EMA target,
//!                                       queues, running statistics (`Method::tensors`)
//!     optimizer.safetensors             momentum / Adam moments (mid-task checkpoints)
//!     teacher.safetensors               the frozen teacher (mid-task checkpoints of CaSSLe/PNR/CroMo)
//!     buffer.bin                        the replay buffer with its generator state
//! ```
//! A checkpoint is written into a new folder (every file atomically: temp file, fsync, rename),
//! then the manifest is replaced atomically, then older checkpoint folders are removed. A crash at
//! any moment leaves the previous manifest pointing at complete files. On reading, every file's
//! length and CRC-32 are checked against the manifest; a mismatch is an error naming the file.
//! Tensors are stored in their own dtype (f32), so a resumed run continues bit-exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::buffer::ReplayBuffer;
use crate::continual::Teacher;
use crate::eval::RunReport;
use crate::fsutil::write_atomic;
use crate::learner::optim::Optimizer;
use crate::learner::trainer::TrainConfig;
use crate::methods::Method;
use crate::models::weights::save_tensors;
use crate::{Error, Result};

/// File name of the manifest in the run folder.
pub const MANIFEST: &str = "checkpoint.json";
const FORMAT: &str = "cromo.checkpoint";
const VERSION: u32 = 1;

/// Where a run stands: the task being trained and the steps of it already taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Task index (0-based); equal to the number of tasks when the run is complete.
    pub task: usize,
    /// Steps of `task` already taken (0 at a task's start).
    pub task_step: usize,
}

impl Position {
    /// The start of task `t`.
    pub fn task_start(t: usize) -> Self {
        Position {
            task: t,
            task_step: 0,
        }
    }

    /// True at the start of a task (nothing of it trained yet).
    pub fn at_task_start(&self) -> bool {
        self.task_step == 0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileEntry {
    name: String,
    bytes: u64,
    crc32: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    config: TrainConfig,
    position: Position,
    images_trained: u64,
    report: RunReport,
    /// The checkpoint folder, relative to the run folder.
    dir: String,
    files: Vec<FileEntry>,
}

/// True when `out` holds a checkpoint manifest.
pub fn exists(out: &Path) -> bool {
    out.join(MANIFEST).is_file()
}

/// A checkpoint read back from a run folder, its files verified.
pub struct Checkpoint {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Where the run stood.
    pub position: Position,
    /// The report up to that point.
    pub report: RunReport,
    /// Current-task images trained on so far (for images/s).
    pub images_trained: u64,
    dir: PathBuf,
    files: Vec<String>,
}

fn crc_of(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

impl Checkpoint {
    /// Writes a checkpoint of the run in `out` (see the module docs for the protocol).
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        out: &Path,
        config: &TrainConfig,
        position: &Position,
        report: &RunReport,
        images_trained: u64,
        method: &Method,
        teacher: Option<&Teacher>,
        buffer: Option<&ReplayBuffer>,
        optimizer: Option<&dyn Optimizer>,
    ) -> Result<()> {
        let rel = format!(
            "checkpoints/t{:03}-s{:08}",
            position.task, position.task_step
        );
        let dir = out.join(&rel);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut names = vec!["state.safetensors".to_string()];
        save_tensors(
            &method.tensors()?,
            dir.join("state.safetensors"),
            DType::F32,
        )?;
        if let Some(t) = teacher {
            save_tensors(&t.tensors()?, dir.join("teacher.safetensors"), DType::F32)?;
            names.push("teacher.safetensors".into());
        }
        if let Some(o) = optimizer {
            save_tensors(
                &o.state_tensors()?,
                dir.join("optimizer.safetensors"),
                DType::F32,
            )?;
            names.push("optimizer.safetensors".into());
        }
        if let Some(b) = buffer {
            b.save(dir.join("buffer.bin"))?;
            names.push("buffer.bin".into());
        }
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let p = dir.join(&name);
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            files.push(FileEntry {
                name,
                bytes: bytes.len() as u64,
                crc32: crc_of(&bytes),
            });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            config: config.clone(),
            position: *position,
            images_trained,
            report: report.clone(),
            dir: rel.clone(),
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid(format!("checkpoint manifest to JSON: {e}")))?;
        write_atomic(&out.join(MANIFEST), &json)?;
        // Only now may older checkpoints go.
        let root = out.join("checkpoints");
        if let Ok(rd) = std::fs::read_dir(&root) {
            for entry in rd.flatten() {
                let p = entry.path();
                if p != dir && p.is_dir() {
                    std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
        }
        Ok(())
    }

    /// Reads the manifest of `out` and verifies every file it names (length and CRC-32).
    pub fn read(out: &Path) -> Result<Checkpoint> {
        let mpath = out.join(MANIFEST);
        let text = std::fs::read(&mpath).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: mpath.clone(),
                what: "a checkpoint manifest (is this a cromo run folder?)".into(),
            },
            _ => Error::io(&mpath, e),
        })?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| Error::bad_data(&mpath, format!("not a checkpoint manifest: {e}")))?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(Error::bad_data(
                &mpath,
                format!(
                    "format {} version {} (this cromo reads {FORMAT} version {VERSION})",
                    m.format, m.version
                ),
            ));
        }
        let dir = out.join(&m.dir);
        for f in &m.files {
            let p = dir.join(&f.name);
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            if bytes.len() as u64 != f.bytes {
                return Err(Error::bad_data(
                    &p,
                    format!(
                        "{} bytes, the manifest says {} (truncated or replaced)",
                        bytes.len(),
                        f.bytes
                    ),
                ));
            }
            if crc_of(&bytes) != f.crc32 {
                return Err(Error::bad_data(&p, "checksum mismatch (corrupt)"));
            }
        }
        Ok(Checkpoint {
            config: m.config,
            position: m.position,
            report: m.report,
            images_trained: m.images_trained,
            dir,
            files: m.files.into_iter().map(|f| f.name).collect(),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f == name)
    }

    fn tensors(&self, name: &str, method: &Method) -> Result<Vec<(String, Tensor)>> {
        let p = self.dir.join(name);
        let map = candle_core::safetensors::load(&p, method.device())
            .map_err(|e| Error::bad_data(&p, format!("cannot read tensors: {e}")))?;
        let mut v: Vec<(String, Tensor)> = map.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Restores the method's state and the replay buffer.
    pub fn restore(&self, method: &mut Method, buffer: &mut Option<ReplayBuffer>) -> Result<()> {
        method.set_tensors(&self.tensors("state.safetensors", method)?)?;
        match (buffer.as_mut(), self.has("buffer.bin")) {
            (Some(b), true) => *b = ReplayBuffer::load(self.dir.join("buffer.bin"))?,
            (None, false) => {}
            (Some(_), false) => {
                return Err(Error::bad_data(
                    self.dir.join("buffer.bin"),
                    "missing: the run's strategy keeps a replay buffer",
                ))
            }
            (None, true) => {}
        }
        Ok(())
    }

    /// The frozen teacher saved with a mid-task checkpoint, if any.
    pub fn teacher(&self, method: &Method) -> Result<Option<Teacher>> {
        if !self.has("teacher.safetensors") {
            return Ok(None);
        }
        let t = self.tensors("teacher.safetensors", method)?;
        Ok(Some(Teacher::restore(
            method,
            &t,
            self.config.teacher_mode,
        )?))
    }

    /// The optimiser state saved with a mid-task checkpoint (empty at task boundaries).
    pub fn optimizer_state(&self, method: &Method) -> Result<HashMap<String, Tensor>> {
        if !self.has("optimizer.safetensors") {
            return Ok(HashMap::new());
        }
        Ok(self
            .tensors("optimizer.safetensors", method)?
            .into_iter()
            .collect())
    }
}

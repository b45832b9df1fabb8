//! The frozen teacher f of the continual strategies: a deep copy of the student's encoder +
//! projector taken at the start of a task, never updated, never in an optimiser.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::methods::ema::NetCopy;
use crate::methods::Method;
use crate::models::weights::is_bn_buffer;
use crate::{Error, Result};

/// How the teacher's BatchNorm layers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherMode {
    /// Running statistics frozen at the snapshot (our default; the teacher is then a fixed
    /// function and every tensor stays bit-identical).
    Eval,
    /// Batch statistics, as the CaSSLe, PNR and CroMo-Mixup codes leave their frozen model in
    /// train mode: its outputs depend on the batch and its BatchNorm running statistics drift
    /// with the new data (its weights and biases still never change). For reproducing them.
    Train,
}

impl TeacherMode {
    /// `eval` or `train`.
    pub fn name(self) -> &'static str {
        match self {
            TeacherMode::Eval => "eval",
            TeacherMode::Train => "train",
        }
    }
}

impl fmt::Display for TeacherMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TeacherMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "eval" => Ok(TeacherMode::Eval),
            "train" => Ok(TeacherMode::Train),
            _ => Err(Error::invalid(format!(
                "unknown teacher mode `{s}` (expected eval or train)"
            ))),
        }
    }
}

/// A frozen copy of a [`Method`]'s encoder + projector.
pub struct Teacher {
    net: NetCopy,
    mode: TeacherMode,
}

impl Teacher {
    /// Deep-copies the student's current `backbone.*` and `projector.*` tensors (parameters and
    /// BatchNorm statistics) into the teacher's own VarMap. Take it at the start of every task
    /// t ≥ 1, before the first step.
    pub fn snapshot(student: &Method, mode: TeacherMode) -> Result<Self> {
        let spec = student
            .config()
            .projector_spec(student.encoder().feature_dim());
        Ok(Self {
            net: NetCopy::snapshot(student.varmap(), student.arch(), &spec, student.device())?,
            mode,
        })
    }

    /// Rebuilds a teacher saved with [`Teacher::tensors`] (e.g. from a checkpoint) for a student
    /// of the same architecture and projector: exactly the names and shapes the snapshot holds
    /// must be given.
    pub fn restore(
        student: &Method,
        tensors: &[(String, Tensor)],
        mode: TeacherMode,
    ) -> Result<Self> {
        let spec = student
            .config()
            .projector_spec(student.encoder().feature_dim());
        let expected: HashMap<String, Vec<usize>> = {
            let data = student.varmap().data().lock().map_err(|_| lock_error())?;
            data.iter()
                .filter(|(n, _)| n.starts_with("backbone.") || n.starts_with("projector."))
                .map(|(n, v)| (n.clone(), v.dims().to_vec()))
                .collect()
        };
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| lock_error())?;
            for (name, t) in tensors {
                match expected.get(name) {
                    None => {
                        return Err(Error::invalid(format!(
                            "teacher: unexpected tensor `{name}` (not a {} encoder or projector \
                             tensor of this student)",
                            student.arch()
                        )))
                    }
                    Some(shape) if shape.as_slice() != t.dims() => {
                        return Err(Error::invalid(format!(
                            "teacher: tensor `{name}` has shape {:?}, expected {shape:?}",
                            t.dims()
                        )))
                    }
                    Some(_) => {}
                }
                let t = t
                    .detach()
                    .to_dtype(DType::F32)?
                    .to_device(student.device())?;
                if data
                    .insert(name.clone(), Var::from_tensor(&t.copy()?.detach())?)
                    .is_some()
                {
                    return Err(Error::invalid(format!(
                        "teacher: tensor `{name}` given twice"
                    )));
                }
            }
            if let Some(missing) = expected.keys().find(|n| !data.contains_key(*n)) {
                return Err(Error::invalid(format!(
                    "teacher: tensor `{missing}` is missing ({} of {} given)",
                    data.len(),
                    expected.len()
                )));
            }
        }
        let net = NetCopy::build(varmap, student.arch(), &spec, student.device())?;
        Ok(Self { net, mode })
    }

    /// The BatchNorm mode the teacher runs in.
    pub fn mode(&self) -> TeacherMode {
        self.mode
    }

    /// Frozen projections `f(x)`: `(B,3,H,W) -> (B,d)`, detached (no gradient can reach the
    /// teacher). In [`TeacherMode::Train`] the BatchNorm layers use this batch's statistics.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, z) = self.net.forward(x, self.mode == TeacherMode::Train)?;
        Ok(z.detach())
    }

    /// Frozen pooled features and projections `(feats (B,D), f (B,d))`, detached.
    pub fn features(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (feats, z) = self.net.forward(x, self.mode == TeacherMode::Train)?;
        Ok((feats.detach(), z.detach()))
    }

    /// Every teacher tensor, sorted by name (`backbone.*`, `projector.*`, BatchNorm statistics
    /// included), for checkpoints and checks.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.net.tensors()
    }

    /// The teacher's parameters (its tensors without BatchNorm running statistics).
    pub fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .tensors()?
            .into_iter()
            .filter(|(n, _)| !is_bn_buffer(n))
            .collect())
    }
}

fn lock_error() -> Error {
    Error::invalid("internal: a VarMap lock is poisoned")
}

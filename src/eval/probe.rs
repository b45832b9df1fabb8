//! Linear probe: multinomial logistic regression with L2 on cached features, trained to
//! convergence with full-batch L-BFGS and a strong-Wolfe line search (the two matrix products
//! per pass run as candle f32 matmuls; the loss, gradient sums and L-BFGS state are f64).
//!
//! The objective is the one scikit-learn's `LogisticRegression` (lbfgs, multinomial) minimises,
//! divided by `C·N`:
//!
//! `L(W, b) = (1/N) Σᵢ CE(W xᵢ + b, yᵢ) + (λ/2) ‖W‖²`, so sklearn's `C` is `λ = 1 / (C·N)`;
//! the bias is not penalised. Features are standardised first (per-dimension mean and population
//! standard deviation of the training rows; a constant dimension keeps scale 1, as sklearn's
//! `StandardScaler`), and the probe stores mean and std so that `logits` takes raw features.
//!
//! The fit is deterministic: L-BFGS has no randomness, and every reduction runs in a fixed order.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use safetensors::tensor::TensorView;
use serde::{Deserialize, Serialize};

use super::{rows_of, write_atomic};
use crate::{Error, Result};

/// Settings of [`LinearProbe::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// λ of the L2 penalty `(λ/2)‖W‖²` added to the mean cross-entropy (bias not penalised).
    /// scikit-learn's `C` on `N` training rows is `λ = 1/(C·N)`. Default `1e-4`.
    pub l2: f64,
    /// Most L-BFGS iterations (each costs one or a few passes over the features). Default 1000.
    pub max_iter: usize,
    /// Converged when the largest gradient component is at most this. Default `1e-6`.
    pub grad_tol: f64,
    /// Converged when one iteration lowers the loss by at most this fraction of it. Default
    /// `2.2e-9` (SciPy's L-BFGS-B default, `factr = 1e7`).
    pub loss_rel_tol: f64,
    /// Pairs of L-BFGS history kept. Default 10.
    pub history: usize,
    /// Standardise every feature dimension with the training rows' mean and std. Default true.
    pub standardize: bool,
    /// Global class ids the probe covers, e.g. all classes seen so far (a class may have no
    /// training row). `None`: the sorted distinct training labels.
    pub classes: Option<Vec<u32>>,
    /// Class names indexed by global class id (`class_names[id]`); empty: names are the ids.
    pub class_names: Vec<String>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            l2: 1e-4,
            max_iter: 1000,
            grad_tol: 1e-6,
            loss_rel_tol: 2.2e-9,
            history: 10,
            standardize: true,
            classes: None,
            class_names: Vec::new(),
        }
    }
}

/// How a fit ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitInfo {
    /// L-BFGS iterations done.
    pub iterations: usize,
    /// Objective (and gradient) evaluations, i.e. passes over the features.
    pub evaluations: usize,
    /// Final objective `mean CE + (λ/2)‖W‖²` on the training rows.
    pub loss: f64,
    /// Largest absolute gradient component at the end.
    pub grad_inf_norm: f64,
    /// Whether the fit stopped at the optimum (any reason but `max_iter`).
    pub converged: bool,
    /// Why the fit stopped.
    pub stop: StopReason,
    /// Accuracy on the training rows.
    pub train_accuracy: f64,
}

/// Why an L-BFGS fit stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The largest gradient component fell to `grad_tol`.
    GradTol,
    /// One iteration lowered the loss by at most `loss_rel_tol` of it.
    LossTol,
    /// No step along a descent direction lowered the loss: the objective is at the precision
    /// floor of its f32 logits (relative noise ~1e-9), which is the optimum for every purpose.
    PrecisionFloor,
    /// `max_iter` iterations were done without meeting a tolerance.
    MaxIter,
}

/// A linear classifier over `C` classes on `D`-dimensional features:
/// `logits = weight · ((x − mean) / std) + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    /// Feature dimension `D`.
    pub dim: usize,
    /// `(C, D)` row-major.
    pub weight: Vec<f32>,
    /// `(C)`.
    pub bias: Vec<f32>,
    /// `(D)` standardisation mean (zeros when not standardised).
    pub mean: Vec<f32>,
    /// `(D)` standardisation scale (ones when not standardised).
    pub std: Vec<f32>,
    /// Global class id of each output row, ascending.
    pub classes: Vec<u32>,
    /// Name of each output row's class.
    pub class_names: Vec<String>,
    /// How the fit ended (`None` for a probe loaded from a file saved without it).
    pub fit_info: Option<FitInfo>,
}

const FORMAT: &str = "cromo.linear_probe";
const CHUNK_ROWS: usize = 4096;

impl LinearProbe {
    /// Number of classes `C`.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Fits a probe on `features` (`N×dim` row-major) with global class ids `labels` (`N`).
    ///
    /// Errors: empty or ragged input, non-finite features, a label outside `cfg.classes`,
    /// invalid settings. Never returns a partly trained probe silently: `fit_info.converged`
    /// says whether a tolerance was met.
    pub fn fit(
        features: &[f32],
        dim: usize,
        labels: &[u32],
        cfg: &ProbeConfig,
    ) -> Result<LinearProbe> {
        let n = rows_of(features, dim, "probe features")?;
        if n == 0 {
            return Err(Error::invalid("probe features: no training rows"));
        }
        if labels.len() != n {
            return Err(Error::invalid(format!(
                "probe: {n} feature rows but {} labels",
                labels.len()
            )));
        }
        if !(cfg.l2 >= 0.0 && cfg.l2.is_finite()) {
            return Err(Error::invalid(format!(
                "probe: l2 = {} must be ≥ 0",
                cfg.l2
            )));
        }
        if cfg.history == 0 {
            return Err(Error::invalid("probe: history must be ≥ 1"));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "probe features: row {} dimension {} is {}",
                i / dim,
                i % dim,
                features[i]
            )));
        }
        let classes = match &cfg.classes {
            Some(c) => {
                let mut c = c.clone();
                c.sort_unstable();
                let before = c.len();
                c.dedup();
                if c.len() != before {
                    return Err(Error::invalid("probe: cfg.classes lists a class twice"));
                }
                c
            }
            None => {
                let mut c = labels.to_vec();
                c.sort_unstable();
                c.dedup();
                c
            }
        };
        if classes.is_empty() {
            return Err(Error::invalid("probe: no class to predict"));
        }
        let index: HashMap<u32, usize> = classes.iter().enumerate().map(|(k, &c)| (c, k)).collect();
        let y = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                index.get(l).copied().ok_or_else(|| {
                    Error::invalid(format!(
                        "probe: label {l} of row {i} is not among the probe's classes {classes:?}"
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let class_names = names_for(&classes, &cfg.class_names)?;

        let (mean, std) = if cfg.standardize {
            standardization(features, n, dim)
        } else {
            (vec![0.0; dim], vec![1.0; dim])
        };
        let xs: Vec<f32> = features
            .par_chunks(dim)
            .flat_map_iter(|row| {
                row.iter()
                    .zip(mean.iter().zip(&std))
                    .map(|(&v, (&m, &s))| ((v as f64 - m) / s) as f32)
            })
            .collect();
        let x = Tensor::from_vec(xs, (n, dim), &Device::Cpu)?;
        let problem = Problem {
            x,
            y,
            n,
            d: dim,
            c: classes.len(),
            l2: cfg.l2,
        };
        let mut theta = vec![0.0f64; problem.c * (dim + 1)];
        let mut info = lbfgs(&problem, &mut theta, cfg)?;
        let c = problem.c;
        let weight: Vec<f32> = theta[..c * dim].iter().map(|&v| v as f32).collect();
        let bias: Vec<f32> = theta[c * dim..].iter().map(|&v| v as f32).collect();
        let predicted = problem.predict(&theta)?;
        let correct = predicted
            .iter()
            .zip(&problem.y)
            .filter(|(p, y)| p == y)
            .count();
        info.train_accuracy = correct as f64 / n as f64;
        Ok(LinearProbe {
            dim,
            weight,
            bias,
            mean: mean.iter().map(|&v| v as f32).collect(),
            std: std.iter().map(|&v| v as f32).collect(),
            classes,
            class_names,
            fit_info: Some(info),
        })
    }

    /// [`LinearProbe::fit`] on a `(N, D)` tensor (any float dtype, any device: copied to CPU f32).
    pub fn fit_tensor(features: &Tensor, labels: &[u32], cfg: &ProbeConfig) -> Result<LinearProbe> {
        let (data, dim) = tensor_rows(features)?;
        Self::fit(&data, dim, labels, cfg)
    }

    /// `(N×D)` raw features -> `(N×C)` logits, row-major; column `k` is class `classes[k]`.
    pub fn logits(&self, features: &[f32]) -> Result<Vec<f32>> {
        let n = rows_of(features, self.dim, "probe input")?;
        let (c, d) = (self.num_classes(), self.dim);
        // Fold the standardisation into the weights: W' = W / std, b' = b − W'·mean.
        let mut w = vec![0f32; c * d];
        let mut b = vec![0f32; c];
        for k in 0..c {
            let mut acc = self.bias[k] as f64;
            for j in 0..d {
                let wk = self.weight[k * d + j] as f64 / self.std[j] as f64;
                w[k * d + j] = wk as f32;
                acc -= wk * self.mean[j] as f64;
            }
            b[k] = acc as f32;
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::from_slice(features, (n, d), &Device::Cpu)?;
        let w = Tensor::from_vec(w, (c, d), &Device::Cpu)?;
        let b = Tensor::from_vec(b, (1, c), &Device::Cpu)?;
        let logits = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// `(N, D)` tensor -> `(N, C)` logits tensor on the CPU.
    pub fn logits_tensor(&self, features: &Tensor) -> Result<Tensor> {
        let (data, dim) = tensor_rows(features)?;
        if dim != self.dim {
            return Err(Error::invalid(format!(
                "probe input: {dim} features per row, the probe takes {}",
                self.dim
            )));
        }
        let n = data.len() / dim;
        let logits = self.logits(&data)?;
        Ok(Tensor::from_vec(
            logits,
            (n, self.num_classes()),
            &Device::Cpu,
        )?)
    }

    /// `(N×D)` features -> `N` predicted global class ids (ties go to the lower class).
    pub fn predict(&self, features: &[f32]) -> Result<Vec<u32>> {
        let logits = self.logits(features)?;
        Ok(logits
            .chunks(self.num_classes())
            .map(|row| self.classes[argmax(row)])
            .collect())
    }

    /// Top-1 accuracy on `features` (`N×D`) with global class ids `labels`. A label the probe
    /// does not cover is an error (it could never be predicted), and so is an empty set.
    pub fn accuracy(&self, features: &[f32], labels: &[u32]) -> Result<f64> {
        let n = rows_of(features, self.dim, "probe input")?;
        if n != labels.len() {
            return Err(Error::invalid(format!(
                "probe accuracy: {n} feature rows but {} labels",
                labels.len()
            )));
        }
        if n == 0 {
            return Err(Error::invalid("probe accuracy: no rows"));
        }
        if let Some(l) = labels
            .iter()
            .find(|l| self.classes.binary_search(l).is_err())
        {
            return Err(Error::invalid(format!(
                "probe accuracy: label {l} is not among the probe's classes {:?}",
                self.classes
            )));
        }
        let pred = self.predict(features)?;
        let correct = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok(correct as f64 / n as f64)
    }

    /// Saves as safetensors (`weight` (C,D) f32, `bias` (C) f32, `mean`, `std` (D) f32,
    /// `classes` (C) u32; metadata `format = cromo.linear_probe`, `class_names` and `fit_info` as
    /// JSON), written to a temporary file and renamed, so `path` is never left half written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.check_shapes().map_err(|msg| {
            Error::invalid(format!("{}: cannot save probe: {msg}", path.display()))
        })?;
        let (c, d) = (self.num_classes(), self.dim);
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let weight = f32_bytes(&self.weight);
        let bias = f32_bytes(&self.bias);
        let mean = f32_bytes(&self.mean);
        let std = f32_bytes(&self.std);
        let classes: Vec<u8> = self.classes.iter().flat_map(|x| x.to_le_bytes()).collect();
        let st = |e: safetensors::SafeTensorError| {
            Error::invalid(format!("{}: cannot serialise probe: {e}", path.display()))
        };
        use safetensors::Dtype;
        let tensors = vec![
            (
                "weight",
                TensorView::new(Dtype::F32, vec![c, d], &weight).map_err(st)?,
            ),
            (
                "bias",
                TensorView::new(Dtype::F32, vec![c], &bias).map_err(st)?,
            ),
            (
                "mean",
                TensorView::new(Dtype::F32, vec![d], &mean).map_err(st)?,
            ),
            (
                "std",
                TensorView::new(Dtype::F32, vec![d], &std).map_err(st)?,
            ),
            (
                "classes",
                TensorView::new(Dtype::U32, vec![c], &classes).map_err(st)?,
            ),
        ];
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("version".to_string(), "1".to_string());
        meta.insert(
            "class_names".to_string(),
            serde_json::to_string(&self.class_names).expect("strings serialise"),
        );
        if let Some(info) = &self.fit_info {
            meta.insert(
                "fit_info".to_string(),
                serde_json::to_string(info).expect("plain struct serialises"),
            );
        }
        let bytes = safetensors::serialize(tensors, Some(meta)).map_err(st)?;
        write_atomic(path, &bytes)
    }

    /// Loads a probe written by [`LinearProbe::save`]; every error names the file and what is
    /// wrong (not safetensors, not a probe, a missing or mis-shaped tensor, bad class names).
    pub fn load(path: impl AsRef<Path>) -> Result<LinearProbe> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
                what: "linear probe (safetensors)".into(),
            },
            _ => Error::io(path, e),
        })?;
        let bad = |msg: String| Error::Weights {
            path: path.to_path_buf(),
            msg,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            other => {
                return Err(bad(format!(
                    "not a cromo linear probe (metadata format = {other:?}, expected \"{FORMAT}\")"
                )))
            }
        }
        if meta.get("version").map(String::as_str) != Some("1") {
            return Err(bad(format!(
                "unsupported probe version {:?} (this build reads 1)",
                meta.get("version")
            )));
        }
        let get = |name: &str, dtype: safetensors::Dtype| -> Result<(Vec<usize>, Vec<u8>)> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor `{name}`")))?;
            if t.dtype() != dtype {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, expected {dtype:?}",
                    t.dtype()
                )));
            }
            Ok((t.shape().to_vec(), t.data().to_vec()))
        };
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        use safetensors::Dtype;
        let (wshape, weight) = get("weight", Dtype::F32)?;
        if wshape.len() != 2 {
            return Err(bad(format!(
                "tensor `weight` has shape {wshape:?}, expected (C, D)"
            )));
        }
        let (c, d) = (wshape[0], wshape[1]);
        let expect = |name: &str, shape: &[usize], want: usize| -> Result<()> {
            if shape != [want] {
                return Err(bad(format!(
                    "tensor `{name}` has shape {shape:?}, expected [{want}] (weight is {wshape:?})"
                )));
            }
            Ok(())
        };
        let (bshape, bias) = get("bias", Dtype::F32)?;
        expect("bias", &bshape, c)?;
        let (mshape, mean) = get("mean", Dtype::F32)?;
        expect("mean", &mshape, d)?;
        let (sshape, std) = get("std", Dtype::F32)?;
        expect("std", &sshape, d)?;
        let (cshape, classes) = get("classes", Dtype::U32)?;
        expect("classes", &cshape, c)?;
        let classes: Vec<u32> = classes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let class_names: Vec<String> = match meta.get("class_names") {
            Some(s) => serde_json::from_str(s).map_err(|e| {
                bad(format!(
                    "metadata class_names is not a JSON string list: {e}"
                ))
            })?,
            None => return Err(bad("metadata class_names is missing".into())),
        };
        let fit_info = match meta.get("fit_info") {
            Some(s) => Some(
                serde_json::from_str(s)
                    .map_err(|e| bad(format!("metadata fit_info is malformed: {e}")))?,
            ),
            None => None,
        };
        let probe = LinearProbe {
            dim: d,
            weight: f32s(&weight),
            bias: f32s(&bias),
            mean: f32s(&mean),
            std: f32s(&std),
            classes,
            class_names,
            fit_info,
        };
        probe.check_shapes().map_err(bad)?;
        Ok(probe)
    }

    fn check_shapes(&self) -> std::result::Result<(), String> {
        let (c, d) = (self.num_classes(), self.dim);
        if c == 0 || d == 0 {
            return Err(format!("empty probe ({c} classes, dimension {d})"));
        }
        if self.weight.len() != c * d
            || self.bias.len() != c
            || self.mean.len() != d
            || self.std.len() != d
        {
            return Err(format!(
                "inconsistent sizes: weight {}, bias {}, mean {}, std {} for {c} classes × {d}",
                self.weight.len(),
                self.bias.len(),
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.class_names.len() != c {
            return Err(format!(
                "{} class names for {c} classes",
                self.class_names.len()
            ));
        }
        if self.classes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "classes {:?} are not strictly ascending",
                self.classes
            ));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&self.weight) || !finite(&self.bias) || !finite(&self.mean) {
            return Err("weight, bias or mean holds a non-finite value".into());
        }
        if !self.std.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err("std holds a value that is not finite and positive".into());
        }
        Ok(())
    }
}

/// Index of the largest value (the first on ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

/// A rank-2 tensor copied to a row-major CPU `Vec<f32>`, with its row length.
pub(crate) fn tensor_rows(t: &Tensor) -> Result<(Vec<f32>, usize)> {
    let dims = t.dims();
    if dims.len() != 2 {
        return Err(Error::invalid(format!(
            "features must be a (N, D) tensor, got shape {dims:?}"
        )));
    }
    let data = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((data, dims[1]))
}

fn names_for(classes: &[u32], table: &[String]) -> Result<Vec<String>> {
    if table.is_empty() {
        return Ok(classes.iter().map(|c| c.to_string()).collect());
    }
    classes
        .iter()
        .map(|&c| {
            table.get(c as usize).cloned().ok_or_else(|| {
                Error::invalid(format!(
                    "probe: class {c} has no name ({} class names given)",
                    table.len()
                ))
            })
        })
        .collect()
}

/// Per-dimension mean and population std in f64 (std 1 for a constant dimension).
fn standardization(x: &[f32], n: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
    let sum_rows = |f: &(dyn Fn(usize, f32) -> f64 + Sync)| -> Vec<f64> {
        x.par_chunks(d * CHUNK_ROWS)
            .map(|chunk| {
                let mut acc = vec![0f64; d];
                for row in chunk.chunks(d) {
                    for (j, &v) in row.iter().enumerate() {
                        acc[j] += f(j, v);
                    }
                }
                acc
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(vec![0f64; d], |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            })
    };
    let mean: Vec<f64> = sum_rows(&|_, v| v as f64)
        .into_iter()
        .map(|s| s / n as f64)
        .collect();
    let var = sum_rows(&|j, v| (v as f64 - mean[j]).powi(2));
    let std = var
        .into_iter()
        .zip(&mean)
        .map(|(s, m)| {
            let sd = (s / n as f64).sqrt();
            if sd > 1e-12 * (1.0 + m.abs()) {
                sd
            } else {
                1.0
            }
        })
        .collect();
    (mean, std)
}

/// The training problem on standardised features `x` (N, D) with class indices `y`.
struct Problem {
    x: Tensor,
    y: Vec<usize>,
    n: usize,
    d: usize,
    c: usize,
    l2: f64,
}

impl Problem {
    fn logits(&self, theta: &[f64]) -> Result<Vec<f32>> {
        let (c, d) = (self.c, self.d);
        let w: Vec<f32> = theta[..c * d].iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = theta[c * d..].iter().map(|&v| v as f32).collect();
        let w = Tensor::from_vec(w, (c, d), &Device::Cpu)?;
        let b = Tensor::from_vec(b, (1, c), &Device::Cpu)?;
        let z = self.x.matmul(&w.t()?)?.broadcast_add(&b)?;
        Ok(z.flatten_all()?.to_vec1::<f32>()?)
    }

    fn predict(&self, theta: &[f64]) -> Result<Vec<usize>> {
        Ok(self.logits(theta)?.chunks(self.c).map(argmax).collect())
    }

    /// Objective at `theta = [W (C×D) row-major, b (C)]`; writes the gradient into `grad`.
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> Result<f64> {
        let (n, c, d) = (self.n, self.c, self.d);
        let z = self.logits(theta)?;
        let inv_n = 1.0 / n as f64;
        // Per chunk of rows: summed CE, summed (p − y) for the bias, and G = (p − y)/N in f32.
        let parts: Vec<(f64, Vec<f64>, Vec<f32>)> = z
            .par_chunks(c * CHUNK_ROWS)
            .enumerate()
            .map(|(ci, chunk)| {
                let mut loss = 0f64;
                let mut gb = vec![0f64; c];
                let mut g = vec![0f32; chunk.len()];
                let mut p = vec![0f64; c];
                for (r, row) in chunk.chunks(c).enumerate() {
                    let yi = self.y[ci * CHUNK_ROWS + r];
                    let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let mut s = 0f64;
                    for k in 0..c {
                        p[k] = (row[k] as f64 - mx).exp();
                        s += p[k];
                    }
                    loss += mx + s.ln() - row[yi] as f64;
                    for k in 0..c {
                        let gk = p[k] / s - if k == yi { 1.0 } else { 0.0 };
                        gb[k] += gk;
                        g[r * c + k] = (gk * inv_n) as f32;
                    }
                }
                (loss, gb, g)
            })
            .collect();
        let mut loss = 0f64;
        let mut gb = vec![0f64; c];
        let mut g = Vec::with_capacity(n * c);
        for (l, b, gg) in parts {
            loss += l;
            gb.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            g.extend_from_slice(&gg);
        }
        let g = Tensor::from_vec(g, (n, c), &Device::Cpu)?;
        let gw = g.t()?.matmul(&self.x)?.flatten_all()?.to_vec1::<f32>()?;
        let mut reg = 0f64;
        for i in 0..c * d {
            let w = theta[i];
            reg += w * w;
            grad[i] = gw[i] as f64 + self.l2 * w;
        }
        for k in 0..c {
            grad[c * d + k] = gb[k] * inv_n;
        }
        Ok(loss * inv_n + 0.5 * self.l2 * reg)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(a: &[f64]) -> f64 {
    a.iter().fold(0f64, |m, v| m.max(v.abs()))
}

/// Full-batch L-BFGS (Nocedal & Wright, Alg. 7.4/7.5) with a strong-Wolfe line search
/// (Alg. 3.5/3.6, c₁ = 1e-4, c₂ = 0.9) that also accepts Hager–Zhang approximate-Wolfe steps
/// once the objective's changes fall below its f32 round-off. Minimises in place from `theta`.
fn lbfgs(p: &Problem, theta: &mut [f64], cfg: &ProbeConfig) -> Result<FitInfo> {
    let dim = theta.len();
    let mut grad = vec![0f64; dim];
    let mut f = p.eval(theta, &mut grad)?;
    let mut evals = 1usize;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut stop = if inf_norm(&grad) <= cfg.grad_tol {
        StopReason::GradTol
    } else {
        StopReason::MaxIter
    };
    let mut iter = 0;
    while stop == StopReason::MaxIter && iter < cfg.max_iter {
        iter += 1;
        // Two-loop recursion: direction = −H·grad.
        let mut q = grad.clone();
        let mut alpha = vec![0f64; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            q.iter_mut()
                .zip(&y_hist[i])
                .for_each(|(q, y)| *q -= alpha[i] * y);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / dot(&grad, &grad).sqrt().max(1e-300),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for i in 0..s_hist.len() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            q.iter_mut()
                .zip(&s_hist[i])
                .for_each(|(q, s)| *q += (alpha[i] - beta) * s);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut dg0 = dot(&dir, &grad);
        if dg0 >= 0.0 {
            // Not a descent direction (round-off): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            let scale = 1.0 / dot(&grad, &grad).sqrt().max(1e-300);
            dir = grad.iter().map(|g| -g * scale).collect();
            dg0 = dot(&dir, &grad);
        }
        let ls = line_search(p, theta, f, dg0, &dir, &mut evals)?;
        let Some((step, f_new, theta_new, grad_new)) = ls else {
            stop = StopReason::PrecisionFloor;
            break;
        };
        let s: Vec<f64> = dir.iter().map(|d| d * step).collect();
        let y: Vec<f64> = grad_new.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        // Negative when an approximate-Wolfe step rose within round-off: not a convergence sign.
        let rel_drop = (f - f_new) / f.abs().max(f_new.abs()).max(1e-300);
        theta.copy_from_slice(&theta_new);
        grad = grad_new;
        f = f_new;
        if sy > 1e-12 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt() {
            if s_hist.len() == cfg.history {
                s_hist.remove(0);
                y_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
        }
        if inf_norm(&grad) <= cfg.grad_tol {
            stop = StopReason::GradTol;
        } else if (0.0..=cfg.loss_rel_tol).contains(&rel_drop) {
            stop = StopReason::LossTol;
        }
    }
    Ok(FitInfo {
        iterations: iter,
        evaluations: evals,
        loss: f,
        grad_inf_norm: inf_norm(&grad),
        converged: stop != StopReason::MaxIter,
        stop,
        train_accuracy: f64::NAN,
    })
}

type Trial = (f64, f64, Vec<f64>, Vec<f64>); // step, f, theta, grad

/// Strong-Wolfe line search along `dir` from `theta` (objective `f0`, slope `dg0 < 0`):
/// bracketing by doubling from step 1, then zoom by safeguarded quadratic interpolation.
/// `None` when no step lowers the objective.
fn line_search(
    p: &Problem,
    theta: &[f64],
    f0: f64,
    dg0: f64,
    dir: &[f64],
    evals: &mut usize,
) -> Result<Option<Trial>> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    const MAX_TRIES: usize = 30;
    const MAX_ZOOM: usize = 12;
    const C1_APPROX: f64 = 0.1;
    const F_NOISE: f64 = 1e-7;
    let try_step = |a: f64, evals: &mut usize| -> Result<(Trial, f64)> {
        let th: Vec<f64> = theta.iter().zip(dir).map(|(t, d)| t + a * d).collect();
        let mut g = vec![0f64; th.len()];
        let f = p.eval(&th, &mut g)?;
        *evals += 1;
        let dg = dot(&g, dir);
        Ok(((a, f, th, g), dg))
    };
    let sufficient = |a: f64, f: f64| f.is_finite() && f <= f0 + C1 * a * dg0;
    // Hager & Zhang's approximate Wolfe conditions (CG_DESCENT, 2005), for steps whose change
    // of the objective is below the round-off of its f32 logits: the slope has dropped enough
    // (and not flipped too far) and the objective has not risen beyond that round-off.
    let approx_wolfe = |f: f64, dg: f64| {
        f.is_finite()
            && f <= f0 + F_NOISE * f0.abs()
            && dg >= C2 * dg0
            && dg <= -(1.0 - 2.0 * C1_APPROX) * dg0
    };
    // `lo`: the best step so far with sufficient decrease (step 0 at the start).
    let mut lo: Option<Trial> = None;
    let (mut a_lo, mut f_lo, mut dg_lo) = (0.0, f0, dg0);
    let (mut a_hi, mut f_hi);
    let mut a = 1.0;
    let mut tries = 0;
    loop {
        tries += 1;
        let (trial, dg) = try_step(a, evals)?;
        let f = trial.1;
        if !sufficient(a, f) && approx_wolfe(f, dg) {
            return Ok(Some(trial));
        }
        if !sufficient(a, f) || f >= f_lo {
            (a_hi, f_hi) = (a, f);
            break;
        }
        if dg.abs() <= -C2 * dg0 {
            return Ok(Some(trial));
        }
        if dg >= 0.0 {
            (a_hi, f_hi) = (a_lo, f_lo);
            (a_lo, f_lo, dg_lo) = (a, f, dg);
            lo = Some(trial);
            break;
        }
        (a_lo, f_lo, dg_lo) = (a, f, dg);
        lo = Some(trial);
        if tries >= MAX_TRIES {
            return Ok(lo);
        }
        a *= 2.0;
    }
    for _ in 0..MAX_ZOOM {
        let (l, h) = (a_lo.min(a_hi), a_lo.max(a_hi));
        let width = h - l;
        if width <= 1e-14 * h.max(1e-300) {
            break;
        }
        // Minimiser of the quadratic through f(a_lo), f'(a_lo) and f(a_hi), kept inside the
        // middle 80 % of the bracket; bisection when that fails.
        let delta = a_hi - a_lo;
        let curv = f_hi - f_lo - dg_lo * delta;
        let mut a_j = 0.5 * (a_lo + a_hi);
        if f_hi.is_finite() && curv > 0.0 {
            let q = a_lo - dg_lo * delta * delta / (2.0 * curv);
            if q > l + 0.1 * width && q < h - 0.1 * width {
                a_j = q;
            }
        }
        let (trial, dg) = try_step(a_j, evals)?;
        let f = trial.1;
        if !sufficient(a_j, f) && approx_wolfe(f, dg) {
            return Ok(Some(trial));
        }
        if !sufficient(a_j, f) || f >= f_lo {
            (a_hi, f_hi) = (a_j, f);
        } else {
            if dg.abs() <= -C2 * dg0 {
                return Ok(Some(trial));
            }
            if dg * (a_hi - a_lo) >= 0.0 {
                (a_hi, f_hi) = (a_lo, f_lo);
            }
            (a_lo, f_lo, dg_lo) = (a_j, f, dg);
            lo = Some(trial);
        }
    }
    // Wolfe not met within the budget: keep the best step with sufficient decrease, if any.
    Ok(lo)
}

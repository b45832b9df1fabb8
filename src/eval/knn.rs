//! Weighted k-nearest-neighbour classifier on frozen features, the label-cheap check used during
//! self-supervised training (Wu et al. 2018, "InstDisc"; solo-learn's `WeightedKNNClassifier`).
//!
//! Features are L2-normalised (`x / max(‖x‖, 1e-12)`, as `F.normalize`), similarity is the cosine
//! `sim = q·t`, the `k` most similar training rows vote for their class with weight
//! `exp(sim / τ)`, and the class with the largest summed weight wins (ties: the lower class id).
//! Defaults k = 20, τ = 0.07 as in InstDisc and solo-learn. Neighbours with equal similarity are
//! taken in training-row order, so the result is deterministic.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::probe::tensor_rows;
use super::rows_of;
use crate::{Error, Result};

/// Settings of the kNN vote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnConfig {
    /// Neighbours that vote (at most the number of training rows is used). Default 20.
    pub k: usize,
    /// Temperature τ of the vote weight `exp(sim / τ)`. Default 0.07.
    pub temperature: f32,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 20,
            temperature: 0.07,
        }
    }
}

/// Training features (normalised) and labels, ready to classify queries.
#[derive(Debug, Clone)]
pub struct KnnIndex {
    dim: usize,
    /// `(N, D)` L2-normalised training features.
    train: Tensor,
    /// Class index (into `classes`) of each training row.
    label_idx: Vec<usize>,
    /// Distinct global class ids, ascending.
    classes: Vec<u32>,
}

const QUERY_BLOCK: usize = 256;

impl KnnIndex {
    /// Builds an index over `features` (`N×dim` row-major) with global class ids `labels` (`N`).
    pub fn new(features: &[f32], dim: usize, labels: &[u32]) -> Result<KnnIndex> {
        let n = rows_of(features, dim, "kNN training features")?;
        if n == 0 {
            return Err(Error::invalid("kNN: no training rows"));
        }
        if labels.len() != n {
            return Err(Error::invalid(format!(
                "kNN: {n} training rows but {} labels",
                labels.len()
            )));
        }
        let train = normalized(features, dim, "kNN training features")?;
        let mut classes = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let index: HashMap<u32, usize> = classes.iter().enumerate().map(|(k, &c)| (c, k)).collect();
        Ok(KnnIndex {
            dim,
            train: Tensor::from_vec(train, (n, dim), &Device::Cpu)?,
            label_idx: labels.iter().map(|l| index[l]).collect(),
            classes,
        })
    }

    /// [`KnnIndex::new`] from a `(N, D)` tensor.
    pub fn from_tensor(features: &Tensor, labels: &[u32]) -> Result<KnnIndex> {
        let (data, dim) = tensor_rows(features)?;
        Self::new(&data, dim, labels)
    }

    /// Number of training rows.
    pub fn len(&self) -> usize {
        self.label_idx.len()
    }

    /// Always false (an index holds at least one row).
    pub fn is_empty(&self) -> bool {
        self.label_idx.is_empty()
    }

    /// `(M×D)` query features -> `M` predicted global class ids.
    pub fn predict(&self, queries: &[f32], cfg: &KnnConfig) -> Result<Vec<u32>> {
        if cfg.k == 0 {
            return Err(Error::invalid("kNN: k must be ≥ 1"));
        }
        if !(cfg.temperature > 0.0 && cfg.temperature.is_finite()) {
            return Err(Error::invalid(format!(
                "kNN: temperature {} must be > 0",
                cfg.temperature
            )));
        }
        let m = rows_of(queries, self.dim, "kNN queries")?;
        let q = normalized(queries, self.dim, "kNN queries")?;
        let n = self.len();
        let k = cfg.k.min(n);
        let train_t = self.train.t()?;
        let mut out = Vec::with_capacity(m);
        for block in q.chunks(QUERY_BLOCK * self.dim) {
            let b = block.len() / self.dim;
            let qb = Tensor::from_slice(block, (b, self.dim), &Device::Cpu)?;
            let sims = qb.matmul(&train_t)?.flatten_all()?.to_vec1::<f32>()?;
            let preds: Vec<u32> = sims
                .par_chunks(n)
                .map(|row| self.vote(row, k, cfg.temperature))
                .collect();
            out.extend(preds);
        }
        Ok(out)
    }

    /// kNN top-1 accuracy of `queries` (`M×D`) against global class ids `labels`.
    pub fn accuracy(&self, queries: &[f32], labels: &[u32], cfg: &KnnConfig) -> Result<f64> {
        let m = rows_of(queries, self.dim, "kNN queries")?;
        if m != labels.len() {
            return Err(Error::invalid(format!(
                "kNN accuracy: {m} query rows but {} labels",
                labels.len()
            )));
        }
        if m == 0 {
            return Err(Error::invalid("kNN accuracy: no query rows"));
        }
        let pred = self.predict(queries, cfg)?;
        Ok(pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / m as f64)
    }

    fn vote(&self, sims: &[f32], k: usize, temperature: f32) -> u32 {
        let mut idx: Vec<u32> = (0..sims.len() as u32).collect();
        // Most similar first; equal similarities in training-row order.
        let order = |a: &u32, b: &u32| {
            sims[*b as usize]
                .total_cmp(&sims[*a as usize])
                .then(a.cmp(b))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, order);
            idx.truncate(k);
        }
        let mut votes = vec![0f64; self.classes.len()];
        for &i in &idx {
            votes[self.label_idx[i as usize]] +=
                (sims[i as usize] as f64 / temperature as f64).exp();
        }
        let mut best = 0;
        for (c, &v) in votes.iter().enumerate() {
            if v > votes[best] {
                best = c;
            }
        }
        self.classes[best]
    }
}

fn normalized(x: &[f32], dim: usize, what: &str) -> Result<Vec<f32>> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "{what}: row {} dimension {} is {}",
            i / dim,
            i % dim,
            x[i]
        )));
    }
    Ok(x.par_chunks(dim)
        .flat_map_iter(|row| {
            let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let inv = 1.0 / norm.max(1e-12);
            row.iter().map(move |&v| (v as f64 * inv) as f32)
        })
        .collect())
}

//! Coding-rate reduction ΔR, UMM's label-free health monitor (Song et al., "Undoing Memorization
//! Mechanism"; rates from Chan et al., "ReduNet").
//!
//! For `m` feature vectors of dimension `d` (here given as the rows of a row-major `m×d` matrix
//! `X`; the paper's `Z = Xᵀ` is `d×m`):
//!
//! - `R(Z) = ½ log det(I + d/(m ε²) Z Zᵀ)`
//! - `R_c(Z, Π) = Σⱼ tr(Πⱼ)/(2m) · log det(I + d/(tr(Πⱼ) ε²) Z Πⱼ Zᵀ)` with hard memberships
//!   `Πⱼ` (diagonal 0/1), here each sample's two augmented views forming one group;
//! - `ΔR = R − R_c`, `ε = 0.1`.
//!
//! Everything is computed in f64; each log-det is `2 Σ log Lᵢᵢ` of a Cholesky factor, of the
//! smaller of the `d×d` form `I + c XᵀX` and the `m×m` form `I + c X Xᵀ` (Sylvester's identity
//! `det(I_d + A B) = det(I_m + B A)`), so d = 2048, m = 512 costs one 512×512 Gram.
//!
//! With `normalize`, each row is first scaled to unit L2 norm, as ReduNet's features live on the
//! sphere; without it ΔR grows with the feature scale and a monitor would track norms rather than
//! structure. Early-layer maps `(B, C, H, W)` are global-average-pooled to `(B, C)` by
//! [`feature_rows`] (flattening would give `d = C·H·W`, e.g. 65,536, and a `d/(mε²)` scale not
//! comparable with the last layer's).

use candle_core::{DType, Device, Tensor};

use super::rows_of;
use crate::{Error, Result};

/// ε of UMM and ReduNet.
pub const DEFAULT_EPS: f64 = 0.1;

/// The two rates and their difference (nats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateReduction {
    /// `R(Z)` of all samples.
    pub r: f64,
    /// `R_c(Z, Π)` of the groups.
    pub rc: f64,
    /// `ΔR = R − R_c`.
    pub delta: f64,
}

/// Feature rows for the monitor from a CPU or GPU tensor: `(B, D)` as is, `(B, C, H, W)`
/// global-average-pooled over `H, W` -> `(B, C)`. Returns the row-major f32 data and `D`.
pub fn feature_rows(t: &Tensor) -> Result<(Vec<f32>, usize)> {
    let t = match t.rank() {
        2 => t.clone(),
        4 => t.to_dtype(DType::F32)?.mean((2, 3))?,
        _ => {
            return Err(Error::invalid(format!(
                "coding rate: features must be (B, D) or (B, C, H, W), got {:?}",
                t.dims()
            )))
        }
    };
    let d = t.dims()[1];
    let data = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((data, d))
}

/// `R(Z)` of the rows of `z` (`m×dim`).
pub fn coding_rate(z: &[f32], dim: usize, eps: f64, normalize: bool) -> Result<f64> {
    let x = prepare(z, dim, eps, normalize)?;
    let m = x.len() / dim;
    if m == 0 {
        return Err(Error::invalid("coding rate: no feature rows"));
    }
    Ok(0.5 * logdet_gram(&x, m, dim, dim as f64 / (m as f64 * eps * eps))?)
}

/// ΔR with arbitrary hard groups: `groups[i]` is the group of row `i` of `z` (`m×dim`).
pub fn coding_rate_reduction(
    z: &[f32],
    dim: usize,
    groups: &[usize],
    eps: f64,
    normalize: bool,
) -> Result<RateReduction> {
    let x = prepare(z, dim, eps, normalize)?;
    let m = x.len() / dim;
    if m == 0 {
        return Err(Error::invalid("coding rate: no feature rows"));
    }
    if groups.len() != m {
        return Err(Error::invalid(format!(
            "coding rate: {m} feature rows but {} group ids",
            groups.len()
        )));
    }
    let r = 0.5 * logdet_gram(&x, m, dim, dim as f64 / (m as f64 * eps * eps))?;
    let num_groups = groups.iter().max().map_or(0, |g| g + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); num_groups];
    for (i, &g) in groups.iter().enumerate() {
        members[g].push(i);
    }
    let mut rc = 0.0;
    let mut xj = Vec::new();
    for rows in members.iter().filter(|r| !r.is_empty()) {
        xj.clear();
        for &i in rows {
            xj.extend_from_slice(&x[i * dim..(i + 1) * dim]);
        }
        let mj = rows.len() as f64;
        rc += mj / (2.0 * m as f64)
            * logdet_gram(&xj, rows.len(), dim, dim as f64 / (mj * eps * eps))?;
    }
    Ok(RateReduction {
        r,
        rc,
        delta: r - rc,
    })
}

/// ΔR of two views: row `i` of `z1` and row `i` of `z2` (both `n×dim`) are the two views of
/// sample `i` and form group `i`; `Z = [z1; z2]`, `m = 2n`.
pub fn coding_rate_reduction_views(
    z1: &[f32],
    z2: &[f32],
    dim: usize,
    eps: f64,
    normalize: bool,
) -> Result<RateReduction> {
    let n = rows_of(z1, dim, "coding rate view 1")?;
    let n2 = rows_of(z2, dim, "coding rate view 2")?;
    if n != n2 {
        return Err(Error::invalid(format!(
            "coding rate: view 1 has {n} rows, view 2 has {n2}"
        )));
    }
    let mut z = Vec::with_capacity(z1.len() * 2);
    z.extend_from_slice(z1);
    z.extend_from_slice(z2);
    let groups: Vec<usize> = (0..n).chain(0..n).collect();
    coding_rate_reduction(&z, dim, &groups, eps, normalize)
}

/// Checks and converts to f64 (normalising rows if asked).
fn prepare(z: &[f32], dim: usize, eps: f64, normalize: bool) -> Result<Vec<f64>> {
    rows_of(z, dim, "coding rate features")?;
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::invalid(format!(
            "coding rate: ε = {eps} must be > 0"
        )));
    }
    if let Some(i) = z.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "coding rate features: row {} dimension {} is {}",
            i / dim,
            i % dim,
            z[i]
        )));
    }
    let mut x: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    if normalize {
        for (i, row) in x.chunks_mut(dim).enumerate() {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                return Err(Error::invalid(format!(
                    "coding rate features: row {i} is all zeros and cannot be normalised"
                )));
            }
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(x)
}

/// `log det(I + c XᵀX)` for `x` (`m×d` row-major) through the smaller Gram form.
fn logdet_gram(x: &[f64], m: usize, d: usize, c: f64) -> Result<f64> {
    let (k, gram) = if m <= d {
        (m, gram_rows(x, m, d)?)
    } else {
        (d, gram_cols(x, m, d)?)
    };
    let mut a = gram;
    for v in a.iter_mut() {
        *v *= c;
    }
    for i in 0..k {
        a[i * k + i] += 1.0;
    }
    cholesky_logdet(&mut a, k)
}

/// `X Xᵀ` (m×m).
fn gram_rows(x: &[f64], m: usize, d: usize) -> Result<Vec<f64>> {
    if m <= 8 {
        let mut g = vec![0f64; m * m];
        for i in 0..m {
            for j in 0..=i {
                let s: f64 = x[i * d..(i + 1) * d]
                    .iter()
                    .zip(&x[j * d..(j + 1) * d])
                    .map(|(a, b)| a * b)
                    .sum();
                g[i * m + j] = s;
                g[j * m + i] = s;
            }
        }
        return Ok(g);
    }
    let t = Tensor::from_slice(x, (m, d), &Device::Cpu)?;
    Ok(t.matmul(&t.t()?)?.flatten_all()?.to_vec1::<f64>()?)
}

/// `XᵀX` (d×d).
fn gram_cols(x: &[f64], m: usize, d: usize) -> Result<Vec<f64>> {
    let t = Tensor::from_slice(x, (m, d), &Device::Cpu)?;
    Ok(t.t()?.matmul(&t)?.flatten_all()?.to_vec1::<f64>()?)
}

/// In-place Cholesky of the SPD `k×k` matrix `a`; returns `log det a = 2 Σ log Lᵢᵢ`.
fn cholesky_logdet(a: &mut [f64], k: usize) -> Result<f64> {
    let mut logdet = 0.0;
    for j in 0..k {
        let mut diag = a[j * k + j];
        for p in 0..j {
            diag -= a[j * k + p] * a[j * k + p];
        }
        if !(diag > 0.0 && diag.is_finite()) {
            return Err(Error::invalid(format!(
                "coding rate: Cholesky pivot {j} is {diag} (matrix not positive definite)"
            )));
        }
        let l = diag.sqrt();
        a[j * k + j] = l;
        logdet += 2.0 * l.ln();
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = s / l;
        }
    }
    Ok(logdet)
}

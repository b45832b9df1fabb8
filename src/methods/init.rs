//! Seeded initialisation of a whole VarMap, so that a run is reproducible from its seed (candle
//! cannot seed its CPU random generator).

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::{Error, Result};

/// FNV-1a hash of a tensor name: each tensor draws from its own stream, so its values depend on
/// the seed and its name only (not on which other tensors exist).
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Re-initialises every tensor of `varmap` from `seed` with PyTorch's default schemes:
/// * BatchNorm (any 1-D tensor with a sibling `running_mean`): weight 1, bias 0, running mean 0,
///   running variance 1;
/// * 4-D convolution weights: Kaiming normal, fan-out, ReLU gain, `N(0, 2 / (c_out·k_h·k_w))`
///   (torchvision's ResNet initialisation);
/// * 2-D Linear weights and their biases: uniform in ±1/√fan_in (`nn.Linear`'s default);
/// * any other 1-D bias next to a convolution: uniform in ±1/√fan_in of that convolution.
pub(crate) fn init_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::invalid("internal: a VarMap lock is poisoned"))?;
    for (name, var) in data.iter() {
        let (parent, leaf) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
        let sibling = |l: &str| data.get(&format!("{parent}.{l}"));
        let is_bn = sibling("running_mean").is_some();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ name_hash(name));
        let n = var.elem_count();
        let values: Vec<f32> = match (is_bn, leaf, var.dims()) {
            (true, "weight" | "running_var", _) => vec![1.0; n],
            (true, "bias" | "running_mean", _) => vec![0.0; n],
            (_, "weight", &[cout, _, kh, kw]) => {
                let std = (2.0 / (cout * kh * kw) as f64).sqrt();
                (0..n)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (z * std) as f32
                    })
                    .collect()
            }
            (_, "weight", &[_, fan_in]) => uniform(&mut rng, n, fan_in),
            (_, "bias", _) => {
                let fan_in = sibling("weight")
                    .map(|w| w.elem_count() / w.dims().first().copied().unwrap_or(1).max(1))
                    .unwrap_or(1);
                uniform(&mut rng, n, fan_in)
            }
            _ => continue,
        };
        set(var, values)?;
    }
    Ok(())
}

fn uniform<R: Rng>(rng: &mut R, n: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
}

fn set(var: &Var, values: Vec<f32>) -> Result<()> {
    let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
    var.set(&t)?;
    Ok(())
}

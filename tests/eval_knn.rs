//! Weighted kNN: a hand-built case with a known answer, and a brute-force reference.

use cromo::eval::{KnnConfig, KnnIndex};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Query q = (1, 0). Training rows (scaled on purpose: only directions matter):
///   class 7: 2·(0.99, 0.14107)        cos = 0.99
///   class 3: 0.2·(0.5,  0.86603)      cos = 0.5
///   class 3: 5·(0.5, −0.86603)        cos = 0.5
///   class 1: 3·(−1, 0)                cos = −1
/// k = 3 keeps the first three. Votes exp(cos/τ):
///   τ = 0.07: class 7 e^{14.14} ≈ 1.39e6  >  class 3 2·e^{7.14} ≈ 2.5e3   -> 7
///   τ = 10:   class 7 e^{0.099} ≈ 1.104   <  class 3 2·e^{0.05} ≈ 2.103   -> 3 (majority)
/// k = 20 (> 4 rows) lets all four vote: class 1 adds e^{−1/τ}, nothing changes.
#[test]
fn temperature_weighted_vote_matches_hand_computation() {
    let s = (1.0f32 - 0.99 * 0.99).sqrt();
    let train = [
        2.0 * 0.99,
        2.0 * s, //
        0.2 * 0.5,
        0.2 * 0.866_025_4, //
        5.0 * 0.5,
        -5.0 * 0.866_025_4, //
        -3.0,
        0.0,
    ];
    let labels = [7, 3, 3, 1];
    let index = KnnIndex::new(&train, 2, &labels).unwrap();
    let q = [4.0f32, 0.0];
    let sharp = KnnConfig {
        k: 3,
        temperature: 0.07,
    };
    let flat = KnnConfig {
        k: 3,
        temperature: 10.0,
    };
    assert_eq!(index.predict(&q, &sharp).unwrap(), vec![7]);
    assert_eq!(index.predict(&q, &flat).unwrap(), vec![3]);
    assert_eq!(index.predict(&q, &KnnConfig::default()).unwrap(), vec![7]);
    // k = 1: the single nearest row.
    let one = KnnConfig {
        k: 1,
        temperature: 10.0,
    };
    assert_eq!(index.predict(&q, &one).unwrap(), vec![7]);
    // A query pointing at class 1.
    assert_eq!(index.predict(&[-1.0, 0.1], &sharp).unwrap(), vec![1]);
    assert_eq!(
        index
            .accuracy(&[4.0, 0.0, -1.0, 0.1], &[7, 1], &sharp)
            .unwrap(),
        1.0
    );
    assert_eq!(
        index
            .accuracy(&[4.0, 0.0, -1.0, 0.1], &[3, 1], &sharp)
            .unwrap(),
        0.5
    );
}

/// An independent reference: full sort of all cosine similarities (f64), top k, summed
/// exp(sim/τ) per class, largest wins.
fn reference(train: &[f32], labels: &[u32], q: &[f32], d: usize, cfg: &KnnConfig) -> u32 {
    let norm = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
    let qn = norm(q);
    let mut sims: Vec<(f64, usize)> = train
        .chunks(d)
        .enumerate()
        .map(|(i, t)| {
            let dot: f64 = t.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum();
            (dot / (norm(t) * qn), i)
        })
        .collect();
    sims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let mut votes = std::collections::BTreeMap::new();
    for &(s, i) in sims.iter().take(cfg.k) {
        *votes.entry(labels[i]).or_insert(0.0) += (s / cfg.temperature as f64).exp();
    }
    votes
        .into_iter()
        .fold(
            (0, f64::MIN),
            |best, (c, v)| if v > best.1 { (c, v) } else { best },
        )
        .0
}

#[test]
fn agrees_with_a_brute_force_reference() {
    let (n, m, d, classes) = (600, 300, 16, 5u32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let centres: Vec<f32> = (0..classes as usize * d)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let mut gen = |count: usize| {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..count {
            let c = rng.random_range(0..classes);
            y.push(c);
            for j in 0..d {
                let noise: f32 = rng.sample(StandardNormal);
                x.push(centres[c as usize * d + j] + 1.2 * noise);
            }
        }
        (x, y)
    };
    let (train, labels) = gen(n);
    let (queries, truth) = gen(m);
    let index = KnnIndex::new(&train, d, &labels).unwrap();
    let cfg = KnnConfig::default();
    let pred = index.predict(&queries, &cfg).unwrap();
    let expect: Vec<u32> = queries
        .chunks(d)
        .map(|q| reference(&train, &labels, q, d, &cfg))
        .collect();
    assert_eq!(pred, expect);
    // A learnable problem: far above chance (20 %).
    let acc = index.accuracy(&queries, &truth, &cfg).unwrap();
    assert!(acc > 0.6, "kNN accuracy {acc}");
}

#[test]
fn bad_inputs_are_errors() {
    let train = [1.0f32, 0.0, 0.0, 1.0];
    assert!(KnnIndex::new(&train, 2, &[0]).is_err());
    assert!(KnnIndex::new(&train[..3], 2, &[0, 1]).is_err());
    assert!(KnnIndex::new(&[f32::NAN, 0.0], 2, &[0]).is_err());
    let index = KnnIndex::new(&train, 2, &[0, 1]).unwrap();
    let zero_k = KnnConfig {
        k: 0,
        temperature: 0.07,
    };
    assert!(index.predict(&[1.0, 0.0], &zero_k).is_err());
    let bad_t = KnnConfig {
        k: 1,
        temperature: 0.0,
    };
    assert!(index.predict(&[1.0, 0.0], &bad_t).is_err());
    assert!(index
        .predict(&[1.0, 0.0, 2.0], &KnnConfig::default())
        .is_err());
}

//! Replay buffer: capacity, reservoir statistics, task-restricted sampling, persistence.

use cromo::buffer::{ReplayBuffer, DEFAULT_CAPACITY};
use cromo::Error;
use rand::{Rng, SeedableRng};

/// A 2×2×3 image whose bytes encode `id` (so a stored slot tells which image it holds).
fn image(id: u32) -> [u8; 12] {
    let b = id.to_le_bytes();
    let mut out = [0u8; 12];
    for (i, x) in out.iter_mut().enumerate() {
        *x = b[i % 4] ^ (i as u8);
    }
    out
}

fn id_of(img: &[u8]) -> u32 {
    u32::from_le_bytes([img[0], img[1] ^ 1, img[2] ^ 2, img[3] ^ 3])
}

#[test]
fn fills_in_order_then_never_exceeds_capacity() {
    let mut b = ReplayBuffer::new(5, 2, 2, 3, 7).unwrap();
    assert_eq!(
        (b.capacity(), b.len(), b.seen(), b.image_bytes()),
        (5, 0, 0, 12)
    );
    assert_eq!(b.image_shape(), (2, 2, 3));
    assert!(b.is_empty() && b.image(0).is_none() && b.task_of(0).is_none());
    for id in 0..5 {
        assert!(
            b.offer(&image(id), 0).unwrap(),
            "a non-full buffer keeps every image"
        );
        assert_eq!(b.len(), id as usize + 1);
    }
    for i in 0..5 {
        assert_eq!(id_of(b.image(i).unwrap()), i as u32);
    }
    let mut kept = 0;
    for id in 5..1000 {
        kept += b.offer(&image(id), id / 100).unwrap() as usize;
        assert_eq!(b.len(), 5);
        // every slot holds an offered image, with the task it was offered with
        for i in 0..5 {
            let stored = id_of(b.image(i).unwrap());
            assert!(stored <= id);
            assert_eq!(
                b.task_of(i).unwrap(),
                if stored < 5 { 0 } else { stored / 100 }
            );
            assert_eq!(b.label_of(i), None);
        }
    }
    assert_eq!(b.seen(), 1000);
    // E[replacements] = Σ_{n=6}^{1000} 5/n ≈ 5 (H_1000 − H_5) ≈ 23.1; the order of magnitude
    // tells that replacement happens and is rare
    assert!((5..60).contains(&kept), "{kept} replacements");
    assert!(b.image(5).is_none());
    assert_eq!(DEFAULT_CAPACITY, 500);
}

#[test]
fn wrong_sizes_and_reserved_values_are_errors() {
    let mut b = ReplayBuffer::new(3, 2, 2, 3, 0).unwrap();
    for bad in [&[0u8; 11][..], &[0u8; 13][..], &[][..]] {
        match b.offer(bad, 0) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(
                    msg.contains("12 bytes") && msg.contains(&bad.len().to_string()),
                    "{msg}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    assert_eq!(
        (b.len(), b.seen()),
        (0, 0),
        "a rejected image must not count as seen"
    );
    assert!(b.offer_labeled(&image(1), 0, u32::MAX).is_err());
    assert!(b.offer_labeled(&image(1), 0, 7).unwrap());
    assert_eq!(b.label_of(0), Some(7));
    for (c, h, w, ch) in [
        (0, 2, 2, 3),
        (3, 0, 2, 3),
        (3, 2, 0, 3),
        (3, 2, 2, 0),
        (usize::MAX, 64, 64, 3),
    ] {
        assert!(
            matches!(
                ReplayBuffer::new(c, h, w, ch, 0),
                Err(Error::InvalidArgument(_))
            ),
            "capacity {c}, image {h}x{w}x{ch}"
        );
    }
    let mut out = Vec::new();
    b.gather(&[0], &mut out).unwrap();
    assert_eq!(out, image(1));
    assert!(matches!(
        b.gather(&[0, 1], &mut out),
        Err(Error::InvalidArgument(_))
    ));
}

/// Reservoir sampling keeps each of the `n` images seen with probability `k/n`.
///
/// R independent runs (seeds 0..R) stream items 0..N into a buffer of capacity K. For item i
/// after n ≥ i+1 offers, its inclusion count X_i over the runs is Binomial(R, p) with p = K/n
/// if algorithm R is right, so E X_i = Rp and Var X_i = Rp(1−p).
/// - Per item: |X_i − Rp| ≤ 5 √(Rp(1−p)); a two-sided 5σ band has a normal tail of 5.7e-7
///   per item, so with ≤ 50 items a correct reservoir fails with probability < 3e-5 (and the
///   seeds are fixed, so the outcome is reproducible).
/// - Jointly: within one run the indicators I_i (exactly K of n are 1) have Var I_i = p(1−p),
///   Cov(I_i, I_j) = K(K−1)/(n(n−1)) − p² = −p(1−p)/(n−1), i.e. Cov I = p(1−p)·n/(n−1)·(Id −
///   11ᵀ/n). Summing R runs, (X − Rp)/√(Rp(1−p)·n/(n−1)) is asymptotically standard normal on
///   the (n−1)-dimensional subspace Σ = 0, so T = Σ_i (X_i − Rp)² / (Rp(1−p)·n/(n−1)) ~ χ²(n−1).
///   T must lie between the 1e-6 and 1 − 1e-6 quantiles (scipy.stats.chi2.ppf): for 19 degrees
///   of freedom [2.255, 63.68], for 49 [15.32, 111.14]. A too-small T (counts more even than
///   chance allows) would flag a non-random policy as much as a too-large one.
///
/// Checked at two points of the same streams: n = 20 (p = 1/2) and n = 50 (p = 1/5).
#[test]
fn reservoir_keeps_each_item_with_probability_k_over_n() {
    const R: u64 = 20_000;
    const K: usize = 10;
    const N: u32 = 50;
    let checkpoints: [(u32, f64, f64); 2] = [(20, 2.255, 63.68), (50, 15.32, 111.14)];
    let mut counts = vec![vec![0u64; N as usize]; checkpoints.len()];
    for seed in 0..R {
        let mut b = ReplayBuffer::new(K, 1, 1, 4, seed).unwrap();
        let mut c = 0;
        for item in 0..N {
            b.offer(&item.to_le_bytes(), item).unwrap();
            if item + 1 == checkpoints[c].0 {
                for i in 0..b.len() {
                    counts[c][b.task_of(i).unwrap() as usize] += 1;
                }
                c += 1;
            }
        }
    }
    for (c, &(n, lo, hi)) in checkpoints.iter().enumerate() {
        let p = K as f64 / n as f64;
        let mean = R as f64 * p;
        let var = R as f64 * p * (1.0 - p);
        let x = &counts[c][..n as usize];
        assert_eq!(x.iter().sum::<u64>(), R * K as u64);
        let mut t = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            let dev = xi as f64 - mean;
            assert!(
                dev.abs() <= 5.0 * var.sqrt(),
                "n = {n}: item {i} kept {xi} times in {R} runs, expected {mean} ± {:.0} (5σ)",
                5.0 * var.sqrt()
            );
            t += dev * dev;
        }
        t /= var * n as f64 / (n as f64 - 1.0);
        assert!(
            (lo..=hi).contains(&t),
            "n = {n}: χ² statistic {t:.1} outside [{lo}, {hi}] ({} degrees of freedom)",
            n - 1
        );
        println!("n = {n}: χ²({}) = {t:.1}", n - 1);
    }
}

#[test]
fn sampling_past_tasks_never_returns_current_task_slots() {
    let mut b = ReplayBuffer::new(60, 2, 2, 3, 42).unwrap();
    let mut id = 0;
    for task in 0..3u32 {
        for _ in 0..50 {
            b.offer_labeled(&image(id), task, id % 10).unwrap();
            id += 1;
        }
    }
    let per_task: Vec<usize> = (0..3)
        .map(|t| (0..b.len()).filter(|&i| b.task_of(i) == Some(t)).count())
        .collect();
    assert!(per_task.iter().all(|&c| c > 0), "{per_task:?}");
    assert_eq!(b.count(None), 60);
    assert_eq!(b.count(Some(2)), per_task[0] + per_task[1]);
    assert_eq!(b.count(Some(0)), 0);

    let eligible = b.count(Some(2));
    let mut out = Vec::new();
    for round in 0..2000 {
        let m = 1 + round % 40;
        b.sample_into(m, Some(2), &mut out);
        assert_eq!(out.len(), m.min(eligible));
        let mut sorted = out.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), out.len(), "indices must be distinct");
        for &i in &out {
            assert!(
                b.task_of(i).unwrap() < 2,
                "slot {i} of task {:?} sampled",
                b.task_of(i)
            );
        }
    }
    // more than available: every eligible slot exactly once
    let all = b.sample(1000, Some(2));
    assert_eq!(all.len(), eligible);
    assert!(b.sample(5, Some(0)).is_empty());
    assert_eq!(b.sample(1000, None).len(), 60);

    // single draws are uniform over the eligible slots: 5σ binomial band per slot
    let mut single = vec![0u32; b.len()];
    let draws = 30_000u32;
    for _ in 0..draws {
        single[b.sample(1, Some(1))[0]] += 1;
    }
    let p = 1.0 / per_task[0] as f64;
    let (mean, sd) = (draws as f64 * p, (draws as f64 * p * (1.0 - p)).sqrt());
    for (i, &hits) in single.iter().enumerate() {
        if b.task_of(i) == Some(0) {
            assert!(
                (hits as f64 - mean).abs() <= 5.0 * sd,
                "slot {i}: {hits} vs {mean}"
            );
        } else {
            assert_eq!(hits, 0, "slot {i} of task {:?}", b.task_of(i));
        }
    }
}

fn random_buffer(capacity: usize, offers: u32, seed: u64) -> ReplayBuffer {
    let mut b = ReplayBuffer::new(capacity, 8, 6, 3, seed).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xABCD);
    for i in 0..offers {
        let img: Vec<u8> = (0..b.image_bytes()).map(|_| rng.random()).collect();
        if i % 3 == 0 {
            b.offer(&img, i / 40).unwrap();
        } else {
            b.offer_labeled(&img, i / 40, i % 7).unwrap();
        }
    }
    b
}

fn assert_same(a: &ReplayBuffer, b: &ReplayBuffer) {
    assert_eq!(
        (a.capacity(), a.len(), a.seen(), a.image_shape()),
        (b.capacity(), b.len(), b.seen(), b.image_shape())
    );
    for i in 0..a.len() {
        assert_eq!(a.image(i), b.image(i), "slot {i}");
        assert_eq!(a.task_of(i), b.task_of(i), "slot {i}");
        assert_eq!(a.label_of(i), b.label_of(i), "slot {i}");
    }
}

#[test]
fn save_load_round_trip_continues_the_stream_identically() {
    let dir = tempfile::tempdir().unwrap();
    for (capacity, offers) in [(100, 300), (100, 37), (1, 5)] {
        let mut a = random_buffer(capacity, offers, 9);
        let path = dir.path().join(format!("buffer-{capacity}-{offers}.bin"));
        a.save(&path).unwrap();
        let entries: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            entries.iter().all(|n| !n.contains(".tmp")),
            "temporary file left: {entries:?}"
        );
        let expected_len = 80 + a.len() * (8 + a.image_bytes()) + 4;
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            expected_len
        );
        let mut b = ReplayBuffer::load(&path).unwrap();
        assert_same(&a, &b);
        // the same continuation (offers and draws) on both
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        for i in 0..500u32 {
            let img: Vec<u8> = (0..a.image_bytes()).map(|_| rng.random()).collect();
            assert_eq!(
                a.offer(&img, 100 + i / 50).unwrap(),
                b.offer(&img, 100 + i / 50).unwrap()
            );
            if i % 50 == 0 {
                assert_eq!(
                    a.sample(16, Some(100 + i / 50)),
                    b.sample(16, Some(100 + i / 50))
                );
            }
        }
        assert_same(&a, &b);
        // saving over an existing file replaces it
        a.save(&path).unwrap();
        assert_same(&a, &ReplayBuffer::load(&path).unwrap());
    }
    // a different seed gives a different stream (the generator state is what is persisted)
    let (x, y) = (random_buffer(50, 400, 1), random_buffer(50, 400, 2));
    assert!((0..50).any(|i| x.task_of(i) != y.task_of(i) || x.label_of(i) != y.label_of(i)));
}

#[test]
fn truncated_corrupt_or_missing_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.bin");
    let b = random_buffer(20, 50, 3);
    b.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let expect = |name: &str, data: &[u8], needle: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        match ReplayBuffer::load(&path) {
            Err(e @ Error::BadData { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(msg.contains(needle), "`{needle}` not in: {msg}");
            }
            other => panic!("{name}: expected a BadData error, got {other:?}"),
        }
    };
    for cut in [0, 7, 40, 83, 84, 300, bytes.len() - 1] {
        expect(&format!("cut{cut}.bin"), &bytes[..cut], "truncated");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    expect("longer.bin", &longer, "corrupt");
    let mut flipped = bytes.clone();
    let at = bytes.len() - 20; // inside the pixels
    flipped[at] ^= 0x10;
    expect("flipped.bin", &flipped, "checksum");
    let mut flipped = bytes.clone();
    flipped[85] ^= 1; // a task id
    expect("flipped-task.bin", &flipped, "checksum");
    let mut magic = bytes.clone();
    magic[0] = b'X';
    expect("magic.bin", &magic, "magic");
    let mut version = bytes.clone();
    version[8] = 9;
    expect("version.bin", &version, "version 9");
    // a header claiming more images than the file holds
    let mut count = bytes.clone();
    count[32] = count[32].wrapping_add(1);
    expect("count.bin", &count, "truncated");

    let missing = dir.path().join("missing.bin");
    match ReplayBuffer::load(&missing) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("missing.bin")),
        other => panic!("{other:?}"),
    }
    let no_dir = dir.path().join("no/such/dir/buf.bin");
    match b.save(&no_dir) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("buf.bin")),
        other => panic!("{other:?}"),
    }
}

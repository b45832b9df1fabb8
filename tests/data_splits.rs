//! Class-incremental task splits: disjoint tasks that cover all classes, seeded class orders
//! (checked against an independent implementation of the documented algorithm in
//! `tools/data_reference_values.py`), subsets of image sets, bad arguments.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cromo::data::{load_image_folder, CacheMode, ImageSet, LoadOptions, TaskSplit};
use cromo::Error;

/// A set with `per_class` 1x1 grayscale images of each of `num_classes` classes, labels
/// interleaved (0, 1, 2, ..., 0, 1, ...) and pixel value = image index (mod 256).
fn synthetic(num_classes: usize, per_class: usize) -> ImageSet {
    let n = num_classes * per_class;
    ImageSet {
        pixels: (0..n).map(|i| i as u8).collect(),
        labels: (0..n).map(|i| (i % num_classes) as u32).collect(),
        height: 1,
        width: 1,
        channels: 1,
        class_names: (0..num_classes).map(|c| format!("c{c}")).collect(),
    }
}

fn check_partition(split: &TaskSplit, num_classes: usize, num_tasks: usize) {
    assert_eq!(split.num_tasks(), num_tasks);
    assert_eq!(split.num_classes(), num_classes);
    assert_eq!(split.classes_per_task(), num_classes / num_tasks);
    let mut seen = BTreeSet::new();
    for t in 0..num_tasks {
        let cls = split.classes(t).unwrap();
        assert_eq!(cls.len(), num_classes / num_tasks);
        for &c in cls {
            assert!(seen.insert(c), "class {c} in two tasks");
            assert_eq!(split.task_of_class(c).unwrap(), t);
        }
        let up_to: BTreeSet<u32> = split.classes_up_to(t).unwrap().iter().copied().collect();
        assert_eq!(up_to, seen, "classes seen up to task {t}");
    }
    assert_eq!(
        seen,
        (0..num_classes as u32).collect::<BTreeSet<_>>(),
        "coverage"
    );
}

#[test]
fn standard_benchmarks_partition_their_classes() {
    for (classes, tasks) in [(10, 2), (10, 5), (200, 10), (10, 1), (10, 10)] {
        for seed in [0, 1, 5, 1234] {
            check_partition(
                &TaskSplit::new(classes, tasks, seed).unwrap(),
                classes,
                tasks,
            );
        }
        check_partition(
            &TaskSplit::in_order(classes, tasks).unwrap(),
            classes,
            tasks,
        );
    }
}

#[test]
fn seeded_orders_match_the_reference_and_are_deterministic() {
    // tools/data_reference_values.py: SplitMix64-driven Fisher-Yates, written independently
    for (n, seed, want) in [
        (10, 0, vec![4, 9, 2, 5, 1, 7, 6, 0, 3, 8]),
        (10, 1, vec![9, 0, 1, 4, 8, 2, 3, 7, 6, 5]),
        (10, 42, vec![8, 3, 6, 5, 4, 0, 9, 2, 1, 7]),
        (
            20,
            7,
            vec![
                10, 17, 18, 14, 2, 5, 13, 15, 8, 11, 12, 1, 4, 6, 3, 19, 9, 16, 0, 7,
            ],
        ),
    ] {
        let s = TaskSplit::new(n, 2, seed).unwrap();
        assert_eq!(s.class_order(), &want[..], "n={n} seed={seed}");
        assert_eq!(s.classes(0).unwrap(), &want[..n / 2]);
        assert_eq!(s.classes(1).unwrap(), &want[n / 2..]);
    }
    // same seed, same split; different seeds, different orders
    let a = TaskSplit::new(200, 10, 99).unwrap();
    assert_eq!(a, TaskSplit::new(200, 10, 99).unwrap());
    let orders: BTreeSet<Vec<u32>> = (0..20)
        .map(|s| TaskSplit::new(200, 10, s).unwrap().class_order().to_vec())
        .collect();
    assert_eq!(orders.len(), 20);
    // the task count does not change the order
    assert_eq!(
        TaskSplit::new(10, 2, 3).unwrap().class_order(),
        TaskSplit::new(10, 5, 3).unwrap().class_order()
    );
    // in_order is the identity
    assert_eq!(
        TaskSplit::in_order(10, 5).unwrap().classes(1).unwrap(),
        &[2, 3]
    );
}

#[test]
fn explicit_orders_are_checked() {
    let s = TaskSplit::from_order(vec![3, 1, 0, 2], 2).unwrap();
    assert_eq!(s.classes(0).unwrap(), &[3, 1]);
    assert_eq!(s.task_of_class(2).unwrap(), 1);
    assert!(matches!(
        TaskSplit::from_order(vec![0, 1, 1, 2], 2),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        TaskSplit::from_order(vec![0, 1, 2, 4], 2),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bad_arguments_are_errors() {
    for (classes, tasks) in [(10, 0), (10, 3), (10, 11), (0, 1), (200, 7)] {
        let e = TaskSplit::new(classes, tasks, 0).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_)),
            "{classes}/{tasks}: {e}"
        );
        assert!(TaskSplit::in_order(classes, tasks).is_err());
    }
    let s = TaskSplit::new(10, 5, 0).unwrap();
    assert!(s.classes(5).is_err());
    assert!(s.classes_up_to(5).is_err());
    assert!(s.task_of_class(10).is_err());
    // a set with another number of classes
    assert!(s.indices(&synthetic(20, 2), 0).is_err());
    // a label outside the classes
    let mut bad = synthetic(10, 2);
    bad.labels[3] = 10;
    let msg = s.subset(&bad, 0).unwrap_err().to_string();
    assert!(msg.contains("image 3") && msg.contains("label 10"), "{msg}");
}

#[test]
fn subsets_hold_exactly_the_task_images() {
    let set = synthetic(10, 7);
    let split = TaskSplit::new(10, 5, 11).unwrap();
    let mut all = Vec::new();
    for t in 0..5 {
        let classes = split.classes(t).unwrap();
        let idx = split.indices(&set, t).unwrap();
        // the brute-force answer
        let want: Vec<usize> = (0..set.len())
            .filter(|&i| classes.contains(&set.labels[i]))
            .collect();
        assert_eq!(idx, want);
        assert_eq!(idx.len(), 14);
        let sub = split.subset(&set, t).unwrap();
        assert_eq!(sub.len(), 14);
        assert_eq!(sub.class_names, set.class_names, "global labels kept");
        for (k, &i) in idx.iter().enumerate() {
            assert_eq!(sub.labels[k], set.labels[i]);
            assert_eq!(sub.image(k), set.image(i));
        }
        all.extend(idx);
        let up_to = split.indices_up_to(&set, t).unwrap();
        assert_eq!(up_to.len(), 14 * (t + 1));
        let seen = split.classes_up_to(t).unwrap();
        assert!(up_to.iter().all(|&i| seen.contains(&set.labels[i])));
        assert_eq!(split.subset_up_to(&set, t).unwrap().len(), up_to.len());
    }
    all.sort();
    assert_eq!(
        all,
        (0..set.len()).collect::<Vec<_>>(),
        "tasks cover the set once"
    );
}

#[test]
fn split_tiny_imagenet_10_shapes() {
    let set = synthetic(200, 3);
    let split = TaskSplit::new(200, 10, 5).unwrap();
    for t in 0..10 {
        assert_eq!(split.classes(t).unwrap().len(), 20);
        assert_eq!(split.subset(&set, t).unwrap().len(), 60);
    }
}

#[test]
fn split_cifar10_on_the_real_test_set() {
    let dir = match std::env::var_os("CROMO_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    let archive = dir.join("cifar10-jpeg.tar.zst");
    if !archive.is_file() {
        println!(
            "skipping: {} not found (set CROMO_SHARED_DATA)",
            archive.display()
        );
        return;
    }
    let opts = LoadOptions {
        cache: CacheMode::Off,
        max_per_class: Some(100),
        ..LoadOptions::default()
    };
    let set = load_image_folder(&archive, Some("cifar10-jpeg/test"), &opts).unwrap();
    assert_eq!(set.len(), 1000);
    for (tasks, per_task) in [(2, 500), (5, 200)] {
        let split = TaskSplit::new(10, tasks, 0).unwrap();
        let mut total = 0;
        for t in 0..tasks {
            let sub = split.subset(&set, t).unwrap();
            assert_eq!(sub.len(), per_task);
            let classes: BTreeSet<u32> = sub.labels.iter().copied().collect();
            assert_eq!(classes.len(), 10 / tasks);
            total += sub.len();
        }
        assert_eq!(total, 1000);
    }
}

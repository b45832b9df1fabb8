//! `cromo infer` and `cromo inspect` on the shipped model and photos (always in the repository).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cromo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cromo"))
        .args(args)
        .output()
        .expect("run cromo")
}

fn photo(name: &str) -> String {
    repo().join("data/photos").join(name).display().to_string()
}

/// Top-1 class index of each image block in `cromo infer` output.
fn top1(stdout: &str) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("  ") {
            let class: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            out.last_mut().unwrap().1.push(class);
        } else {
            let name = Path::new(line.split_whitespace().next().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            out.push((name, Vec::new()));
        }
    }
    out
}

#[test]
fn shipped_efficientnet_classifies_the_shipped_photos() {
    let o = cromo(&["infer", repo().join("data/photos").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res = top1(&String::from_utf8_lossy(&o.stdout));
    let get = |n: &str| &res.iter().find(|(f, _)| f == n).unwrap().1;
    assert_eq!(res.len(), 6);
    // Facts from models/efficientnet_lite0.md (PyTorch + timm reference).
    assert_eq!(get("coffee.png")[0], 967, "espresso");
    assert_eq!(get("rocket.jpg")[0], 657, "missile");
    assert_eq!(get("china.jpg")[0], 698, "palace");
    assert_eq!(get("flower.jpg")[0], 985, "daisy");
    let chelsea = get("chelsea.png");
    assert_eq!(chelsea.len(), 5);
    assert!((281..=285).contains(&chelsea[0]), "{chelsea:?}");
    for cat in [281, 282, 285] {
        assert!(chelsea.contains(&cat), "{chelsea:?} lacks {cat}");
    }
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("ms/image"), "{stderr}");
}

#[test]
fn a_non_image_file_is_a_clear_error_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.jpg");
    std::fs::write(&bad, b"this is not a jpeg").unwrap();
    let o = cromo(&["infer", &photo("coffee.png"), bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("notes.jpg") && stderr.contains("cannot decode"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("coffee.png"));
}

#[test]
fn missing_inputs_and_empty_folders_are_errors() {
    let o = cromo(&["infer", "/no/such/photo.png"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/photo.png"));
    let dir = tempfile::tempdir().unwrap();
    let o = cromo(&["infer", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("image files"));
}

#[test]
fn weights_of_another_architecture_are_refused_by_name() {
    let model = repo().join("models/efficientnet_lite0.safetensors");
    let o = cromo(&[
        "infer",
        &photo("coffee.png"),
        "--model",
        model.to_str().unwrap(),
        "--arch",
        "resnet18",
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("efficientnet_lite0.safetensors"),
        "{stderr}"
    );
    assert!(
        stderr.contains("looks like efficientnet-lite0 weights"),
        "{stderr}"
    );
}

#[test]
fn a_labels_file_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let labels: PathBuf = dir.path().join("labels.txt");
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    let o = cromo(&[
        "infer",
        &photo("coffee.png"),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("labels.txt") && stderr.contains("1000"),
        "{stderr}"
    );
}

#[test]
fn inspect_prints_the_tensor_table() {
    let model = repo().join("models/efficientnet_lite0.safetensors");
    let o = cromo(&["inspect", model.to_str().unwrap()]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("_conv_stem.weight"), "{out}");
    assert!(out.contains("_fc.weight"), "{out}");
    let o = cromo(&["inspect", "/no/such.safetensors"]);
    assert!(!o.status.success());
}

/// `--device wgpu` gives the CPU's top-5 classes for every shipped photo (chelsea's two cat
/// classes tie to 3 digits, so there only the set of the top 3 is compared). Skips with a
/// printed reason where wgpu finds no adapter.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_device_gives_the_cpu_classes() {
    if cromo::gpu::list_adapters().is_empty() {
        println!("skipping: no GPU adapter (install mesa-vulkan-drivers for a software one)");
        return;
    }
    let dir = repo().join("data/photos");
    let cpu = cromo(&["infer", dir.to_str().unwrap()]);
    let gpu = cromo(&["infer", dir.to_str().unwrap(), "--device", "wgpu"]);
    assert!(
        gpu.status.success(),
        "{}",
        String::from_utf8_lossy(&gpu.stderr)
    );
    let (c, g) = (
        top1(&String::from_utf8_lossy(&cpu.stdout)),
        top1(&String::from_utf8_lossy(&gpu.stdout)),
    );
    assert_eq!(c.len(), 6);
    assert_eq!(g.len(), 6);
    for ((fc, kc), (fg, kg)) in c.iter().zip(&g) {
        assert_eq!(fc, fg);
        if fc == "chelsea.png" {
            let (mut a, mut b) = (kc[..3].to_vec(), kg[..3].to_vec());
            a.sort();
            b.sort();
            assert_eq!(a, b, "{fc}");
        } else {
            assert_eq!(kc, kg, "{fc}");
        }
    }
    assert!(String::from_utf8_lossy(&gpu.stderr).contains("on wgpu"));
}

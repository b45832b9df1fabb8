//! Real data sources: ImageFolder (folders and tar archives), the decoded-set cache, CIFAR-10
//! binary, IDX, Tiny-ImageNet and named data sets.
//!
//! Hand-built inputs (written by the tests into temp folders) check exact pixels and labels and
//! every bad-input error; real-data tests read `$CROMO_SHARED_DATA` (else `../shared/data`) and
//! check published facts (reference values from `tools/data_reference_values.py`).

use std::io::Write;
use std::path::{Path, PathBuf};

use cromo::data::cache::{cached, read_cache_file, write_cache_file, CacheKey};
use cromo::data::{
    fashion_mnist, load_cifar10_bin, load_idx, load_image_folder, load_tiny_imagenet, mnist,
    CacheMode, Dataset, ImageSet, LoadOptions, Split, TinySplit, CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
};
use cromo::Error;

// ---------------------------------------------------------------- helpers

fn shared_data() -> Option<PathBuf> {
    let dir = match std::env::var_os("CROMO_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    dir.is_dir().then_some(dir)
}

fn no_cache() -> LoadOptions {
    LoadOptions {
        cache: CacheMode::Off,
        ..LoadOptions::default()
    }
}

fn cache_in(dir: &Path) -> LoadOptions {
    LoadOptions {
        cache: CacheMode::Dir(dir.to_path_buf()),
        ..LoadOptions::default()
    }
}

fn png_rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn png_gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn png_rgba(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba(f(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_rgb(w: u32, h: u32, c: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(c));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Writes `files` (relative path, bytes) and `dirs` under `root`.
fn write_tree(root: &Path, files: &[(String, Vec<u8>)], dirs: &[&str]) {
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (name, bytes) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// A tar archive holding `dirs` (directory entries) and `files`, in that order.
fn tar_bytes(files: &[(String, Vec<u8>)], dirs: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, format!("{d}/"), &[][..]).unwrap();
    }
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn zstd_bytes(raw: &[u8]) -> Vec<u8> {
    zstd::encode_all(raw, 3).unwrap()
}

fn gz_bytes(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

fn err_string<T: std::fmt::Debug>(r: cromo::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} does not contain {p:?}");
    }
}

// ---------------------------------------------------------------- ImageFolder, hand-built

/// Pixel (x, y) of image `k` of the RGB test images.
fn px(k: u8, x: u32, y: u32) -> [u8; 3] {
    [
        k * 40 + x as u8,
        100 + y as u8 * 10 + k,
        255 - k * 3 - x as u8 * 7,
    ]
}

/// Two classes, given in reverse name order on disk; class "a_cls" holds an RGB PNG, a
/// grayscale PNG and an RGBA PNG (upper-case extension), plus a text file that is ignored;
/// class "b_cls" holds two RGB PNGs (one in a sub-folder). Returns the files and the expected set.
fn small_folder() -> (Vec<(String, Vec<u8>)>, ImageSet) {
    let (w, h) = (3u32, 2u32);
    let files = vec![
        ("b_cls/z.png".to_string(), png_rgb(w, h, |x, y| px(3, x, y))),
        (
            "b_cls/sub/a.png".to_string(),
            png_rgb(w, h, |x, y| px(4, x, y)),
        ),
        ("a_cls/1.png".to_string(), png_rgb(w, h, |x, y| px(1, x, y))),
        (
            "a_cls/2_gray.png".to_string(),
            png_gray(w, h, |x, y| (x * 50 + y * 9) as u8),
        ),
        (
            "a_cls/3_rgba.PNG".to_string(),
            png_rgba(w, h, |x, y| {
                let [r, g, b] = px(5, x, y);
                [r, g, b, 255]
            }),
        ),
        ("a_cls/notes.txt".to_string(), b"not an image".to_vec()),
        ("README".to_string(), b"top-level file, ignored".to_vec()),
    ];
    let mut pixels = Vec::new();
    let mut push = |f: &dyn Fn(u32, u32) -> [u8; 3]| {
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&f(x, y));
            }
        }
    };
    // a_cls in file-name order: 1.png, 2_gray.png, 3_rgba.PNG; b_cls: sub/a.png, z.png
    push(&|x, y| px(1, x, y));
    push(&|x, y| {
        let v = (x * 50 + y * 9) as u8;
        [v, v, v]
    });
    push(&|x, y| px(5, x, y));
    push(&|x, y| px(4, x, y));
    push(&|x, y| px(3, x, y));
    let expected = ImageSet {
        pixels,
        labels: vec![0, 0, 0, 1, 1],
        height: h as usize,
        width: w as usize,
        channels: 3,
        class_names: vec!["a_cls".into(), "b_cls".into()],
    };
    (files, expected)
}

fn prefixed(prefix: &str, files: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|(n, b)| (format!("{prefix}/{n}"), b.clone()))
        .collect()
}

#[test]
fn png_folder_gives_exact_pixels_labels_and_class_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, expected) = small_folder();
    write_tree(tmp.path(), &files, &[".hidden_dir"]);
    let set = load_image_folder(tmp.path(), None, &no_cache()).unwrap();
    assert_eq!(set, expected);
    // the same tree as a prefix of a bigger folder
    let tmp2 = tempfile::tempdir().unwrap();
    write_tree(tmp2.path(), &prefixed("data/train", &files), &[]);
    let set = load_image_folder(tmp2.path(), Some("data/train"), &no_cache()).unwrap();
    assert_eq!(set, expected);
}

#[test]
fn archives_give_the_same_set_as_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, expected) = small_folder();
    let files = prefixed("root/train", &files);
    let dirs = ["root", "root/train", "root/train/a_cls", "root/train/b_cls"];
    let tar = tar_bytes(&files, &dirs);
    for (name, bytes) in [
        ("set.tar", tar.clone()),
        ("set.tar.zst", zstd_bytes(&tar)),
        ("set.tar.gz", gz_bytes(&tar)),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let set = load_image_folder(&path, Some("root/train"), &no_cache()).unwrap();
        assert_eq!(set, expected, "{name}");
        // a trailing slash in the prefix means the same folder
        let set = load_image_folder(&path, Some("root/train/"), &no_cache()).unwrap();
        assert_eq!(set, expected, "{name} with trailing slash");
    }
}

#[test]
fn old_v7_tar_headers_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, expected) = small_folder();
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in prefixed("r", &files) {
        let mut h = tar::Header::new_old();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    assert_ne!(&tar[257..262], b"ustar");
    let p = tmp.path().join("old.tar");
    std::fs::write(&p, &tar).unwrap();
    assert_eq!(
        load_image_folder(&p, Some("r"), &no_cache()).unwrap(),
        expected
    );
}

#[test]
fn max_per_class_keeps_the_first_files_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, expected) = small_folder();
    write_tree(tmp.path(), &files, &[]);
    let opts = LoadOptions {
        max_per_class: Some(1),
        ..no_cache()
    };
    let set = load_image_folder(tmp.path(), None, &opts).unwrap();
    // a_cls/1.png and b_cls/sub/a.png
    assert_eq!(set, expected.select(&[0, 3]));
    let zero = LoadOptions {
        max_per_class: Some(0),
        ..no_cache()
    };
    assert!(matches!(
        load_image_folder(tmp.path(), None, &zero),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn resize_makes_mixed_sizes_one_size() {
    let tmp = tempfile::tempdir().unwrap();
    let files = vec![
        ("c/a.png".to_string(), png_rgb(4, 4, |_, _| [10, 20, 30])),
        ("c/b.png".to_string(), png_rgb(6, 2, |_, _| [200, 100, 50])),
        ("d/c.png".to_string(), png_rgb(2, 2, |_, _| [1, 2, 3])),
    ];
    write_tree(tmp.path(), &files, &[]);
    let opts = LoadOptions {
        resize: Some((3, 5)),
        ..no_cache()
    };
    let set = load_image_folder(tmp.path(), None, &opts).unwrap();
    assert_eq!(
        (set.len(), set.height, set.width, set.channels),
        (3, 3, 5, 3)
    );
    // bilinear resampling of a constant image is that constant
    for (i, c) in [[10u8, 20, 30], [200, 100, 50], [1, 2, 3]]
        .iter()
        .enumerate()
    {
        assert!(set.image(i).chunks(3).all(|p| p == c), "image {i}");
    }
    // without resize the first image of another size is named with both sizes
    let msg = err_string(load_image_folder(tmp.path(), None, &no_cache()));
    assert_contains(&msg, &["b.png", "6x2", "4x4", "a.png"]);
}

#[test]
fn corrupt_jpeg_is_named_in_folder_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = jpeg_rgb(8, 8, [1, 2, 3]);
    bad.truncate(bad.len() / 3);
    let files = vec![
        ("cat/0000.jpg".to_string(), jpeg_rgb(8, 8, [9, 9, 9])),
        ("cat/0042.jpg".to_string(), bad),
        ("dog/0001.jpg".to_string(), jpeg_rgb(8, 8, [5, 5, 5])),
    ];
    let dir = tmp.path().join("tree");
    write_tree(&dir, &files, &[]);
    let err = load_image_folder(&dir, None, &no_cache()).unwrap_err();
    assert!(matches!(err, Error::Image { .. }), "{err}");
    assert_contains(&err.to_string(), &["cat/0042.jpg", "cannot decode image"]);

    let archive = tmp.path().join("imgs.tar.zst");
    std::fs::write(
        &archive,
        zstd_bytes(&tar_bytes(&prefixed("cifar/train", &files), &[])),
    )
    .unwrap();
    let msg = err_string(load_image_folder(
        &archive,
        Some("cifar/train"),
        &no_cache(),
    ));
    assert_contains(
        &msg,
        &["imgs.tar.zst: cifar/train/cat/0042.jpg: cannot decode image"],
    );
}

#[test]
fn empty_class_folder_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    let files = vec![
        ("cat/0.png".to_string(), png_rgb(2, 2, |_, _| [0, 0, 0])),
        ("dog/readme.txt".to_string(), b"no images here".to_vec()),
    ];
    write_tree(&dir, &files, &["empty"]);
    let msg = err_string(load_image_folder(&dir, None, &no_cache()));
    assert_contains(&msg, &["dog", "no .jpg/.jpeg/.png image"]);
    std::fs::remove_dir_all(dir.join("dog")).unwrap();
    let msg = err_string(load_image_folder(&dir, None, &no_cache()));
    assert_contains(&msg, &["empty", "no .jpg/.jpeg/.png image"]);

    // in an archive, an empty class folder is a directory entry with nothing under it
    let archive = tmp.path().join("a.tar.zst");
    let tar = tar_bytes(&prefixed("r", &files[..1]), &["r", "r/cat", "r/empty"]);
    std::fs::write(&archive, zstd_bytes(&tar)).unwrap();
    let msg = err_string(load_image_folder(&archive, Some("r"), &no_cache()));
    assert_contains(&msg, &["a.tar.zst: r/empty", "no .jpg/.jpeg/.png image"]);
}

#[test]
fn no_class_folder_or_missing_path_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(
        tmp.path(),
        &[("loose.png".into(), png_rgb(2, 2, |_, _| [0; 3]))],
        &[],
    );
    let msg = err_string(load_image_folder(tmp.path(), None, &no_cache()));
    assert_contains(&msg, &["no class folders"]);

    let missing = tmp.path().join("does-not-exist");
    let err = load_image_folder(&missing, None, &no_cache()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_contains(&err.to_string(), &["does-not-exist"]);

    let err = load_image_folder(tmp.path(), Some("train"), &no_cache()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn missing_prefix_in_archive_lists_what_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let files = vec![
        (
            "set/train/a/0.png".to_string(),
            png_rgb(2, 2, |_, _| [0; 3]),
        ),
        ("set/test/a/0.png".to_string(), png_rgb(2, 2, |_, _| [0; 3])),
    ];
    let archive = tmp.path().join("x.tar.zst");
    std::fs::write(&archive, zstd_bytes(&tar_bytes(&files, &[]))).unwrap();
    let msg = err_string(load_image_folder(&archive, Some("set/val"), &no_cache()));
    assert_contains(
        &msg,
        &["x.tar.zst", "set/val", "set/", "set/train/", "set/test/"],
    );
}

#[test]
fn truncated_archives_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, _) = small_folder();
    let tar = tar_bytes(&prefixed("r", &files), &[]);
    let zst = zstd_bytes(&tar);
    for cut in [zst.len() / 2, zst.len() - 5, 10] {
        let p = tmp.path().join(format!("cut{cut}.tar.zst"));
        std::fs::write(&p, &zst[..cut]).unwrap();
        let msg = err_string(load_image_folder(&p, Some("r"), &no_cache()));
        assert_contains(&msg, &[&format!("cut{cut}.tar.zst"), "truncated"]);
    }
    // plain tar cut in the middle of a member, and exactly between two members
    let first_member_end = 512 + files[0].1.len().div_ceil(512) * 512;
    for cut in [700, first_member_end] {
        let p = tmp.path().join(format!("cut{cut}.tar"));
        std::fs::write(&p, &tar[..cut]).unwrap();
        let msg = err_string(load_image_folder(&p, Some("r"), &no_cache()));
        assert_contains(&msg, &[&format!("cut{cut}.tar"), "truncated"]);
    }
    // a file that is no archive at all, and one shorter than a tar header
    let p = tmp.path().join("image.tar");
    std::fs::write(&p, &files[0].1).unwrap();
    assert_contains(
        &err_string(load_image_folder(&p, Some("r"), &no_cache())),
        &["image.tar", "not a tar archive"],
    );
    let p = tmp.path().join("short.tar");
    std::fs::write(&p, &tar[..100]).unwrap();
    assert_contains(
        &err_string(load_image_folder(&p, Some("r"), &no_cache())),
        &["short.tar", "not a tar archive", "truncated"],
    );
    // gzip cut short
    let gz = gz_bytes(&tar);
    let p = tmp.path().join("cut.tar.gz");
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let msg = err_string(load_image_folder(&p, Some("r"), &no_cache()));
    assert_contains(&msg, &["cut.tar.gz", "truncated"]);
}

// ---------------------------------------------------------------- cache

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn cache_is_used_and_a_corrupt_cache_file_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let mode = CacheMode::Dir(cache_dir.clone());
    let (_, expected) = small_folder();
    let key = CacheKey::from_description("test", "test-key-1".into());
    let builds = std::cell::Cell::new(0);
    let build = || {
        builds.set(builds.get() + 1);
        Ok(expected.clone())
    };
    assert_eq!(cached(&mode, || Ok(key.clone()), build).unwrap(), expected);
    assert_eq!(builds.get(), 1);
    let files = cache_files(&cache_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].file_name().unwrap().to_string_lossy(),
        key.file_name()
    );
    // second call: read from the cache, no build
    assert_eq!(cached(&mode, || Ok(key.clone()), build).unwrap(), expected);
    assert_eq!(builds.get(), 1);

    // one flipped pixel byte: detected, rebuilt, the file is valid again
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&files[0], &bytes).unwrap();
    let msg = err_string(read_cache_file(&files[0], None));
    assert_contains(&msg, &["checksum"]);
    assert_eq!(cached(&mode, || Ok(key.clone()), build).unwrap(), expected);
    assert_eq!(builds.get(), 2);
    assert_eq!(
        read_cache_file(&files[0], Some(key.description())).unwrap(),
        expected
    );

    // truncated: detected, rebuilt
    std::fs::write(&files[0], &bytes[..bytes.len() - 7]).unwrap();
    assert_contains(
        &err_string(read_cache_file(&files[0], None)),
        &["truncated"],
    );
    assert_eq!(cached(&mode, || Ok(key.clone()), build).unwrap(), expected);
    assert_eq!(builds.get(), 3);

    // not a cache file at all
    std::fs::write(&files[0], b"garbage").unwrap();
    assert_eq!(cached(&mode, || Ok(key.clone()), build).unwrap(), expected);
    assert_eq!(builds.get(), 4);

    // a file written for another key under this name is not used
    write_cache_file(&files[0], "another key", &expected.select(&[0])).unwrap();
    assert_eq!(cached(&mode, || Ok(key.clone()), build).unwrap(), expected);
    assert_eq!(builds.get(), 5);

    // no temporary files left behind
    assert_eq!(cache_files(&cache_dir).len(), 1);
    // Off never touches the disk
    let off = tmp.path().join("off");
    assert_eq!(
        cached(&CacheMode::Off, || Ok(key.clone()), build).unwrap(),
        expected
    );
    assert_eq!(builds.get(), 6);
    assert!(!off.exists());
}

#[test]
fn cache_folder_follows_the_environment() {
    use cromo::data::cache::cache_dir_from;
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let all = &[
        ("CROMO_CACHE_DIR", "/c"),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ];
    assert_eq!(cache_dir_from(env(all)), Some(PathBuf::from("/c")));
    let no_cromo = &[
        ("CROMO_CACHE_DIR", ""),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ];
    assert_eq!(
        cache_dir_from(env(no_cromo)),
        Some(PathBuf::from("/x/cromo"))
    );
    assert_eq!(
        cache_dir_from(env(&[("HOME", "/h")])),
        Some(PathBuf::from("/h/.cache/cromo"))
    );
    assert_eq!(cache_dir_from(env(&[])), None);
    assert_eq!(CacheMode::Off.dir(), None);
    assert_eq!(CacheMode::Dir("/d".into()).dir(), Some(PathBuf::from("/d")));
}

#[test]
fn folder_and_archive_loads_round_trip_through_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, expected) = small_folder();
    let archive = tmp.path().join("s.tar.zst");
    std::fs::write(
        &archive,
        zstd_bytes(&tar_bytes(&prefixed("r", &files), &[])),
    )
    .unwrap();
    let dir = tmp.path().join("tree");
    write_tree(&dir, &files, &[]);
    let cache_dir = tmp.path().join("cache");
    let opts = cache_in(&cache_dir);
    for _ in 0..2 {
        assert_eq!(
            load_image_folder(&archive, Some("r"), &opts).unwrap(),
            expected
        );
        assert_eq!(load_image_folder(&dir, None, &opts).unwrap(), expected);
    }
    let files_now = cache_files(&cache_dir);
    assert_eq!(files_now.len(), 2, "{files_now:?}");
    // options that change pixels get their own cache file
    let one = LoadOptions {
        max_per_class: Some(1),
        ..opts.clone()
    };
    assert_eq!(
        load_image_folder(&archive, Some("r"), &one).unwrap(),
        expected.select(&[0, 3])
    );
    assert_eq!(cache_files(&cache_dir).len(), 3);

    // corrupt every cache file: the loads report, rebuild and still return the right set
    for f in cache_files(&cache_dir) {
        let mut b = std::fs::read(&f).unwrap();
        let n = b.len();
        b[n - 2] ^= 0xff;
        std::fs::write(&f, b).unwrap();
    }
    assert_eq!(
        load_image_folder(&archive, Some("r"), &opts).unwrap(),
        expected
    );
    assert_eq!(load_image_folder(&dir, None, &opts).unwrap(), expected);
    for f in &files_now {
        assert!(
            read_cache_file(f, None).is_ok(),
            "{} not rebuilt",
            f.display()
        );
    }

    // a changed source is not served from the stale cache
    let mut changed = files.clone();
    changed[0].1 = png_rgb(3, 2, |_, _| [7, 7, 7]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        &archive,
        zstd_bytes(&tar_bytes(&prefixed("r", &changed), &[])),
    )
    .unwrap();
    write_tree(&dir, &changed, &[]);
    let from_archive = load_image_folder(&archive, Some("r"), &opts).unwrap();
    let from_dir = load_image_folder(&dir, None, &opts).unwrap();
    assert_ne!(from_archive, expected);
    assert!(from_archive.image(4).iter().all(|&v| v == 7));
    assert_eq!(from_dir, from_archive);
}

// ---------------------------------------------------------------- CIFAR-10 binary

/// Byte of the CHW record of image `i` at channel c, row y, column x.
fn cifar_byte(i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((i * 31 + c * 7 + y * 3 + x * 5) % 251) as u8
}

fn cifar_batch(first: usize, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in first..first + n {
        v.push((i % 10) as u8);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    v.push(cifar_byte(i, c, y, x));
                }
            }
        }
    }
    v
}

fn write_cifar_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 1..=5 {
        std::fs::write(
            dir.join(format!("data_batch_{b}.bin")),
            cifar_batch((b - 1) * 2, 2),
        )
        .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_batch(100, 3)).unwrap();
    std::fs::write(
        dir.join("batches.meta.txt"),
        CIFAR10_CLASSES.join("\n") + "\n\n",
    )
    .unwrap();
}

fn check_cifar(set: &ImageSet, first: usize, n: usize) {
    assert_eq!(
        (set.len(), set.height, set.width, set.channels),
        (n, 32, 32, 3)
    );
    assert_eq!(set.class_names, CIFAR10_CLASSES);
    for k in 0..n {
        let i = first + k;
        assert_eq!(set.labels[k], (i % 10) as u32);
        let img = set.image(k);
        for y in 0..32 {
            for x in 0..32 {
                for c in 0..3 {
                    assert_eq!(img[(y * 32 + x) * 3 + c], cifar_byte(i, c, y, x));
                }
            }
        }
    }
}

#[test]
fn cifar_binary_is_converted_to_hwc() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar_dir(&dir);
    check_cifar(&load_cifar10_bin(&dir, true).unwrap(), 0, 10);
    check_cifar(&load_cifar10_bin(&dir, false).unwrap(), 100, 3);
    // the parent folder and the .tar.gz work too
    check_cifar(&load_cifar10_bin(tmp.path(), false).unwrap(), 100, 3);
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                format!("cifar-10-batches-bin/{}", e.file_name().to_string_lossy()),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let tgz = tmp.path().join("cifar-10-binary.tar.gz");
    std::fs::write(
        &tgz,
        gz_bytes(&tar_bytes(&files, &["cifar-10-batches-bin"])),
    )
    .unwrap();
    check_cifar(&load_cifar10_bin(&tgz, true).unwrap(), 0, 10);
    // and through the named data set with a root
    let set = Dataset::Cifar10
        .load(Split::Train, Some(&tgz), &no_cache())
        .unwrap();
    check_cifar(&set, 0, 10);
}

#[test]
fn cifar_binary_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar_dir(&dir);
    // truncated batch
    let mut b = cifar_batch(0, 2);
    b.truncate(3073 + 100);
    std::fs::write(dir.join("data_batch_2.bin"), &b).unwrap();
    let msg = err_string(load_cifar10_bin(&dir, true));
    assert_contains(&msg, &["data_batch_2.bin", "3073"]);
    // label out of range
    let mut b = cifar_batch(0, 2);
    b[3073] = 10;
    std::fs::write(dir.join("data_batch_2.bin"), &b).unwrap();
    let msg = err_string(load_cifar10_bin(&dir, true));
    assert_contains(&msg, &["data_batch_2.bin", "record 1", "label 10"]);
    // missing batch
    std::fs::write(dir.join("data_batch_2.bin"), cifar_batch(2, 2)).unwrap();
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let err = load_cifar10_bin(&dir, true).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_contains(&err.to_string(), &["data_batch_3.bin"]);
    // the test split does not need the train batches
    check_cifar(&load_cifar10_bin(&dir, false).unwrap(), 100, 3);
}

// ---------------------------------------------------------------- IDX

fn idx_images(n: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

#[test]
fn idx_files_read_exactly_raw_and_gzipped() {
    let tmp = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 2 * 4).map(|i| (i * 11) as u8).collect();
    let labels = [3u8, 0, 9];
    std::fs::write(
        tmp.path().join("train-images-idx3-ubyte"),
        idx_images(3, 2, 4, &pixels),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("train-labels-idx1-ubyte"),
        idx_labels(&labels),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("t10k-images-idx3-ubyte.gz"),
        gz_bytes(&idx_images(3, 2, 4, &pixels)),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("t10k-labels-idx1-ubyte.gz"),
        gz_bytes(&idx_labels(&labels)),
    )
    .unwrap();
    let expected = ImageSet {
        pixels: pixels.clone(),
        labels: vec![3, 0, 9],
        height: 2,
        width: 4,
        channels: 1,
        class_names: (0..10).map(|d| d.to_string()).collect(),
    };
    assert_eq!(mnist(tmp.path(), true).unwrap(), expected);
    assert_eq!(mnist(tmp.path(), false).unwrap(), expected);
    let f = fashion_mnist(tmp.path(), true).unwrap();
    assert_eq!(f.class_names, FASHION_MNIST_CLASSES);
    assert_eq!(f.pixels, pixels);
}

#[test]
fn idx_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("i.idx");
    let lab = tmp.path().join("l.idx");
    let names = || (0..10).map(|d| d.to_string()).collect::<Vec<_>>();
    let pixels = vec![7u8; 2 * 3 * 3];
    std::fs::write(&lab, idx_labels(&[1, 2])).unwrap();

    // bad magic: a label file given as the image file
    std::fs::write(&img, idx_labels(&[1, 2])).unwrap();
    let msg = err_string(load_idx(&img, &lab, names()));
    assert_contains(&msg, &["i.idx", "0x00000801", "0x00000803"]);

    // truncated data
    std::fs::write(&img, &idx_images(2, 3, 3, &pixels)[..16 + 10]).unwrap();
    let msg = err_string(load_idx(&img, &lab, names()));
    assert_contains(&msg, &["i.idx", "truncated", "18"]);

    // truncated header
    std::fs::write(&img, &idx_images(2, 3, 3, &pixels)[..9]).unwrap();
    assert_contains(
        &err_string(load_idx(&img, &lab, names())),
        &["i.idx", "truncated"],
    );

    // count mismatch
    std::fs::write(&img, idx_images(2, 3, 3, &pixels)).unwrap();
    std::fs::write(&lab, idx_labels(&[1, 2, 3])).unwrap();
    let msg = err_string(load_idx(&img, &lab, names()));
    assert_contains(&msg, &["l.idx", "3 labels", "2 images"]);

    // label outside the classes
    std::fs::write(&lab, idx_labels(&[1, 10])).unwrap();
    assert_contains(
        &err_string(load_idx(&img, &lab, names())),
        &["l.idx", "label 10"],
    );

    // truncated gzip
    let gz = gz_bytes(&idx_images(2, 3, 3, &pixels));
    std::fs::write(&img, &gz[..gz.len() - 12]).unwrap();
    std::fs::write(&lab, idx_labels(&[1, 2])).unwrap();
    assert_contains(
        &err_string(load_idx(&img, &lab, names())),
        &["i.idx", "gzip"],
    );

    // missing files in a folder
    let err = mnist(&tmp.path().join("nothing"), true).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = mnist(tmp.path(), true).unwrap_err();
    assert_contains(&err.to_string(), &["train-images-idx3-ubyte.gz"]);
}

// ---------------------------------------------------------------- Tiny-ImageNet, hand-built

/// A two-class Tiny-ImageNet tree (wnids order n02 then n01, so labels do not follow names),
/// with PNG bytes under .JPEG names (decoding looks at the bytes). Returns files and expected
/// (train, val) sets.
fn small_tiny() -> (Vec<(String, Vec<u8>)>, ImageSet, ImageSet) {
    let img = |v: u8| png_rgb(2, 2, move |x, y| [v, v + x as u8, v + y as u8]);
    let pix = |v: u8| vec![v, v, v, v, v + 1, v, v, v, v + 1, v, v + 1, v + 1];
    let files = vec![
        ("tiny/wnids.txt".to_string(), b"n02\nn01\n".to_vec()),
        (
            "tiny/words.txt".to_string(),
            b"n00\tunused\nn01\tgoldfish, Carassius auratus\nn02\tcat\n".to_vec(),
        ),
        ("tiny/train/n01/images/n01_1.JPEG".to_string(), img(10)),
        ("tiny/train/n01/images/n01_0.JPEG".to_string(), img(20)),
        ("tiny/train/n01/n01_boxes.txt".to_string(), b"boxes".to_vec()),
        ("tiny/train/n02/images/n02_0.JPEG".to_string(), img(30)),
        ("tiny/val/images/val_0.JPEG".to_string(), img(40)),
        ("tiny/val/images/val_1.JPEG".to_string(), img(50)),
        ("tiny/val/images/val_2.JPEG".to_string(), img(60)),
        (
            "tiny/val/val_annotations.txt".to_string(),
            b"val_1.JPEG\tn01\t0\t0\t1\t1\nval_0.JPEG\tn02\t0\t0\t1\t1\nval_2.JPEG\tn01\t1\t1\t2\t2\n"
                .to_vec(),
        ),
    ];
    let names = vec!["cat".to_string(), "goldfish".to_string()];
    let train = ImageSet {
        pixels: [pix(30), pix(20), pix(10)].concat(),
        labels: vec![0, 1, 1],
        height: 2,
        width: 2,
        channels: 3,
        class_names: names.clone(),
    };
    let val = ImageSet {
        pixels: [pix(50), pix(40), pix(60)].concat(),
        labels: vec![1, 0, 1],
        height: 2,
        width: 2,
        channels: 3,
        class_names: names,
    };
    (files, train, val)
}

#[test]
fn tiny_imagenet_layout_from_folder_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, train, val) = small_tiny();
    write_tree(tmp.path(), &files, &[]);
    let archive = tmp.path().join("tiny.tar.zst");
    std::fs::write(&archive, zstd_bytes(&tar_bytes(&files, &[]))).unwrap();
    for src in [tmp.path().join("tiny"), tmp.path().to_path_buf(), archive] {
        let name = src.display().to_string();
        assert_eq!(
            load_tiny_imagenet(&src, TinySplit::Train, &no_cache()).unwrap(),
            train,
            "{name}"
        );
        assert_eq!(
            load_tiny_imagenet(&src, TinySplit::Val, &no_cache()).unwrap(),
            val,
            "{name}"
        );
        let one = LoadOptions {
            max_per_class: Some(1),
            ..no_cache()
        };
        assert_eq!(
            load_tiny_imagenet(&src, TinySplit::Train, &one).unwrap(),
            train.select(&[0, 1]),
            "{name}"
        );
        assert_eq!(
            load_tiny_imagenet(&src, TinySplit::Val, &one).unwrap(),
            val.select(&[0, 1]),
            "{name}"
        );
    }
}

#[test]
fn tiny_imagenet_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, _, _) = small_tiny();
    let without = |name: &str| -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .filter(|(n, _)| !n.ends_with(name))
            .cloned()
            .collect()
    };
    // missing val_annotations.txt, folder and archive
    let d = tmp.path().join("a");
    write_tree(&d, &without("val_annotations.txt"), &[]);
    let err = load_tiny_imagenet(&d, TinySplit::Val, &no_cache()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_contains(&err.to_string(), &["val_annotations.txt"]);
    // the train split does not need it
    assert!(load_tiny_imagenet(&d, TinySplit::Train, &no_cache()).is_ok());
    let archive = tmp.path().join("a.tar.zst");
    std::fs::write(
        &archive,
        zstd_bytes(&tar_bytes(&without("val_annotations.txt"), &[])),
    )
    .unwrap();
    let msg = err_string(load_tiny_imagenet(&archive, TinySplit::Val, &no_cache()));
    assert_contains(&msg, &["a.tar.zst", "tiny/val/val_annotations.txt"]);

    // missing wnids.txt
    let d = tmp.path().join("b");
    write_tree(&d, &without("wnids.txt"), &[]);
    assert_contains(
        &err_string(load_tiny_imagenet(&d, TinySplit::Train, &no_cache())),
        &["wnids.txt"],
    );
    let archive = tmp.path().join("b.tar.zst");
    std::fs::write(&archive, zstd_bytes(&tar_bytes(&without("wnids.txt"), &[]))).unwrap();
    assert_contains(
        &err_string(load_tiny_imagenet(&archive, TinySplit::Val, &no_cache())),
        &["b.tar.zst", "wnids.txt", "tiny/"],
    );

    // unknown wnid in the annotations
    let mut bad = files.clone();
    let ann = bad
        .iter_mut()
        .find(|(n, _)| n.ends_with("val_annotations.txt"))
        .unwrap();
    ann.1 = b"val_0.JPEG\tn02\t0\t0\t1\t1\nval_1.JPEG\tn99\t0\t0\t1\t1\n".to_vec();
    let d = tmp.path().join("c");
    write_tree(&d, &bad, &[]);
    assert_contains(
        &err_string(load_tiny_imagenet(&d, TinySplit::Val, &no_cache())),
        &["val_annotations.txt", "line 2", "n99"],
    );

    // a val image without annotation
    let mut bad = files.clone();
    let ann = bad
        .iter_mut()
        .find(|(n, _)| n.ends_with("val_annotations.txt"))
        .unwrap();
    ann.1 = b"val_0.JPEG\tn02\t0\t0\t1\t1\nval_1.JPEG\tn01\t0\t0\t1\t1\n".to_vec();
    let d = tmp.path().join("d");
    write_tree(&d, &bad, &[]);
    assert_contains(
        &err_string(load_tiny_imagenet(&d, TinySplit::Val, &no_cache())),
        &["val_2.JPEG", "no annotation"],
    );

    // a wnid missing from words.txt
    let mut bad = files.clone();
    let words = bad
        .iter_mut()
        .find(|(n, _)| n.ends_with("words.txt"))
        .unwrap();
    words.1 = b"n01\tgoldfish\n".to_vec();
    let d = tmp.path().join("e");
    write_tree(&d, &bad, &[]);
    assert_contains(
        &err_string(load_tiny_imagenet(&d, TinySplit::Train, &no_cache())),
        &["words.txt", "n02"],
    );

    // a class without images
    let d = tmp.path().join("f");
    write_tree(&d, &without("n02_0.JPEG"), &["tiny/train/n02/images"]);
    assert_contains(
        &err_string(load_tiny_imagenet(&d, TinySplit::Train, &no_cache())),
        &["n02", "no image"],
    );
}

// ---------------------------------------------------------------- named data sets

#[test]
fn dataset_names_parse_and_paths_load() {
    assert_eq!("cifar10".parse::<Dataset>().unwrap(), Dataset::Cifar10);
    assert_eq!("CIFAR-10".parse::<Dataset>().unwrap(), Dataset::Cifar10);
    assert_eq!(
        "tiny-imagenet".parse::<Dataset>().unwrap(),
        Dataset::TinyImageNet
    );
    assert_eq!("mnist".parse::<Dataset>().unwrap(), Dataset::Mnist);
    assert_eq!(
        "fashion-mnist".parse::<Dataset>().unwrap(),
        Dataset::FashionMnist
    );
    assert_eq!(
        "some/dir".parse::<Dataset>().unwrap(),
        Dataset::Folder(PathBuf::from("some/dir"))
    );
    assert!("".parse::<Dataset>().is_err());
    assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
    assert!("dev".parse::<Split>().is_err());

    // a folder with train/ and test/, and a .tar.zst holding it under one folder
    let tmp = tempfile::tempdir().unwrap();
    let (files, expected) = small_folder();
    let mut all = prefixed("mine/train", &files);
    all.extend(prefixed("mine/test", &files[..2]));
    write_tree(tmp.path(), &all, &[]);
    let archive = tmp.path().join("mine.tar.zst");
    std::fs::write(&archive, zstd_bytes(&tar_bytes(&all, &[]))).unwrap();
    for root in [tmp.path().join("mine"), archive.clone()] {
        let ds = Dataset::Folder(root.clone());
        assert_eq!(ds.load(Split::Train, None, &no_cache()).unwrap(), expected);
        let test = ds.load(Split::Test, None, &no_cache()).unwrap();
        assert_eq!(test.class_names, vec!["b_cls".to_string()]);
        assert_eq!(test.len(), 2);
    }
    // a named set checks its class count
    let msg = err_string(Dataset::Cifar10.load(Split::Train, Some(&archive), &no_cache()));
    assert_contains(&msg, &["10 classes", "2"]);
}

#[test]
fn missing_data_says_what_was_looked_for_and_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    for (ds, hint) in [
        (
            Dataset::FashionMnist,
            "apt-get install -y dataset-fashion-mnist",
        ),
        (Dataset::Cifar10, "cifar10-jpeg.tar.zst"),
        (Dataset::TinyImageNet, "tiny-imagenet-200"),
        (Dataset::Mnist, "train-images-idx3-ubyte.gz"),
        (Dataset::Folder(missing.clone()), "train/ and test/"),
    ] {
        let err = ds
            .load(Split::Train, Some(&missing), &no_cache())
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert_contains(&err.to_string(), &[&missing.display().to_string(), hint]);
    }
}

// ---------------------------------------------------------------- real data

#[test]
fn real_cifar10_jpeg_test_split() {
    let Some(data) = shared_data() else {
        println!("skipping: shared data folder not found (set CROMO_SHARED_DATA)");
        return;
    };
    let archive = data.join("cifar10-jpeg.tar.zst");
    let tmp = tempfile::tempdir().unwrap();
    let opts = cache_in(tmp.path());
    let set = load_image_folder(&archive, Some("cifar10-jpeg/test"), &opts).unwrap();
    assert_eq!(
        (set.len(), set.height, set.width, set.channels),
        (10_000, 32, 32, 3)
    );
    assert_eq!(set.class_names, CIFAR10_CLASSES);
    let mut hist = [0usize; 10];
    set.labels.iter().for_each(|&l| hist[l as usize] += 1);
    assert_eq!(hist, [1000; 10]);
    // labels in class order (files sorted by class, then name)
    assert!(set.labels.windows(2).all(|w| w[0] <= w[1]));
    // mean pixel / 255 per channel: PIL (libjpeg) gives 0.49407, 0.48506, 0.45038 on these
    // JPEGs (tools/data_reference_values.py); CIFAR-10's own test means are about 0.494,
    // 0.485, 0.450. JPEG decoders differ slightly (chroma upsampling; cromo's measured
    // 0.4951, 0.4843, 0.4517), so allow 0.003; a channel swap would be off by 0.04.
    let mut sum = [0f64; 3];
    for p in set.pixels.chunks_exact(3) {
        for c in 0..3 {
            sum[c] += p[c] as f64;
        }
    }
    let n = (set.len() * 32 * 32) as f64;
    for (c, want) in [0.494_066, 0.485_064, 0.450_382].iter().enumerate() {
        let got = sum[c] / n / 255.0;
        assert!((got - want).abs() < 0.003, "channel {c}: {got} vs {want}");
    }
    // airplane/0000.jpg: PIL mean 154.83
    let m0 = set.image(0).iter().map(|&v| v as f64).sum::<f64>() / 3072.0;
    assert!((m0 - 154.831).abs() < 1.0, "first image mean {m0}");

    // cache round trip: the second load is the cache file, identical
    assert_eq!(cache_files(tmp.path()).len(), 1);
    let again = load_image_folder(&archive, Some("cifar10-jpeg/test"), &opts).unwrap();
    assert_eq!(again, set);
    let via_cache = read_cache_file(&cache_files(tmp.path())[0], None).unwrap();
    assert_eq!(via_cache, set);
    // the named data set reads the same split (split folder found under cifar10-jpeg/)
    let named = Dataset::Cifar10
        .load(Split::Test, Some(&archive), &opts)
        .unwrap();
    assert_eq!(named, set);
}

#[test]
fn real_mnist() {
    let Some(data) = shared_data() else {
        println!("skipping: shared data folder not found (set CROMO_SHARED_DATA)");
        return;
    };
    let dir = data.join("mnist");
    // published MNIST label counts
    let cases = [
        (
            true,
            60_000,
            5u32,
            [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
            27525u64,
        ),
        (
            false,
            10_000,
            7,
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
            18454,
        ),
    ];
    for (train, n, first, hist_want, first_sum) in cases {
        let set = mnist(&dir, train).unwrap();
        assert_eq!(
            (set.len(), set.height, set.width, set.channels),
            (n, 28, 28, 1)
        );
        assert_eq!(set.labels[0], first);
        let mut hist = [0usize; 10];
        set.labels.iter().for_each(|&l| hist[l as usize] += 1);
        assert_eq!(hist, hist_want);
        assert_eq!(hist.iter().sum::<usize>(), n);
        let s: u64 = set.image(0).iter().map(|&v| v as u64).sum();
        assert_eq!(s, first_sum);
        assert_eq!(set.class_names[7], "7");
    }
    let named = Dataset::Mnist
        .load(Split::Test, Some(&dir), &no_cache())
        .unwrap();
    assert_eq!(named.len(), 10_000);
    let small = Dataset::Mnist
        .load(
            Split::Test,
            Some(&dir),
            &LoadOptions {
                max_per_class: Some(3),
                resize: Some((14, 14)),
                ..no_cache()
            },
        )
        .unwrap();
    assert_eq!(
        (small.len(), small.height, small.width, small.channels),
        (30, 14, 14, 1)
    );
}

#[test]
fn real_fashion_mnist() {
    let dir = Path::new(cromo::data::datasets::FASHION_MNIST_SYSTEM_DIR);
    if !dir.is_dir() {
        println!(
            "skipping: {} not found (apt-get install -y dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    for (train, n, first, per_class, first_sum) in [
        (true, 60_000, 9u32, 6000, 76247u64),
        (false, 10_000, 9, 1000, 33456),
    ] {
        let set = fashion_mnist(dir, train).unwrap();
        assert_eq!(
            (set.len(), set.height, set.width, set.channels),
            (n, 28, 28, 1)
        );
        assert_eq!(set.labels[0], first);
        assert_eq!(set.class_names[9], "Ankle boot");
        let mut hist = [0usize; 10];
        set.labels.iter().for_each(|&l| hist[l as usize] += 1);
        assert_eq!(hist, [per_class; 10]);
        let s: u64 = set.image(0).iter().map(|&v| v as u64).sum();
        assert_eq!(s, first_sum);
    }
}

/// wnids and the first annotation lines, read independently of cromo's reader.
fn tiny_meta(archive: &Path, want_lines: usize) -> (Vec<String>, Vec<(String, String)>) {
    let f = std::fs::File::open(archive).unwrap();
    let mut a = tar::Archive::new(zstd::stream::read::Decoder::new(f).unwrap());
    let (mut wnids, mut ann) = (Vec::new(), Vec::new());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        if name == "tiny-imagenet-200/wnids.txt" {
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            wnids = s.lines().map(String::from).collect();
        } else if name == "tiny-imagenet-200/val/val_annotations.txt" {
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            ann = s
                .lines()
                .take(want_lines)
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    (f[0].to_string(), f[1].to_string())
                })
                .collect();
        }
    }
    (wnids, ann)
}

#[test]
fn real_tiny_imagenet_val_and_train_subset() {
    let Some(data) = shared_data() else {
        println!("skipping: shared data folder not found (set CROMO_SHARED_DATA)");
        return;
    };
    let archive = data.join("tiny-imagenet-200.tar.zst");
    let (wnids, ann) = tiny_meta(&archive, 20);
    assert_eq!(wnids.len(), 200);
    assert_eq!(ann[0].0, "val_0.JPEG");

    let val = load_tiny_imagenet(&archive, TinySplit::Val, &no_cache()).unwrap();
    assert_eq!(
        (val.len(), val.height, val.width, val.channels),
        (10_000, 64, 64, 3)
    );
    assert_eq!(val.num_classes(), 200);
    let mut hist = vec![0usize; 200];
    val.labels.iter().for_each(|&l| hist[l as usize] += 1);
    assert!(hist.iter().all(|&h| h == 50), "50 val images per class");
    // val image i is annotation line i: its label is the index of its wnid in wnids.txt
    for (i, (_, wnid)) in ann.iter().enumerate() {
        let want = wnids.iter().position(|w| w == wnid).unwrap() as u32;
        assert_eq!(val.labels[i], want, "val_{i}");
    }
    // words.txt: n01443537 is goldfish
    let gold = wnids.iter().position(|w| w == "n01443537").unwrap();
    assert_eq!(val.class_names[gold], "goldfish");

    let opts = LoadOptions {
        max_per_class: Some(2),
        ..no_cache()
    };
    let train = load_tiny_imagenet(&archive, TinySplit::Train, &opts).unwrap();
    assert_eq!(
        (train.len(), train.height, train.width, train.channels),
        (400, 64, 64, 3)
    );
    let want: Vec<u32> = (0..200u32).flat_map(|c| [c, c]).collect();
    assert_eq!(train.labels, want);
    assert_eq!(train.class_names, val.class_names);
}

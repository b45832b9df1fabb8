//! CIFAR-10 in the official binary format (<https://www.cs.toronto.edu/~kriz/cifar.html>):
//! `data_batch_1.bin` .. `data_batch_5.bin` (train) and `test_batch.bin`, each a sequence of
//! 3,073-byte records (1 label byte, then 1,024 red, 1,024 green and 1,024 blue bytes of a 32x32
//! image, rows top to bottom), and `batches.meta.txt` with the class names one per line.

use std::path::{Path, PathBuf};

use super::archive::{looks_like_archive, scan_archive};
use super::source::member_path;
use super::ImageSet;
use crate::{Error, Result};

/// Bytes of one CIFAR-10 record: label + 3x32x32 pixels.
pub const CIFAR_RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// The ten CIFAR-10 class names in label order (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

fn batch_names(train: bool) -> Vec<String> {
    if train {
        (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
    } else {
        vec!["test_batch.bin".to_string()]
    }
}

/// Parses CIFAR-10 binary records from `bytes` (read from `name`), appending HWC pixels and
/// labels. Errors (naming `name`): a length that is not a multiple of 3,073 bytes (truncated),
/// an empty batch, a label above 9.
pub fn parse_cifar10_batch(
    name: &Path,
    bytes: &[u8],
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD_BYTES != 0 {
        return Err(Error::bad_data(
            name,
            format!(
                "{} bytes is not a whole number of {CIFAR_RECORD_BYTES}-byte CIFAR-10 records \
                 (truncated or not a CIFAR-10 batch)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / CIFAR_RECORD_BYTES;
    pixels.reserve(n * 3072);
    labels.reserve(n);
    for (i, rec) in bytes.chunks_exact(CIFAR_RECORD_BYTES).enumerate() {
        let label = rec[0];
        if label > 9 {
            return Err(Error::bad_data(
                name,
                format!("record {i} has label {label}; CIFAR-10 labels are 0..=9"),
            ));
        }
        labels.push(label as u32);
        let (r, gb) = rec[1..].split_at(1024);
        let (g, b) = gb.split_at(1024);
        for p in 0..1024 {
            pixels.extend_from_slice(&[r[p], g[p], b[p]]);
        }
    }
    Ok(())
}

fn parse_meta(name: &Path, text: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(text)
        .map_err(|_| Error::bad_data(name, "class-name file is not UTF-8 text"))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != 10 {
        return Err(Error::bad_data(
            name,
            format!("holds {} class names, CIFAR-10 has 10", names.len()),
        ));
    }
    Ok(names)
}

/// Loads the CIFAR-10 train (`train = true`: the five data batches, 50,000 images) or test
/// split (10,000) from the binary format, as a 32x32x3 HWC set.
///
/// `source` is the `cifar-10-batches-bin` folder, a folder holding it, or the official
/// `cifar-10-binary.tar.gz` (any tar archive holding the batch files under one folder).
/// Class names come from `batches.meta.txt` when present, else the official names.
/// Errors name the missing batch file or the bad file and what is wrong.
pub fn load_cifar10_bin(source: &Path, train: bool) -> Result<ImageSet> {
    let meta = std::fs::metadata(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: source.to_path_buf(),
                what: "CIFAR-10 binary folder (cifar-10-batches-bin) or cifar-10-binary.tar.gz"
                    .into(),
            }
        } else {
            Error::io(source, e)
        }
    })?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let class_names = if meta.is_dir() {
        let dir = find_batch_dir(source).ok_or_else(|| Error::NotFound {
            path: source.join(&batch_names(train)[0]),
            what: format!(
                "CIFAR-10 binary batch (looked in {} and {})",
                source.display(),
                source.join("cifar-10-batches-bin").display()
            ),
        })?;
        for b in batch_names(train) {
            let p = dir.join(&b);
            let bytes = std::fs::read(&p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::NotFound {
                        path: p.clone(),
                        what: "CIFAR-10 binary batch".into(),
                    }
                } else {
                    Error::io(&p, e)
                }
            })?;
            parse_cifar10_batch(&p, &bytes, &mut pixels, &mut labels)?;
        }
        let meta_path = dir.join("batches.meta.txt");
        match std::fs::read(&meta_path) {
            Ok(t) => parse_meta(&meta_path, &t)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => official_names(),
            Err(e) => return Err(Error::io(&meta_path, e)),
        }
    } else {
        if !looks_like_archive(source) {
            return Err(Error::bad_data(
                source,
                "not a folder and not a tar archive (expected cifar-10-batches-bin/ or \
                 cifar-10-binary.tar.gz)",
            ));
        }
        let wanted = batch_names(train);
        let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
        let depth_ok = |n: &str| n.matches('/').count() <= 1;
        let members = scan_archive(source, |name, _| {
            depth_ok(name) && {
                let b = base(name);
                wanted.contains(&b) || b == "batches.meta.txt"
            }
        })?;
        for w in &wanted {
            let found: Vec<_> = members.iter().filter(|m| &base(&m.name) == w).collect();
            match found.as_slice() {
                [m] => parse_cifar10_batch(
                    &member_path(source, &m.name),
                    &m.data,
                    &mut pixels,
                    &mut labels,
                )?,
                [] => {
                    return Err(Error::bad_data(
                        source,
                        format!("no member {w} (expected cifar-10-batches-bin/{w})"),
                    ))
                }
                _ => {
                    return Err(Error::bad_data(
                        source,
                        format!("several members named {w}"),
                    ))
                }
            }
        }
        match members.iter().find(|m| base(&m.name) == "batches.meta.txt") {
            Some(m) => parse_meta(&member_path(source, &m.name), &m.data)?,
            None => official_names(),
        }
    };
    Ok(ImageSet {
        pixels,
        labels,
        height: 32,
        width: 32,
        channels: 3,
        class_names,
    })
}

fn official_names() -> Vec<String> {
    CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// The folder holding `data_batch_1.bin` or `test_batch.bin`: `dir` or `dir/cifar-10-batches-bin`.
pub(crate) fn find_batch_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| d.join("data_batch_1.bin").is_file() || d.join("test_batch.bin").is_file())
}

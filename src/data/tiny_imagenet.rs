//! Tiny-ImageNet-200 (<http://cs231n.stanford.edu/tiny-imagenet-200.zip>) in its standard layout,
//! from a folder or straight out of a tar archive such as `tiny-imagenet-200.tar.zst`:
//!
//! ```text
//! tiny-imagenet-200/wnids.txt                    200 WordNet ids, one per line: class order
//! tiny-imagenet-200/words.txt                    wnid \t "name, synonym, ..."
//! tiny-imagenet-200/train/<wnid>/images/*.JPEG   500 per class, 64x64
//! tiny-imagenet-200/val/images/*.JPEG            10,000
//! tiny-imagenet-200/val/val_annotations.txt      file \t wnid \t x0 \t y0 \t x1 \t y1
//! ```
//!
//! Label = index of the wnid in `wnids.txt`; class name = first synonym in `words.txt`.
//! Train images are sorted by file name within each class; val images follow the order of
//! `val_annotations.txt`. Grayscale JPEGs become RGB.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::archive::{scan_archive, EntryKind, PrefixCollector};
use super::cache::{cached, hash_bytes, CacheKey};
use super::source::{
    decode_images, first_k_per_class, is_image_file_name, member_path, Encoded, EncodedImage,
    LoadOptions,
};
use super::ImageSet;
use crate::{Error, Result};

/// Which labelled split of Tiny-ImageNet to load (the unlabelled `test/` split is not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TinySplit {
    /// `train/<wnid>/images`: 100,000 images.
    Train,
    /// `val/images` with `val/val_annotations.txt`: 10,000 images.
    Val,
}

/// Loads a Tiny-ImageNet-200 split as a 64x64x3 set (or `opts.resize`), honouring
/// `opts.max_per_class` and the decoded-set cache `opts.cache`.
///
/// `source` is the `tiny-imagenet-200` folder, a folder holding it, or a tar archive (plain,
/// gzip or zstd) holding it. Errors name the file: missing `wnids.txt`, `words.txt` or
/// `val_annotations.txt`, a wnid without a `words.txt` entry, an annotation naming an unknown
/// wnid or a missing image, a val image without annotation, a class without images, an image
/// that cannot be decoded, a truncated archive.
pub fn load_tiny_imagenet(source: &Path, split: TinySplit, opts: &LoadOptions) -> Result<ImageSet> {
    opts.validate()?;
    let meta = std::fs::metadata(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: source.to_path_buf(),
                what: "Tiny-ImageNet-200 folder or archive".into(),
            }
        } else {
            Error::io(source, e)
        }
    })?;
    if meta.is_dir() {
        load_dir(source, split, opts)
    } else {
        let details = format!("split={split:?};{}", opts.key_part());
        cached(
            &opts.cache,
            || CacheKey::for_source("tiny-imagenet", source, &details),
            || load_archive(source, split, opts),
        )
    }
}

fn text<'a>(name: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| Error::bad_data(name, "not UTF-8 text"))
}

fn parse_wnids(name: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text(name, bytes)?.lines().enumerate() {
        let w = line.trim();
        if w.is_empty() {
            continue;
        }
        if !seen.insert(w.to_string()) {
            return Err(Error::bad_data(
                name,
                format!("line {}: wnid {w} is listed twice", i + 1),
            ));
        }
        out.push(w.to_string());
    }
    if out.is_empty() {
        return Err(Error::bad_data(name, "lists no wnid"));
    }
    Ok(out)
}

fn parse_words(name: &Path, bytes: &[u8], wnids: &[String]) -> Result<Vec<String>> {
    let mut map: HashMap<&str, &str> = HashMap::new();
    for line in text(name, bytes)?.lines() {
        if let Some((w, names)) = line.split_once('\t') {
            map.insert(w.trim(), names);
        }
    }
    wnids
        .iter()
        .map(|w| {
            let names = map.get(w.as_str()).ok_or_else(|| {
                Error::bad_data(name, format!("no entry for wnid {w} listed in wnids.txt"))
            })?;
            Ok(names.split(',').next().unwrap_or("").trim().to_string())
        })
        .collect()
}

/// `(file name, label)` in annotation order.
fn parse_annotations(
    name: &Path,
    bytes: &[u8],
    index: &HashMap<&str, u32>,
) -> Result<Vec<(String, u32)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text(name, bytes)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
            return Err(Error::bad_data(
                name,
                format!(
                    "line {}: expected 'file<TAB>wnid<TAB>box', got {line:?}",
                    i + 1
                ),
            ));
        };
        let (file, wnid) = (file.trim(), wnid.trim());
        let label = *index.get(wnid).ok_or_else(|| {
            Error::bad_data(
                name,
                format!("line {}: wnid {wnid} is not listed in wnids.txt", i + 1),
            )
        })?;
        if !seen.insert(file.to_string()) {
            return Err(Error::bad_data(
                name,
                format!("line {}: {file} is annotated twice", i + 1),
            ));
        }
        out.push((file.to_string(), label));
    }
    if out.is_empty() {
        return Err(Error::bad_data(name, "holds no annotation"));
    }
    Ok(out)
}

fn wnid_index(wnids: &[String]) -> HashMap<&str, u32> {
    wnids
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as u32))
        .collect()
}

fn read_required(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: path.to_path_buf(),
                what: what.into(),
            }
        } else {
            Error::io(path, e)
        }
    })
}

// ---------------------------------------------------------------- folders

fn sorted_image_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: dir.to_path_buf(),
                what: "Tiny-ImageNet image folder".into(),
            }
        } else {
            Error::io(dir, e)
        }
    })?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if is_image_file_name(&name) && ent.path().is_file() {
            out.push((name, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The Tiny-ImageNet root in folder `dir`: `dir` itself when it holds `wnids.txt`, else its only
/// sub-folder that does (e.g. `dir/tiny-imagenet-200`).
pub(crate) fn find_root(dir: &Path) -> Option<PathBuf> {
    if dir.join("wnids.txt").is_file() {
        return Some(dir.to_path_buf());
    }
    let mut found = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("wnids.txt").is_file());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn load_dir(source: &Path, split: TinySplit, opts: &LoadOptions) -> Result<ImageSet> {
    let root = find_root(source).ok_or_else(|| Error::NotFound {
        path: source.join("wnids.txt"),
        what: format!(
            "Tiny-ImageNet wnids.txt (also looked in the sub-folders of {}, e.g. {})",
            source.display(),
            source.join("tiny-imagenet-200/wnids.txt").display()
        ),
    })?;
    let wnids_path = root.join("wnids.txt");
    let wnids = parse_wnids(&wnids_path, &read_required(&wnids_path, "wnids.txt")?)?;
    let words_path = root.join("words.txt");
    let class_names = parse_words(
        &words_path,
        &read_required(&words_path, "Tiny-ImageNet words.txt (class names)")?,
        &wnids,
    )?;
    let index = wnid_index(&wnids);
    let mut items: Vec<EncodedImage> = Vec::new();
    match split {
        TinySplit::Train => {
            let train = root.join("train");
            for ent in std::fs::read_dir(&train).map_err(|e| Error::io(&train, e))? {
                let ent = ent.map_err(|e| Error::io(&train, e))?;
                let n = ent.file_name().to_string_lossy().into_owned();
                if ent.path().is_dir() && !n.starts_with('.') && !index.contains_key(n.as_str()) {
                    return Err(Error::bad_data(
                        ent.path(),
                        format!("class folder {n} is not listed in {}", wnids_path.display()),
                    ));
                }
            }
            for (label, w) in wnids.iter().enumerate() {
                let dir = train.join(w).join("images");
                let mut files = sorted_image_files(&dir)?;
                if files.is_empty() {
                    return Err(Error::bad_data(&dir, "class folder holds no image"));
                }
                if let Some(k) = opts.max_per_class {
                    files.truncate(k);
                }
                items.extend(files.into_iter().map(|(_, p)| EncodedImage {
                    name: p.clone(),
                    data: Encoded::File(p),
                    label: label as u32,
                }));
            }
        }
        TinySplit::Val => {
            let ann_path = root.join("val").join("val_annotations.txt");
            let ann = parse_annotations(
                &ann_path,
                &read_required(&ann_path, "Tiny-ImageNet val annotations")?,
                &index,
            )?;
            let images_dir = root.join("val").join("images");
            let files: HashMap<String, PathBuf> =
                sorted_image_files(&images_dir)?.into_iter().collect();
            check_val_coverage(
                &ann_path,
                &ann,
                files.keys().map(String::as_str),
                &images_dir,
            )?;
            let keep = match opts.max_per_class {
                Some(k) => {
                    first_k_per_class(&ann.iter().map(|a| a.1).collect::<Vec<_>>(), wnids.len(), k)
                }
                None => (0..ann.len()).collect(),
            };
            for i in keep {
                let (f, label) = &ann[i];
                let p = files[f].clone();
                items.push(EncodedImage {
                    name: p.clone(),
                    data: Encoded::File(p),
                    label: *label,
                });
            }
        }
    }
    let mut fingerprint = String::new();
    for item in &items {
        if let Encoded::File(p) = &item.data {
            let m = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            fingerprint.push_str(&format!(
                "{}|{}|{}|{mtime}\n",
                p.display(),
                item.label,
                m.len()
            ));
        }
    }
    let canonical = root.canonicalize().map_err(|e| Error::io(&root, e))?;
    let description = format!(
        "tiny-imagenet-dir|{}|split={split:?}|files={}|listing={:016x}|names={:016x}|{}",
        canonical.display(),
        items.len(),
        hash_bytes(fingerprint.as_bytes(), 11),
        hash_bytes(class_names.join("\n").as_bytes(), 12),
        opts.key_part()
    );
    cached(
        &opts.cache,
        || Ok(CacheKey::from_description("tiny-imagenet", description)),
        || decode_images(&items, opts.resize, class_names),
    )
}

/// Every annotated file must exist and every image must be annotated.
fn check_val_coverage<'a>(
    ann_path: &Path,
    ann: &[(String, u32)],
    files: impl Iterator<Item = &'a str>,
    images_dir: &Path,
) -> Result<()> {
    let files: HashSet<&str> = files.collect();
    if let Some((f, _)) = ann.iter().find(|(f, _)| !files.contains(f.as_str())) {
        return Err(Error::bad_data(
            ann_path,
            format!("annotates {f}, which is not in {}", images_dir.display()),
        ));
    }
    if files.len() != ann.len() {
        let annotated: HashSet<&str> = ann.iter().map(|(f, _)| f.as_str()).collect();
        let mut extra: Vec<&str> = files.difference(&annotated).copied().collect();
        extra.sort();
        return Err(Error::bad_data(
            ann_path,
            format!(
                "{} image(s) in {} have no annotation, e.g. {}",
                extra.len(),
                images_dir.display(),
                extra.first().copied().unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- archives

const META_FILES: [&str; 3] = ["wnids.txt", "words.txt", "val/val_annotations.txt"];

fn wanted_rel(rel: &str, split: TinySplit) -> bool {
    if META_FILES.contains(&rel) {
        return true;
    }
    match split {
        TinySplit::Train => {
            let parts: Vec<&str> = rel.split('/').collect();
            parts.len() == 4
                && parts[0] == "train"
                && parts[2] == "images"
                && is_image_file_name(parts[3])
        }
        TinySplit::Val => rel
            .strip_prefix("val/images/")
            .is_some_and(|f| !f.contains('/') && is_image_file_name(f)),
    }
}

/// `(top folder, path relative to it)` readings of `name` that hold a wanted file.
fn split_top(name: &str, split: TinySplit) -> Option<(&str, &str)> {
    if wanted_rel(name, split) {
        return Some(("", name));
    }
    let (top, rel) = name.split_once('/')?;
    wanted_rel(rel, split).then_some((top, rel))
}

fn load_archive(source: &Path, split: TinySplit, opts: &LoadOptions) -> Result<ImageSet> {
    let mut prefixes = PrefixCollector::default();
    let members = scan_archive(source, |name, kind| {
        prefixes.add(name, kind);
        kind == EntryKind::File && split_top(name, split).is_some()
    })?;
    let tops: Vec<&str> = members
        .iter()
        .filter_map(|m| split_top(&m.name, split))
        .filter(|(_, rel)| *rel == "wnids.txt")
        .map(|(t, _)| t)
        .collect();
    let top = match tops.as_slice() {
        [t] => t.to_string(),
        [] => {
            return Err(Error::bad_data(
                source,
                format!(
                "no wnids.txt in the archive (expected tiny-imagenet-200/wnids.txt); it holds: {}",
                prefixes.describe()
            ),
            ))
        }
        _ => {
            return Err(Error::bad_data(
                source,
                format!("several Tiny-ImageNet roots hold a wnids.txt: {tops:?}"),
            ))
        }
    };
    let full = |rel: &str| {
        if top.is_empty() {
            rel.to_string()
        } else {
            format!("{top}/{rel}")
        }
    };
    let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
    let mut images: Vec<(String, Vec<u8>)> = Vec::new();
    for m in members {
        let Some((t, rel)) = split_top(&m.name, split) else {
            continue;
        };
        if t != top {
            continue;
        }
        let rel = rel.to_string();
        if META_FILES.contains(&rel.as_str()) {
            meta.insert(rel, m.data);
        } else {
            images.push((rel, m.data));
        }
    }
    let get_meta = |rel: &str| -> Result<(PathBuf, &[u8])> {
        let p = member_path(source, &full(rel));
        meta.get(rel).map(|b| (p, b.as_slice())).ok_or_else(|| {
            Error::bad_data(source, format!("no member {} in the archive", full(rel)))
        })
    };
    let (wp, wb) = get_meta("wnids.txt")?;
    let wnids = parse_wnids(&wp, wb)?;
    let (np, nb) = get_meta("words.txt")?;
    let class_names = parse_words(&np, nb, &wnids)?;
    let index = wnid_index(&wnids);
    let mut items: Vec<EncodedImage> = Vec::new();
    match split {
        TinySplit::Train => {
            let mut per_class: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); wnids.len()];
            for (rel, data) in images {
                let wnid = rel.split('/').nth(1).unwrap_or("");
                let label = *index.get(wnid).ok_or_else(|| {
                    Error::bad_data(
                        member_path(source, &full(&rel)),
                        format!("class folder {wnid} is not listed in wnids.txt"),
                    )
                })?;
                per_class[label as usize].push((rel, data));
            }
            for (label, mut files) in per_class.into_iter().enumerate() {
                if files.is_empty() {
                    return Err(Error::bad_data(
                        source,
                        format!(
                            "no image under {} for a class listed in wnids.txt",
                            full(&format!("train/{}/images/", wnids[label]))
                        ),
                    ));
                }
                files.sort_by(|a, b| a.0.cmp(&b.0));
                if let Some(k) = opts.max_per_class {
                    files.truncate(k);
                }
                items.extend(files.into_iter().map(|(rel, data)| EncodedImage {
                    name: member_path(source, &full(&rel)),
                    data: Encoded::Bytes(data),
                    label: label as u32,
                }));
            }
        }
        TinySplit::Val => {
            let (ap, ab) = get_meta("val/val_annotations.txt")?;
            let ann = parse_annotations(&ap, ab, &index)?;
            let mut files: HashMap<String, Vec<u8>> = images
                .into_iter()
                .map(|(rel, d)| {
                    let f = rel.strip_prefix("val/images/").unwrap_or(&rel).to_string();
                    (f, d)
                })
                .collect();
            let images_dir = PathBuf::from(full("val/images"));
            check_val_coverage(&ap, &ann, files.keys().map(String::as_str), &images_dir)?;
            let keep = match opts.max_per_class {
                Some(k) => {
                    first_k_per_class(&ann.iter().map(|a| a.1).collect::<Vec<_>>(), wnids.len(), k)
                }
                None => (0..ann.len()).collect(),
            };
            for i in keep {
                let (f, label) = &ann[i];
                items.push(EncodedImage {
                    name: member_path(source, &full(&format!("val/images/{f}"))),
                    data: Encoded::Bytes(files.remove(f.as_str()).unwrap_or_default()),
                    label: *label,
                });
            }
        }
    }
    decode_images(&items, opts.resize, class_names)
}

//! ImageFolder trees, `root/<class>/**/*.{jpg,jpeg,png}`, read from a folder or straight out of a
//! tar archive (`.tar`, `.tar.gz`, `.tar.zst`) without extracting it.
//!
//! Classes are the sub-folders of the root sorted by name (label = index); folders whose name
//! starts with `.` are skipped. Images are the files under a class folder (sub-folders included,
//! as in torchvision's `ImageFolder`) whose extension is jpg, jpeg or png in any case, sorted by
//! their path; other files are ignored. Images are decoded in parallel; grayscale and RGBA images
//! become RGB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::archive::{scan_archive, EntryKind, PrefixCollector};
use super::cache::{cached, CacheKey};
use super::source::{
    decode_images, is_image_file_name, member_path, Encoded, EncodedImage, LoadOptions,
};
use super::ImageSet;
use crate::{Error, Result};

/// Which folder of the source is the ImageFolder root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// Exactly this relative path ("" = the source itself).
    Exact(String),
    /// `<split>` or `<one folder>/<split>` (e.g. `train` or `cifar10-jpeg/train`).
    Split(String),
}

fn clean_prefix(p: &str) -> String {
    p.replace('\\', "/")
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Loads an ImageFolder tree.
///
/// `source` is a folder or a tar archive (plain, gzip or zstd; detected from its bytes);
/// `prefix` is the root of the tree inside it (`None` or `""` = the source itself), e.g.
/// `cifar10-jpeg/train` inside `cifar10-jpeg.tar.zst`. Returns an RGB set with labels =
/// class index and class names = folder names. Uses the decoded-set cache of `opts.cache`.
///
/// Errors (each naming the file): missing source or prefix (for archives, the folders that do
/// exist are listed), a class folder without images, no class folder, an image that cannot be
/// decoded (`archive: member: cannot decode image: ...`), images of different sizes without
/// `opts.resize`, a truncated or corrupt archive.
pub fn load_image_folder(
    source: &Path,
    prefix: Option<&str>,
    opts: &LoadOptions,
) -> Result<ImageSet> {
    load(
        source,
        Root::Exact(clean_prefix(prefix.unwrap_or(""))),
        opts,
    )
}

/// Loads split `split` (e.g. `train`) of an ImageFolder data set whose source holds
/// `<split>/<class>/...` either at its top or under one top folder (`<name>/<split>/<class>/...`).
/// Otherwise as [`load_image_folder`].
pub fn load_image_folder_split(source: &Path, split: &str, opts: &LoadOptions) -> Result<ImageSet> {
    let split = clean_prefix(split);
    if split.is_empty() || split.contains('/') {
        return Err(Error::invalid(format!(
            "split name {split:?} must be one folder name such as \"train\""
        )));
    }
    load(source, Root::Split(split), opts)
}

fn load(source: &Path, root: Root, opts: &LoadOptions) -> Result<ImageSet> {
    opts.validate()?;
    let meta = std::fs::metadata(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: source.to_path_buf(),
                what: "ImageFolder folder or tar archive".into(),
            }
        } else {
            Error::io(source, e)
        }
    })?;
    if meta.is_dir() {
        load_dir(source, &root, opts)
    } else {
        let details = format!("root={root:?};{}", opts.key_part());
        cached(
            &opts.cache,
            || CacheKey::for_source("image-folder", source, &details),
            || load_archive(source, &root, opts),
        )
    }
}

// ---------------------------------------------------------------- folders

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, std::fs::FileType)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let ft = ent.file_type().map_err(|e| Error::io(ent.path(), e))?;
        let ft = if ft.is_symlink() {
            std::fs::metadata(ent.path())
                .map_err(|e| Error::io(ent.path(), e))?
                .file_type()
        } else {
            ft
        };
        out.push((
            ent.file_name().to_string_lossy().into_owned(),
            ent.path(),
            ft,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for (name, path, ft) in sorted_entries(dir)? {
        if ft.is_dir() {
            if !name.starts_with('.') {
                collect_images(&path, out)?;
            }
        } else if ft.is_file() && is_image_file_name(&name) {
            out.push(path);
        }
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|(n, _, ft)| ft.is_dir() && !n.starts_with('.'))
        .map(|(n, p, _)| (n, p))
        .collect())
}

fn resolve_dir_root(source: &Path, root: &Root) -> Result<PathBuf> {
    let listing = |dir: &Path| -> String {
        match subdirs(dir) {
            Ok(v) if !v.is_empty() => v
                .iter()
                .map(|(n, _)| format!("{n}/"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "(no sub-folders)".into(),
        }
    };
    match root {
        Root::Exact(p) => {
            let dir = if p.is_empty() {
                source.to_path_buf()
            } else {
                source.join(p)
            };
            if dir.is_dir() {
                Ok(dir)
            } else {
                Err(Error::NotFound {
                    path: dir,
                    what: format!(
                        "ImageFolder root; {} holds: {}",
                        source.display(),
                        listing(source)
                    ),
                })
            }
        }
        Root::Split(s) => {
            if source.join(s).is_dir() {
                return Ok(source.join(s));
            }
            let found: Vec<PathBuf> = subdirs(source)?
                .into_iter()
                .map(|(_, p)| p.join(s))
                .filter(|p| p.is_dir())
                .collect();
            match found.len() {
                1 => Ok(found.into_iter().next().unwrap()),
                0 => Err(Error::NotFound {
                    path: source.join(s),
                    what: format!(
                        "'{s}' split folder (looked for {s}/ and */{s}/); {} holds: {}",
                        source.display(),
                        listing(source)
                    ),
                }),
                _ => Err(Error::bad_data(
                    source,
                    format!(
                        "ambiguous '{s}' split: found {}",
                        found
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
    }
}

fn load_dir(source: &Path, root: &Root, opts: &LoadOptions) -> Result<ImageSet> {
    let dir = resolve_dir_root(source, root)?;
    let classes = subdirs(&dir)?;
    if classes.is_empty() {
        return Err(Error::bad_data(
            &dir,
            "no class folders: an ImageFolder root holds one folder per class",
        ));
    }
    let mut items = Vec::new();
    let mut class_names = Vec::with_capacity(classes.len());
    let mut fingerprint = String::new();
    for (label, (name, path)) in classes.iter().enumerate() {
        let mut files = Vec::new();
        collect_images(path, &mut files)?;
        // sort by the `/`-joined relative path, as archive members are sorted
        let mut keyed: Vec<(String, PathBuf)> = files
            .into_iter()
            .map(|f| {
                let rel = f.strip_prefix(path).unwrap_or(&f);
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                (key, f)
            })
            .collect();
        keyed.sort();
        let mut files: Vec<PathBuf> = keyed.into_iter().map(|(_, f)| f).collect();
        if files.is_empty() {
            return Err(Error::bad_data(
                path,
                "class folder holds no .jpg/.jpeg/.png image",
            ));
        }
        if let Some(k) = opts.max_per_class {
            files.truncate(k);
        }
        for f in files {
            let m = std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            fingerprint.push_str(&format!(
                "{}|{}|{mtime}\n",
                f.strip_prefix(&dir).unwrap_or(&f).display(),
                m.len()
            ));
            items.push(EncodedImage {
                name: f.clone(),
                data: Encoded::File(f),
                label: label as u32,
            });
        }
        class_names.push(name.clone());
    }
    let canonical = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
    let description = format!(
        "image-folder-dir|{}|files={}|listing={:016x}|{}",
        canonical.display(),
        items.len(),
        super::cache::hash_bytes(fingerprint.as_bytes(), 7),
        opts.key_part()
    );
    cached(
        &opts.cache,
        || Ok(CacheKey::from_description("image-folder", description)),
        || decode_images(&items, opts.resize, class_names),
    )
}

// ---------------------------------------------------------------- archives

/// Splits `name` into (tree root, class, rest) for the requested root, or `None` when `name` is
/// not inside such a tree. For [`Root::Split`] the tree root is "" or the top folder.
fn locate<'a>(name: &'a str, root: &Root) -> Option<(&'a str, &'a str)> {
    match root {
        Root::Exact(p) => {
            let rel = if p.is_empty() {
                name
            } else {
                name.strip_prefix(p.as_str())?.strip_prefix('/')?
            };
            Some(("", rel))
        }
        Root::Split(s) => {
            if let Some(rel) = name
                .strip_prefix(s.as_str())
                .and_then(|r| r.strip_prefix('/'))
            {
                return Some(("", rel));
            }
            let (top, rest) = name.split_once('/')?;
            let rel = rest.strip_prefix(s.as_str())?.strip_prefix('/')?;
            Some((top, rel))
        }
    }
}

fn load_archive(source: &Path, root: &Root, opts: &LoadOptions) -> Result<ImageSet> {
    let mut prefixes = PrefixCollector::default();
    // tree root -> class -> present (class folders seen, with or without images)
    let mut class_dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut roots_seen: BTreeSet<String> = BTreeSet::new();
    let members = scan_archive(source, |name, kind| {
        prefixes.add(name, kind);
        let Some((top, rel)) = locate(name, root) else {
            // the root folder itself
            if kind == EntryKind::Dir {
                match root {
                    Root::Exact(p) if p == name => {
                        roots_seen.insert(String::new());
                    }
                    Root::Split(s) if name == s => {
                        roots_seen.insert(String::new());
                    }
                    Root::Split(s) => {
                        if let Some((top, rest)) = name.split_once('/') {
                            if rest == s {
                                roots_seen.insert(top.to_string());
                            }
                        }
                    }
                    _ => {}
                }
            }
            return false;
        };
        roots_seen.insert(top.to_string());
        let (class, rest) = match rel.split_once('/') {
            Some((c, r)) => (c, Some(r)),
            None => (rel, None),
        };
        if class.is_empty() || class.starts_with('.') {
            return false;
        }
        match (kind, rest) {
            (EntryKind::Dir, _) => {
                class_dirs
                    .entry(top.to_string())
                    .or_default()
                    .insert(class.to_string());
                false
            }
            (EntryKind::File, Some(rest)) => {
                class_dirs
                    .entry(top.to_string())
                    .or_default()
                    .insert(class.to_string());
                let hidden = rest.split('/').any(|c| c.starts_with('.'));
                !hidden && is_image_file_name(rest)
            }
            // a file directly in the root is not part of any class
            (EntryKind::File, None) => false,
        }
    })?;
    let wanted = match root {
        Root::Exact(p) => p.clone(),
        Root::Split(s) => s.clone(),
    };
    if roots_seen.is_empty() {
        let looked = match root {
            Root::Exact(p) if p.is_empty() => "class folders at the top".to_string(),
            Root::Exact(p) => format!("folder '{p}/'"),
            Root::Split(s) => format!("folder '{s}/' or '*/{s}/'"),
        };
        return Err(Error::bad_data(
            source,
            format!(
                "no {looked} in the archive; it holds: {}",
                prefixes.describe()
            ),
        ));
    }
    if roots_seen.len() > 1 {
        return Err(Error::bad_data(
            source,
            format!(
                "ambiguous '{wanted}' split: found it under {}",
                roots_seen
                    .iter()
                    .map(|r| format!("{r}/{wanted}/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let top = roots_seen.into_iter().next().unwrap();
    let tree = match root {
        Root::Exact(p) => p.clone(),
        Root::Split(s) if top.is_empty() => s.clone(),
        Root::Split(s) => format!("{top}/{s}"),
    };
    let classes: Vec<String> = class_dirs
        .remove(&top)
        .unwrap_or_default()
        .into_iter()
        .collect();
    if classes.is_empty() {
        return Err(Error::bad_data(
            source,
            format!("'{tree}/' in the archive holds no class folders"),
        ));
    }
    let mut per_class: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); classes.len()];
    for m in members {
        let Some((t, rel)) = locate(&m.name, root) else {
            continue;
        };
        if t != top {
            continue;
        }
        let class = rel.split('/').next().unwrap_or("");
        if let Ok(idx) = classes.binary_search_by(|c| c.as_str().cmp(class)) {
            per_class[idx].push((m.name, m.data));
        }
    }
    let mut items = Vec::new();
    for (label, (class, mut files)) in classes.iter().zip(per_class).enumerate() {
        if files.is_empty() {
            return Err(Error::bad_data(
                member_path(source, &format!("{tree}/{class}")),
                "class folder holds no .jpg/.jpeg/.png image",
            ));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(k) = opts.max_per_class {
            files.truncate(k);
        }
        items.extend(files.into_iter().map(|(name, data)| EncodedImage {
            name: member_path(source, &name),
            data: Encoded::Bytes(data),
            label: label as u32,
        }));
    }
    decode_images(&items, opts.resize, classes)
}

//! A cache of decoded image sets, so the second load of a data set reads raw pixels instead of
//! decoding tens of thousands of JPEGs.
//!
//! A cache file is named by a hash of its key (the source's canonical path, size and mtime, the
//! prefix or split read, and the options that change the pixels) and holds:
//!
//! ```text
//! 0..8    magic  b"CROMOSET"
//! 8..12   format version, u32 LE (1)
//! 12..16  header length L, u32 LE
//! 16..    L bytes of JSON: {"key", "count", "height", "width", "channels", "class_names", "checksum"}
//!         then count x u32 LE labels, then count*height*width*channels pixel bytes (HWC, image
//!         after image), and nothing else: the file length must be exactly that.
//! ```
//!
//! `checksum` is a 64-bit hash (hex) of the label and pixel bytes. Files are written to a
//! temporary file in the cache folder, fsync'ed and renamed, so a crash never leaves a partial
//! cache file under the final name. A file that is corrupt, truncated or written for another key
//! is reported on stderr with its path and rebuilt; it is never used.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ImageSet;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CROMOSET";
const VERSION: u32 = 1;
const MAX_HEADER: usize = 16 << 20;

/// Where decoded sets are cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// No cache: always decode.
    Off,
    /// The default folder: `$CROMO_CACHE_DIR`, else `$XDG_CACHE_HOME/cromo`, else
    /// `$HOME/.cache/cromo` (no cache when none of these is set).
    #[default]
    Auto,
    /// This folder (created when missing).
    Dir(PathBuf),
}

impl CacheMode {
    /// The folder this mode caches in, or `None` for no cache.
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            CacheMode::Off => None,
            CacheMode::Auto => default_cache_dir(),
            CacheMode::Dir(d) => Some(d.clone()),
        }
    }
}

/// `$CROMO_CACHE_DIR`, else `$XDG_CACHE_HOME/cromo`, else `$HOME/.cache/cromo` (empty variables
/// count as unset); `None` when none is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k))
}

/// [`default_cache_dir`] with the environment given as a lookup function.
pub fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(d) = var("CROMO_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("cromo"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache").join("cromo"))
}

/// The identity of a cached set: a readable description of everything that determines its
/// pixels. Two loads share a cache file exactly when their keys are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    kind: String,
    description: String,
}

impl CacheKey {
    /// A key for data read by loader `kind` (a short name such as `image-folder`) from the single
    /// file or folder `source`, with `details` (prefix, split, options). The source's canonical
    /// path, size and modification time are part of the key, so a changed file misses the cache.
    pub fn for_source(kind: &str, source: &Path, details: &str) -> Result<CacheKey> {
        let canonical = source.canonicalize().map_err(|e| Error::io(source, e))?;
        let meta = std::fs::metadata(&canonical).map_err(|e| Error::io(source, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(CacheKey::from_description(
            kind,
            format!(
                "{kind}|v{VERSION}|{}|size={}|mtime={mtime}|{details}",
                canonical.display(),
                meta.len()
            ),
        ))
    }

    /// A key from an explicit description (callers that fingerprint many files themselves).
    pub fn from_description(kind: &str, description: String) -> CacheKey {
        let kind: String = kind
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        CacheKey { kind, description }
    }

    /// The full description stored in the cache file.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The cache file name: `<kind>-<16 hex digits of the description's hash>.cromoset`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{:016x}.cromoset",
            self.kind,
            hash_bytes(self.description.as_bytes(), 0x6372_6f6d_6f6b_6579)
        )
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    count: usize,
    height: usize,
    width: usize,
    channels: usize,
    class_names: Vec<String>,
    checksum: String,
}

/// Returns the set for `key` from the cache of `mode` when a valid cache file exists; otherwise
/// calls `build` and writes its result to the cache. An unusable cache file is reported on stderr
/// (path and reason) and rebuilt; failing to write the cache is a warning on stderr, not an error.
pub fn cached(
    mode: &CacheMode,
    key: impl FnOnce() -> Result<CacheKey>,
    build: impl FnOnce() -> Result<ImageSet>,
) -> Result<ImageSet> {
    let Some(dir) = mode.dir() else {
        return build();
    };
    let key = key()?;
    let path = dir.join(key.file_name());
    if path.exists() {
        match read_cache_file(&path, Some(key.description())) {
            Ok(set) => return Ok(set),
            Err(e) => eprintln!("cromo: ignoring unusable cache file ({e}); rebuilding it"),
        }
    }
    let set = build()?;
    if let Err(e) = write_cache_file(&path, key.description(), &set) {
        eprintln!("cromo: warning: could not write the cache file: {e}");
    }
    Ok(set)
}

/// The cache file that `cached` would use for `key` under `mode` (`None` when caching is off).
pub fn cache_file_path(mode: &CacheMode, key: &CacheKey) -> Option<PathBuf> {
    mode.dir().map(|d| d.join(key.file_name()))
}

fn check_invariant(path: &Path, set: &ImageSet) -> Result<()> {
    if set.pixels.len() != set.len() * set.image_bytes() {
        return Err(Error::invalid(format!(
            "cannot cache into {}: the set holds {} pixel bytes, not {} images x {}x{}x{}",
            path.display(),
            set.pixels.len(),
            set.len(),
            set.height,
            set.width,
            set.channels
        )));
    }
    Ok(())
}

/// Writes `set` to the cache file `path` under `key` atomically (temporary file in the same
/// folder, fsync, rename). The folder is created when missing.
pub fn write_cache_file(path: &Path, key: &str, set: &ImageSet) -> Result<()> {
    check_invariant(path, set)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let labels: Vec<u8> = set.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let header = Header {
        key: key.to_string(),
        count: set.len(),
        height: set.height,
        width: set.width,
        channels: set.channels,
        class_names: set.class_names.clone(),
        checksum: format!("{:016x}", checksum(&labels, &set.pixels)),
    };
    let header = serde_json::to_vec(&header)
        .map_err(|e| Error::invalid(format!("cannot encode cache header: {e}")))?;
    crate::fsutil::write_atomic_with(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(header.len() as u32).to_le_bytes())?;
        w.write_all(&header)?;
        w.write_all(&labels)?;
        w.write_all(&set.pixels)
    })
}

/// Reads a cache file. With `expected_key`, a file written for another key is an error.
/// Errors name the file: bad magic or version, bad header, wrong length (truncated), checksum
/// mismatch, a label outside the class list.
pub fn read_cache_file(path: &Path, expected_key: Option<&str>) -> Result<ImageSet> {
    let bad = |msg: String| Error::bad_data(path, msg);
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut fixed = [0u8; 16];
    file.read_exact(&mut fixed)
        .map_err(|_| bad(format!("cache file too short ({file_len} bytes)")))?;
    if &fixed[..8] != MAGIC {
        return Err(bad("not a cromo cache file (bad magic)".into()));
    }
    let version = u32::from_le_bytes(fixed[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(bad(format!(
            "cache format version {version}, this build reads version {VERSION}"
        )));
    }
    let header_len = u32::from_le_bytes(fixed[12..16].try_into().unwrap()) as usize;
    if header_len > MAX_HEADER || 16 + header_len as u64 > file_len {
        return Err(bad(format!(
            "cache header length {header_len} does not fit the {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read cache header: {e}")))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| bad(format!("corrupt cache header: {e}")))?;
    if let Some(k) = expected_key {
        if header.key != k {
            return Err(bad(format!(
                "cache file was written for another source ({}), not {k}",
                header.key
            )));
        }
    }
    let image_bytes = header
        .height
        .checked_mul(header.width)
        .and_then(|x| x.checked_mul(header.channels))
        .ok_or_else(|| bad("cache header shape overflows".into()))?;
    let pixel_len = header
        .count
        .checked_mul(image_bytes)
        .ok_or_else(|| bad("cache header shape overflows".into()))?;
    let expected = (16 + header_len as u64)
        .checked_add(4 * header.count as u64)
        .and_then(|x| x.checked_add(pixel_len as u64))
        .ok_or_else(|| bad("cache header shape overflows".into()))?;
    if expected != file_len {
        return Err(bad(format!(
            "cache file is {file_len} bytes but its header ({} images of {}x{}x{}) needs \
             {expected} (truncated or corrupt)",
            header.count, header.height, header.width, header.channels
        )));
    }
    let mut labels = vec![0u8; 4 * header.count];
    file.read_exact(&mut labels)
        .map_err(|e| bad(format!("cannot read labels: {e}")))?;
    let mut pixels = vec![0u8; pixel_len];
    file.read_exact(&mut pixels)
        .map_err(|e| bad(format!("cannot read pixels: {e}")))?;
    let sum = format!("{:016x}", checksum(&labels, &pixels));
    if sum != header.checksum {
        return Err(bad(format!(
            "checksum mismatch (stored {}, computed {sum}): the cache file is corrupt",
            header.checksum
        )));
    }
    let labels: Vec<u32> = labels
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= header.class_names.len())
    {
        return Err(bad(format!(
            "label {l} of image {i} is outside the {} class names",
            header.class_names.len()
        )));
    }
    Ok(ImageSet {
        pixels,
        labels,
        height: header.height,
        width: header.width,
        channels: header.channels,
        class_names: header.class_names,
    })
}

const P1: u64 = 0x9e37_79b9_7f4a_7c15;
const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const P3: u64 = 0x1656_67b1_9e37_79f9;
const P4: u64 = 0x85eb_ca77_c2b2_ae63;

fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A fast 64-bit hash (four multiply-rotate lanes over 8-byte words, each step a bijection of
/// the lane, so changing any single word always changes the result). Stable across platforms
/// and Rust versions: it names cache files and checks their contents.
pub(crate) fn hash_bytes(data: &[u8], seed: u64) -> u64 {
    let mut lanes = [seed ^ P1, seed ^ P2, seed ^ P3, seed ^ P4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
            *lane = (*lane ^ w)
                .wrapping_mul(P1)
                .rotate_left(31)
                .wrapping_mul(P2);
        }
    }
    let mut h = seed ^ (data.len() as u64).wrapping_mul(P3);
    for lane in lanes {
        h = fmix(h ^ lane).wrapping_add(P4);
    }
    for &byte in blocks.remainder() {
        h = fmix(h ^ byte as u64).wrapping_add(P4);
    }
    fmix(h)
}

/// Checksum of labels and pixels: hashes of 4 MiB chunks, computed in parallel, then hashed
/// in order.
fn checksum(labels: &[u8], pixels: &[u8]) -> u64 {
    const CHUNK: usize = 4 << 20;
    let mut parts: Vec<u64> = vec![hash_bytes(labels, 1)];
    parts.extend(
        pixels
            .par_chunks(CHUNK)
            .map(|c| hash_bytes(c, 2))
            .collect::<Vec<_>>(),
    );
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.to_le_bytes()).collect();
    hash_bytes(&bytes, 3)
}

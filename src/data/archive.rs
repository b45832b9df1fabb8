//! Reading members of tar archives without extracting them to disk.
//!
//! The compression is detected from the first bytes, not the file name: zstd (`.tar.zst`),
//! gzip (`.tar.gz`) or none (`.tar`). Members are read sequentially, in archive order; a
//! truncated or corrupt archive (including one cut exactly between two members, which the
//! end-of-archive marker reveals) is an error naming the archive and the last member read.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use crate::{Error, Result};

/// The kind of an archive entry passed to the selection callback of [`scan_archive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (its bytes can be selected).
    File,
    /// A directory (name given without the trailing `/`).
    Dir,
}

/// A selected regular-file member: its normalised name (`/`-separated, no leading `./`) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn read_head(file: &mut File, head: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// True when `block` is a tar header: the `ustar` magic at offset 257, or (old v7 tars) a
/// checksum field that matches the header's bytes.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    let field = std::str::from_utf8(&block[148..156]).unwrap_or("");
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8)
    else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    block[0] != 0 && sum == stored
}

fn classify(head: &[u8]) -> Option<Compression> {
    if head.len() >= 4 && head[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Some(Compression::Zstd)
    } else if head.len() >= 2 && head[..2] == [0x1f, 0x8b] {
        Some(Compression::Gzip)
    } else if is_tar_header(head) {
        Some(Compression::None)
    } else {
        None
    }
}

/// True when the file at `path` starts with a zstd or gzip magic or a tar header.
pub fn looks_like_archive(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    match read_head(&mut f, &mut head) {
        Ok(n) => classify(&head[..n]).is_some(),
        Err(_) => false,
    }
}

fn detect(path: &Path, file: &mut File) -> Result<Compression> {
    let mut head = [0u8; 512];
    let n = read_head(file, &mut head).map_err(|e| Error::io(path, e))?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    classify(&head[..n]).ok_or_else(|| {
        let what = if n == 0 {
            "empty file".to_string()
        } else if n < 512 {
            format!("{n} bytes, shorter than one tar header (truncated?)")
        } else {
            "no zstd or gzip magic and no tar header".to_string()
        };
        Error::bad_data(path, format!("not a tar archive: {what}"))
    })
}

/// A reader that remembers whether its inner reader ever reported end of file.
struct EofTracker<R> {
    inner: R,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}

fn normalise(name: &str) -> String {
    let mut s = name.replace('\\', "/");
    while let Some(rest) = s.strip_prefix("./") {
        s = rest.to_string();
    }
    while s.ends_with('/') {
        s.pop();
    }
    s
}

/// Reads the tar archive at `path` (plain, gzip or zstd), calling `select(name, kind)` for every
/// file and directory entry in archive order, and returns the bytes of the regular files for
/// which it returned `true`, in archive order. Other entry types (links, devices) are skipped.
///
/// Errors: missing or unreadable file, a truncated or corrupt archive (names the last member),
/// a member whose data is shorter than its header says.
pub fn scan_archive(
    path: &Path,
    mut select: impl FnMut(&str, EntryKind) -> bool,
) -> Result<Vec<Member>> {
    let mut file = File::open(path).map_err(|e| open_error(path, e))?;
    let comp = detect(path, &mut file)?;
    let buffered = BufReader::with_capacity(1 << 20, file);
    let reader: Box<dyn Read> = match comp {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| {
                Error::bad_data(path, format!("cannot start zstd decompression: {e}"))
            })?,
        ),
    };
    let eof = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(EofTracker {
        inner: reader,
        eof: eof.clone(),
    });
    let mut members = Vec::new();
    let mut last = String::from("(start of archive)");
    let mut count = 0usize;
    let corrupt = |last: &str, e: std::io::Error| {
        Error::bad_data(
            path,
            format!("truncated or corrupt archive (after member {last}): {e}"),
        )
    };
    let entries = archive.entries().map_err(|e| corrupt(&last, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&last, e))?;
        let name = {
            let p = entry.path().map_err(|e| corrupt(&last, e))?;
            normalise(&p.to_string_lossy())
        };
        count += 1;
        let ty = entry.header().entry_type();
        let kind = if ty.is_file() || ty.is_contiguous() {
            EntryKind::File
        } else if ty.is_dir() {
            EntryKind::Dir
        } else {
            last = name;
            continue;
        };
        if select(&name, kind) && kind == EntryKind::File {
            let size = entry.size();
            let mut data = Vec::with_capacity(size.min(64 << 20) as usize);
            entry.read_to_end(&mut data).map_err(|e| {
                Error::bad_data(
                    path,
                    format!("truncated or corrupt archive in member {name}: {e}"),
                )
            })?;
            if data.len() as u64 != size {
                return Err(Error::bad_data(
                    path,
                    format!(
                        "truncated archive: member {name} holds {} of its {size} bytes",
                        data.len()
                    ),
                ));
            }
            members.push(Member {
                name: name.clone(),
                data,
            });
        }
        last = name;
    }
    if eof.get() {
        let what = if count == 0 {
            "no tar entry at all".to_string()
        } else {
            format!("it ends after member {last} without the end-of-archive marker")
        };
        return Err(Error::bad_data(
            path,
            format!("truncated or not a tar archive: {what}"),
        ));
    }
    Ok(members)
}

fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound {
            path: path.to_path_buf(),
            what: "archive".into(),
        }
    } else {
        Error::io(path, e)
    }
}

/// Collects the folder prefixes of archive entry names up to `depth` components (for error
/// messages that say which folders an archive holds).
#[derive(Debug, Default)]
pub(crate) struct PrefixCollector {
    pub prefixes: BTreeSet<String>,
}

impl PrefixCollector {
    /// Records the folders of `name` (a file's parents, or a directory itself) up to depth 2.
    pub fn add(&mut self, name: &str, kind: EntryKind) {
        let parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        let dirs = match kind {
            EntryKind::Dir => parts.len(),
            EntryKind::File => parts.len().saturating_sub(1),
        };
        for d in 1..=dirs.min(2) {
            if !self.prefixes.contains(&parts[..d].join("/")) {
                self.prefixes.insert(parts[..d].join("/"));
            }
        }
    }

    /// `a/, a/train/, a/test/` (at most 30 shown).
    pub fn describe(&self) -> String {
        if self.prefixes.is_empty() {
            return "(no folders)".into();
        }
        let mut v: Vec<String> = self
            .prefixes
            .iter()
            .take(30)
            .map(|p| format!("{p}/"))
            .collect();
        if self.prefixes.len() > 30 {
            v.push(format!("... ({} in all)", self.prefixes.len()));
        }
        v.join(", ")
    }
}

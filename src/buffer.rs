//! Replay buffer: a fixed number of raw `u8` images kept by reservoir sampling over the stream.
//!
//! [`ReplayBuffer`] stores up to `capacity` images of one size (HWC, `u8`) in a single
//! preallocated `Vec<u8>` (no allocation per offered image). Every image of the unlabeled stream
//! is offered with the id of the task it came from; Vitter's algorithm R keeps each of the `n`
//! images seen so far with probability `capacity / n`. Each slot remembers its task id, and
//! optionally a label that is for evaluation only (no training code reads it).
//!
//! The buffer, including its random generator, is saved to and loaded from one binary file so
//! that a resumed run keeps and samples exactly the same images as an uninterrupted one.
//!
//! # File format (version 1, little-endian)
//! ```text
//! offset  size        field
//!      0     8        magic b"CROMOBUF"
//!      8     4        version (u32) = 1
//!     12    12        height, width, channels (u32 each)
//!     24     8        capacity (u64, images)
//!     32     8        len (u64, images stored)
//!     40     8        seen (u64, images offered so far)
//!     48    32        random generator state (4 × u64, xoshiro256++)
//!     80  4·len       task id of each slot (u32)
//!      …  4·len       label of each slot (u32; 0xFFFF_FFFF = none)
//!      …  len·h·w·c   pixels, slot after slot (HWC u8)
//!      …     4        CRC-32 (IEEE, as zlib/gzip) of every preceding byte
//! ```

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// The capacity used by the papers for 2–5 tasks (CroMo-Mixup, CaSSLe ER baselines).
pub const DEFAULT_CAPACITY: usize = 500;

const MAGIC: &[u8; 8] = b"CROMOBUF";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 80;
const NO_LABEL: u32 = u32::MAX;

/// A fixed-capacity reservoir of raw images (see the module docs).
#[derive(Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    height: usize,
    width: usize,
    channels: usize,
    image_bytes: usize,
    /// `capacity × image_bytes`, allocated once; slots `0..len` are valid.
    pixels: Vec<u8>,
    tasks: Vec<u32>,
    labels: Vec<u32>,
    len: usize,
    seen: u64,
    rng: Xoshiro256pp,
    /// Reused by [`ReplayBuffer::sample_into`] (capacity `capacity`).
    scratch: Vec<usize>,
}

impl std::fmt::Debug for ReplayBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBuffer")
            .field("capacity", &self.capacity)
            .field("image", &(self.height, self.width, self.channels))
            .field("len", &self.len)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl ReplayBuffer {
    /// An empty buffer for `capacity` images of `height × width × channels` bytes, its random
    /// generator seeded with `seed`. Allocates the whole pixel store now. Errors: a zero
    /// capacity or dimension, or a store too large to address.
    pub fn new(
        capacity: usize,
        height: usize,
        width: usize,
        channels: usize,
        seed: u64,
    ) -> Result<Self> {
        let mut b = Self::empty(capacity, height, width, channels)?;
        b.rng = Xoshiro256pp::seed_from_u64(seed);
        Ok(b)
    }

    fn empty(capacity: usize, height: usize, width: usize, channels: usize) -> Result<Self> {
        if capacity == 0 || height == 0 || width == 0 || channels == 0 {
            return Err(Error::invalid(format!(
                "replay buffer: capacity and image size must be > 0, got capacity {capacity}, \
                 image {height}x{width}x{channels}"
            )));
        }
        let too_big = || {
            Error::invalid(format!(
                "replay buffer: {capacity} images of {height}x{width}x{channels} bytes do not \
                 fit in memory"
            ))
        };
        let image_bytes = height
            .checked_mul(width)
            .and_then(|x| x.checked_mul(channels))
            .filter(|&x| x <= u32::MAX as usize)
            .ok_or_else(too_big)?;
        let total = capacity.checked_mul(image_bytes).ok_or_else(too_big)?;
        let mut pixels = Vec::new();
        pixels.try_reserve_exact(total).map_err(|_| too_big())?;
        pixels.resize(total, 0);
        Ok(ReplayBuffer {
            capacity,
            height,
            width,
            channels,
            image_bytes,
            pixels,
            tasks: vec![0; capacity],
            labels: vec![NO_LABEL; capacity],
            len: 0,
            seen: 0,
            rng: Xoshiro256pp::seed_from_u64(0),
            scratch: Vec::with_capacity(capacity),
        })
    }

    /// Maximum number of images held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of images held (`min(seen, capacity)`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no image is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of images offered so far (the `n` of the reservoir).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Image size `(height, width, channels)`.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.height, self.width, self.channels)
    }

    /// Bytes of one image (`height × width × channels`).
    pub fn image_bytes(&self) -> usize {
        self.image_bytes
    }

    /// Offers the next image of the stream (HWC `u8`, [`image_bytes`](Self::image_bytes) long)
    /// from task `task`; returns whether it was stored. Algorithm R: the `n`-th image offered is
    /// stored in slot `n − 1` while the buffer fills, then replaces slot `j` for `j` uniform in
    /// `0..n` when `j < capacity` (else it is dropped). Errors: an image of the wrong size.
    pub fn offer(&mut self, image: &[u8], task: u32) -> Result<bool> {
        self.offer_inner(image, task, NO_LABEL)
    }

    /// [`offer`](Self::offer) recording the image's class label for evaluation (never used for
    /// training). Errors: a wrong-size image, the reserved label `u32::MAX`.
    pub fn offer_labeled(&mut self, image: &[u8], task: u32, label: u32) -> Result<bool> {
        if label == NO_LABEL {
            return Err(Error::invalid(
                "replay buffer: label u32::MAX is reserved for \"no label\"",
            ));
        }
        self.offer_inner(image, task, label)
    }

    fn offer_inner(&mut self, image: &[u8], task: u32, label: u32) -> Result<bool> {
        if image.len() != self.image_bytes {
            return Err(Error::invalid(format!(
                "replay buffer holds {}x{}x{} images ({} bytes), offered an image of {} bytes",
                self.height,
                self.width,
                self.channels,
                self.image_bytes,
                image.len()
            )));
        }
        self.seen += 1;
        let slot = if self.len < self.capacity {
            self.len += 1;
            self.len - 1
        } else {
            let j = self.rng.below(self.seen);
            if j >= self.capacity as u64 {
                return Ok(false);
            }
            j as usize
        };
        let b = self.image_bytes;
        self.pixels[slot * b..(slot + 1) * b].copy_from_slice(image);
        self.tasks[slot] = task;
        self.labels[slot] = label;
        Ok(true)
    }

    /// The pixels of slot `i` (HWC `u8`), `None` if `i >= len()`.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        (i < self.len).then(|| &self.pixels[i * self.image_bytes..(i + 1) * self.image_bytes])
    }

    /// The task id of slot `i`, `None` if `i >= len()`.
    pub fn task_of(&self, i: usize) -> Option<u32> {
        (i < self.len).then(|| self.tasks[i])
    }

    /// The evaluation label of slot `i`, `None` if `i >= len()` or it was offered unlabeled.
    pub fn label_of(&self, i: usize) -> Option<u32> {
        (i < self.len && self.labels[i] != NO_LABEL).then(|| self.labels[i])
    }

    /// Number of slots eligible for [`sample`](Self::sample) with `only_tasks_before`.
    pub fn count(&self, only_tasks_before: Option<u32>) -> usize {
        match only_tasks_before {
            None => self.len,
            Some(t) => self.tasks[..self.len].iter().filter(|&&k| k < t).count(),
        }
    }

    /// `min(m, eligible)` distinct slot indices drawn uniformly without replacement, in random
    /// order, from the slots whose task id is `< t` when `only_tasks_before = Some(t)` (all slots
    /// when `None`). Returns fewer than `m` (possibly none) when not enough slots are eligible:
    /// the caller decides whether a short draw is acceptable (see [`count`](Self::count)).
    pub fn sample(&mut self, m: usize, only_tasks_before: Option<u32>) -> Vec<usize> {
        let mut out = Vec::with_capacity(m.min(self.len));
        self.sample_into(m, only_tasks_before, &mut out);
        out
    }

    /// [`sample`](Self::sample) into `out` (cleared first), allocating nothing once `out` has
    /// room. Partial Fisher–Yates over the eligible slots.
    pub fn sample_into(&mut self, m: usize, only_tasks_before: Option<u32>, out: &mut Vec<usize>) {
        out.clear();
        self.scratch.clear();
        self.scratch
            .extend((0..self.len).filter(|&i| only_tasks_before.is_none_or(|t| self.tasks[i] < t)));
        let n = self.scratch.len();
        let k = m.min(n);
        for i in 0..k {
            let j = i + self.rng.below((n - i) as u64) as usize;
            self.scratch.swap(i, j);
            out.push(self.scratch[i]);
        }
    }

    /// Appends the pixels of the slots `indices`, in order, to `out` (a batch in NHWC `u8`).
    /// Errors: an index `>= len()`.
    pub fn gather(&self, indices: &[usize], out: &mut Vec<u8>) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len) {
            return Err(Error::invalid(format!(
                "replay buffer: slot {bad} requested, the buffer holds {} images",
                self.len
            )));
        }
        out.reserve(indices.len() * self.image_bytes);
        for &i in indices {
            out.extend_from_slice(&self.pixels[i * self.image_bytes..(i + 1) * self.image_bytes]);
        }
        Ok(())
    }

    /// Writes the buffer (images, task ids, labels, counters and random generator state) to
    /// `path` in the format of the module docs. Atomic: written to a temporary file in the same
    /// folder, synced to disk, then renamed over `path`; on error no file is left behind.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fsutil::write_atomic_with(path.as_ref(), |file| {
            let mut w = CrcWriter {
                inner: &mut *file,
                crc: flate2::Crc::new(),
            };
            self.write_body(&mut w)?;
            let crc = w.crc.sum();
            file.write_all(&crc.to_le_bytes())
        })
    }

    fn write_body(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        for d in [self.height, self.width, self.channels] {
            w.write_all(&(d as u32).to_le_bytes())?;
        }
        for v in [self.capacity as u64, self.len as u64, self.seen] {
            w.write_all(&v.to_le_bytes())?;
        }
        for s in self.rng.s {
            w.write_all(&s.to_le_bytes())?;
        }
        for &t in &self.tasks[..self.len] {
            w.write_all(&t.to_le_bytes())?;
        }
        for &l in &self.labels[..self.len] {
            w.write_all(&l.to_le_bytes())?;
        }
        w.write_all(&self.pixels[..self.len * self.image_bytes])
    }

    /// Reads a buffer written by [`save`](Self::save). Errors (naming the file): unreadable,
    /// not a replay buffer file, an unsupported version, truncated or with trailing bytes, a
    /// checksum mismatch, or inconsistent counters.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::bad_data(path, format!("replay buffer file: {msg}"));
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(bad(format!(
                "truncated: {} bytes, the header alone is {HEADER_BYTES}",
                bytes.len()
            )));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad("not a cromo replay buffer (bad magic bytes)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "unsupported version {version} (this build reads {VERSION})"
            )));
        }
        let (h, w, c) = (
            u32_at(12) as usize,
            u32_at(16) as usize,
            u32_at(20) as usize,
        );
        let (capacity, len, seen) = (u64_at(24), u64_at(32), u64_at(40));
        let image_bytes = (h as u64) * (w as u64) * (c as u64);
        let expected = len
            .checked_mul(8 + image_bytes)
            .and_then(|x| x.checked_add((HEADER_BYTES + 4) as u64));
        if expected != Some(bytes.len() as u64) {
            let what = if expected.is_some_and(|e| e > bytes.len() as u64) {
                "truncated"
            } else {
                "corrupt"
            };
            return Err(bad(format!(
                "{what}: the header describes {len} images of {h}x{w}x{c} bytes ({} bytes in \
                 all), the file has {} bytes",
                expected.map_or("too many".to_string(), |e| e.to_string()),
                bytes.len()
            )));
        }
        let body = bytes.len() - 4;
        let stored = u32_at(body);
        let mut crc = flate2::Crc::new();
        crc.update(&bytes[..body]);
        if crc.sum() != stored {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:08x}, computed {:08x}): the file is corrupt",
                crc.sum()
            )));
        }
        if len > capacity || len != seen.min(capacity) {
            return Err(bad(format!(
                "inconsistent counters: {len} images stored, capacity {capacity}, {seen} seen"
            )));
        }
        let rng = Xoshiro256pp {
            s: [u64_at(48), u64_at(56), u64_at(64), u64_at(72)],
        };
        if rng.s == [0; 4] {
            return Err(bad("invalid random generator state (all zero)".into()));
        }
        let capacity =
            usize::try_from(capacity).map_err(|_| bad(format!("capacity {capacity} too large")))?;
        let len = len as usize;
        let mut b = Self::empty(capacity, h, w, c).map_err(|e| bad(e.to_string()))?;
        let mut o = HEADER_BYTES;
        for i in 0..len {
            b.tasks[i] = u32_at(o + 4 * i);
        }
        o += 4 * len;
        for i in 0..len {
            b.labels[i] = u32_at(o + 4 * i);
        }
        o += 4 * len;
        let n = len * b.image_bytes;
        b.pixels[..n].copy_from_slice(&bytes[o..o + n]);
        b.len = len;
        b.seen = seen;
        b.rng = rng;
        Ok(b)
    }
}

/// A writer that keeps a running CRC-32 of what goes through it.
struct CrcWriter<W: Write> {
    inner: W,
    crc: flate2::Crc,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// xoshiro256++ (Blackman & Vigna), seeded by SplitMix64: a small generator whose whole state
/// (four words) is saved with the buffer, so a loaded buffer continues the same sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Xoshiro256pp {
    s: [u64; 4],
}

impl Xoshiro256pp {
    fn seed_from_u64(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        // SplitMix64 never yields four zero words in a row, so the state is valid.
        Xoshiro256pp {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`), unbiased (Lemire's multiply-and-reject).
    fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Xoshiro256pp;

    /// Reference outputs of xoshiro256++ for the state {1, 2, 3, 4} (the C reference
    /// implementation, xoshiro256plusplus.c).
    #[test]
    fn xoshiro_matches_reference_sequence() {
        let mut r = Xoshiro256pp { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, [41943041, 58720359, 3588806011781223]);
    }
}

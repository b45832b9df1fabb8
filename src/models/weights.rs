//! Weights I/O: strict safetensors loading into a [`VarMap`], atomic saving, and `inspect`.
//!
//! **Where parameters live.** Loading puts every tensor the architecture asks for into a
//! [`VarMap`] (as a [`Var`], converted to the requested dtype) and the encoder is then built from
//! that map, so the model and the map share storage: training can hand the map's variables to an
//! optimiser and saving the map saves the model.
//!
//! **BatchNorm running statistics** are held the way candle's `batch_norm` holds them: as `Var`s
//! named `<bn>.running_mean` / `<bn>.running_var` in the *same* `VarMap`, updated in place by every
//! train-mode forward (momentum 0.1, unbiased variance, like PyTorch). They are state, not
//! parameters: never give them to an optimiser; use [`trainable_vars`], which leaves out
//! `running_mean`, `running_var` and `num_batches_tracked`. PyTorch's integer
//! `num_batches_tracked` counters are not kept at all (candle's BatchNorm has no use for them);
//! loading skips them and saving does not write them (PyTorch's `load_state_dict` accepts their
//! absence).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors, TensorView};

use super::{build_encoder, Arch, Classifier, Encoder};
use crate::{Error, Result};

/// How many names each category of a strict-loading error lists before "... and N more".
const MAX_LISTED: usize = 12;

/// A tensor an architecture asks for: its PyTorch state_dict name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A `SimpleBackend` that records every tensor a model asks for and hands out zero views
/// (broadcast from one element, so nothing of the model's size is allocated).
struct Recorder {
    seen: Mutex<Vec<TensorSpec>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.seen
            .lock()
            .expect("recorder lock poisoned")
            .push(TensorSpec {
                name: name.to_string(),
                shape: s.dims().to_vec(),
            });
        Tensor::zeros(1, dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("recorder: `{name}` requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// The tensors `arch` asks for, in construction order; with `head = Some(classes)` the
/// classifier head (`fc` / `_fc`, weight (classes, D) and bias (classes)) is included.
pub fn expected_tensors(arch: Arch, head: Option<usize>) -> Result<Vec<TensorSpec>> {
    let rec = Recorder {
        seen: Mutex::new(Vec::new()),
    };
    {
        let vb = VarBuilder::from_backend(Box::new(&rec), DType::F32, Device::Cpu);
        match head {
            Some(classes) => drop(Classifier::new(arch, vb, classes)?),
            None => drop(build_encoder(arch, vb)?),
        }
    }
    Ok(rec.seen.into_inner().expect("recorder lock poisoned"))
}

impl SimpleBackend for &Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        (**self).get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        (**self).get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        (**self).contains_tensor(name)
    }
}

/// What a successful load did besides loading the expected tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Classifier-head tensors present in the file but not requested (not loaded).
    pub skipped: Vec<String>,
    /// Number of integer BatchNorm `num_batches_tracked` counters ignored.
    pub ignored_counters: usize,
    /// Number of classes of the loaded head, when a head was requested.
    pub num_classes: Option<usize>,
    /// Number of tensors loaded into the VarMap.
    pub loaded: usize,
}

/// Weights loaded into their own [`VarMap`] (names without prefix).
pub struct LoadedWeights {
    pub varmap: VarMap,
    pub report: LoadReport,
    pub dtype: DType,
    pub device: Device,
}

impl LoadedWeights {
    /// A builder over the loaded map, for building the model that uses these weights.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_varmap(&self.varmap, self.dtype, &self.device)
    }
}

/// An encoder with the VarMap that holds its weights.
pub struct LoadedEncoder {
    pub encoder: Box<dyn Encoder>,
    pub weights: LoadedWeights,
}

/// A classifier (encoder + the checkpoint's head) with the VarMap that holds its weights.
pub struct LoadedClassifier {
    pub classifier: Classifier,
    pub weights: LoadedWeights,
}

/// Loads `path` for `arch` into a new VarMap as `dtype` on `device` (see [`load_into`]).
pub fn load_varmap(
    path: impl AsRef<Path>,
    arch: Arch,
    head: bool,
    dtype: DType,
    device: &Device,
) -> Result<LoadedWeights> {
    let varmap = VarMap::new();
    let report = load_into(path, arch, head, &varmap, "", dtype, device)?;
    Ok(LoadedWeights {
        varmap,
        report,
        dtype,
        device: device.clone(),
    })
}

/// Loads the encoder of `arch` (f32) from `path`; a head in the file is skipped and reported.
pub fn load_encoder(path: impl AsRef<Path>, arch: Arch, device: &Device) -> Result<LoadedEncoder> {
    let weights = load_varmap(path, arch, false, DType::F32, device)?;
    let encoder = build_encoder(arch, weights.var_builder())?;
    Ok(LoadedEncoder { encoder, weights })
}

/// Loads encoder and classifier head (`fc` / `_fc`, any number of classes) of `arch` (f32).
pub fn load_classifier(
    path: impl AsRef<Path>,
    arch: Arch,
    device: &Device,
) -> Result<LoadedClassifier> {
    let weights = load_varmap(path, arch, true, DType::F32, device)?;
    let classes = weights.report.num_classes.expect("head requested");
    let classifier = Classifier::new(arch, weights.var_builder(), classes)?;
    Ok(LoadedClassifier {
        classifier,
        weights,
    })
}

/// Strictly loads the safetensors file `path` for `arch` into `varmap`, under `prefix`
/// (`""` for none, else e.g. `"backbone"` giving `backbone.conv1.weight`).
///
/// The file may hold f32, f16, bf16 or f64 tensors; each is converted to `dtype`. Every tensor
/// the architecture asks for must be present with its exact shape; any other tensor is an error,
/// except integer `*.num_batches_tracked` counters of BatchNorms the model has (ignored) and, when
/// `head` is false, the classifier head (`fc.*` / `_fc.*`, listed in [`LoadReport::skipped`]).
/// With `head` true the head must be there; its class count is read from the file.
/// All missing, unexpected, mis-shaped and non-float tensors are reported together, by name, in
/// one [`Error::Weights`]. A variable already in `varmap` under the same name is overwritten in
/// place (shape and dtype must match). Nothing is inserted when an error is returned.
pub fn load_into(
    path: impl AsRef<Path>,
    arch: Arch,
    head: bool,
    varmap: &VarMap,
    prefix: &str,
    dtype: DType,
    device: &Device,
) -> Result<LoadReport> {
    let path = path.as_ref();
    check_float_dtype(dtype)?;
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
            what: format!("{arch} weights (.safetensors)"),
        },
        _ => Error::io(path, e),
    })?;
    let st = parse(path, &bytes)?;
    let file: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();

    let head_prefix = format!("{}.", arch.head_prefix());
    let mut num_classes = None;
    if head {
        let wname = format!("{head_prefix}weight");
        match file.get(&wname) {
            Some(v) if v.shape().len() == 2 => num_classes = Some(v.shape()[0]),
            Some(v) => {
                return Err(weights_err(
                    path,
                    format!(
                        "classifier head `{wname}` has shape {:?}, expected (classes, {})",
                        v.shape(),
                        arch.feature_dim()
                    ),
                ))
            }
            None => {
                if let Some(guess) = guess_arch(&file).filter(|g| *g != arch.name()) {
                    return Err(weights_err(
                        path,
                        format!(
                            "not {arch} weights: it looks like {guess} weights (pass \
                             --arch {guess}, or weights made for {arch})"
                        ),
                    ));
                }
                return Err(weights_err(
                    path,
                    format!(
                        "has no classifier head `{head_prefix}*` for {arch} (an encoder-only checkpoint?)"
                    ),
                ));
            }
        }
    }
    let expected = expected_tensors(arch, num_classes)?;
    let expected_names: HashSet<&str> = expected.iter().map(|t| t.name.as_str()).collect();

    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut bad_dtype = Vec::new();
    for spec in &expected {
        match file.get(&spec.name) {
            None => missing.push(spec.name.clone()),
            Some(v) if v.shape() != spec.shape.as_slice() => misshaped.push(format!(
                "{} is {:?} in the file, {arch} needs {:?}",
                spec.name,
                v.shape(),
                spec.shape
            )),
            Some(v) if !is_float(v.dtype()) => bad_dtype.push(format!(
                "{} is {:?} (need F32, F16, BF16 or F64)",
                spec.name,
                v.dtype()
            )),
            Some(_) => {}
        }
    }
    let mut unexpected = Vec::new();
    let mut skipped = Vec::new();
    let mut ignored_counters = 0;
    let mut names: Vec<&String> = file.keys().collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    for name in names {
        if expected_names.contains(name.as_str()) {
            continue;
        }
        if let Some(bn) = name.strip_suffix(".num_batches_tracked") {
            if expected_names.contains(format!("{bn}.running_mean").as_str()) {
                ignored_counters += 1;
                continue;
            }
        }
        if !head && name.starts_with(&head_prefix) {
            skipped.push(name.clone());
            continue;
        }
        unexpected.push(name.clone());
    }

    if !(missing.is_empty()
        && unexpected.is_empty()
        && misshaped.is_empty()
        && bad_dtype.is_empty())
    {
        let mut msg = format!(
            "does not fit {arch}: {} missing, {} unexpected, {} mis-shaped, {} non-float of {} expected tensors",
            missing.len(),
            unexpected.len(),
            misshaped.len(),
            bad_dtype.len(),
            expected.len()
        );
        if let Some(guess) = guess_arch(&file) {
            if guess != arch.name() {
                let _ = write!(msg, "; it looks like {guess} weights");
            }
        }
        list(&mut msg, "missing", &missing);
        list(&mut msg, "unexpected", &unexpected);
        list(&mut msg, "mis-shaped", &misshaped);
        list(&mut msg, "non-float", &bad_dtype);
        return Err(weights_err(path, msg));
    }

    let mut loaded = Vec::with_capacity(expected.len());
    for spec in &expected {
        let view = &file[&spec.name];
        let t = view
            .load(device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(|e| weights_err(path, format!("cannot read `{}`: {e}", spec.name)))?;
        let key = if prefix.is_empty() {
            spec.name.clone()
        } else {
            format!("{prefix}.{}", spec.name)
        };
        loaded.push((key, t));
    }
    let n = loaded.len();
    let mut data = varmap.data().lock().expect("VarMap lock poisoned");
    for (key, t) in &loaded {
        if let Some(var) = data.get(key) {
            if var.shape() != t.shape() || var.dtype() != t.dtype() {
                return Err(weights_err(
                    path,
                    format!(
                        "`{key}` is already in the VarMap as {:?} {:?}, the file gives {:?} {:?}",
                        var.dtype(),
                        var.shape(),
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
        }
    }
    for (key, t) in loaded {
        match data.get(&key) {
            Some(var) => var.set(&t)?,
            None => {
                data.insert(key, Var::from_tensor(&t)?);
            }
        }
    }
    Ok(LoadReport {
        skipped,
        ignored_counters,
        num_classes,
        loaded: n,
    })
}

fn weights_err(path: &Path, msg: String) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        msg,
    }
}

fn list(msg: &mut String, what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(msg, "\n  {what} ({}): ", items.len());
    let shown = items.len().min(MAX_LISTED);
    msg.push_str(&items[..shown].join(", "));
    if items.len() > shown {
        let _ = write!(msg, ", ... and {} more", items.len() - shown);
    }
}

/// Which known checkpoint family the file's names look like (for wrong-arch messages).
fn guess_arch(file: &HashMap<String, TensorView<'_>>) -> Option<&'static str> {
    if file.contains_key("_conv_stem.weight") {
        return Some(Arch::EfficientNetLite0.name());
    }
    if file.contains_key("conv_stem.weight") {
        return Some("timm EfficientNet");
    }
    if file.contains_key("stages.0.conv.weight") {
        return Some(Arch::SmallCnn.name());
    }
    if file.contains_key("layer1.0.conv1.weight") {
        let resnet18 = file.contains_key("layer4.1.conv2.weight")
            && !file.contains_key("layer4.2.conv1.weight")
            && !file.contains_key("layer1.0.conv3.weight");
        return Some(match file.get("conv1.weight").map(|v| v.shape()) {
            Some([64, 3, 7, 7]) if resnet18 => Arch::ResNet18.name(),
            Some([64, 3, 3, 3]) if resnet18 => Arch::ResNet18Cifar.name(),
            _ => "ResNet (not ResNet-18)",
        });
    }
    None
}

fn is_float(d: StDtype) -> bool {
    matches!(
        d,
        StDtype::F32 | StDtype::F16 | StDtype::BF16 | StDtype::F64
    )
}

fn check_float_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        d => Err(Error::invalid(format!(
            "weights dtype must be f32, f16 or bf16, not {d:?}"
        ))),
    }
}

/// Parses a whole safetensors file held in memory, with errors that say what is wrong.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| header_error(path, bytes.len(), e))
}

fn header_error(path: &Path, file_len: usize, e: SafeTensorError) -> Error {
    let msg = match e {
        SafeTensorError::HeaderTooSmall => format!(
            "not a safetensors file: {file_len} bytes, shorter than the 8-byte header length"
        ),
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooLarge => {
            "not a safetensors file or truncated: the header length in the first 8 bytes \
             runs past the end of the file"
                .to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "truncated or corrupt safetensors file: the header's tensor offsets do not end at \
             the file's end ({file_len} bytes)"
        ),
        e => format!("corrupt safetensors header: {e}"),
    };
    Error::bad_data(path, msg)
}

/// Whether `name` is BatchNorm state rather than a trainable parameter
/// (`running_mean`, `running_var`, `num_batches_tracked`).
pub fn is_bn_buffer(name: &str) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    matches!(leaf, "running_mean" | "running_var" | "num_batches_tracked")
}

/// The variables of `varmap` under `prefix` (`""` for all) an optimiser may update: every
/// float variable except BatchNorm running statistics, sorted by name (natural order).
pub fn trainable_vars(varmap: &VarMap, prefix: &str) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut out: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, var)| {
            under_prefix(name, prefix) && !is_bn_buffer(name) && var.dtype().is_float()
        })
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    out
}

fn under_prefix(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// All tensors of `varmap` (current values), sorted by name (natural order).
pub fn named_tensors(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut out: Vec<(String, Tensor)> = data
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    out
}

/// Saves every variable of `varmap` to `path` as safetensors (see [`save_tensors`]).
pub fn save_varmap(varmap: &VarMap, path: impl AsRef<Path>, dtype: DType) -> Result<()> {
    save_tensors(&named_tensors(varmap), path, dtype)
}

/// Saves named tensors to `path` as safetensors, float tensors converted to `dtype` (f32, f16 or
/// bf16; integer tensors are written as they are). Atomic: the bytes go to a temporary file in the
/// same folder, which is flushed to disk and then renamed over `path`; on error no file is left.
pub fn save_tensors<S: AsRef<str>>(
    tensors: &[(S, Tensor)],
    path: impl AsRef<Path>,
    dtype: DType,
) -> Result<()> {
    let path = path.as_ref();
    check_float_dtype(dtype)?;
    let mut seen = HashSet::new();
    let mut prepared = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let name = name.as_ref();
        if !seen.insert(name) {
            return Err(Error::invalid(format!(
                "saving {}: tensor name `{name}` given twice",
                path.display()
            )));
        }
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t.clone()
        };
        prepared.push((name.to_string(), t.to_device(&Device::Cpu)?.contiguous()?));
    }
    let bytes = safetensors::tensor::serialize(prepared.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| Error::invalid(format!("saving {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

use crate::fsutil::write_atomic;

/// One row of [`inspect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// safetensors dtype name: `F32`, `F16`, `BF16`, `I64`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    pub numel: usize,
    /// Bytes of data in the file.
    pub bytes: usize,
}

/// Lists the tensors of a safetensors file, sorted by name in natural order (`_blocks.2` before
/// `_blocks.10`). Reads and checks the header against the file length without loading the data.
pub fn inspect(path: impl AsRef<Path>) -> Result<Vec<TensorInfo>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
            what: "safetensors file".into(),
        },
        _ => Error::io(path, e),
    })?;
    // SAFETY: the map is only read, and only the header pages are touched; a concurrent
    // truncation by another process is the one way to fault, as with any mapped read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (_, meta) =
        SafeTensors::read_metadata(&map).map_err(|e| header_error(path, map.len(), e))?;
    let mut rows: Vec<TensorInfo> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let numel = info.shape.iter().product();
            TensorInfo {
                name,
                dtype: format!("{:?}", info.dtype),
                shape: info.shape.clone(),
                numel,
                bytes: info.data_offsets.1 - info.data_offsets.0,
            }
        })
        .collect();
    rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok(rows)
}

/// Formats [`inspect`] rows as a table: one line per tensor (name, dtype, shape, elements)
/// and a total line (tensors, elements, data bytes, and per-dtype counts).
pub fn format_inspect(rows: &[TensorInfo]) -> String {
    let shapes: Vec<String> = rows.iter().map(|r| format_shape(&r.shape)).collect();
    let numels: Vec<String> = rows.iter().map(|r| group_digits(r.numel)).collect();
    let wn = rows
        .iter()
        .map(|r| r.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let wd = rows
        .iter()
        .map(|r| r.dtype.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let ws = shapes.iter().map(|s| s.len()).chain([5]).max().unwrap_or(5);
    let we = numels.iter().map(|s| s.len()).chain([8]).max().unwrap_or(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<wn$}  {:<wd$}  {:<ws$}  {:>we$}",
        "name", "dtype", "shape", "elements"
    );
    for ((r, s), e) in rows.iter().zip(&shapes).zip(&numels) {
        let _ = writeln!(
            out,
            "{:<wn$}  {:<wd$}  {:<ws$}  {:>we$}",
            r.name, r.dtype, s, e
        );
    }
    let total: usize = rows.iter().map(|r| r.numel).sum();
    let bytes: usize = rows.iter().map(|r| r.bytes).sum();
    let mut by_dtype: Vec<(String, usize, usize)> = Vec::new();
    for r in rows {
        match by_dtype.iter_mut().find(|(d, _, _)| *d == r.dtype) {
            Some(e) => {
                e.1 += 1;
                e.2 += r.numel;
            }
            None => by_dtype.push((r.dtype.clone(), 1, r.numel)),
        }
    }
    by_dtype.sort();
    let parts: Vec<String> = by_dtype
        .iter()
        .map(|(d, n, e)| format!("{d}: {}, {}", count(*n, "tensor"), count(*e, "element")))
        .collect();
    let _ = writeln!(
        out,
        "total: {}, {}, {} ({})",
        count(rows.len(), "tensor"),
        count(total, "element"),
        count(bytes, "byte"),
        parts.join("; ")
    );
    out
}

fn format_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// (1, "tensor") -> "1 tensor", (4010, "element") -> "4,010 elements".
fn count(n: usize, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {what}{s}", group_digits(n))
}

/// 1234567 -> "1,234,567".
fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Compares names with embedded numbers by value: `layer2` < `layer10`, `_blocks.9` < `_blocks.10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let ord = da
                    .len()
                    .cmp(&db.len())
                    .then_with(|| da.cmp(db))
                    .then(na.cmp(&nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "_blocks.10.a",
            "_blocks.2.a",
            "_blocks.1.b",
            "_bn0",
            "layer10",
            "layer2",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "_blocks.1.b",
                "_blocks.2.a",
                "_blocks.10.a",
                "_bn0",
                "layer2",
                "layer10"
            ]
        );
    }

    #[test]
    fn digit_groups() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(11_689_512), "11,689,512");
    }

    #[test]
    fn bn_buffers() {
        assert!(is_bn_buffer("layer1.0.bn1.running_mean"));
        assert!(is_bn_buffer("bn1.running_var"));
        assert!(is_bn_buffer("_bn0.num_batches_tracked"));
        assert!(!is_bn_buffer("bn1.weight"));
        assert!(!is_bn_buffer("running_meanx"));
    }
}

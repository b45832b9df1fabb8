//! Inference on frames: load an encoder with its classifier head, classify images, top-k.
//!
//! Used by `cromo infer` and the example apps. Images are preprocessed as the architecture
//! expects ([`Arch::input_size`], [`Arch::mean`], [`Arch::std`]): for 224-pixel models the shorter
//! side is resized to 256 and the centre 224 × 224 cropped (the torchvision/timm evaluation
//! transform); smaller models resize the shorter side to their input size and crop the centre.

pub mod plan;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};

use crate::data::transform::preprocess_photo;
use crate::eval::LinearProbe;
use crate::models::weights::{load_classifier, load_encoder, LoadedClassifier, LoadedEncoder};
use crate::models::Arch;
use crate::{Error, Result};

/// File extensions (lower case) read as images.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// One ranked class of a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class id (row of the checkpoint's head, or the probe's global class id).
    pub class: usize,
    /// Class name from the labels file, or the index as text when no labels were given.
    pub name: String,
    /// Softmax probability.
    pub prob: f32,
}

/// What turns images into class scores.
enum Model {
    /// An encoder with the checkpoint's own classifier head (e.g. ImageNet).
    Checkpoint(LoadedClassifier),
    /// An encoder with a linear probe fitted on its frozen features (`cromo train` writes
    /// `encoder.safetensors` and `probe.safetensors`).
    Probe(LoadedEncoder, LinearProbe),
    /// An inference plan (encoder + checkpoint head or probe, BatchNorm folded) run by the WGSL
    /// kernels on a wgpu device; its buffers are reused from frame to frame.
    #[cfg(feature = "wgpu")]
    Gpu(std::sync::Mutex<crate::gpu::GpuPlan>),
}

/// An encoder + classifier (its own head or a linear probe), with class names.
pub struct ImageClassifier {
    arch: Arch,
    model: Model,
    labels: Vec<String>,
    /// Class id of each output row (the probe's global class ids, or 0..C).
    class_ids: Vec<usize>,
    device: Device,
}

impl ImageClassifier {
    /// Loads `model` (strictly, for `arch`, with its head) and the class names in `labels`
    /// (one per line; their number must equal the head's class count).
    pub fn load(model: &Path, arch: Arch, labels: Option<&Path>, device: &Device) -> Result<Self> {
        let loaded = load_classifier(model, arch, device)?;
        let classes = loaded.classifier.num_classes();
        let labels = class_names(labels, classes, model)?;
        Ok(Self {
            arch,
            model: Model::Checkpoint(loaded),
            class_ids: (0..labels.len()).collect(),
            labels,
            device: device.clone(),
        })
    }

    /// As [`ImageClassifier::load`] (with `probe`: [`ImageClassifier::with_probe`]), run on the
    /// wgpu device wgpu prefers through an inference plan (f32). No adapter is an error naming
    /// the backends tried.
    #[cfg(feature = "wgpu")]
    pub fn load_wgpu(
        model: &Path,
        arch: Arch,
        labels: Option<&Path>,
        probe: Option<&Path>,
    ) -> Result<Self> {
        use crate::gpu::{GpuContext, GpuPlan, Precision};
        use crate::infer::plan::{Head, InferencePlan};
        let (plan, labels, class_ids) = match probe {
            Some(pp) => {
                let p = LinearProbe::load(pp)?;
                check_probe(&p, arch, pp)?;
                let plan = InferencePlan::load(model, arch, Some(Head::Probe(&p)))?;
                let (labels, ids) = probe_labels(&p);
                (plan, labels, ids)
            }
            None => {
                let plan = InferencePlan::load(model, arch, Some(Head::Checkpoint))?;
                let classes = plan.out_dim();
                let labels = class_names(labels, classes, model)?;
                let ids = (0..classes).collect();
                (plan, labels, ids)
            }
        };
        let ctx = GpuContext::new()?;
        let gpu = GpuPlan::new(&ctx, &plan, Precision::F32)?;
        Ok(Self {
            arch,
            model: Model::Gpu(std::sync::Mutex::new(gpu)),
            labels,
            class_ids,
            device: Device::Cpu,
        })
    }

    /// Loads the encoder `model` (a head in the file is skipped) and the linear probe `probe`
    /// (`cromo train`'s `probe.safetensors`), whose class names label the output. The probe's
    /// feature width must equal the encoder's.
    pub fn with_probe(model: &Path, arch: Arch, probe: &Path, device: &Device) -> Result<Self> {
        let enc = load_encoder(model, arch, device)?;
        let p = LinearProbe::load(probe)?;
        check_probe(&p, arch, probe)?;
        let (labels, class_ids) = probe_labels(&p);
        Ok(Self {
            arch,
            class_ids,
            model: Model::Probe(enc, p),
            labels,
            device: device.clone(),
        })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Number of classes of the head.
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Preprocesses one decoded image into a (1,3,S,S) tensor on the model's device.
    pub fn preprocess(&self, img: &image::DynamicImage) -> Result<Tensor> {
        let (shorter, crop) = eval_sizes(self.arch);
        let x = preprocess_photo(img, shorter, crop, self.arch.mean(), self.arch.std())?;
        Ok(x.to_device(&self.device)?)
    }

    /// Class probabilities for a preprocessed batch: (B,3,S,S) -> (B, classes).
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        let logits = match &self.model {
            Model::Checkpoint(m) => m.classifier.logits(x)?,
            Model::Probe(enc, probe) => {
                let f = candle_core::ModuleT::forward_t(enc.encoder.as_ref(), x, false)?;
                probe.logits_tensor(&f.to_device(&Device::Cpu)?)?
            }
            #[cfg(feature = "wgpu")]
            Model::Gpu(plan) => plan
                .lock()
                .map_err(|_| Error::Gpu("the GPU plan's lock is poisoned".into()))?
                .run_tensor(x)?,
        };
        Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
    }

    /// The `k` most probable classes of each row of `probs` (B, classes), best first.
    pub fn top_k(&self, probs: &Tensor, k: usize) -> Result<Vec<Vec<Prediction>>> {
        let rows = probs.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                idx.into_iter()
                    .take(k)
                    .map(|c| Prediction {
                        class: self.class_ids[c],
                        name: self.labels[c].clone(),
                        prob: row[c],
                    })
                    .collect()
            })
            .collect())
    }
}

/// (resize shorter side to, centre crop) for the evaluation transform of `arch`.
pub fn eval_sizes(arch: Arch) -> (u32, u32) {
    let size = arch.input_size() as u32;
    if size >= 224 {
        (size * 8 / 7, size)
    } else {
        (size, size)
    }
}

/// Reads a labels file: one class name per line (line i+1 = class i); empty lines are an error.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(Error::bad_data(
            path,
            format!("line {} is empty (expected one class name per line)", i + 1),
        ));
    }
    Ok(names)
}

/// Decodes the image at `path`; a non-image or corrupt file is an [`Error::Image`] naming it.
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
            what: "an image file".into(),
        },
        _ => Error::io(path, e),
    })?;
    image::load_from_memory(&bytes).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Expands `inputs` (files and folders) into the list of image files to classify: a folder gives
/// its files with an image extension, sorted by name (not recursive); a file is taken as given
/// (and fails later if it is not an image). A missing path or a folder with no image is an error.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let rd = std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
            let mut files = Vec::new();
            for entry in rd {
                let path = entry.map_err(|e| Error::io(input, e))?.path();
                if path.is_file() && has_image_extension(&path) {
                    files.push(path);
                }
            }
            if files.is_empty() {
                return Err(Error::NotFound {
                    path: input.clone(),
                    what: format!("image files ({})", IMAGE_EXTENSIONS.join(", ")),
                });
            }
            files.sort();
            out.extend(files);
        } else if input.exists() {
            out.push(input.clone());
        } else {
            return Err(Error::NotFound {
                path: input.clone(),
                what: "an image file or a folder of images".into(),
            });
        }
    }
    Ok(out)
}

/// True when the file name ends in one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// The class names of `labels` (one per line; `classes` of them), or the class ids.
fn class_names(labels: Option<&Path>, classes: usize, model: &Path) -> Result<Vec<String>> {
    match labels {
        Some(path) => {
            let names = read_labels(path)?;
            if names.len() != classes {
                return Err(Error::bad_data(
                    path,
                    format!(
                        "{} class names, but the head of {} has {classes} classes",
                        names.len(),
                        model.display()
                    ),
                ));
            }
            Ok(names)
        }
        None => Ok((0..classes).map(|c| c.to_string()).collect()),
    }
}

/// The probe's feature width must be `arch`'s.
fn check_probe(p: &LinearProbe, arch: Arch, path: &Path) -> Result<()> {
    if p.dim != arch.feature_dim() {
        return Err(Error::bad_data(
            path,
            format!(
                "probe takes {}-d features, {arch} gives {}",
                p.dim,
                arch.feature_dim()
            ),
        ));
    }
    Ok(())
}

/// The probe's class names (or ids) and global class ids, in output order.
fn probe_labels(p: &LinearProbe) -> (Vec<String>, Vec<usize>) {
    let labels = p
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            p.class_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        })
        .collect();
    (labels, p.classes.iter().map(|&c| c as usize).collect())
}

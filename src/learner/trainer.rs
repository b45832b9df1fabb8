//! The class-incremental protocol behind `cromo train`: tasks of disjoint classes, each trained
//! with an SSL method under a continual strategy, evaluated after every task, checkpointed so a
//! killed run resumes exactly where it stopped.
//!
//! **Determinism.** Every random draw is derived from the run's seed and a counter — the class
//! order from the seed, the shuffle of an epoch from (seed, task, epoch), a step's augmentations
//! and mixing draws from (seed, task, step) — and the replay buffer keeps its own generator state
//! in the checkpoint. A resumed run therefore repeats the uninterrupted run's computation; on the
//! same machine and thread count it gives bit-identical weights.
//!
//! **Per task** (as CaSSLe and CroMo-Mixup train each task): a fresh optimiser and a warm-up +
//! cosine schedule over the task's steps; the method's per-task state is reset
//! ([`Method::begin_task`]); strategies with a frozen teacher snapshot it from the student before
//! the task's first step. The replay buffer is offered every current-task image once (in the
//! first epoch, in stream order) and sampled only for images of past tasks.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::buffer::ReplayBuffer;
use crate::continual::teacher::TeacherMode;
use crate::continual::{BufferViews, StepInput, Strategy, StrategyConfig, StrategyKind, Teacher};
use crate::data::augment::{augment_views, augment_views_raw, AugmentConfig};
use crate::data::transform::to_tensor;
use crate::data::{Dataset, ImageSet, LoadOptions, Split, TaskSplit};
use crate::eval::{
    coding_rate_reduction_views, feature_rows, per_task_accuracy, prediction_metrics,
    task_aware_accuracy, write_report, AccuracyMatrix, CodingRatePoint, InitRow, KnnConfig,
    KnnIndex, LinearProbe, ProbeConfig, RunReport, TaskRow, Timings,
};
use crate::learner::checkpoint::{self, Checkpoint, Position};
use crate::learner::optim::{
    AdamWConfig, GroupSpec, LarsConfig, Optimizer, OptimizerConfig, ParamGroups, SgdConfig,
};
use crate::learner::schedule::{scale_lr_by_batch, WarmupCosine};
use crate::methods::{Method, MethodConfig, MethodKind, MixKind};
use crate::models::{weights, Arch, Encoder};
use crate::{Error, Result};

/// Optimisers selectable with `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// LARS (η 0.02, BN and biases excluded, clipped), the papers' choice.
    Lars,
    /// SGD with momentum 0.9.
    Sgd,
    /// AdamW.
    AdamW,
}

impl std::str::FromStr for OptimKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lars" => Ok(OptimKind::Lars),
            "sgd" => Ok(OptimKind::Sgd),
            "adamw" => Ok(OptimKind::AdamW),
            _ => Err(Error::invalid(format!(
                "unknown optimizer `{s}` (expected lars, sgd or adamw)"
            ))),
        }
    }
}

/// Which evaluation runs after every task (`--eval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalKind {
    /// Linear probe (LA, TP, WP, task-aware accuracy, accuracy matrix, forgetting).
    Linear,
    /// kNN (k = 20, cosine, temperature-weighted).
    Knn,
    /// Both.
    Both,
    /// None (training only).
    None,
}

impl EvalKind {
    fn linear(self) -> bool {
        matches!(self, EvalKind::Linear | EvalKind::Both)
    }
    fn knn(self) -> bool {
        matches!(self, EvalKind::Knn | EvalKind::Both)
    }
}

impl std::str::FromStr for EvalKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(EvalKind::Linear),
            "knn" => Ok(EvalKind::Knn),
            "both" => Ok(EvalKind::Both),
            "none" => Ok(EvalKind::None),
            _ => Err(Error::invalid(format!(
                "unknown eval `{s}` (expected linear, knn, both or none)"
            ))),
        }
    }
}

/// The encoder's BatchNorm during training steps (`--bn`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnMode {
    /// Batch statistics of the augmented views, running statistics updated (the from-scratch
    /// recipe).
    #[default]
    Train,
    /// Running statistics frozen at their starting values (e.g. the pretrained ones); the
    /// BatchNorm scale and shift are still trained.
    Frozen,
}

impl std::str::FromStr for BnMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(BnMode::Train),
            "frozen" => Ok(BnMode::Frozen),
            _ => Err(Error::invalid(format!(
                "unknown --bn `{s}` (expected train or frozen)"
            ))),
        }
    }
}

/// The held-out data set of the retention probe (`--retention-probe`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionConfig {
    /// A data set name as for `--data` (`cifar10`, `tiny-imagenet`, ...) or a path.
    pub data: String,
    /// Where it lives (default: the matching file under the shared data folder).
    pub data_root: Option<PathBuf>,
    /// Training images per class the probe is fitted on (default 100).
    pub images_per_class: usize,
    /// Test images per class it is scored on (default 100).
    pub test_images_per_class: usize,
}

impl RetentionConfig {
    /// `data` with the default budgets (100 + 100 images per class).
    pub fn new(data: &str) -> Self {
        RetentionConfig {
            data: data.to_string(),
            data_root: None,
            images_per_class: 100,
            test_images_per_class: 100,
        }
    }
}

/// Everything that defines a training run (saved in the checkpoint and the report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// `cifar10`, `tiny-imagenet`, `mnist`, `fashion-mnist`, or a path (folder or archive with
    /// `train/` and `test/`).
    pub data: String,
    /// Where the named data set lives (default: the matching file under the shared data folder).
    pub data_root: Option<PathBuf>,
    /// Use at most this many training images per class (a smaller budget), first by file order.
    pub images_per_class: Option<usize>,
    /// Use at most this many test images per class for evaluation.
    pub test_images_per_class: Option<usize>,
    /// Number of tasks (must divide the number of classes).
    pub tasks: usize,
    pub arch: Arch,
    pub method: MethodKind,
    pub mix: Option<MixKind>,
    pub strategy: StrategyKind,
    pub epochs_per_task: usize,
    /// Current-task images per step.
    pub batch: usize,
    /// Replay buffer capacity in images (ER, CroMo-Mixup).
    pub buffer: usize,
    /// Buffer images drawn per step (ER, CroMo-Mixup; m = 64 on CIFAR).
    pub buffer_batch: usize,
    /// CroMo-Mixup's λ fixed (`None`: λ ~ Beta(1,1) per step).
    pub mix_lambda: Option<f64>,
    pub optimizer: OptimKind,
    /// Learning rate at batch 256 (scaled by batch/256); `None`: the method's default.
    pub lr: Option<f64>,
    /// Weight decay; `None`: the method's default.
    pub weight_decay: Option<f64>,
    /// Warm-up epochs of each task; `None`: 10, or a tenth of the epochs when a task has fewer
    /// than 100.
    pub warmup_epochs: Option<f64>,
    /// Frozen teacher in eval mode (default) or train mode (the authors' codes).
    pub teacher_mode: TeacherMode,
    pub seed: u64,
    /// Stop each task after this many steps (smoke runs).
    pub max_steps_per_task: Option<usize>,
    pub eval: EvalKind,
    /// Checkpoint every this many steps inside a task (0: only at task ends).
    pub checkpoint_every: usize,
    /// Stop (as if killed) after completing this task's checkpoint; for tests and staged runs.
    pub stop_after_task: Option<usize>,
    /// Encoder weights to start from (`--init`, torchvision / timm names as in `models/`);
    /// `None`: random initialisation from the seed. Heads always start fresh.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// The encoder's BatchNorm in training steps (`--bn`).
    #[serde(default)]
    pub bn: BnMode,
    /// Evaluate the starting encoder before the first task (LA and kNN over all classes, the
    /// retention probe): the random-init or pretrained baseline.
    #[serde(default = "default_true")]
    pub eval_init: bool,
    /// The retention probe's held-out data set, fitted before the first task and after each.
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
}

fn default_true() -> bool {
    true
}

impl TrainConfig {
    /// The defaults of DESIGN §5's quick protocol for `data`, `arch`, `method`, `strategy`.
    pub fn new(data: &str, arch: Arch, method: MethodKind, strategy: StrategyKind) -> Self {
        TrainConfig {
            data: data.to_string(),
            data_root: None,
            images_per_class: None,
            test_images_per_class: None,
            tasks: 2,
            arch,
            method,
            mix: None,
            strategy,
            epochs_per_task: 6,
            batch: 256,
            buffer: crate::buffer::DEFAULT_CAPACITY,
            buffer_batch: 64,
            mix_lambda: None,
            optimizer: OptimKind::Lars,
            lr: None,
            weight_decay: None,
            warmup_epochs: None,
            teacher_mode: TeacherMode::Eval,
            seed: 0,
            max_steps_per_task: None,
            eval: EvalKind::Linear,
            checkpoint_every: 0,
            stop_after_task: None,
            init: None,
            bn: BnMode::Train,
            eval_init: true,
            retention: None,
        }
    }

    /// Learning rate at batch 256 (DESIGN §3: SimCLR 0.4, Barlow 0.3, BYOL 1.0; MoCo, VICReg,
    /// CorInfoMax 0.3).
    pub fn base_lr(&self) -> f64 {
        self.lr.unwrap_or(match self.method {
            MethodKind::SimClr => 0.4,
            MethodKind::Byol => 1.0,
            _ => 0.3,
        })
    }

    /// Weight decay (DESIGN §3: SimCLR and BYOL 1e-5, Barlow 1e-4; the others 1e-4).
    pub fn wd(&self) -> f64 {
        self.weight_decay.unwrap_or(match self.method {
            MethodKind::SimClr | MethodKind::Byol => 1e-5,
            _ => 1e-4,
        })
    }

    fn warmup(&self) -> f64 {
        self.warmup_epochs
            .unwrap_or(if self.epochs_per_task >= 100 {
                10.0
            } else {
                self.epochs_per_task as f64 / 10.0
            })
    }

    /// Checks the numbers a run cannot start without.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::invalid(m.to_string()));
        if self.tasks == 0 {
            return bad("--tasks must be at least 1");
        }
        if self.epochs_per_task == 0 {
            return bad("--epochs-per-task must be at least 1");
        }
        if self.batch < 2 {
            return bad("--batch must be at least 2 (SSL losses compare samples of a batch)");
        }
        if self.strategy.needs_buffer() && (self.buffer == 0 || self.buffer_batch == 0) {
            return bad(
                "strategies er, cromo and cromo-data need --buffer > 0 and --buffer-batch > 0",
            );
        }
        if matches!(self.max_steps_per_task, Some(0)) {
            return bad("--max-steps-per-task must be at least 1");
        }
        if let Some(l) = self.mix_lambda {
            if !(0.0..=1.0).contains(&l) {
                return bad("--mix-lambda must lie in [0, 1]");
            }
        }
        if let Some(r) = &self.retention {
            if r.images_per_class == 0 || r.test_images_per_class == 0 {
                return bad(
                    "the retention probe needs at least 1 train and 1 test image per class",
                );
            }
        }
        Ok(())
    }
}

/// The labelled sets of a run and its class-incremental split.
pub struct TrainData {
    pub train: ImageSet,
    pub test: ImageSet,
    pub split: TaskSplit,
    /// The retention probe's held-out (train, test) sets, resized to the training image size.
    pub retention: Option<(ImageSet, ImageSet)>,
}

/// Loads the retention probe's sets of `r`, resized to `h`×`w` with `channels` channels.
pub fn load_retention(
    r: &RetentionConfig,
    h: usize,
    w: usize,
    channels: usize,
) -> Result<(ImageSet, ImageSet)> {
    let ds: Dataset = r.data.parse()?;
    let root = r.data_root.as_deref();
    let mut sets = Vec::with_capacity(2);
    for (split, n) in [
        (Split::Train, r.images_per_class),
        (Split::Test, r.test_images_per_class),
    ] {
        let opts = LoadOptions {
            max_per_class: Some(n),
            ..LoadOptions::default()
        };
        let set = ds.load(split, root, &opts)?;
        sets.push(resize_set(set, h, w, channels, &r.data)?);
    }
    let test = sets.pop().expect("two sets");
    let train = sets.pop().expect("two sets");
    Ok((train, test))
}

/// `set` with every image resized (Pillow-exact bilinear with antialias) to `h`×`w` and
/// converted to `channels` (1 → 3 repeats the grey level; 3 → 1 is refused).
fn resize_set(set: ImageSet, h: usize, w: usize, channels: usize, name: &str) -> Result<ImageSet> {
    if (set.height, set.width, set.channels) == (h, w, channels) {
        return Ok(set);
    }
    if set.channels != channels && !(set.channels == 1 && channels == 3) {
        return Err(Error::invalid(format!(
            "retention probe data `{name}` has {} channels, the training data {channels}",
            set.channels
        )));
    }
    let mut pixels = Vec::with_capacity(set.len() * h * w * channels);
    for i in 0..set.len() {
        let img = crate::data::transform::resize_u8(
            set.image(i),
            set.height,
            set.width,
            set.channels,
            h,
            w,
        )?;
        if set.channels == channels {
            pixels.extend_from_slice(&img);
        } else {
            pixels.extend(img.iter().flat_map(|&g| [g, g, g]));
        }
    }
    Ok(ImageSet {
        pixels,
        height: h,
        width: w,
        channels,
        ..set
    })
}

/// Linear-probe accuracy of `encoder` on the retention sets: a probe fitted on all of `train`'s
/// classes, scored on `test`.
pub fn retention_accuracy(
    encoder: &dyn Encoder,
    sets: &(ImageSet, ImageSet),
    device: &Device,
) -> Result<f64> {
    let (train, test) = sets;
    let all_train: Vec<usize> = (0..train.len()).collect();
    let all_test: Vec<usize> = (0..test.len()).collect();
    let ftrain = extract_features(encoder, train, &all_train, device)?;
    let ftest = extract_features(encoder, test, &all_test, device)?;
    let cfg = ProbeConfig {
        class_names: train.class_names.clone(),
        ..ProbeConfig::default()
    };
    let probe = LinearProbe::fit(&ftrain, encoder.feature_dim(), &train.labels, &cfg)?;
    probe.accuracy(&ftest, &test.labels)
}

/// Loads the train and test splits of `cfg.data` and splits the classes into `cfg.tasks` tasks
/// (class order from `cfg.seed`).
pub fn load_data(cfg: &TrainConfig) -> Result<TrainData> {
    let ds: Dataset = cfg.data.parse()?;
    let root = cfg.data_root.as_deref();
    let opts = LoadOptions {
        max_per_class: cfg.images_per_class,
        ..LoadOptions::default()
    };
    let train = ds.load(Split::Train, root, &opts)?;
    let test = ds.load(
        Split::Test,
        root,
        &LoadOptions {
            max_per_class: cfg.test_images_per_class,
            ..LoadOptions::default()
        },
    )?;
    if train.class_names != test.class_names {
        return Err(Error::invalid(format!(
            "data `{}`: the train and test splits have different classes",
            cfg.data
        )));
    }
    if (train.height, train.width) != (test.height, test.width) {
        return Err(Error::invalid(format!(
            "data `{}`: train images are {}x{}, test images {}x{}",
            cfg.data, train.height, train.width, test.height, test.width
        )));
    }
    let split = TaskSplit::new(train.num_classes(), cfg.tasks, cfg.seed)?;
    let retention = match &cfg.retention {
        Some(r) => Some(load_retention(
            r,
            train.height,
            train.width,
            train.channels,
        )?),
        None => None,
    };
    Ok(TrainData {
        train,
        test,
        split,
        retention,
    })
}

/// What the evaluation after a task measured.
#[derive(Clone, Debug, Default)]
pub struct TaskEval {
    pub row: TaskRow,
    /// Accuracy on each task's test samples (task-agnostic), `None` for tasks not seen yet.
    pub per_task: Vec<Option<f64>>,
    /// The fitted probe (when a linear evaluation ran).
    pub probe: Option<LinearProbe>,
}

/// Features of `indices` of `set` through `encoder` in eval mode: N×D row-major.
pub fn extract_features(
    encoder: &dyn Encoder,
    set: &ImageSet,
    indices: &[usize],
    device: &Device,
) -> Result<Vec<f32>> {
    const CHUNK: usize = 256;
    let arch = encoder.arch();
    let mut out = Vec::with_capacity(indices.len() * encoder.feature_dim());
    for chunk in indices.chunks(CHUNK) {
        let x = to_tensor(set, chunk, arch.mean(), arch.std(), None)?.to_device(device)?;
        let f = candle_core::ModuleT::forward_t(encoder, &x, false)?;
        out.extend(f.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Evaluates `encoder` after training task `t`: a linear probe over all classes seen so far
/// (LA, TP, WP, task-aware accuracy, the accuracy-matrix row) and/or kNN, on the test images of
/// those classes.
pub fn evaluate(
    encoder: &dyn Encoder,
    data: &TrainData,
    t: usize,
    kind: EvalKind,
    device: &Device,
) -> Result<TaskEval> {
    let split = &data.split;
    let esplit = crate::eval::TaskSplit::from(split);
    let seen: Vec<u32> = split.classes_up_to(t)?.to_vec();
    let train_idx = split.indices_up_to(&data.train, t)?;
    let test_idx = split.indices_up_to(&data.test, t)?;
    let d = encoder.feature_dim();
    let mut ev = TaskEval {
        row: TaskRow {
            task: t,
            classes: split.classes(t)?.to_vec(),
            ..TaskRow::default()
        },
        per_task: vec![None; split.num_tasks()],
        probe: None,
    };
    if kind == EvalKind::None {
        return Ok(ev);
    }
    let ftrain = extract_features(encoder, &data.train, &train_idx, device)?;
    let ftest = extract_features(encoder, &data.test, &test_idx, device)?;
    let ytrain: Vec<u32> = train_idx.iter().map(|&i| data.train.labels[i]).collect();
    let ytest: Vec<u32> = test_idx.iter().map(|&i| data.test.labels[i]).collect();
    if kind.linear() {
        let cfg = ProbeConfig {
            classes: Some(seen.clone()),
            class_names: data.train.class_names.clone(),
            ..ProbeConfig::default()
        };
        let probe = LinearProbe::fit(&ftrain, d, &ytrain, &cfg)?;
        let pred = probe.predict(&ftest)?;
        let m = prediction_metrics(&ytest, &pred, &esplit)?;
        let logits = probe.logits(&ftest)?;
        ev.row.la = Some(m.la);
        ev.row.tp = Some(m.tp);
        ev.row.wp = Some(m.wp);
        ev.row.task_aware = Some(task_aware_accuracy(
            &logits,
            &probe.classes,
            &ytest,
            &esplit,
        )?);
        ev.per_task = per_task_accuracy(&ytest, &pred, &esplit)?;
        ev.probe = Some(probe);
    }
    if kind.knn() {
        let index = KnnIndex::new(&ftrain, d, &ytrain)?;
        ev.row.knn = Some(index.accuracy(&ftest, &ytest, &KnnConfig::default())?);
    }
    Ok(ev)
}

/// Saves the backbone alone with torchvision / timm names (no `backbone.` prefix), so
/// `weights::load_encoder` and `cromo infer`/`cromo eval` read it like any pretrained file.
pub fn save_encoder(method: &Method, path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = weights::named_tensors(method.varmap())
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix("backbone.").map(|s| (s.to_string(), t)))
        .collect();
    weights::save_tensors(&tensors, path, DType::F32)
}

/// Mixes counters into a seed (SplitMix64 finaliser over a running combination).
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut h = seed ^ 0x6a09_e667_f3bc_c909;
    for &p in parts {
        h = h.wrapping_add(p).wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h = z ^ (z >> 31);
    }
    h
}

// Streams of `derive_seed` (the second part), so draws of different purposes never coincide.
const SHUFFLE: u64 = 1;
const AUGMENT: u64 = 2;
const STEP_RNG: u64 = 3;
const BUFFER_AUG: u64 = 4;
const MONITOR: u64 = 5;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every task trained and evaluated.
    Finished,
    /// Stopped after the checkpoint of the task named by [`TrainConfig::stop_after_task`].
    Stopped { after_task: usize },
}

/// A class-incremental training run writing into one output folder.
pub struct Trainer {
    cfg: TrainConfig,
    data: TrainData,
    device: Device,
    out: PathBuf,
    method: Method,
    strategy: Strategy,
    teacher: Option<Teacher>,
    buffer: Option<ReplayBuffer>,
    optimizer: Option<Box<dyn Optimizer>>,
    pos: Position,
    report: RunReport,
    aug: (AugmentConfig, AugmentConfig),
    train_s: f64,
    eval_s: f64,
    images_trained: u64,
    task_train_s: f64,
    quiet: bool,
}

impl Trainer {
    /// A fresh run of `cfg` writing into `out` (created; must not hold a checkpoint already —
    /// use [`Trainer::resume`] for that).
    pub fn new(cfg: TrainConfig, data: TrainData, device: &Device, out: &Path) -> Result<Self> {
        if checkpoint::exists(out) {
            return Err(Error::invalid(format!(
                "{} already holds a run (checkpoint.json); resume it with --resume {} or choose \
                 another --out",
                out.display(),
                out.display()
            )));
        }
        let existed = out.exists();
        Trainer::build(cfg, data, device, out)
            .and_then(Trainer::load_init)
            .inspect_err(|_| {
                // Leave no empty run folder behind when the run could not start.
                if !existed {
                    let _ = std::fs::remove_dir(out);
                }
            })
    }

    /// Loads `--init` weights into the fresh student's encoder and notes it in the report.
    fn load_init(mut t: Trainer) -> Result<Trainer> {
        if let Some(path) = t.cfg.init.clone() {
            let rep = t.method.load_backbone(&path)?;
            let mut line = format!(
                "encoder initialised from {}: {} tensors loaded",
                path.display(),
                rep.loaded
            );
            if rep.ignored_counters > 0 {
                line.push_str(&format!(
                    ", {} BatchNorm num_batches_tracked counters ignored",
                    rep.ignored_counters
                ));
            }
            if !rep.skipped.is_empty() {
                line.push_str(&format!(
                    ", classifier head skipped ({})",
                    rep.skipped.join(", ")
                ));
            }
            eprintln!("{line}");
            t.report.notes.push(line);
        }
        Ok(t)
    }

    /// The run's objects in their initial state (no checks on `out`).
    fn build(cfg: TrainConfig, data: TrainData, device: &Device, out: &Path) -> Result<Self> {
        cfg.validate()?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let mut mcfg = MethodConfig::new(cfg.method, cfg.arch);
        mcfg.mix = cfg.mix;
        mcfg.distill_predictor = cfg.strategy.needs_distill_predictor();
        mcfg.backbone_bn_train = cfg.bn == BnMode::Train;
        let method = Method::new(mcfg, cfg.arch, device, derive_seed(cfg.seed, &[0]))?;
        let mut scfg = StrategyConfig::new(cfg.strategy);
        scfg.buffer_batch = cfg.buffer_batch;
        scfg.mix_lambda = cfg.mix_lambda;
        let strategy = Strategy::new(scfg)?;
        let buffer = if cfg.strategy.needs_buffer() {
            Some(ReplayBuffer::new(
                cfg.buffer,
                data.train.height,
                data.train.width,
                data.train.channels,
                derive_seed(cfg.seed, &[6]),
            )?)
        } else {
            None
        };
        let report = RunReport {
            method: match cfg.mix {
                Some(m) => format!("{}+{}", cfg.method, m),
                None => cfg.method.to_string(),
            },
            strategy: cfg.strategy.to_string(),
            config: serde_json::to_value(&cfg)
                .map_err(|e| Error::invalid(format!("config to JSON: {e}")))?,
            accuracy_matrix: AccuracyMatrix::new(cfg.tasks),
            notes: vec![format!(
                "frozen teacher in {} mode; class order {:?}",
                cfg.teacher_mode.name(),
                data.split.class_order()
            )],
            ..RunReport::default()
        };
        let aug = augment_configs(&cfg, &data.train);
        Ok(Trainer {
            data,
            device: device.clone(),
            out: out.to_path_buf(),
            method,
            strategy,
            teacher: None,
            buffer,
            optimizer: None,
            pos: Position::default(),
            report,
            aug,
            train_s: 0.0,
            eval_s: 0.0,
            images_trained: 0,
            task_train_s: 0.0,
            quiet: false,
            cfg,
        })
    }

    /// Continues the run in `out` from its last checkpoint (its own configuration, except
    /// `stop_after_task`, which `stop_after_task` replaces).
    pub fn resume(
        out: &Path,
        data_override: Option<TrainData>,
        device: &Device,
        stop_after_task: Option<usize>,
    ) -> Result<Self> {
        let ck = Checkpoint::read(out)?;
        let mut cfg = ck.config.clone();
        cfg.stop_after_task = stop_after_task;
        let data = match data_override {
            Some(d) => d,
            None => load_data(&cfg)?,
        };
        // Build the run's objects as a fresh run would, then overwrite their state.
        let mut t = Trainer::build(cfg, data, device, out)?;
        ck.restore(&mut t.method, &mut t.buffer)?;
        t.teacher = ck.teacher(&t.method)?;
        t.pos = ck.position;
        t.report = ck.report.clone();
        t.train_s = t.report.timings.train_s;
        t.eval_s = t.report.timings.eval_s;
        t.images_trained = ck.images_trained;
        if !t.pos.at_task_start() {
            let mut opt = t.build_optimizer()?;
            opt.load_state(&ck.optimizer_state(&t.method)?)?;
            t.optimizer = Some(opt);
        }
        Ok(t)
    }

    /// Suppresses the progress bar and per-epoch lines (tests).
    pub fn quiet(mut self, yes: bool) -> Self {
        self.quiet = yes;
        self
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The student (encoder, heads, method state).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The report so far.
    pub fn report(&self) -> &RunReport {
        &self.report
    }

    fn build_optimizer(&self) -> Result<Box<dyn Optimizer>> {
        let wd = self.cfg.wd();
        let mut specs = vec![
            GroupSpec::new("backbone", wd),
            GroupSpec::new("projector", wd),
        ];
        if self.cfg.method.has_predictor() {
            specs.push(GroupSpec::new("predictor", wd));
        }
        if self.method.config().distill_predictor {
            specs.push(GroupSpec::new("distill_predictor", wd));
        }
        let groups = ParamGroups::from_varmap(self.method.varmap(), &specs)?;
        let oc = match self.cfg.optimizer {
            OptimKind::Lars => OptimizerConfig::Lars(LarsConfig::default()),
            OptimKind::Sgd => OptimizerConfig::Sgd(SgdConfig::default()),
            OptimKind::AdamW => OptimizerConfig::AdamW(AdamWConfig::default()),
        };
        oc.build(groups)
    }

    fn steps_per_epoch(&self, n: usize) -> Result<usize> {
        let s = n / self.cfg.batch;
        if s == 0 {
            return Err(Error::invalid(format!(
                "task has {n} training images, fewer than one batch of {}; lower --batch",
                self.cfg.batch
            )));
        }
        Ok(s)
    }

    /// Trains the remaining tasks, evaluating and checkpointing after each; writes the report
    /// (`report.json`, `report.md`, plots) and `encoder.safetensors` / `probe.safetensors`.
    pub fn run(&mut self) -> Result<RunEnd> {
        let run_start = Instant::now();
        let already = self.report.timings.total_s;
        if self.pos == Position::task_start(0) && self.report.init.is_none() {
            let e0 = Instant::now();
            self.report.init = self.evaluate_init()?;
            self.eval_s += e0.elapsed().as_secs_f64();
        }
        while self.pos.task < self.cfg.tasks {
            let t = self.pos.task;
            self.train_task(t)?;
            // Evaluation and the task-end checkpoint.
            let e0 = Instant::now();
            let ev = evaluate(
                self.method.encoder(),
                &self.data,
                t,
                self.cfg.eval,
                &self.device,
            )?;
            let mut ev = ev;
            if let Some(sets) = &self.data.retention {
                ev.row.retention = Some(retention_accuracy(
                    self.method.encoder(),
                    sets,
                    &self.device,
                )?);
            }
            self.eval_s += e0.elapsed().as_secs_f64();
            self.record_eval(t, ev)?;
            self.pos = Position::task_start(t + 1);
            self.optimizer = None;
            self.report.timings = Timings {
                total_s: already + run_start.elapsed().as_secs_f64(),
                train_s: self.train_s,
                eval_s: self.eval_s,
            };
            self.write_outputs()?;
            if self.cfg.stop_after_task == Some(t) && t + 1 < self.cfg.tasks {
                return Ok(RunEnd::Stopped { after_task: t });
            }
        }
        Ok(RunEnd::Finished)
    }

    /// The starting encoder's LA and kNN over all classes (per `--eval`) and its retention-probe
    /// accuracy; `None` when nothing is asked for.
    fn evaluate_init(&self) -> Result<Option<InitRow>> {
        let kind = if self.cfg.eval_init {
            self.cfg.eval
        } else {
            EvalKind::None
        };
        if kind == EvalKind::None && self.data.retention.is_none() {
            return Ok(None);
        }
        let enc = self.method.encoder();
        let ev = evaluate(enc, &self.data, self.cfg.tasks - 1, kind, &self.device)?;
        let retention = match &self.data.retention {
            Some(sets) => Some(retention_accuracy(enc, sets, &self.device)?),
            None => None,
        };
        let row = InitRow {
            la: ev.row.la,
            knn: ev.row.knn,
            retention,
        };
        self.say(&format!(
            "starting encoder: LA {} kNN {} (all classes) retention {}",
            pct(row.la),
            pct(row.knn),
            pct(row.retention)
        ));
        Ok(Some(row))
    }

    fn record_eval(&mut self, t: usize, ev: TaskEval) -> Result<()> {
        let mut row = ev.row;
        row.train_s = Some(self.task_train_s);
        if self.cfg.eval.linear() {
            self.report.accuracy_matrix.set_row(t, &ev.per_task)?;
        }
        self.report.tasks.retain(|r| r.task != t);
        self.report.tasks.push(row);
        self.report.fill_forgetting();
        if let Some(p) = ev.probe {
            p.save(self.out.join("probe.safetensors"))?;
        }
        let r = self.report.tasks.last().expect("row just pushed");
        self.say(&format!(
            "task {}/{} evaluated: LA {} TP {} WP {} task-aware {} kNN {} forgetting {}{}",
            t + 1,
            self.cfg.tasks,
            pct(r.la),
            pct(r.tp),
            pct(r.wp),
            pct(r.task_aware),
            pct(r.knn),
            pct(r.forgetting),
            match r.retention {
                Some(v) => format!(" retention {}", pct(Some(v))),
                None => String::new(),
            }
        ));
        Ok(())
    }

    fn write_outputs(&mut self) -> Result<()> {
        self.report.images_per_s = if self.train_s > 0.0 {
            Some(self.images_trained as f64 / self.train_s)
        } else {
            None
        };
        self.report.peak_rss_mb = crate::eval::peak_rss_mb();
        save_encoder(&self.method, &self.out.join("encoder.safetensors"))?;
        write_report(&self.out, &self.report)?;
        self.checkpoint()
    }

    fn checkpoint(&self) -> Result<()> {
        Checkpoint::write(
            &self.out,
            &self.cfg,
            &self.pos,
            &self.report,
            self.images_trained,
            &self.method,
            self.teacher.as_ref(),
            self.buffer.as_ref(),
            self.optimizer.as_deref(),
        )
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

impl Trainer {
    /// Trains task `t` from the current position to its last step.
    fn train_task(&mut self, t: usize) -> Result<()> {
        let task_set = self.data.split.subset(&self.data.train, t)?;
        let n = task_set.len();
        let spe = self.steps_per_epoch(n)?;
        let mut total = spe * self.cfg.epochs_per_task;
        if let Some(m) = self.cfg.max_steps_per_task {
            total = total.min(m);
        }
        let warmup = ((self.cfg.warmup() * spe as f64).round() as u64).min(total as u64 - 1);
        let schedule = WarmupCosine::new(
            scale_lr_by_batch(self.cfg.base_lr(), self.cfg.batch),
            warmup,
            total as u64,
        )?;
        if self.pos.at_task_start() {
            self.method.begin_task()?;
            self.teacher = if t > 0 && self.cfg.strategy.needs_teacher() {
                Some(Teacher::snapshot(&self.method, self.cfg.teacher_mode)?)
            } else {
                None
            };
            self.optimizer = Some(self.build_optimizer()?);
            self.task_train_s = 0.0;
        } else if self.optimizer.is_none() {
            self.optimizer = Some(self.build_optimizer()?);
        }
        let monitor = self.monitor_batch(&task_set, t)?;
        let bar = self.progress_bar(t, total);
        bar.set_position(self.pos.task_step as u64);
        let (h, w, c) = (task_set.height, task_set.width, task_set.channels);
        let mut raw_buf: Vec<u8> = Vec::new();
        let mut sel: Vec<usize> = Vec::new();
        let mut tasks_tag: Vec<u32> = Vec::new();
        while self.pos.task_step < total {
            let epoch = self.pos.task_step / spe;
            let s = self.pos.task_step % spe;
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut StdRng::seed_from_u64(derive_seed(
                self.cfg.seed,
                &[SHUFFLE, t as u64, epoch as u64],
            )));
            let t0 = Instant::now();
            let idx = &order[s * self.cfg.batch..(s + 1) * self.cfg.batch];
            let step_seed = derive_seed(
                self.cfg.seed,
                &[AUGMENT, t as u64, self.pos.task_step as u64],
            );
            let (x1, x2) = augment_views(&task_set, idx, &self.aug.0, &self.aug.1, step_seed)?;
            let (x1, x2) = (x1.to_device(&self.device)?, x2.to_device(&self.device)?);
            // Buffer images of past tasks for ER / CroMo-Mixup.
            let m = self.strategy.buffer_batch(t);
            let mut bviews = None;
            if m > 0 {
                let buf = self
                    .buffer
                    .as_mut()
                    .expect("strategy with a buffer has one");
                buf.sample_into(m, Some(t as u32), &mut sel);
                if sel.is_empty() {
                    return Err(Error::invalid(format!(
                        "task {}: the replay buffer holds no image of a past task",
                        t + 1
                    )));
                }
                raw_buf.clear();
                buf.gather(&sel, &mut raw_buf)?;
                tasks_tag.clear();
                tasks_tag.extend(sel.iter().map(|&i| buf.task_of(i).expect("sampled slot")));
                let bytes = buf.image_bytes();
                let imgs: Vec<&[u8]> = raw_buf.chunks(bytes).collect();
                let bseed = derive_seed(
                    self.cfg.seed,
                    &[BUFFER_AUG, t as u64, self.pos.task_step as u64],
                );
                let (b1, b2) = augment_views_raw(&imgs, h, w, c, &self.aug.0, &self.aug.1, bseed)?;
                bviews = Some((b1.to_device(&self.device)?, b2.to_device(&self.device)?));
            }
            let input = StepInput {
                task: t,
                x1: &x1,
                x2: &x2,
                buffer: bviews.as_ref().map(|(b1, b2)| BufferViews {
                    x1: b1,
                    x2: b2,
                    tasks: &tasks_tag,
                }),
            };
            let mut rng = StdRng::seed_from_u64(derive_seed(
                self.cfg.seed,
                &[STEP_RNG, t as u64, self.pos.task_step as u64],
            ));
            let out =
                self.strategy
                    .step(&mut self.method, self.teacher.as_ref(), &input, &mut rng)?;
            let loss = out.loss.total.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !loss.is_finite() {
                return Err(Error::invalid(format!(
                    "task {} step {}: the loss is {loss}; lower --lr or check the data",
                    t + 1,
                    self.pos.task_step
                )));
            }
            let grads = out.loss.total.backward()?;
            let lr = schedule.lr(self.pos.task_step as u64);
            self.optimizer
                .as_mut()
                .expect("optimizer built at task start")
                .step(&grads, lr)?;
            self.method.after_step(self.pos.task_step, total)?;
            if epoch == 0 {
                if let Some(buf) = self.buffer.as_mut() {
                    for &i in idx {
                        buf.offer_labeled(task_set.image(i), t as u32, task_set.labels[i])?;
                    }
                }
            }
            let dt = t0.elapsed().as_secs_f64();
            self.train_s += dt;
            self.task_train_s += dt;
            self.images_trained += self.cfg.batch as u64;
            self.pos.task_step += 1;
            bar.set_message(format!(
                "ep {}/{} loss {loss:.4}{} lr {lr:.4} {:.0} img/s",
                epoch + 1,
                self.cfg.epochs_per_task,
                terms_text(&out.loss)?,
                self.cfg.batch as f64 / dt
            ));
            bar.inc(1);
            let epoch_done = self.pos.task_step % spe == 0 || self.pos.task_step == total;
            if epoch_done {
                let (early, last) = self.coding_rate(&monitor)?;
                self.report.coding_rate.push(CodingRatePoint {
                    task: t,
                    epoch,
                    early,
                    last,
                });
                if bar.is_hidden() {
                    self.say(&format!(
                        "task {}/{} epoch {}/{} step {}/{}: loss {loss:.4}, ΔR early {early:.2} last {last:.2}, {:.0} img/s",
                        t + 1,
                        self.cfg.tasks,
                        epoch + 1,
                        self.cfg.epochs_per_task,
                        self.pos.task_step,
                        total,
                        self.images_trained as f64 / self.train_s.max(1e-9)
                    ));
                }
            }
            if self.cfg.checkpoint_every > 0
                && self.pos.task_step % self.cfg.checkpoint_every == 0
                && self.pos.task_step < total
            {
                self.checkpoint()?;
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    fn progress_bar(&self, t: usize, total: usize) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("task {}/{}", t + 1, self.cfg.tasks));
        bar
    }

    /// A fixed batch of the task (its first images, two fixed augmented views) on which the
    /// coding-rate monitor is computed after every epoch.
    fn monitor_batch(&self, set: &ImageSet, t: usize) -> Result<(Tensor, Tensor)> {
        let m = set.len().min(256);
        let idx: Vec<usize> = (0..m).collect();
        let seed = derive_seed(self.cfg.seed, &[MONITOR, t as u64]);
        let (a, b) = augment_views(set, &idx, &self.aug.0, &self.aug.1, seed)?;
        Ok((a.to_device(&self.device)?, b.to_device(&self.device)?))
    }

    /// ΔR (early, last) of the encoder on the monitor batch, eval mode, rows L2-normalised.
    fn coding_rate(&self, monitor: &(Tensor, Tensor)) -> Result<(f64, f64)> {
        let enc = self.method.encoder();
        let f1 = enc.features(&monitor.0, false)?;
        let f2 = enc.features(&monitor.1, false)?;
        let (e1, de) = feature_rows(&f1.early)?;
        let (e2, _) = feature_rows(&f2.early)?;
        let (l1, dl) = feature_rows(&f1.pooled)?;
        let (l2, _) = feature_rows(&f2.pooled)?;
        let early = coding_rate_reduction_views(&e1, &e2, de, 0.1, true)?.delta;
        let last = coding_rate_reduction_views(&l1, &l2, dl, 0.1, true)?.delta;
        Ok((early, last))
    }
}

/// The two view recipes for a run: DESIGN §3's CIFAR recipe (BYOL's asymmetric pair for BYOL) at
/// the data's image size, normalised as the architecture expects.
fn augment_configs(cfg: &TrainConfig, set: &ImageSet) -> (AugmentConfig, AugmentConfig) {
    let (a, b) = if cfg.method == MethodKind::Byol {
        AugmentConfig::cifar_byol()
    } else {
        (AugmentConfig::cifar(), AugmentConfig::cifar())
    };
    let fit = |c: AugmentConfig| {
        c.with_size(set.height, set.width)
            .with_normalization(cfg.arch.mean(), cfg.arch.std())
    };
    (fit(a), fit(b))
}

fn terms_text(l: &crate::continual::LossTerms) -> Result<String> {
    let mut s = String::new();
    let scalar = |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    let parts = [
        ("distill", &l.distill),
        ("pnr", &l.pnr_negative),
        ("mixed", &l.mixed),
        ("mix", &l.method_mix),
    ];
    if parts.iter().any(|(_, t)| t.is_some()) {
        s.push_str(&format!(" (ssl {:.3}", scalar(&l.ssl)?));
        for (name, t) in parts {
            if let Some(t) = t {
                s.push_str(&format!(" {name} {:.3}", scalar(t)?));
            }
        }
        s.push(')');
    }
    Ok(s)
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2}%", 100.0 * x))
        .unwrap_or_else(|| "-".into())
}

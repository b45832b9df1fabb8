//! The `cromo` command line: inference, weights inspection and benchmarks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};

use cromo::device::DeviceSpec;
use cromo::infer::{collect_images, open_image, ImageClassifier};
use cromo::learner::trainer::{
    evaluate, load_data, EvalKind, RetentionConfig, RunEnd, TrainConfig, Trainer,
};
use cromo::models::{build_encoder, weights, Arch};

/// The repository root at build time: default locations of the shipped weights and labels.
const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Parser)]
#[command(
    name = "cromo",
    version,
    about = "Continual self-supervised learning on the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders) with an encoder and its classifier head.
    Infer(InferArgs),
    /// Run the class-incremental protocol: SSL with a continual strategy, task after task.
    Train(Box<TrainArgs>),
    /// Evaluate a trained run's encoder (linear probe and/or kNN over all tasks).
    Eval(EvalArgs),
    /// Print the tensor table of a safetensors file.
    Inspect {
        /// The .safetensors file.
        file: PathBuf,
    },
    /// Speed benchmarks (print a table, or one JSON line per run with --json).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// One Markdown table comparing finished runs (method, strategy, LA, WP, TP, forgetting, time).
    Compare {
        /// Run directories (each holding the report.json that `cromo train` writes).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Also write the table to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct InferArgs {
    /// Image files and/or folders of images (jpg, jpeg, png, bmp, webp).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Weights (safetensors with the classifier head). Default: the shipped EfficientNet-Lite0.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Architecture of the weights: resnet18, resnet18-cifar, efficientnet-lite0, small-cnn.
    #[arg(long, default_value = "efficientnet-lite0")]
    arch: String,
    /// Class names, one per line (line i+1 = class i). Default: ImageNet's when --model is not given.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// A linear probe (`probe.safetensors` of a `cromo train` run) classifying the features of
    /// --model (then an encoder, e.g. the run's `encoder.safetensors`); its class names are used.
    #[arg(long, requires = "model", conflicts_with = "labels")]
    probe: Option<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// cpu, cuda, cuda:N, or wgpu (WGSL kernels on the GPU wgpu prefers; builds with the
    /// `wgpu` feature, on by default).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    /// cifar10, tiny-imagenet, mnist, fashion-mnist, or a folder / .tar.zst with train/ and test/.
    #[arg(long, default_value = "cifar10")]
    data: String,
    /// Where the named data set is (default: the matching file under ../shared/data or
    /// $CROMO_SHARED_DATA).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Train on at most this many images per class (a smaller budget).
    #[arg(long)]
    images_per_class: Option<usize>,
    /// Evaluate on at most this many test images per class.
    #[arg(long)]
    test_images_per_class: Option<usize>,
    /// Number of tasks (must divide the number of classes).
    #[arg(long, default_value_t = 2)]
    tasks: usize,
    /// resnet18, resnet18-cifar, efficientnet-lite0, small-cnn.
    #[arg(long, default_value = "small-cnn")]
    arch: String,
    /// simclr, moco, byol, barlow, vicreg, corinfomax.
    #[arg(long, default_value = "barlow")]
    method: String,
    /// Add a mix-up regulariser to the method: mixco or imix.
    #[arg(long)]
    mix: Option<String>,
    /// finetune, er, cassle, pnr, cromo, cromo-data (CroMo-Mixup without the cross-model term).
    #[arg(long, default_value = "cromo")]
    strategy: String,
    #[arg(long, default_value_t = 6)]
    epochs_per_task: usize,
    /// Current-task images per step.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Replay buffer capacity in images (er, cromo, cromo-data).
    #[arg(long, default_value_t = 500)]
    buffer: usize,
    /// Buffer images per step (er, cromo, cromo-data).
    #[arg(long, default_value_t = 64)]
    buffer_batch: usize,
    /// Fix CroMo-Mixup's λ (default: λ ~ Beta(1,1) per step).
    #[arg(long)]
    mix_lambda: Option<f64>,
    /// lars, sgd, adamw.
    #[arg(long, default_value = "lars")]
    optimizer: String,
    /// Learning rate at batch 256, scaled by batch/256 (default: the method's, DESIGN §3).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay (default: the method's).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Warm-up epochs per task (default: 10, or a tenth of the epochs below 100).
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Frozen teacher BatchNorm: eval (fixed statistics) or train (the authors' codes).
    #[arg(long, default_value = "eval")]
    teacher_mode: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop each task after this many steps (smoke runs).
    #[arg(long)]
    max_steps_per_task: Option<usize>,
    /// Evaluation after every task: linear, knn, both, none.
    #[arg(long, default_value = "linear")]
    eval: String,
    /// Also checkpoint every N steps inside a task (0: only after each task).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Stop after this task's checkpoint (0-based), as if the run had been killed there.
    #[arg(long)]
    stop_after_task: Option<usize>,
    /// Start the encoder from these weights (torchvision / timm names, e.g.
    /// models/efficientnet_lite0.safetensors); the heads start fresh.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Encoder BatchNorm during training: train (batch statistics, running ones updated) or
    /// frozen (the starting running statistics kept).
    #[arg(long, default_value = "train")]
    bn: String,
    /// Skip the evaluation of the starting encoder before the first task.
    #[arg(long)]
    no_eval_init: bool,
    /// Held-out data set of the retention probe (cifar10, tiny-imagenet, ... or a path), resized
    /// to the training size, fitted before the first task and after every task.
    #[arg(long)]
    retention_probe: Option<String>,
    /// Where the retention data set is (default: as --data-root for a named set).
    #[arg(long)]
    retention_root: Option<PathBuf>,
    /// Retention probe: train images per class.
    #[arg(long, default_value_t = 100)]
    retention_images_per_class: usize,
    /// Retention probe: test images per class.
    #[arg(long, default_value_t = 100)]
    retention_test_images_per_class: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Output folder (report, plots, checkpoint, encoder.safetensors, probe.safetensors).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its own configuration).
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// A run folder written by `cromo train` (uses its encoder.safetensors and configuration).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data to evaluate on (default: the run's).
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// linear, knn or both.
    #[arg(long, default_value = "both")]
    eval: String,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Single-batch encoder inference latency (eval mode, random weights unless --model).
    Infer(BenchInferArgs),
    /// One full SSL training step (two views, forward, backward, optimiser update) on random
    /// images: median time per step after warm-up.
    TrainStep(BenchTrainArgs),
}

#[derive(Args)]
struct BenchTrainArgs {
    /// resnet18, resnet18-cifar, efficientnet-lite0, small-cnn.
    #[arg(long, default_value = "small-cnn")]
    arch: String,
    /// simclr, moco, byol, barlow, vicreg, corinfomax.
    #[arg(long, default_value = "barlow")]
    method: String,
    /// Only strategies without a replay buffer or teacher are timed here: finetune.
    #[arg(long, default_value = "finetune")]
    strategy: String,
    /// Images per view.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Input side in pixels (default: the architecture's).
    #[arg(long)]
    size: Option<usize>,
    /// sgd (momentum 0.9, as the PyTorch reference script), lars, adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed steps (the median is reported) after the warm-up steps.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON line instead of a table row.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchInferArgs {
    /// Architectures to time (comma-separated).
    #[arg(
        long,
        default_value = "efficientnet-lite0,resnet18",
        value_delimiter = ','
    )]
    arch: Vec<String>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input side in pixels (default: the architecture's).
    #[arg(long)]
    size: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs (the median is reported) after the warm-up runs.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// cpu, cuda, cuda:N, or wgpu (the inference plan on the wgpu device).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON line per architecture instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() {
    cromo::ops::cpu::tune_allocator();
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Infer(a) => a.threads,
        Command::Train(a) => a.threads,
        Command::Eval(a) => a.threads,
        Command::Bench(BenchCommand::Infer(a)) => a.threads,
        Command::Bench(BenchCommand::TrainStep(a)) => a.threads,
        Command::Inspect { .. } | Command::Compare { .. } => None,
    };
    if let Err(e) = set_threads(threads).and_then(|_| run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Sizes the CPU thread pool (candle's kernels and rayon read `RAYON_NUM_THREADS`).
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("sizing the thread pool")?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Infer(args) => infer(args),
        Command::Train(args) => train(*args),
        Command::Eval(args) => eval_run(args),
        Command::Inspect { file } => {
            let rows = weights::inspect(&file)?;
            print!("{}", weights::format_inspect(&rows));
            Ok(())
        }
        Command::Bench(BenchCommand::Infer(args)) => bench_infer(args),
        Command::Bench(BenchCommand::TrainStep(args)) => bench_train_step(args),
        Command::Compare { runs, out } => {
            let table = match out {
                Some(out) => cromo::eval::write_compare(&runs, &out)?,
                None => cromo::eval::compare(&runs)?,
            };
            print!("{table}");
            Ok(())
        }
    }
}

fn open_device(name: &str) -> Result<Device> {
    Ok(name.parse::<DeviceSpec>()?.open()?)
}

#[cfg(feature = "wgpu")]
fn load_wgpu(
    model: &Path,
    arch: Arch,
    labels: Option<&Path>,
    probe: Option<&Path>,
) -> Result<ImageClassifier> {
    Ok(ImageClassifier::load_wgpu(model, arch, labels, probe)?)
}

#[cfg(not(feature = "wgpu"))]
fn load_wgpu(_: &Path, _: Arch, _: Option<&Path>, _: Option<&Path>) -> Result<ImageClassifier> {
    bail!("--device wgpu: this cromo was built without the `wgpu` feature (it is on by default)")
}

fn infer(args: InferArgs) -> Result<()> {
    let arch: Arch = args.arch.parse()?;
    let wgpu = args.device == "wgpu";
    let device = if wgpu {
        Device::Cpu
    } else {
        open_device(&args.device)?
    };
    let (model, labels) = match &args.model {
        Some(m) => (m.clone(), args.labels.clone()),
        None => {
            if arch != Arch::EfficientNetLite0 {
                bail!("--arch {arch} needs --model (only efficientnet-lite0 weights are shipped)");
            }
            let labels = args
                .labels
                .clone()
                .unwrap_or_else(|| Path::new(REPO).join("models/imagenet_classes.txt"));
            (
                Path::new(REPO).join("models/efficientnet_lite0.safetensors"),
                Some(labels),
            )
        }
    };
    let t = Instant::now();
    let clf = match (&args.probe, wgpu) {
        (probe, true) => load_wgpu(&model, arch, labels.as_deref(), probe.as_deref())?,
        (Some(p), false) => ImageClassifier::with_probe(&model, arch, p, &device)?,
        (None, false) => ImageClassifier::load(&model, arch, labels.as_deref(), &device)?,
    };
    eprintln!(
        "loaded {} ({arch}, {} classes) in {:.0} ms on {}",
        model.display(),
        clf.num_classes(),
        t.elapsed().as_secs_f64() * 1e3,
        args.device
    );
    let files = collect_images(&args.inputs)?;
    let mut failed = 0usize;
    let mut forward_ms = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let img = match open_image(file) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let x = clf.preprocess(&img)?;
        let t = Instant::now();
        let probs = clf.probabilities(&x)?;
        let top = clf.top_k(&probs, args.top_k)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // The first forward pays one-off allocation costs; report it but keep it out of the mean.
        if i > 0 || files.len() == 1 {
            forward_ms.push(ms);
        }
        println!(
            "{}  ({}x{}, {ms:.1} ms)",
            file.display(),
            img.width(),
            img.height()
        );
        for p in &top[0] {
            println!("  {:5.1}%  {:4}  {}", p.prob * 100.0, p.class, p.name);
        }
    }
    if !forward_ms.is_empty() {
        let mean = forward_ms.iter().sum::<f64>() / forward_ms.len() as f64;
        eprintln!(
            "{} images, forward {mean:.1} ms/image on average{}",
            files.len() - failed,
            if files.len() > 1 {
                " (first excluded)"
            } else {
                ""
            }
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {} files could not be read as images",
            files.len()
        );
    }
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let device = open_device(&a.device)?;
    let mut trainer = match &a.resume {
        Some(dir) => {
            eprintln!("resuming the run in {}", dir.display());
            Trainer::resume(dir, None, &device, a.stop_after_task)?
        }
        None => {
            let out = a.out.clone().expect("clap requires --out without --resume");
            let mut cfg = TrainConfig::new(
                &a.data,
                a.arch.parse()?,
                a.method.parse()?,
                a.strategy.parse()?,
            );
            cfg.data_root = a.data_root.clone();
            cfg.images_per_class = a.images_per_class;
            cfg.test_images_per_class = a.test_images_per_class;
            cfg.tasks = a.tasks;
            cfg.mix = a.mix.as_deref().map(str::parse).transpose()?;
            cfg.epochs_per_task = a.epochs_per_task;
            cfg.batch = a.batch;
            cfg.buffer = a.buffer;
            cfg.buffer_batch = a.buffer_batch;
            cfg.mix_lambda = a.mix_lambda;
            cfg.optimizer = a.optimizer.parse()?;
            cfg.lr = a.lr;
            cfg.weight_decay = a.weight_decay;
            cfg.warmup_epochs = a.warmup_epochs;
            cfg.teacher_mode = a.teacher_mode.parse()?;
            cfg.seed = a.seed;
            cfg.max_steps_per_task = a.max_steps_per_task;
            cfg.eval = a.eval.parse()?;
            cfg.checkpoint_every = a.checkpoint_every;
            cfg.stop_after_task = a.stop_after_task;
            cfg.init = a.init.clone();
            cfg.bn = a.bn.parse()?;
            cfg.eval_init = !a.no_eval_init;
            cfg.retention = a.retention_probe.as_deref().map(|d| RetentionConfig {
                data: d.to_string(),
                data_root: a.retention_root.clone(),
                images_per_class: a.retention_images_per_class,
                test_images_per_class: a.retention_test_images_per_class,
            });
            cfg.validate()?;
            let t = Instant::now();
            let data = load_data(&cfg)?;
            eprintln!(
                "data {}: {} train / {} test images of {}x{}x{}, {} classes in {} tasks (order {:?}), loaded in {:.1} s",
                cfg.data,
                data.train.len(),
                data.test.len(),
                data.train.height,
                data.train.width,
                data.train.channels,
                data.train.num_classes(),
                cfg.tasks,
                data.split.class_order(),
                t.elapsed().as_secs_f64()
            );
            Trainer::new(cfg, data, &device, &out)?
        }
    };
    let c = trainer.config().clone();
    eprintln!(
        "training {} / {} / {} on {}: {} epochs per task, batch {}, {} (lr {} at batch 256, wd {})",
        c.arch,
        c.method,
        c.strategy,
        a.device,
        c.epochs_per_task,
        c.batch,
        a.optimizer,
        c.base_lr(),
        c.wd()
    );
    let end = trainer.run()?;
    let r = trainer.report();
    let out = a
        .resume
        .clone()
        .or(a.out.clone())
        .expect("one of them is set");
    match end {
        RunEnd::Stopped { after_task } => eprintln!(
            "stopped after task {} as asked; continue with: cromo train --resume {}",
            after_task + 1,
            out.display()
        ),
        RunEnd::Finished => {
            print!(
                "{}",
                std::fs::read_to_string(out.join("report.md")).unwrap_or_default()
            );
            eprintln!(
                "done in {:.0} s ({:.0} images/s training); report, plots and weights in {}",
                r.timings.total_s,
                r.images_per_s.unwrap_or(0.0),
                out.display()
            );
        }
    }
    Ok(())
}

fn eval_run(a: EvalArgs) -> Result<()> {
    let device = open_device(&a.device)?;
    let report = cromo::eval::read_report(&a.checkpoint)?;
    let mut cfg: TrainConfig =
        serde_json::from_value(report.config.clone()).with_context(|| {
            format!(
                "{}: report.json has no cromo train configuration",
                a.checkpoint.display()
            )
        })?;
    if let Some(d) = &a.data {
        cfg.data = d.clone();
        cfg.data_root = None;
    }
    if a.data_root.is_some() {
        cfg.data_root = a.data_root.clone();
    }
    let kind: EvalKind = a.eval.parse()?;
    let enc_path = a.checkpoint.join("encoder.safetensors");
    let enc = weights::load_encoder(&enc_path, cfg.arch, &device)?;
    let data = load_data(&cfg)?;
    let last = cfg.tasks - 1;
    let ev = evaluate(enc.encoder.as_ref(), &data, last, kind, &device)?;
    let r = &ev.row;
    let f = |v: Option<f64>| {
        v.map(|x| format!("{:.2}", 100.0 * x))
            .unwrap_or_else(|| "-".into())
    };
    println!("| encoder | data | classes | LA | TP | WP | task-aware | kNN |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        enc_path.display(),
        cfg.data,
        data.train.num_classes(),
        f(r.la),
        f(r.tp),
        f(r.wp),
        f(r.task_aware),
        f(r.knn)
    );
    if kind != EvalKind::Knn {
        let accs: Vec<String> = ev.per_task.iter().map(|a| f(*a)).collect();
        println!("per-task accuracy (task-agnostic): {}", accs.join(" | "));
    }
    Ok(())
}

/// One timed forward of a random-weight `arch` encoder on `x`: candle on `device`, or (with
/// `wgpu`) its inference plan on the wgpu device.
fn bench_forward(
    arch: Arch,
    x: &Tensor,
    device: &Device,
    wgpu: bool,
) -> Result<Box<dyn FnMut() -> Result<()>>> {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, device);
    let encoder = build_encoder(arch, vb)?;
    if wgpu {
        return bench_forward_wgpu(arch, &varmap, x);
    }
    let x = x.clone();
    Ok(Box::new(move || {
        let y = encoder.forward_t(&x, false)?;
        y.to_device(&Device::Cpu)?; // waits for asynchronous devices
        Ok(())
    }))
}

#[cfg(feature = "wgpu")]
fn bench_forward_wgpu(
    arch: Arch,
    varmap: &candle_nn::VarMap,
    x: &Tensor,
) -> Result<Box<dyn FnMut() -> Result<()>>> {
    let plan = cromo::infer::plan::InferencePlan::from_weights(arch, varmap, None)?;
    let ctx = cromo::gpu::GpuContext::new()?;
    eprintln!("wgpu adapter: {}", ctx.adapter());
    let mut gpu = cromo::gpu::GpuPlan::new(&ctx, &plan, cromo::gpu::Precision::F32)?;
    let x = x.clone();
    Ok(Box::new(move || {
        gpu.run_tensor(&x)?;
        Ok(())
    }))
}

#[cfg(not(feature = "wgpu"))]
fn bench_forward_wgpu(
    _: Arch,
    _: &candle_nn::VarMap,
    _: &Tensor,
) -> Result<Box<dyn FnMut() -> Result<()>>> {
    bail!("--device wgpu: this cromo was built without the `wgpu` feature (it is on by default)")
}

fn bench_infer(args: BenchInferArgs) -> Result<()> {
    let wgpu = args.device == "wgpu";
    let device = if wgpu {
        Device::Cpu
    } else {
        open_device(&args.device)?
    };
    let threads = args
        .threads
        .unwrap_or_else(candle_core::utils::get_num_threads);
    if !args.json {
        println!("| arch | batch | input | threads | median ms | images/s |");
        println!("| --- | --- | --- | --- | --- | --- |");
    }
    for name in &args.arch {
        let arch: Arch = name.parse()?;
        let size = args.size.unwrap_or(arch.input_size());
        let x = Tensor::randn(0f32, 1.0, (args.batch, 3, size, size), &device)?;
        let mut forward = bench_forward(arch, &x, &device, wgpu)?;
        let mut times = Vec::with_capacity(args.runs);
        for i in 0..args.warmup + args.runs {
            let t = Instant::now();
            forward()?;
            if i >= args.warmup {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let med = median(&mut times);
        let ips = args.batch as f64 * 1e3 / med;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "arch": arch.name(), "batch": args.batch, "threads": threads, "size": size,
                    "median_ms": (med * 1e3).round() / 1e3, "images_per_s": (ips * 10.0).round() / 10.0,
                    "device": args.device, "runner": format!("cromo {}", env!("CARGO_PKG_VERSION")),
                })
            );
        } else {
            println!(
                "| {arch} | {} | {size}x{size} | {threads} | {med:.2} | {ips:.1} |",
                args.batch
            );
        }
    }
    Ok(())
}

/// Times `Strategy::step` + backward + optimiser step + `Method::after_step`, the body of the
/// trainer's loop without data loading and augmentation (inputs are fixed random images).
fn bench_train_step(args: BenchTrainArgs) -> Result<()> {
    use cromo::continual::{StepInput, Strategy, StrategyConfig, StrategyKind};
    use cromo::learner::optim::{
        AdamWConfig, GroupSpec, LarsConfig, OptimizerConfig, ParamGroups, SgdConfig,
    };
    use cromo::learner::trainer::OptimKind;
    use cromo::methods::{Method, MethodConfig, MethodKind};
    use rand::SeedableRng;

    let device = open_device(&args.device)?;
    let threads = args
        .threads
        .unwrap_or_else(candle_core::utils::get_num_threads);
    let arch: Arch = args.arch.parse()?;
    let kind: MethodKind = args.method.parse()?;
    let skind: StrategyKind = args.strategy.parse()?;
    if skind.needs_buffer() || skind.needs_teacher() {
        bail!(
            "bench train-step times the finetune strategy only (got {skind}: it needs a replay \
             buffer or a frozen teacher from a previous task)"
        );
    }
    if args.batch < 2 || args.runs == 0 {
        bail!("--batch must be at least 2 and --runs at least 1");
    }
    let size = args.size.unwrap_or(arch.input_size());
    let mut method = Method::new(MethodConfig::new(kind, arch), arch, &device, 0)?;
    let strategy = Strategy::new(StrategyConfig::new(skind))?;
    let mut specs = vec![
        GroupSpec::new("backbone", 1e-4),
        GroupSpec::new("projector", 1e-4),
    ];
    if kind.has_predictor() {
        specs.push(GroupSpec::new("predictor", 1e-4));
    }
    let groups = ParamGroups::from_varmap(method.varmap(), &specs)?;
    let mut opt = match args.optimizer.parse::<OptimKind>()? {
        OptimKind::Sgd => OptimizerConfig::Sgd(SgdConfig::default()),
        OptimKind::Lars => OptimizerConfig::Lars(LarsConfig::default()),
        OptimKind::AdamW => OptimizerConfig::AdamW(AdamWConfig::default()),
    }
    .build(groups)?;
    let x1 = Tensor::randn(0f32, 1.0, (args.batch, 3, size, size), &device)?;
    let x2 = Tensor::randn(0f32, 1.0, (args.batch, 3, size, size), &device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let total = args.warmup + args.runs;
    let mut times = Vec::with_capacity(args.runs);
    for i in 0..total {
        let t = Instant::now();
        let input = StepInput {
            task: 0,
            x1: &x1,
            x2: &x2,
            buffer: None,
        };
        let out = strategy.step(&mut method, None, &input, &mut rng)?;
        let grads = out.loss.total.backward()?;
        opt.step(&grads, 0.01)?;
        method.after_step(i, total)?;
        let loss = out.loss.total.to_dtype(DType::F32)?.to_scalar::<f32>()?; // waits for the device
        if !loss.is_finite() {
            bail!("step {i}: the loss is {loss}");
        }
        if i >= args.warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let med = median(&mut times);
    let ips = args.batch as f64 * 1e3 / med;
    let rss = cromo::eval::peak_rss_mb();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "arch": arch.name(), "method": kind.name(), "strategy": skind.name(),
                "batch": args.batch, "threads": threads, "size": size,
                "median_ms": (med * 1e3).round() / 1e3, "images_per_s": (ips * 10.0).round() / 10.0,
                "peak_rss_mb": rss.map(|r| r.round()), "optimizer": args.optimizer,
                "device": args.device, "runner": format!("cromo {}", env!("CARGO_PKG_VERSION")),
            })
        );
    } else {
        println!("| arch | method | batch | threads | median ms | images/s | peak RSS MB |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        println!(
            "| {arch} | {kind} | {} | {threads} | {med:.1} | {ips:.1} | {} |",
            args.batch,
            rss.map(|r| format!("{r:.0}")).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

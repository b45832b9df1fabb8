//! wgpu compute backend (feature `wgpu`): runs an [`InferencePlan`] through the WGSL kernels of
//! `shaders/` on any GPU wgpu reaches (Vulkan, Metal, DX12, GL), or a software Vulkan device
//! (Mesa lavapipe) where there is no GPU.
//!
//! - [`GpuContext`]: one adapter, device and queue; the two bind-group layouts and every
//!   compute pipeline are built once and cached (per kernel and [`Precision`]).
//! - [`GpuPlan`]: a plan's weights uploaded once; the intermediate buffers, uniform blocks and
//!   bind groups of one batch size and input size allocated once and reused for every frame
//!   (liveness-based buffer sharing); per frame only the input is written, one command buffer
//!   encoded and the final output read back.
//! - [`GpuContext::run_op`]: one layer in isolation (the per-shader parity tests).
//!
//! This module knows the plan's layer types, never a model file.
//!
//! [`InferencePlan`]: crate::infer::plan::InferencePlan

mod exec;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

pub use exec::GpuPlan;

use crate::{Error, Result};

/// Storage precision of activations and weights on the GPU; accumulation is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 storage.
    F32,
    /// f16 storage (needs the adapter's `shader-f16` feature), f32 accumulation; biases stay f32.
    F16,
}

impl Precision {
    /// Bytes per stored element.
    pub fn elem_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// The WGSL lines that open every kernel of this precision.
    fn header(self) -> &'static str {
        match self {
            Precision::F32 => "alias T = f32;\n",
            Precision::F16 => "enable f16;\nalias T = f16;\n",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(Error::invalid(format!(
                "precision `{s}`: expected `f32` or `f16`"
            ))),
        }
    }
}

/// The compute kernels, one per file of `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `conv2d.wgsl`: direct convolution, groups = 1.
    Conv2d,
    /// `depthwise.wgsl`: one filter per channel.
    Depthwise,
    /// `gemm.wgsl`: tiled matrix product (1×1 stride-1 convolutions).
    Gemm,
    /// `linear.wgsl`: fully connected rows.
    Linear,
    /// `maxpool.wgsl`.
    MaxPool,
    /// `avgpool.wgsl`: global average pool.
    AvgPool,
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const EPILOGUE: &str = include_str!("../../shaders/epilogue.wgsl");

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 6] = [
        Kernel::Conv2d,
        Kernel::Depthwise,
        Kernel::Gemm,
        Kernel::Linear,
        Kernel::MaxPool,
        Kernel::AvgPool,
    ];

    /// The shader file's name.
    pub fn file(self) -> &'static str {
        match self {
            Kernel::Conv2d => "conv2d.wgsl",
            Kernel::Depthwise => "depthwise.wgsl",
            Kernel::Gemm => "gemm.wgsl",
            Kernel::Linear => "linear.wgsl",
            Kernel::MaxPool => "maxpool.wgsl",
            Kernel::AvgPool => "avgpool.wgsl",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Kernel::Conv2d => include_str!("../../shaders/conv2d.wgsl"),
            Kernel::Depthwise => include_str!("../../shaders/depthwise.wgsl"),
            Kernel::Gemm => include_str!("../../shaders/gemm.wgsl"),
            Kernel::Linear => include_str!("../../shaders/linear.wgsl"),
            Kernel::MaxPool => include_str!("../../shaders/maxpool.wgsl"),
            Kernel::AvgPool => include_str!("../../shaders/avgpool.wgsl"),
        }
    }

    /// Kernels with weights, bias, residual (the epilogue bindings 0–5); the others (pools)
    /// bind parameters, input and output only (0–2).
    pub fn weighted(self) -> bool {
        matches!(
            self,
            Kernel::Conv2d | Kernel::Depthwise | Kernel::Gemm | Kernel::Linear
        )
    }

    /// The complete WGSL source of this kernel at `precision`.
    pub fn source(self, precision: Precision) -> String {
        let mut s = String::from(precision.header());
        s.push_str(COMMON);
        if self.weighted() {
            s.push_str(EPILOGUE);
        }
        s.push_str(self.body());
        s
    }
}

/// The backends tried: `WGPU_BACKEND` (comma list: vulkan, metal, dx12, gl) when set, else all
/// native ones.
fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(
        wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL,
    )
}

fn backend_names(b: wgpu::Backends) -> String {
    let names: Vec<&str> = [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
    ]
    .into_iter()
    .filter(|(f, _)| b.contains(*f))
    .map(|(_, n)| n)
    .collect();
    if names.is_empty() {
        "none (WGPU_BACKEND is empty)".into()
    } else {
        names.join(", ")
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends();
    wgpu::Instance::new(desc)
}

/// One line per adapter wgpu finds on the backends [`GpuContext::new`] would try (name,
/// backend, device type); empty when there is none.
pub fn list_adapters() -> Vec<String> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(backends()))
        .iter()
        .map(|a| describe(&a.get_info()))
        .collect()
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}{})",
        info.name,
        info.backend,
        info.device_type,
        if info.driver.is_empty() {
            String::new()
        } else {
            format!(", {} {}", info.driver, info.driver_info)
        }
    )
}

/// A wgpu device and queue with the kernels' layouts and a pipeline cache.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    f16: bool,
    limits: wgpu::Limits,
    /// Errors reported by wgpu outside an error scope (validation, out of memory, ...).
    errors: Arc<Mutex<Vec<String>>>,
    weighted_layout: wgpu::PipelineLayout,
    pool_layout: wgpu::PipelineLayout,
    weighted_bgl: wgpu::BindGroupLayout,
    pool_bgl: wgpu::BindGroupLayout,
    pipelines: Mutex<HashMap<(Kernel, Precision), wgpu::ComputePipeline>>,
    /// Bound as the residual of layers without one.
    dummy: wgpu::Buffer,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuContext({})", self.adapter())
    }
}

impl GpuContext {
    /// Opens the adapter wgpu prefers (`WGPU_ADAPTER_NAME` / `WGPU_BACKEND` /
    /// `WGPU_POWER_PREF` are honoured) with its full limits and, where offered, `shader-f16`.
    /// No adapter is an [`Error::Gpu`] naming the backends tried and how to get one.
    pub fn new() -> Result<Arc<Self>> {
        let tried = backends();
        let inst = instance();
        let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
            &inst, None,
        ))
        .map_err(|e| {
            Error::Gpu(format!(
                "no GPU adapter found (backends tried: {}; {e}). Without a GPU, a \
                         software Vulkan device works: `apt-get install mesa-vulkan-drivers \
                         libvulkan1` (Debian/Ubuntu); WGPU_BACKEND=vulkan|metal|dx12|gl picks a \
                         backend",
                backend_names(tried)
            ))
        })?;
        let info = adapter.get_info();
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("cromo"),
            required_features: if f16 {
                wgpu::Features::SHADER_F16
            } else {
                wgpu::Features::empty()
            },
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("{}: cannot open the device: {e}", describe(&info))))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        let uni = wgpu::BufferBindingType::Uniform;
        let weighted_bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("weighted"),
            entries: &[
                entry(0, uni),
                entry(1, ro),
                entry(2, ro),
                entry(3, ro),
                entry(4, ro),
                entry(5, rw),
            ],
        });
        let pool_bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("pool"),
            entries: &[entry(0, uni), entry(1, ro), entry(2, rw)],
        });
        let layout = |bgl: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(bgl)],
                immediate_size: 0,
            })
        };
        let weighted_layout = layout(&weighted_bgl);
        let pool_layout = layout(&pool_bgl);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("no residual"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let ctx = Self {
            device,
            queue,
            info,
            f16,
            limits,
            errors,
            weighted_layout,
            pool_layout,
            weighted_bgl,
            pool_bgl,
            pipelines: Mutex::new(HashMap::new()),
            dummy,
        };
        ctx.check("opening the device")?;
        Ok(Arc::new(ctx))
    }

    /// The adapter: name, backend, device type and driver.
    pub fn adapter(&self) -> String {
        describe(&self.info)
    }

    /// Whether the f16 path ([`Precision::F16`]) is available.
    pub fn supports_f16(&self) -> bool {
        self.f16
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Fails unless `precision` is available on this adapter.
    pub fn check_precision(&self, precision: Precision) -> Result<()> {
        if precision == Precision::F16 && !self.f16 {
            return Err(Error::Gpu(format!(
                "{}: no `shader-f16` support, use f32",
                self.adapter()
            )));
        }
        Ok(())
    }

    /// The compute pipeline of `kernel` at `precision`, compiled on first use and cached.
    pub fn pipeline(&self, kernel: Kernel, precision: Precision) -> Result<wgpu::ComputePipeline> {
        self.check_precision(precision)?;
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Gpu("pipeline cache lock poisoned".into()))?;
        if let Some(p) = cache.get(&(kernel, precision)) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.file()),
                source: wgpu::ShaderSource::Wgsl(kernel.source(precision).into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.file()),
                layout: Some(if kernel.weighted() {
                    &self.weighted_layout
                } else {
                    &self.pool_layout
                }),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "shaders/{} ({precision}) rejected on {}: {e}",
                kernel.file(),
                self.adapter()
            )));
        }
        cache.insert((kernel, precision), pipeline.clone());
        Ok(pipeline)
    }

    /// Returns the errors wgpu reported since the last check, as one [`Error::Gpu`].
    fn check(&self, what: &str) -> Result<()> {
        let mut errs = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error sink lock poisoned".into()))?;
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("; ");
        errs.clear();
        Err(Error::Gpu(format!("{what} on {}: {msg}", self.adapter())))
    }

    /// Blocks until the queue is idle.
    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for {}: {e}", self.adapter())))?;
        Ok(())
    }
}

//! Executing plans and single layers on a [`GpuContext`].

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use half::f16;
use wgpu::util::DeviceExt;

use super::{GpuContext, Kernel, Precision};
use crate::infer::plan::{ConvKind, InferencePlan, Op, ValueShape};
use crate::{Error, Result};

/// Invocations per workgroup of the 1-D kernels (all but gemm).
const WG: u64 = 64;
/// Output channels per workgroup of conv2d.wgsl (its weights are packed in blocks of this many).
const CONV_BLOCK: usize = 16;
/// Output tile side of gemm.wgsl.
const GEMM_TILE: u64 = 64;

/// The kernel that runs `op`.
pub(crate) fn kernel_of(op: &Op) -> Kernel {
    match op {
        Op::Conv(c) => match c.kind() {
            ConvKind::Direct => Kernel::Conv2d,
            ConvKind::Depthwise => Kernel::Depthwise,
            ConvKind::Pointwise => Kernel::Gemm,
        },
        Op::MaxPool(_) => Kernel::MaxPool,
        Op::GlobalAvgPool => Kernel::AvgPool,
        Op::Linear(_) => Kernel::Linear,
    }
}

/// The `Params` block of common.wgsl and the workgroup grid of one layer.
fn layer_params(
    ctx: &GpuContext,
    op: &Op,
    s_in: ValueShape,
    s_out: ValueShape,
    batch: usize,
    has_res: bool,
) -> Result<([u32; 16], [u32; 3])> {
    let max = ctx.limits.max_compute_workgroups_per_dimension as u64;
    let too_big = || {
        Error::Gpu(format!(
            "a layer of {} x {s_out:?} outputs exceeds the dispatch limits of {}",
            batch,
            ctx.adapter()
        ))
    };
    let u = |v: usize| u32::try_from(v).map_err(|_| too_big());
    // 1-D workgroups over n invocations, folded into a 2-D grid when needed.
    let grid = |n: u64, z: u64| -> Result<([u32; 3], u32)> {
        let wgs = n.div_ceil(WG).max(1);
        let x = wgs.min(max);
        let y = wgs.div_ceil(x);
        if y > max || z > max {
            return Err(too_big());
        }
        Ok(([x as u32, y as u32, z as u32], (x * WG) as u32))
    };
    let mut p = [0u32; 16];
    p[0] = u(batch)?;
    p[1] = u(s_in.c)?;
    p[2] = u(s_in.h)?;
    p[3] = u(s_in.w)?;
    p[4] = u(s_out.c)?;
    p[5] = u(s_out.h)?;
    p[6] = u(s_out.w)?;
    p[12] = has_res as u32;
    let b = batch as u64;
    let (oh, ow, c_out) = (s_out.h as u64, s_out.w as u64, s_out.c as u64);
    let (dims, row) = match op {
        Op::Conv(cv) => {
            let pad = cv.padding.resolve(s_in.h, s_in.w, cv.k, cv.stride);
            p[7] = u(cv.k)?;
            p[8] = u(cv.stride)?;
            p[9] = u(pad.top)?;
            p[10] = u(pad.left)?;
            p[11] = cv.act.code();
            match cv.kind() {
                ConvKind::Direct => {
                    let gx = (oh * ow).div_ceil(WG);
                    let gy = c_out.div_ceil(CONV_BLOCK as u64);
                    if gx > max || gy > max || b > max {
                        return Err(too_big());
                    }
                    ([gx as u32, gy as u32, b as u32], 0)
                }
                ConvKind::Depthwise => grid(c_out * oh * ow.div_ceil(4), b)?,
                ConvKind::Pointwise => {
                    let gx = (oh * ow).div_ceil(GEMM_TILE);
                    let gy = c_out.div_ceil(GEMM_TILE);
                    if gx > max || gy > max || b > max {
                        return Err(too_big());
                    }
                    ([gx as u32, gy as u32, b as u32], 0)
                }
            }
        }
        Op::MaxPool(mp) => {
            let pad = mp.padding.resolve(s_in.h, s_in.w, mp.k, mp.stride);
            p[7] = u(mp.k)?;
            p[8] = u(mp.stride)?;
            p[9] = u(pad.top)?;
            p[10] = u(pad.left)?;
            grid(b * c_out * oh * ow, 1)?
        }
        Op::GlobalAvgPool => grid(b * c_out, 1)?,
        Op::Linear(li) => {
            p[11] = li.act.code();
            grid(b * c_out, 1)?
        }
    };
    p[13] = row;
    Ok((p, dims))
}

/// `values` as bytes of the storage type of `precision`.
fn to_bytes(values: &[f32], precision: Precision) -> Vec<u8> {
    match precision {
        Precision::F32 => bytemuck::cast_slice(values).to_vec(),
        Precision::F16 => {
            let h: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
            bytemuck::cast_slice(&h).to_vec()
        }
    }
}

fn tensor_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Bytes of `n` stored elements, rounded up to the 4-byte copy alignment (at least 4).
fn padded_bytes(n: usize, precision: Precision) -> u64 {
    ((n * precision.elem_bytes()) as u64).div_ceil(4).max(1) * 4
}

/// (cout, cin, k, k) row-major -> blocks of [`CONV_BLOCK`] output channels, channel fastest:
/// `packed[((blk * cin + ci) * k*k + tap) * 16 + j] = w[16*blk + j, ci, tap]`, zero past cout.
fn pack_conv_weights(w: &[f32], dims: &[usize]) -> Vec<f32> {
    let (cout, cin, kk) = (dims[0], dims[1], dims[2] * dims[3]);
    let blocks = cout.div_ceil(CONV_BLOCK);
    let mut out = vec![0f32; blocks * cin * kk * CONV_BLOCK];
    for co in 0..cout {
        let (blk, j) = (co / CONV_BLOCK, co % CONV_BLOCK);
        for ci in 0..cin {
            for t in 0..kk {
                out[((blk * cin + ci) * kk + t) * CONV_BLOCK + j] = w[(co * cin + ci) * kk + t];
            }
        }
    }
    out
}

/// A layer's weight (storage type) and bias (f32) buffers.
struct Weights {
    w: wgpu::Buffer,
    b: wgpu::Buffer,
}

fn upload_weights(ctx: &GpuContext, op: &Op, precision: Precision) -> Result<Option<Weights>> {
    let (w, b) = match op {
        Op::Conv(c) => (&c.weight, &c.bias),
        Op::Linear(l) => (&l.weight, &l.bias),
        _ => return Ok(None),
    };
    let init = |label: &str, contents: &[u8]| {
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE,
            })
    };
    let mut wv = tensor_values(w)?;
    if kernel_of(op) == Kernel::Conv2d {
        wv = pack_conv_weights(&wv, w.dims());
    }
    let wv = to_bytes(&wv, precision);
    let bv = tensor_values(b)?;
    Ok(Some(Weights {
        w: init("weight", &wv),
        b: init("bias", bytemuck::cast_slice(&bv)),
    }))
}

fn uniform(ctx: &GpuContext, p: &[u32; 16]) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(p),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

fn storage(ctx: &GpuContext, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

fn bind_group(
    ctx: &GpuContext,
    kernel: Kernel,
    params: &wgpu::Buffer,
    input: &wgpu::Buffer,
    weights: Option<&Weights>,
    residual: Option<&wgpu::Buffer>,
    output: &wgpu::Buffer,
) -> wgpu::BindGroup {
    fn e(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
        wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        }
    }
    if kernel.weighted() {
        let w = weights.expect("weighted kernels have weights");
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.file()),
            layout: &ctx.weighted_bgl,
            entries: &[
                e(0, params),
                e(1, input),
                e(2, &w.w),
                e(3, &w.b),
                e(4, residual.unwrap_or(&ctx.dummy)),
                e(5, output),
            ],
        })
    } else {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.file()),
            layout: &ctx.pool_bgl,
            entries: &[e(0, params), e(1, input), e(2, output)],
        })
    }
}

type MapState = Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

/// Maps `readback` (after the submission that fills it), converts its first `n` elements of
/// `precision` into `out` and unmaps it.
fn read_back(
    ctx: &GpuContext,
    readback: &wgpu::Buffer,
    state: &MapState,
    n: usize,
    precision: Precision,
    out: &mut Vec<f32>,
) -> Result<()> {
    let s = state.clone();
    readback.map_async(wgpu::MapMode::Read, .., move |r| {
        if let Ok(mut g) = s.lock() {
            *g = Some(r);
        }
    });
    ctx.wait()?;
    let mapped = state
        .lock()
        .map_err(|_| Error::Gpu("map state lock poisoned".into()))?
        .take();
    match mapped {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Error::Gpu(format!("reading the output back: {e}"))),
        None => return Err(Error::Gpu("the output buffer was never mapped".into())),
    }
    {
        let view = readback
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading the output back: {e}")))?;
        out.clear();
        match precision {
            Precision::F32 => out.extend_from_slice(&bytemuck::cast_slice::<u8, f32>(&view)[..n]),
            Precision::F16 => out.extend(
                bytemuck::cast_slice::<u8, u16>(&view)[..n]
                    .iter()
                    .map(|&h| f16::from_bits(h).to_f32()),
            ),
        }
    }
    readback.unmap();
    Ok(())
}

/// Allocates the buffers, uniform blocks and bind groups of one input shape.
#[allow(clippy::too_many_arguments)]
fn build_session(
    ctx: &GpuContext,
    plan: &InferencePlan,
    precision: Precision,
    kernels: &[Kernel],
    weights: &[Option<Weights>],
    batch: usize,
    h: usize,
    w: usize,
) -> Result<Session> {
    let shapes = plan.shapes(h, w)?;
    let layers = plan.layers();
    let n_values = shapes.len();
    let bytes = |v: usize| padded_bytes(batch * shapes[v].numel(), precision);
    let max_binding = ctx.limits.max_storage_buffer_binding_size;
    if let Some(v) = (0..n_values).find(|&v| bytes(v) > max_binding) {
        return Err(Error::Gpu(format!(
            "batch {batch} at {h}x{w}: value {v} needs {} bytes, {} binds at most {max_binding}",
            bytes(v),
            ctx.adapter()
        )));
    }
    // Liveness: the last layer that reads each value (the output lives to the end).
    let mut last_use = vec![0usize; n_values];
    for (i, l) in layers.iter().enumerate() {
        last_use[l.input] = last_use[l.input].max(i);
        if let Some(r) = l.residual {
            last_use[r] = last_use[r].max(i);
        }
    }
    last_use[n_values - 1] = usize::MAX;
    // Greedy slot assignment: a slot is free for layer i once its value's last reader < i.
    let mut holder: Vec<usize> = Vec::new();
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut slot_of = vec![usize::MAX; n_values];
    for i in 0..layers.len() {
        let v = i + 1;
        let free = (0..holder.len()).find(|&s| last_use[holder[s]] < i);
        let s = match free {
            Some(s) => s,
            None => {
                holder.push(v);
                slot_bytes.push(0);
                holder.len() - 1
            }
        };
        holder[s] = v;
        slot_bytes[s] = slot_bytes[s].max(bytes(v));
        slot_of[v] = s;
    }
    let input = storage(ctx, "input", bytes(0), wgpu::BufferUsages::COPY_DST);
    let slots: Vec<wgpu::Buffer> = slot_bytes
        .iter()
        .map(|&b| storage(ctx, "activations", b, wgpu::BufferUsages::COPY_SRC))
        .collect();
    let buf = |v: usize| if v == 0 { &input } else { &slots[slot_of[v]] };
    let mut uniforms = Vec::with_capacity(layers.len());
    let mut bind_groups = Vec::with_capacity(layers.len());
    let mut grids = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let (p, g) = layer_params(
            ctx,
            &l.op,
            shapes[l.input],
            shapes[i + 1],
            batch,
            l.residual.is_some(),
        )?;
        let ub = uniform(ctx, &p);
        bind_groups.push(bind_group(
            ctx,
            kernels[i],
            &ub,
            buf(l.input),
            weights[i].as_ref(),
            l.residual.map(buf),
            buf(i + 1),
        ));
        uniforms.push(ub);
        grids.push(g);
    }
    let out_v = n_values - 1;
    let output = buf(out_v).clone();
    let out_elems = batch * shapes[out_v].numel();
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes(out_v),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.check("allocating buffers")?;
    Ok(Session {
        key: (batch, h, w),
        input,
        _slots: slots,
        _uniforms: uniforms,
        bind_groups,
        grids,
        output,
        out_elems,
        readback,
        map_state: Arc::default(),
        host_in: Vec::with_capacity(bytes(0) as usize),
        host_out: Vec::with_capacity(out_elems),
    })
}

/// A plan resident on the GPU: weights uploaded once; buffers for one input shape kept and
/// reused across frames (rebuilt only when the batch or image size changes).
pub struct GpuPlan {
    ctx: Arc<GpuContext>,
    plan: InferencePlan,
    precision: Precision,
    kernels: Vec<Kernel>,
    pipelines: Vec<wgpu::ComputePipeline>,
    weights: Vec<Option<Weights>>,
    session: Option<Session>,
}

/// Everything one input shape needs, allocated once.
struct Session {
    key: (usize, usize, usize),
    input: wgpu::Buffer,
    /// Shared intermediate buffers (kept alive for the bind groups).
    _slots: Vec<wgpu::Buffer>,
    _uniforms: Vec<wgpu::Buffer>,
    bind_groups: Vec<wgpu::BindGroup>,
    grids: Vec<[u32; 3]>,
    output: wgpu::Buffer,
    out_elems: usize,
    readback: wgpu::Buffer,
    map_state: MapState,
    host_in: Vec<u8>,
    host_out: Vec<f32>,
}

impl GpuPlan {
    /// Compiles (or takes from the cache) the plan's kernels at `precision` and uploads its
    /// weights.
    pub fn new(ctx: &Arc<GpuContext>, plan: &InferencePlan, precision: Precision) -> Result<Self> {
        ctx.check_precision(precision)?;
        let kernels: Vec<Kernel> = plan.layers().iter().map(|l| kernel_of(&l.op)).collect();
        let pipelines = kernels
            .iter()
            .map(|&k| ctx.pipeline(k, precision))
            .collect::<Result<Vec<_>>>()?;
        let weights = plan
            .layers()
            .iter()
            .map(|l| upload_weights(ctx, &l.op, precision))
            .collect::<Result<Vec<_>>>()?;
        ctx.check("uploading weights")?;
        Ok(Self {
            ctx: ctx.clone(),
            plan: plan.clone(),
            precision,
            kernels,
            pipelines,
            weights,
            session: None,
        })
    }

    /// The plan this runs.
    pub fn plan(&self) -> &InferencePlan {
        &self.plan
    }

    /// The storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The context it runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Runs the plan on `x`, `batch` images of (C,h,w) in NCHW order, and returns the output
    /// rows, (batch, out_dim) row-major. Buffers are reused while the shape stays the same.
    pub fn run(&mut self, x: &[f32], batch: usize, h: usize, w: usize) -> Result<&[f32]> {
        let expect = batch * self.plan.in_channels() * h * w;
        if x.len() != expect || batch == 0 {
            return Err(Error::invalid(format!(
                "gpu plan: {} input values for {batch} images of {}x{h}x{w} (expected {expect})",
                x.len(),
                self.plan.in_channels()
            )));
        }
        let precision = self.precision;
        let ctx = self.ctx.clone();
        let pipelines = &self.pipelines;
        let s = match self.session.as_ref().map(|s| s.key) == Some((batch, h, w)) {
            true => self.session.as_mut().expect("present"),
            false => {
                self.session = None;
                self.session = Some(build_session(
                    &ctx,
                    &self.plan,
                    precision,
                    &self.kernels,
                    &self.weights,
                    batch,
                    h,
                    w,
                )?);
                self.session.as_mut().expect("just built")
            }
        };
        s.host_in.clear();
        match precision {
            Precision::F32 => s.host_in.extend_from_slice(bytemuck::cast_slice(x)),
            Precision::F16 => {
                for &v in x {
                    s.host_in
                        .extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
                }
            }
        }
        while s.host_in.len() % 4 != 0 {
            s.host_in.push(0);
        }
        ctx.queue.write_buffer(&s.input, 0, &s.host_in);
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            for ((p, bg), g) in pipelines.iter().zip(&s.bind_groups).zip(&s.grids) {
                pass.set_pipeline(p);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(g[0], g[1], g[2]);
            }
        }
        enc.copy_buffer_to_buffer(&s.output, 0, &s.readback, 0, s.readback.size());
        ctx.queue.submit([enc.finish()]);
        read_back(
            &ctx,
            &s.readback,
            &s.map_state,
            s.out_elems,
            precision,
            &mut s.host_out,
        )?;
        ctx.check("running the plan")?;
        Ok(&s.host_out)
    }

    /// Diagnostic: runs the plan once on `x` with one submission per layer, waiting after each,
    /// and returns each layer's name, kernel and wall time in milliseconds (the sum exceeds a
    /// normal [`GpuPlan::run`], which submits all layers at once).
    pub fn layer_times(
        &mut self,
        x: &[f32],
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<(String, Kernel, f64)>> {
        self.run(x, batch, h, w)?; // builds the session, uploads the input
        let ctx = self.ctx.clone();
        let s = self.session.as_ref().expect("built by run");
        let mut out = Vec::with_capacity(self.kernels.len());
        for (i, l) in self.plan.layers().iter().enumerate() {
            let t = std::time::Instant::now();
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                pass.set_pipeline(&self.pipelines[i]);
                pass.set_bind_group(0, &s.bind_groups[i], &[]);
                let g = s.grids[i];
                pass.dispatch_workgroups(g[0], g[1], g[2]);
            }
            ctx.queue.submit([enc.finish()]);
            ctx.wait()?;
            out.push((
                l.name.clone(),
                self.kernels[i],
                t.elapsed().as_secs_f64() * 1e3,
            ));
        }
        ctx.check("timing layers")?;
        Ok(out)
    }

    /// Runs the plan on a (B,C,H,W) tensor: -> (B, out_dim) f32 on the CPU.
    pub fn run_tensor(&mut self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let v = tensor_values(x)?;
        let out = self.run(&v, b, h, w)?;
        let d = out.len() / b;
        Ok(Tensor::from_slice(out, (b, d), &Device::Cpu)?)
    }
}

impl GpuContext {
    /// Runs one layer in isolation (the per-shader parity tests): `op` on `x` (B,C,H,W) for
    /// convolutions and pools, (B,din) for linear, plus `residual` (the output's shape) before
    /// the activation. Returns the output on the CPU: (B,C',H',W'), or (B,C) after a global pool
    /// or linear layer. Allocates everything afresh; plans use [`GpuPlan`].
    pub fn run_op(
        self: &Arc<Self>,
        op: &Op,
        x: &Tensor,
        residual: Option<&Tensor>,
        precision: Precision,
    ) -> Result<Tensor> {
        let kernel = kernel_of(op);
        let pipeline = self.pipeline(kernel, precision)?;
        let dims = x.dims().to_vec();
        let (batch, s_in) = match (op, dims.as_slice()) {
            (Op::Linear(_), &[b, c]) => (b, ValueShape { c, h: 1, w: 1 }),
            (Op::Linear(_), _) => {
                return Err(Error::invalid(format!(
                    "linear layer input {dims:?}: expected (B, din)"
                )))
            }
            (_, &[b, c, h, w]) => (b, ValueShape { c, h, w }),
            _ => {
                return Err(Error::invalid(format!(
                    "layer input {dims:?}: expected (B,C,H,W)"
                )))
            }
        };
        let layer = crate::infer::plan::Layer {
            name: kernel.file().into(),
            op: op.clone(),
            input: 0,
            residual: None,
        };
        let plan = InferencePlan::new(crate::models::Arch::SmallCnn, s_in.c, vec![layer])?;
        let s_out = *plan.shapes(s_in.h, s_in.w)?.last().expect("one layer");
        let out_dims: Vec<usize> = match op {
            Op::Linear(_) | Op::GlobalAvgPool => vec![batch, s_out.c],
            _ => vec![batch, s_out.c, s_out.h, s_out.w],
        };
        let n_out = batch * s_out.numel();
        let init = |label: &str, t: &Tensor| -> Result<wgpu::Buffer> {
            let mut b = to_bytes(&tensor_values(t)?, precision);
            b.resize(b.len().div_ceil(4).max(1) * 4, 0);
            Ok(self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: &b,
                    usage: wgpu::BufferUsages::STORAGE,
                }))
        };
        let input = init("input", x)?;
        let res = match residual {
            Some(r) => {
                if r.dims() != out_dims.as_slice() {
                    return Err(Error::invalid(format!(
                        "residual {:?} does not match the output {out_dims:?}",
                        r.dims()
                    )));
                }
                if !kernel.weighted() {
                    return Err(Error::invalid("only convolutions take a residual"));
                }
                Some(init("residual", r)?)
            }
            None => None,
        };
        let weights = upload_weights(self, op, precision)?;
        let (p, g) = layer_params(self, op, s_in, s_out, batch, res.is_some())?;
        let ub = uniform(self, &p);
        let bytes = padded_bytes(n_out, precision);
        let output = storage(self, "output", bytes, wgpu::BufferUsages::COPY_SRC);
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bg = bind_group(
            self,
            kernel,
            &ub,
            &input,
            weights.as_ref(),
            res.as_ref(),
            &output,
        );
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(g[0], g[1], g[2]);
        }
        enc.copy_buffer_to_buffer(&output, 0, &readback, 0, bytes);
        self.queue.submit([enc.finish()]);
        let mut out = Vec::with_capacity(n_out);
        read_back(self, &readback, &Arc::default(), n_out, precision, &mut out)?;
        self.check(kernel.file())?;
        Ok(Tensor::from_vec(out, out_dims, &Device::Cpu)?)
    }
}

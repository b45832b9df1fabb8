//! Self-supervised methods: the online network (encoder + projector + predictor), the state a
//! method keeps between steps (EMA target, MoCo key queues, CorInfoMax running statistics), and
//! the losses a continual strategy composes.
//!
//! | `--method`   | online output       | target (EMA, m = 0.99 → 1) | loss (`shared/DESIGN.md` §3)              |
//! |--------------|---------------------|----------------------------|-------------------------------------------|
//! | `simclr`     | z                   | —                          | NT-Xent ([`crate::losses::info_nce()`]) |
//! | `moco`       | q = norm(z)         | k = norm(z_ema)            | MoCo v2+, one queue per view             |
//! | `byol`       | z, p = predictor(z) | z_ema                      | 2 − 2 cos, both directions summed        |
//! | `barlow`     | z                   | —                          | Barlow Twins                             |
//! | `vicreg`     | z                   | —                          | VICReg                                   |
//! | `corinfomax` | z                   | —                          | CorInfoMax (running statistics, reset per task) |
//!
//! **Where things live.** One [`VarMap`] holds every trainable tensor under the prefixes
//! `backbone.`, `projector.`, `predictor.` (BYOL) and `distill_predictor.` (CaSSLe's `g`, built
//! when [`MethodConfig::distill_predictor`] is set), with torchvision / PyTorch `state_dict` names
//! below them; hand [`Method::trainable_vars`] to the optimiser (BatchNorm running statistics,
//! which live in the same map as candle keeps them, are left out). The EMA target network, the
//! MoCo queues and the CorInfoMax statistics are *not* in that map: they are plain state, updated
//! by [`Method::after_step`] / [`Method::begin_task`] and saved with [`Method::tensors`].
//!
//! **A step** (what a strategy does, see `crate::continual`): [`Method::views`] runs the online
//! network (train mode) on the two views and the target where there is one; [`Method::ssl_loss`]
//! gives the method's loss and *stages* its state updates (queue keys, running statistics);
//! [`Method::mix_loss`] adds MixCo / i-Mix when [`MethodConfig::mix`] is set; after the
//! optimiser step [`Method::after_step`] commits the staged state and moves the EMA target.
//! Call `ssl_loss` at most once per step.
//!
//! **Pair losses** used by the continual strategies are the method's own loss in the form the
//! authors' code uses ([`Method::distill_loss`], [`Method::cross_loss`], [`Method::pnr_loss`]);
//! each function documents its formula and source.

pub mod barlow;
pub mod byol;
pub mod corinfomax;
pub(crate) mod ema;
mod init;
mod mix;
pub mod moco;
pub mod simclr;
pub mod vicreg;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::losses::{
    BarlowConfig, ByolConfig, CorInfoMaxConfig, ImixConfig, InfoNceConfig, MixcoConfig, MocoConfig,
    VicregConfig,
};
use crate::models::heads::{Mlp, MlpSpec};
use crate::models::weights::{load_into, natural_cmp, trainable_vars, LoadReport};
use crate::models::{build_encoder, Arch, Encoder};
use crate::{Error, Result};

pub use ema::EmaNet;

/// The SSL methods, named on the command line by `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// SimCLR (NT-Xent).
    SimClr,
    /// MoCo v2+ (EMA key encoder, one key queue per view, symmetric loss).
    Moco,
    /// BYOL (EMA target, predictor).
    Byol,
    /// Barlow Twins.
    Barlow,
    /// VICReg.
    Vicreg,
    /// CorInfoMax.
    CorInfoMax,
}

impl MethodKind {
    /// All methods, in command-line order.
    pub const ALL: [MethodKind; 6] = [
        MethodKind::SimClr,
        MethodKind::Moco,
        MethodKind::Byol,
        MethodKind::Barlow,
        MethodKind::Vicreg,
        MethodKind::CorInfoMax,
    ];

    /// The command-line name (`simclr moco byol barlow vicreg corinfomax`).
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::SimClr => "simclr",
            MethodKind::Moco => "moco",
            MethodKind::Byol => "byol",
            MethodKind::Barlow => "barlow",
            MethodKind::Vicreg => "vicreg",
            MethodKind::CorInfoMax => "corinfomax",
        }
    }

    /// Whether the method has an EMA target network (MoCo's key encoder, BYOL's target).
    pub fn has_ema(self) -> bool {
        matches!(self, MethodKind::Moco | MethodKind::Byol)
    }

    /// Whether the method has a predictor on top of its projector (BYOL).
    pub fn has_predictor(self) -> bool {
        self == MethodKind::Byol
    }

    /// Whether the method is of the InfoNCE family (SimCLR, MoCo): PNR then replaces its loss by
    /// the contrastive PNR loss instead of adding a pseudo-negative term.
    pub fn is_contrastive(self) -> bool {
        matches!(self, MethodKind::SimClr | MethodKind::Moco)
    }

    /// CaSSLe's distillation weight λ_d: 25 for VICReg (`predictive_mse`), 1 otherwise.
    pub fn default_distill_weight(self) -> f64 {
        match self {
            MethodKind::Vicreg => 25.0,
            _ => 1.0,
        }
    }

    /// PNR's pseudo-negative weight w for the non-contrastive methods (PNR's CIFAR scripts):
    /// BYOL 0.5, Barlow 1.0, VICReg 23; CorInfoMax (not in PNR) 0.92, VICReg's ratio 23/25 for
    /// its MSE term. 0 for SimCLR / MoCo, whose PNR form has no separate weight.
    pub fn default_pnr_negative_weight(self) -> f64 {
        match self {
            MethodKind::Byol => 0.5,
            MethodKind::Barlow => 1.0,
            MethodKind::Vicreg => 23.0,
            MethodKind::CorInfoMax => 0.92,
            MethodKind::SimClr | MethodKind::Moco => 0.0,
        }
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MethodKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        MethodKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = MethodKind::ALL.iter().map(|m| m.name()).collect();
                Error::invalid(format!(
                    "unknown method `{s}` (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Mix-up regularisers a method can add to its loss (`--mix`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixKind {
    /// MixCo: half the view-1 batch mixed with the other half, semi-positive soft targets.
    MixCo,
    /// i-Mix: every view-1 sample mixed with a random partner, mixed virtual labels.
    IMix,
}

impl MixKind {
    /// The command-line name (`mixco`, `imix`).
    pub fn name(self) -> &'static str {
        match self {
            MixKind::MixCo => "mixco",
            MixKind::IMix => "imix",
        }
    }
}

impl fmt::Display for MixKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MixKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mixco" => Ok(MixKind::MixCo),
            "imix" => Ok(MixKind::IMix),
            _ => Err(Error::invalid(format!(
                "unknown mix `{s}` (expected one of: mixco, imix)"
            ))),
        }
    }
}

/// Everything that defines a method instance: head widths and the hyper-parameters of its loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    /// Which method.
    pub kind: MethodKind,
    /// Hidden width of the projector.
    pub proj_hidden: usize,
    /// Output width d of the projector.
    pub proj_out: usize,
    /// Hidden width of BYOL's predictor (`d–h–d`); unused by the other methods.
    pub pred_hidden: usize,
    /// Build CaSSLe's distillation predictor `g` (`distill_predictor.`), needed by the CaSSLe,
    /// PNR and CroMo-Mixup strategies. It exists from the start so the optimiser sees one fixed
    /// set of variables for the whole run.
    pub distill_predictor: bool,
    /// Hidden width of `g`, 2048 (CaSSLe).
    pub distill_hidden: usize,
    /// SimCLR's temperature (0.2 CaSSLe, 0.5 CroMo-Mixup).
    pub info_nce: InfoNceConfig,
    /// Temperature of the contrastive distillation and of PNR (0.2) for SimCLR and MoCo.
    pub distill: InfoNceConfig,
    /// MoCo v2+ temperature and queue size (`momentum` seeds [`MethodConfig::ema`]).
    pub moco: MocoConfig,
    /// EMA schedule of the target network (BYOL and MoCo): τ from `base_tau` to `final_tau`
    /// over the run with [`crate::losses::ema_tau`].
    pub ema: ByolConfig,
    /// Barlow Twins (also CorInfoMax's pair loss, see [`Method::cross_loss`]).
    pub barlow: BarlowConfig,
    /// VICReg.
    pub vicreg: VicregConfig,
    /// CorInfoMax.
    pub corinfomax: CorInfoMaxConfig,
    /// MixCo or i-Mix added to the method's loss, or none.
    pub mix: Option<MixKind>,
    /// MixCo's temperature and weight β.
    pub mixco: MixcoConfig,
    /// i-Mix's temperature and Beta(α, α).
    pub imix: ImixConfig,
    /// BatchNorm of the encoder (and of its EMA target) in training steps: batch statistics
    /// with running-statistics updates (`true`, the from-scratch recipe), or the running
    /// statistics kept frozen (`false`: the encoder's BatchNorms act as fixed affine maps — what
    /// a pretrained start usually wants). The heads always use batch statistics.
    #[serde(default = "default_true")]
    pub backbone_bn_train: bool,
}

fn default_true() -> bool {
    true
}

impl MethodConfig {
    /// The defaults of `shared/DESIGN.md` §3/§5 for `kind` on `arch`: projector width w = 2048
    /// (1024 for `small-cnn`); SimCLR / MoCo d–w–128, BYOL d–2w–256 with predictor 256–2w–256,
    /// Barlow / VICReg d–w–w–w, CorInfoMax d–w–w–64; SimCLR τ 0.2, distillation τ 0.2; Barlow in
    /// the CIFAR setting of CaSSLe / CroMo-Mixup (λ_off 5e-3, scale 0.1); BYOL τ_ema 0.99 → 1,
    /// MoCo m 0.99 → 1; no mix; no distillation predictor.
    pub fn new(kind: MethodKind, arch: Arch) -> Self {
        let w = if arch == Arch::SmallCnn { 1024 } else { 2048 };
        let (proj_hidden, proj_out) = match kind {
            MethodKind::SimClr | MethodKind::Moco => (w, 128),
            MethodKind::Byol => (2 * w, 256),
            MethodKind::Barlow | MethodKind::Vicreg => (w, w),
            MethodKind::CorInfoMax => (w, 64),
        };
        let moco = MocoConfig::default();
        Self {
            kind,
            proj_hidden,
            proj_out,
            pred_hidden: 2 * w,
            distill_predictor: false,
            distill_hidden: 2048,
            info_nce: InfoNceConfig::default(),
            distill: InfoNceConfig { temperature: 0.2 },
            moco,
            ema: ByolConfig {
                base_tau: if kind == MethodKind::Moco {
                    moco.momentum
                } else {
                    0.99
                },
                final_tau: 1.0,
            },
            barlow: BarlowConfig::cifar(),
            vicreg: VicregConfig::default(),
            corinfomax: CorInfoMaxConfig::default(),
            mix: None,
            mixco: MixcoConfig::default(),
            imix: ImixConfig::default(),
            backbone_bn_train: true,
        }
    }

    /// The projector's layout for an encoder of feature width `d`.
    pub fn projector_spec(&self, d: usize) -> MlpSpec {
        let (w, o) = (self.proj_hidden, self.proj_out);
        match self.kind {
            MethodKind::SimClr => MlpSpec::simclr(d, w, o),
            MethodKind::Moco => MlpSpec::moco(d, w, o),
            MethodKind::Byol => MlpSpec::byol_projector(d, w, o),
            MethodKind::Barlow => MlpSpec::barlow(d, w, o),
            MethodKind::Vicreg => MlpSpec::vicreg(d, w, o),
            MethodKind::CorInfoMax => MlpSpec::corinfomax(d, w, o),
        }
    }

    fn check(&self) -> Result<()> {
        if self.proj_hidden == 0 || self.proj_out == 0 || self.pred_hidden == 0 {
            return Err(Error::invalid(format!(
                "method {}: head widths must be positive (projector {}–{}, predictor {})",
                self.kind, self.proj_hidden, self.proj_out, self.pred_hidden
            )));
        }
        if self.distill_predictor && self.distill_hidden == 0 {
            return Err(Error::invalid(
                "method: the distillation predictor's hidden width must be positive",
            ));
        }
        let e = self.ema;
        if self.kind.has_ema()
            && !((0.0..=1.0).contains(&e.base_tau) && (0.0..=1.0).contains(&e.final_tau))
        {
            return Err(Error::invalid(format!(
                "method {}: EMA rates must lie in [0, 1], got {} → {}",
                self.kind, e.base_tau, e.final_tau
            )));
        }
        if self.kind == MethodKind::Moco && self.moco.queue_size == 0 {
            return Err(Error::invalid(
                "method moco: the queue needs at least one key",
            ));
        }
        Ok(())
    }
}

/// What the online network computes for a batch of B images.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// Pooled encoder features, (B, D).
    pub feats: Tensor,
    /// Projector output, (B, d); L2-normalised for MoCo (its query q), raw otherwise.
    pub z: Tensor,
    /// Predictor output p = predictor(z), (B, d), for BYOL.
    pub p: Option<Tensor>,
}

impl Embedding {
    /// The vector a pair loss anchors on: p where the method has a predictor, else z.
    pub fn anchor(&self) -> &Tensor {
        self.p.as_ref().unwrap_or(&self.z)
    }

    /// Rows `start..start + len` of every tensor.
    pub fn rows(&self, start: usize, len: usize) -> Result<Embedding> {
        Ok(Embedding {
            feats: self.feats.narrow(0, start, len)?,
            z: self.z.narrow(0, start, len)?,
            p: self
                .p
                .as_ref()
                .map(|p| p.narrow(0, start, len))
                .transpose()?,
        })
    }
}

/// The online (and target) outputs for the two views of one batch of n images.
#[derive(Clone, Debug)]
pub struct Views {
    /// Pooled features of view 1, (n, D).
    pub feats1: Tensor,
    /// Pooled features of view 2, (n, D).
    pub feats2: Tensor,
    /// Projections of view 1, (n, d) (normalised for MoCo).
    pub z1: Tensor,
    /// Projections of view 2, (n, d) (normalised for MoCo).
    pub z2: Tensor,
    /// Predictions of view 1, (n, d) (BYOL).
    pub p1: Option<Tensor>,
    /// Predictions of view 2, (n, d) (BYOL).
    pub p2: Option<Tensor>,
    /// EMA-target projections of view 1, (n, d), detached (BYOL; MoCo's normalised keys).
    pub t1: Option<Tensor>,
    /// EMA-target projections of view 2, (n, d), detached (BYOL; MoCo's normalised keys).
    pub t2: Option<Tensor>,
}

impl Views {
    /// Views from the embeddings of the two views and their targets.
    pub fn from_parts(
        e1: Embedding,
        e2: Embedding,
        t1: Option<Tensor>,
        t2: Option<Tensor>,
    ) -> Self {
        Self {
            feats1: e1.feats,
            feats2: e2.feats,
            z1: e1.z,
            z2: e2.z,
            p1: e1.p,
            p2: e2.p,
            t1,
            t2,
        }
    }

    /// Number of images n.
    pub fn len(&self) -> usize {
        self.z1.dims().first().copied().unwrap_or(0)
    }

    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The embedding of view `v` (0 or 1).
    pub fn embedding(&self, v: usize) -> Embedding {
        let (feats, z, p) = if v == 0 {
            (&self.feats1, &self.z1, &self.p1)
        } else {
            (&self.feats2, &self.z2, &self.p2)
        };
        Embedding {
            feats: feats.clone(),
            z: z.clone(),
            p: p.clone(),
        }
    }

    /// The target of view `v` (0 or 1), if the method has an EMA target.
    pub fn target(&self, v: usize) -> Option<&Tensor> {
        if v == 0 {
            self.t1.as_ref()
        } else {
            self.t2.as_ref()
        }
    }

    /// Rows `start..start + len` of every tensor.
    pub fn rows(&self, start: usize, len: usize) -> Result<Views> {
        let r = |t: &Tensor| t.narrow(0, start, len);
        let ro = |t: &Option<Tensor>| t.as_ref().map(r).transpose();
        Ok(Views {
            feats1: r(&self.feats1)?,
            feats2: r(&self.feats2)?,
            z1: r(&self.z1)?,
            z2: r(&self.z2)?,
            p1: ro(&self.p1)?,
            p2: ro(&self.p2)?,
            t1: ro(&self.t1)?,
            t2: ro(&self.t2)?,
        })
    }
}

/// PNR's terms as they enter the objective (see [`Method::pnr_loss`]); the step's loss is
/// `ssl (or the method's own loss when None) + distill + negative`.
#[derive(Clone, Debug)]
pub struct PnrTerms {
    /// SimCLR / MoCo: PNR's main (plasticity) term, which replaces the method's own loss.
    /// Other methods: `None` (the method's own loss stays).
    pub ssl: Option<Tensor>,
    /// SimCLR / MoCo: PNR's regulariser (frozen positives, current vectors as pseudo-negatives).
    /// Other methods: the CaSSLe term `λ_d · distill_loss(g, f)`.
    pub distill: Tensor,
    /// Other methods: `−w · pnr_negative(g, f)`; SimCLR / MoCo: `None`.
    pub negative: Option<Tensor>,
}

/// An SSL method instance: online network, heads, target network and loss state.
pub struct Method {
    cfg: MethodConfig,
    arch: Arch,
    device: Device,
    varmap: VarMap,
    backbone: Box<dyn Encoder>,
    projector: Mlp,
    predictor: Option<Mlp>,
    distill_predictor: Option<Mlp>,
    ema: Option<EmaNet>,
    moco: Option<moco::MocoState>,
    corinfomax: Option<corinfomax::CorInfoMaxStates>,
    seed: u64,
}

impl Method {
    /// Builds the method for an `arch` encoder on `device` (f32), every tensor initialised from
    /// `seed` (PyTorch's default schemes: Kaiming-normal fan-out convolutions as torchvision's
    /// ResNet, uniform ±1/√fan_in Linear layers, BatchNorm 1 / 0; see `init_seeded`), so two
    /// methods built with one seed are identical. The EMA target starts as a copy of the online
    /// encoder + projector; MoCo's queues are random unit vectors drawn from `seed`.
    pub fn new(cfg: MethodConfig, arch: Arch, device: &Device, seed: u64) -> Result<Self> {
        cfg.check()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let backbone = build_encoder(arch, vb.pp("backbone"))?;
        let d = backbone.feature_dim();
        let projector = Mlp::new(&cfg.projector_spec(d), vb.pp("projector"))?;
        let predictor = if cfg.kind.has_predictor() {
            Some(Mlp::new(
                &MlpSpec::byol_predictor(cfg.proj_out, cfg.pred_hidden),
                vb.pp("predictor"),
            )?)
        } else {
            None
        };
        let distill_predictor = if cfg.distill_predictor {
            Some(Mlp::new(
                &MlpSpec::distill_predictor(cfg.proj_out, cfg.distill_hidden),
                vb.pp("distill_predictor"),
            )?)
        } else {
            None
        };
        init::init_seeded(&varmap, seed)?;
        let ema = if cfg.kind.has_ema() {
            Some(EmaNet::snapshot(
                &varmap,
                arch,
                &cfg.projector_spec(d),
                device,
            )?)
        } else {
            None
        };
        let moco = if cfg.kind == MethodKind::Moco {
            Some(moco::MocoState::new(&cfg, device, seed)?)
        } else {
            None
        };
        let corinfomax = if cfg.kind == MethodKind::CorInfoMax {
            Some(corinfomax::CorInfoMaxStates::new(&cfg, device)?)
        } else {
            None
        };
        Ok(Self {
            cfg,
            arch,
            device: device.clone(),
            varmap,
            backbone,
            projector,
            predictor,
            distill_predictor,
            ema,
            moco,
            corinfomax,
            seed,
        })
    }

    /// The method's kind.
    pub fn kind(&self) -> MethodKind {
        self.cfg.kind
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MethodConfig {
        &self.cfg
    }

    /// The seed it was initialised from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The encoder architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The device every tensor lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The online encoder.
    pub fn encoder(&self) -> &dyn Encoder {
        self.backbone.as_ref()
    }

    /// The projector head.
    pub fn projector(&self) -> &Mlp {
        &self.projector
    }

    /// The distillation predictor `g`, if built.
    pub fn distill_predictor(&self) -> Option<&Mlp> {
        self.distill_predictor.as_ref()
    }

    /// The EMA target network (BYOL, MoCo).
    pub fn ema(&self) -> Option<&EmaNet> {
        self.ema.as_ref()
    }

    /// Loads encoder weights (torchvision / timm names, as in `models/`) from the safetensors
    /// file `path` into the online encoder (`backbone.*`), strictly: a missing, unexpected or
    /// mis-shaped encoder tensor is an error naming it; a classifier head in the file is skipped
    /// and listed in the report. The EMA target (BYOL, MoCo) is re-made from the loaded encoder.
    /// Projector and predictors keep their fresh initialisation.
    pub fn load_backbone(&mut self, path: &std::path::Path) -> Result<LoadReport> {
        let report = load_into(
            path,
            self.arch,
            false,
            &self.varmap,
            "backbone",
            DType::F32,
            &self.device,
        )?;
        self.sync_ema()?;
        Ok(report)
    }

    /// The VarMap of every trainable tensor (and the BatchNorm running statistics of the online
    /// network), under `backbone.`, `projector.`, `predictor.`, `distill_predictor.`.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The variables an optimiser updates, sorted by name; BatchNorm running statistics left out.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        trainable_vars(&self.varmap, "")
    }

    /// The online network on a batch: `(B,3,H,W) -> Embedding { feats (B,D), z (B,d), p }`.
    /// `train` selects batch statistics in every BatchNorm (and updates the running statistics).
    /// With [`MethodConfig::backbone_bn_train`] false the encoder's BatchNorms use their running
    /// statistics even when `train` is true.
    pub fn embed(&self, x: &Tensor, train: bool) -> Result<Embedding> {
        let feats = self
            .backbone
            .forward_t(x, train && self.cfg.backbone_bn_train)?;
        let mut z = self.projector.forward(&feats, train)?;
        if self.cfg.kind == MethodKind::Moco {
            z = crate::losses::l2_normalize(&z)?;
        }
        let p = match &self.predictor {
            Some(pred) => Some(pred.forward(&z, train)?),
            None => None,
        };
        Ok(Embedding { feats, z, p })
    }

    /// The EMA target network on a batch in train mode (as solo-learn runs its momentum
    /// encoder): `(B,3,H,W) -> (B,d)` detached, L2-normalised for MoCo (the keys k);
    /// `None` for methods without a target.
    pub fn embed_target(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(ema) = &self.ema else {
            return Ok(None);
        };
        let (_, mut z) = ema.forward_bn(x, true, self.cfg.backbone_bn_train)?;
        if self.cfg.kind == MethodKind::Moco {
            z = crate::losses::l2_normalize(&z)?;
        }
        Ok(Some(z.detach()))
    }

    /// The vectors a mixed or replayed sample of the *current* model is pulled towards: the EMA
    /// target where the method has one (BYOL's target, MoCo's keys; detached), otherwise the
    /// online projection itself (not detached).
    pub fn current_target(&self, e: &Embedding, target: Option<&Tensor>) -> Result<Tensor> {
        match (self.cfg.kind.has_ema(), target) {
            (true, Some(t)) => Ok(t.clone()),
            (true, None) => Err(Error::invalid(format!(
                "method {}: the current target needs the EMA target's output",
                self.cfg.kind
            ))),
            (false, _) => Ok(e.z.clone()),
        }
    }

    /// Online network on both views (train mode) and the target network where there is one.
    /// `x1`, `x2`: (n,3,H,W) each.
    pub fn views(&self, x1: &Tensor, x2: &Tensor) -> Result<Views> {
        check_images(x1, "x1")?;
        check_images(x2, "x2")?;
        if x1.dims() != x2.dims() {
            return Err(Error::invalid(format!(
                "method {}: the two views must have one shape, got {:?} and {:?}",
                self.cfg.kind,
                x1.dims(),
                x2.dims()
            )));
        }
        let e1 = self.embed(x1, true)?;
        let e2 = self.embed(x2, true)?;
        let t1 = self.embed_target(x1)?;
        let t2 = self.embed_target(x2)?;
        Ok(Views::from_parts(e1, e2, t1, t2))
    }

    /// CaSSLe's distillation predictor on projections: `(B,d) -> (B,d)` (train mode). Errors if
    /// the method was built without it.
    pub fn distill_predict(&self, z: &Tensor) -> Result<Tensor> {
        match &self.distill_predictor {
            Some(g) => g.forward(z, true),
            None => Err(Error::invalid(format!(
                "method {}: built without a distillation predictor (set \
                 MethodConfig::distill_predictor for the cassle, pnr and cromo strategies)",
                self.cfg.kind
            ))),
        }
    }

    /// The method's own loss on two views (scalar). Stages the state it changes (MoCo: the keys
    /// `t1`, `t2` to enqueue; CorInfoMax: the updated running statistics), committed by
    /// [`Method::after_step`].
    pub fn ssl_loss(&mut self, v: &Views) -> Result<Tensor> {
        match self.cfg.kind {
            MethodKind::SimClr => simclr::ssl(&self.cfg, v),
            MethodKind::Moco => {
                let cfg = self.cfg.clone();
                moco::ssl(&cfg, self.moco_state_mut()?, v)
            }
            MethodKind::Byol => byol::ssl(v),
            MethodKind::Barlow => barlow::ssl(&self.cfg, v),
            MethodKind::Vicreg => vicreg::ssl(&self.cfg, v),
            MethodKind::CorInfoMax => {
                let cfg = self.cfg.corinfomax;
                corinfomax::ssl(&cfg, self.corinfomax_state_mut()?, v)
            }
        }
    }

    /// CaSSLe's distillation term `L_SSL(g(z), f(x))` over both views, as CaSSLe (and, for
    /// CorInfoMax, CroMo-Mixup) compute it. `g`: `[g(z¹), g(z²)]`, `f`: `[f(x¹), f(x²)]` frozen
    /// projections, all (n, d); `f` is detached here. Scalar, unweighted (the strategy applies
    /// λ_d):
    /// * SimCLR, MoCo: [`crate::losses::cassle_simclr_distill`] at the distillation temperature;
    /// * BYOL: `½ [byol(g¹, f¹) + byol(g², f²)]` (`predictive` distiller);
    /// * Barlow: `½ [barlow(g¹, f¹) + barlow(g², f²)]` (`decorrelative`);
    /// * VICReg: `½ [mse(g¹, f¹) + mse(g², f²)]` (`predictive_mse`, λ_d = 25);
    /// * CorInfoMax (a symmetrised form of CroMo-Mixup's, which takes the log-det term on
    ///   (g¹, f¹) and the invariance term on (g², f²)): with ĝ, f̂ L2-normalised,
    ///   `inv_weight · ½ [mse(ĝ¹, f̂¹) + mse(ĝ², f̂²)] + cov_weight · ½ · cov(ĝ¹, ĝ²)`, where
    ///   `cov = −[log det(R'¹ + εI) + log det(R'² + εI)] / d` is CorInfoMax's log-det term on
    ///   running statistics of ĝ kept apart from the SSL loss's (staged; reset per task).
    pub fn distill_loss(&mut self, g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
        let f = [f[0].detach(), f[1].detach()];
        let f = [&f[0], &f[1]];
        match self.cfg.kind {
            MethodKind::SimClr | MethodKind::Moco => simclr::distill(&self.cfg, g, f),
            MethodKind::Byol => byol::distill(g, f),
            MethodKind::Barlow => barlow::distill(&self.cfg, g, f),
            MethodKind::Vicreg => vicreg::distill(g, f),
            MethodKind::CorInfoMax => {
                let cfg = self.cfg.corinfomax;
                corinfomax::distill(&cfg, self.corinfomax_state_mut()?, g, f)
            }
        }
    }

    /// `L_SSL(a, b)` for one pair of (m, d) batches, the form CroMo-Mixup's trainers use for the
    /// mixed terms: `a` the anchor (a mixed sample's [`Embedding::anchor`]), `b` its target (the
    /// current model's [`Method::current_target`] or a frozen projection). `view` (0 or 1) picks
    /// MoCo's queue. Gradient reaches `b` wherever it carries one, except through BYOL's loss
    /// and MoCo's keys, which detach their target as the methods do. Scalar:
    /// * SimCLR: `info_nce(a, b)` (NT-Xent over the 2m vectors, CroMo's `info_nce_loss`);
    /// * MoCo: `moco_v2(norm a, norm b, queue of view)`;
    /// * BYOL: `byol(a, b)` = 2 − 2 mean cos (CroMo's `loss_func`);
    /// * Barlow: `barlow(a, b)`; VICReg: `vicreg(a, b)` total;
    /// * CorInfoMax: `barlow(norm a, norm b)` with [`MethodConfig::barlow`], as CroMo-Mixup's
    ///   CorInfoMax trainer does for its mixed terms.
    pub fn cross_loss(&self, a: &Tensor, b: &Tensor, view: usize) -> Result<Tensor> {
        match self.cfg.kind {
            MethodKind::SimClr => simclr::cross(&self.cfg, a, b),
            MethodKind::Moco => moco::cross(&self.cfg, self.moco_state()?, a, b, view),
            MethodKind::Byol => crate::losses::byol(a, b),
            MethodKind::Barlow => crate::losses::barlow(a, b, &self.cfg.barlow),
            MethodKind::Vicreg => Ok(crate::losses::vicreg(a, b, &self.cfg.vicreg)?.total),
            MethodKind::CorInfoMax => corinfomax::cross(&self.cfg, a, b),
        }
    }

    /// PNR's loss for task ≥ 1 (Cha et al., PNR code). `v`: the views of the current batch;
    /// `g`: `[g(z¹), g(z²)]`; `f`: frozen projections `[f(x¹), f(x²)]` (detached here);
    /// `distill_weight` λ_d and `negative_weight` w apply to the non-contrastive form.
    /// * SimCLR: [`crate::losses::pnr_simclr`] at the distillation temperature; `ssl` = main
    ///   term (replaces NT-Xent), `distill` = its regulariser.
    /// * MoCo: PNR's `moco_pnr_loss_func` (see `methods/moco.rs`; stages the frozen keys for
    ///   PNR's second queue pair); `ssl` = main term, `distill` = regulariser.
    /// * BYOL, Barlow, VICReg, CorInfoMax: `distill = λ_d · distill_loss(g, f)`,
    ///   `negative = −w · pnr_negative(g, f)` with the pseudo-negative the frozen output of the
    ///   *other* view ([`Method::pnr_negative`]); the method's own loss stays. Errors for VICReg
    ///   when `w ≥ λ_d` (unbounded below).
    pub fn pnr_loss(
        &mut self,
        v: &Views,
        g: [&Tensor; 2],
        f: [&Tensor; 2],
        distill_weight: f64,
        negative_weight: f64,
    ) -> Result<PnrTerms> {
        let fd = [f[0].detach(), f[1].detach()];
        let f = [&fd[0], &fd[1]];
        match self.cfg.kind {
            MethodKind::SimClr => {
                let t = simclr::pnr(&self.cfg, v, g, f)?;
                Ok(PnrTerms {
                    ssl: Some(t.main),
                    distill: t.reg,
                    negative: None,
                })
            }
            MethodKind::Moco => {
                let cfg = self.cfg.clone();
                let (main, reg) = moco::pnr(&cfg, self.moco_state_mut()?, v, g, f)?;
                Ok(PnrTerms {
                    ssl: Some(main),
                    distill: reg,
                    negative: None,
                })
            }
            _ => {
                check_pnr_weights(self.cfg.kind, distill_weight, negative_weight)?;
                let pos = self.distill_loss(g, f)?;
                let neg = self.pnr_negative(g, f)?;
                Ok(PnrTerms {
                    ssl: None,
                    distill: pos.affine(distill_weight, 0.0)?,
                    negative: Some(neg.affine(-negative_weight, 0.0)?),
                })
            }
        }
    }

    /// PNR's pseudo-negative term for the non-contrastive methods (unweighted; PNR subtracts
    /// `w ·` it), with the frozen output of the *other* view:
    /// * BYOL: `½ [byol(g¹, f²) + byol(g², f¹)]`;
    /// * Barlow: `½ [−cos(g¹, f²) − cos(g², f¹)]` (SimSiam's loss: PNR's Barlow wrapper thus
    ///   *adds* `w · cos`);
    /// * VICReg: `½ [mse(g¹, f²) + mse(g², f¹)]` (bounded below in the total only when
    ///   w < λ_d, which [`Method::pnr_loss`] enforces);
    /// * CorInfoMax: `inv_weight · ½ [mse(ĝ¹, f̂²) + mse(ĝ², f̂¹)]` on L2-normalised vectors (its
    ///   distillation's invariance term with the views crossed).
    ///
    /// Errors for SimCLR / MoCo, whose PNR form has no separate negative.
    pub fn pnr_negative(&self, g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
        let f = [f[0].detach(), f[1].detach()];
        let f = [&f[0], &f[1]];
        match self.cfg.kind {
            MethodKind::Byol => byol::pnr_negative(g, f),
            MethodKind::Barlow => barlow::pnr_negative(g, f),
            MethodKind::Vicreg => vicreg::pnr_negative(g, f),
            MethodKind::CorInfoMax => corinfomax::pnr_negative(&self.cfg.corinfomax, g, f),
            k => Err(Error::invalid(format!(
                "method {k}: PNR replaces the contrastive loss instead of adding a negative term"
            ))),
        }
    }

    /// The MixCo or i-Mix term (weighted, as it enters the loss) when [`MethodConfig::mix`] is
    /// set, else `None`. `x1`: the view-1 images `(n,3,H,W)` the views `v` came from; the mixed
    /// images go through the online network in train mode. See `methods/mix.rs` for the forms.
    pub fn mix_loss<R: Rng + ?Sized>(
        &self,
        x1: &Tensor,
        v: &Views,
        rng: &mut R,
    ) -> Result<Option<Tensor>> {
        match self.cfg.mix {
            None => Ok(None),
            Some(kind) => mix::mix_loss(self, kind, x1, v, rng).map(Some),
        }
    }

    /// Called once after every optimiser step: commits the staged state (MoCo enqueues the keys
    /// of this step, CorInfoMax takes its updated statistics) and moves the EMA target,
    /// `θ_t ← τ θ_t + (1 − τ) θ_o` over the trainable tensors of encoder and projector (not the
    /// BatchNorm running statistics, which the target's own train-mode forwards keep), with
    /// `τ = ema_tau(step, total_steps)` (`step` counts from 0, so the first update uses
    /// `base_tau`; `step ≤ total_steps`).
    pub fn after_step(&mut self, step: usize, total_steps: usize) -> Result<()> {
        if let Some(m) = &mut self.moco {
            m.commit()?;
        }
        if let Some(c) = &mut self.corinfomax {
            c.commit();
        }
        if let Some(ema) = &self.ema {
            let tau = crate::losses::ema_tau(&self.cfg.ema, step, total_steps)?;
            ema.update(&self.varmap, tau)?;
        }
        Ok(())
    }

    /// Makes the EMA target an exact copy of the online encoder + projector again (no-op for
    /// methods without one). Call it after loading weights into the online network directly
    /// (e.g. a pretrained encoder through [`Method::varmap`]); [`Method::new`] already starts
    /// the target as a copy, and a checkpoint restores it with its `ema.*` tensors.
    pub fn sync_ema(&mut self) -> Result<()> {
        if self.ema.is_some() {
            let spec = self.cfg.projector_spec(self.backbone.feature_dim());
            self.ema = Some(EmaNet::snapshot(
                &self.varmap,
                self.arch,
                &spec,
                &self.device,
            )?);
        }
        Ok(())
    }

    /// Called at the start of every task: resets CorInfoMax's running statistics (main and pair)
    /// and drops any staged, uncommitted state.
    pub fn begin_task(&mut self) -> Result<()> {
        if let Some(c) = &mut self.corinfomax {
            *c = corinfomax::CorInfoMaxStates::new(&self.cfg, &self.device)?;
        }
        if let Some(m) = &mut self.moco {
            m.discard_pending();
        }
        Ok(())
    }

    /// Every tensor that defines the method's state, sorted by name: the VarMap (trainable
    /// tensors and online BatchNorm statistics, under their own names), the EMA target
    /// (`ema.<name>`), MoCo's queues (`moco.queue.{0,1}`, `moco.queue_ptr` u32 (2,), and once PNR
    /// ran `moco.frozen_queue.{0,1}`, `moco.frozen_queue_ptr`) and CorInfoMax's statistics
    /// (`corinfomax.{mu1,mu2,r1,r2}`, `corinfomax.pair.{…}`). Staged, uncommitted updates are not
    /// included. [`Method::set_tensors`] reads them back.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = {
            let data = self.varmap.data().lock().map_err(|_| lock_error())?;
            data.iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect()
        };
        if let Some(ema) = &self.ema {
            out.extend(
                ema.tensors()?
                    .into_iter()
                    .map(|(n, t)| (format!("ema.{n}"), t)),
            );
        }
        if let Some(m) = &self.moco {
            out.extend(m.tensors()?);
        }
        if let Some(c) = &self.corinfomax {
            out.extend(c.tensors());
        }
        out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        Ok(out)
    }

    /// Overwrites state tensors by name (any subset of [`Method::tensors`]' names, e.g. a
    /// checkpoint). Every name must be known and every shape must match; values are converted to
    /// the stored dtype and device. Errors name the offending tensor; on error, tensors listed
    /// before it may already have been written.
    pub fn set_tensors(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let mut moco_parts: HashMap<String, Tensor> = HashMap::new();
        let mut cim_parts: HashMap<String, Tensor> = HashMap::new();
        for (name, t) in tensors {
            if let Some(rest) = name.strip_prefix("ema.") {
                match &self.ema {
                    Some(ema) => ema.set_tensor(rest, t)?,
                    None => return Err(unknown_tensor(name, self.cfg.kind)),
                }
            } else if name.starts_with("moco.") {
                if self.moco.is_none() {
                    return Err(unknown_tensor(name, self.cfg.kind));
                }
                moco_parts.insert(name.clone(), t.clone());
            } else if name.starts_with("corinfomax.") {
                if self.corinfomax.is_none() {
                    return Err(unknown_tensor(name, self.cfg.kind));
                }
                cim_parts.insert(name.clone(), t.clone());
            } else {
                let data = self.varmap.data().lock().map_err(|_| lock_error())?;
                let var = data
                    .get(name)
                    .ok_or_else(|| unknown_tensor(name, self.cfg.kind))?;
                set_var(var, t, name)?;
            }
        }
        if !moco_parts.is_empty() {
            let (cfg, dev) = (self.cfg.clone(), self.device.clone());
            self.moco_state_mut()?
                .set_tensors(&moco_parts, &cfg, &dev)?;
        }
        if !cim_parts.is_empty() {
            self.corinfomax_state_mut()?.set_tensors(&cim_parts)?;
        }
        Ok(())
    }

    pub(crate) fn moco_state(&self) -> Result<&moco::MocoState> {
        self.moco
            .as_ref()
            .ok_or_else(|| Error::invalid("internal: MoCo state missing"))
    }

    fn moco_state_mut(&mut self) -> Result<&mut moco::MocoState> {
        self.moco
            .as_mut()
            .ok_or_else(|| Error::invalid("internal: MoCo state missing"))
    }

    fn corinfomax_state_mut(&mut self) -> Result<&mut corinfomax::CorInfoMaxStates> {
        self.corinfomax
            .as_mut()
            .ok_or_else(|| Error::invalid("internal: CorInfoMax state missing"))
    }
}

/// Rejects PNR weights that make the objective unbounded below (VICReg: the pseudo-negative MSE
/// must weigh less than the positive MSE, so that per sample `λ_d‖g − f⁺‖² − w‖g − f⁻‖²` stays a
/// convex quadratic in g) or that are not finite and non-negative.
pub(crate) fn check_pnr_weights(kind: MethodKind, distill: f64, negative: f64) -> Result<()> {
    if !(distill.is_finite() && distill >= 0.0 && negative.is_finite() && negative >= 0.0) {
        return Err(Error::invalid(format!(
            "pnr with {kind}: weights must be finite and non-negative, got λ_d {distill}, w {negative}"
        )));
    }
    if kind == MethodKind::Vicreg && negative >= distill {
        return Err(Error::invalid(format!(
            "pnr with vicreg: the pseudo-negative weight {negative} must be below the \
             distillation weight {distill}, otherwise −w·MSE(g, f⁻) makes the loss unbounded below"
        )));
    }
    Ok(())
}

/// Images must be a floating-point (n, C, H, W) batch with n ≥ 1.
pub(crate) fn check_images(x: &Tensor, name: &str) -> Result<usize> {
    match x.dims() {
        &[n, _, _, _] if n > 0 && x.dtype().is_float() => Ok(n),
        dims => Err(Error::invalid(format!(
            "`{name}` must be a non-empty floating-point (n, C, H, W) image batch, got {:?} {dims:?}",
            x.dtype()
        ))),
    }
}

/// Writes `t` into `var` (shape must match; converted to the var's dtype and device).
pub(crate) fn set_var(var: &Var, t: &Tensor, name: &str) -> Result<()> {
    if var.dims() != t.dims() {
        return Err(Error::invalid(format!(
            "tensor `{name}`: shape {:?} does not match the stored {:?}",
            t.dims(),
            var.dims()
        )));
    }
    // A fresh copy: `set` refuses a source that shares the var's storage.
    let t = t
        .detach()
        .to_dtype(var.dtype())?
        .to_device(var.device())?
        .copy()?
        .detach();
    var.set(&t)?;
    Ok(())
}

fn unknown_tensor(name: &str, kind: MethodKind) -> Error {
    Error::invalid(format!(
        "method {kind}: no state tensor named `{name}` (see Method::tensors for the names)"
    ))
}

fn lock_error() -> Error {
    Error::invalid("internal: a VarMap lock is poisoned")
}

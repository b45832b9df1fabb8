#!/usr/bin/env python3
"""Reference values and gradients of cromo's SSL losses, computed by PyTorch.

Command (from the repository root; needs torch >= 2.0, CPU is enough):

    python3 tools/gen_loss_fixtures.py            # writes tests/fixtures/losses/losses.json

(the committed fixture was produced with `/work/pyenv/bin/python tools/gen_loss_fixtures.py`,
torch 2.x on CPU). Output is deterministic: inputs come from a seeded torch.Generator.

Each loss is written here the way the authors' code writes it (solo-learn, CaSSLe, PNR,
CroMo-Mixup, corinfomax-ssl, MixCo's Algorithm 1, i-Mix's builder.py): masks with
fill_diagonal_, F.cross_entropy, BatchNorm1d(affine=False), torch.logdet, ... — independently of
the Rust code, which uses other formulations (log-sum-exp blocks, a Cholesky log-det).

Inputs are drawn in float32 and stored exactly (every float32 is an exact JSON double); the
losses and gradients are then evaluated in float64 so that the reference is accurate well below
the test tolerance. Every fixed input that would be random in training (mixing coefficients,
partners, queues, running statistics) is part of the case, so no RNG has to match.

JSON layout: {"cases": [{"name", "loss", "config", "inputs": {name: tensor}, "value",
"outputs": {name: scalar or tensor}, "grads": {name: tensor}, "no_grad": [names]}]}, with
tensor = {"shape": [...], "data": [... row-major ...]}. `grads` are d value / d input;
`no_grad` lists inputs the loss must not propagate into (detached targets, queues, frozen
features).
"""

import json
import os

import torch
import torch.nn.functional as F

N, D = 8, 16
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "losses", "losses.json")

gen = torch.Generator().manual_seed(20240607)


def randn(*shape, scale=1.0):
    """float32 normal draw, returned as float64 (exactly the stored values)."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).double()


def unit_rows(*shape):
    """Rows normalised in float32 (as the stored input), as float64."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float32)
    return F.normalize(x, dim=-1).double()


def enc(t):
    """A reference result (float64 values)."""
    t = t.detach().double()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def enc_input(t):
    # inputs are float32-representable by construction; store the float32 values
    return {"shape": list(t.shape),
            "data": [float(v) for v in t.detach().to(torch.float32).reshape(-1).tolist()]}


# ----------------------------------------------------------------------------------------------
# Reference losses, in the authors' style.
# ----------------------------------------------------------------------------------------------

def simclr_loss_func(z1, z2, temperature, extra_negatives=None):
    """solo-learn / CaSSLe simclr_loss_func; extra negatives appended to every denominator."""
    b = z1.size(0)
    z = F.normalize(torch.cat((z1, z2), dim=0), dim=-1)
    logits = torch.einsum("if, jf -> ij", z, z) / temperature
    pos_mask = torch.zeros((2 * b, 2 * b), dtype=torch.bool)
    pos_mask[:, b:].fill_diagonal_(True)
    pos_mask[b:, :].fill_diagonal_(True)
    logit_mask = torch.ones_like(pos_mask).fill_diagonal_(0)
    if extra_negatives is not None:
        e = F.normalize(extra_negatives, dim=-1)
        logits = torch.cat([logits, torch.einsum("if, jf -> ij", z, e) / temperature], dim=1)
        k = e.size(0)
        pos_mask = torch.cat([pos_mask, torch.zeros((2 * b, k), dtype=torch.bool)], dim=1)
        logit_mask = torch.cat([logit_mask, torch.ones((2 * b, k), dtype=torch.bool)], dim=1)
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    exp_logits = torch.exp(logits) * logit_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (pos_mask * log_prob).sum(1) / pos_mask.sum(1)
    return -mean_log_prob_pos.mean()


def simclr_distill_loss_func(p1, p2, z1, z2, temperature):
    """CaSSLe cassle/losses/simclr.py."""
    b = z1.size(0)
    p = F.normalize(torch.cat([p1, p2]), dim=-1)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    logits = torch.einsum("if, jf -> ij", p, z) / temperature
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    pos_mask = torch.zeros((2 * b, 2 * b), dtype=torch.bool)
    pos_mask.fill_diagonal_(True)
    logit_mask = torch.ones_like(pos_mask)
    exp_logits = torch.exp(logits) * logit_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (pos_mask * log_prob).sum(1) / pos_mask.sum(1)
    return -mean_log_prob_pos.mean()


def cassle_contrastive_distill(g1, g2, f1, f2, temperature):
    """CaSSLe contrastive_distill_wrapper: average of the call and its mirror."""
    f1, f2 = f1.detach(), f2.detach()
    return (simclr_distill_loss_func(g1, g2, f1, f2, temperature)
            + simclr_distill_loss_func(f1, f2, g1, g2, temperature)) / 2


def pnr_simclr_terms(p1, p2, z1, z2, f1, f2, temperature):
    """PNR cassle/losses/pnr.py simclr_moco_loss_func, returning (loss1, loss2)."""
    b = z1.size(0)
    p = F.normalize(torch.cat([p1, p2], dim=0), dim=-1)
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)
    f = F.normalize(torch.cat([f1, f2], dim=0), dim=-1)
    logits1 = torch.einsum("if, jf -> ij", z, z) / temperature
    logits1_prev = torch.einsum("if, jf -> ij", z, f) / temperature
    logits2 = torch.einsum("if, jf -> ij", p, f) / temperature
    logits2_prev = torch.einsum("if, jf -> ij", p, z) / temperature
    logits1_cat = torch.cat((logits1, logits1_prev), dim=1)
    logits2_cat = torch.cat((logits2, logits2_prev), dim=1)
    logits1_max, _ = torch.max(logits1_cat, dim=1, keepdim=True)
    logits1_cat = logits1_cat - logits1_max.detach()
    logits2_max, _ = torch.max(logits2_cat, dim=1, keepdim=True)
    logits2_cat = logits2_cat - logits2_max.detach()
    pos_mask = torch.zeros((2 * b, 2 * b), dtype=torch.bool)
    pos_mask[:, b:].fill_diagonal_(True)
    pos_mask[b:, :].fill_diagonal_(True)
    pos_mask2 = torch.zeros((2 * b, 2 * b), dtype=torch.bool)
    pos_mask2.fill_diagonal_(True)
    logit_mask = torch.ones_like(pos_mask).fill_diagonal_(0)
    logit_mask_cat = torch.cat((logit_mask, logit_mask), dim=1)
    exp_logits1 = torch.exp(logits1_cat) * logit_mask_cat
    log_prob1 = logits1_cat - torch.log(exp_logits1.sum(1, keepdim=True))
    exp_logits2 = torch.exp(logits2_cat) * logit_mask_cat
    log_prob2 = logits2_cat - torch.log(exp_logits2.sum(1, keepdim=True))
    zeros_mask = torch.zeros_like(pos_mask)
    pos_mask = torch.cat((pos_mask, zeros_mask), dim=1)
    pos_mask2 = torch.cat((pos_mask2, zeros_mask), dim=1)
    loss1 = -((pos_mask * log_prob1).sum(1) / pos_mask.sum(1)).mean()
    loss2 = -((pos_mask2 * log_prob2).sum(1) / pos_mask.sum(1)).mean()
    return loss1, loss2


def pnr_simclr(z1, z2, p1, p2, f1, f2, temperature):
    """SimCLR_PNR_Wrapper: average of the call and the view-swapped call."""
    f1, f2 = f1.detach(), f2.detach()
    a1, a2 = pnr_simclr_terms(p1, p2, z1, z2, f1, f2, temperature)
    b1, b2 = pnr_simclr_terms(p2, p1, z2, z1, f2, f1, temperature)
    return (a1 + b1) / 2, (a2 + b2) / 2


def mocov2plus_loss_func(query, key, queue, temperature):
    """solo-learn; queue stored as (K, D) rows here (solo-learn keeps (D, K))."""
    key = key.detach()
    queue = queue.detach()
    pos = torch.einsum("nc,nc->n", [query, key]).unsqueeze(-1)
    neg = torch.einsum("nc,kc->nk", [query, queue])
    logits = torch.cat([pos, neg], dim=1) / temperature
    targets = torch.zeros(query.size(0), dtype=torch.long)
    return F.cross_entropy(logits, targets)


def byol_loss_func(p, z):
    """solo-learn byol_loss_func (simplified)."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


def barlow_loss_solo(z1, z2, lamb, scale_loss):
    """solo-learn / CaSSLe barlow_loss_func."""
    n, d = z1.size()
    bn = torch.nn.BatchNorm1d(d, affine=False).double()
    bn.train()
    z1 = bn(z1)
    z2 = bn(z2)
    corr = torch.einsum("bi, bj -> ij", z1, z2) / n
    diag = torch.eye(d, dtype=torch.float64)
    cdif = (corr - diag).pow(2)
    cdif[~diag.bool()] *= lamb
    return scale_loss * cdif.sum()


def off_diagonal(x):
    n, m = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_loss_cromo(z1, z2, lamb, scale_loss):
    """CroMo-Mixup: unbiased std, no epsilon."""
    n = z1.size(0)
    z1n = (z1 - z1.mean(0)) / z1.std(0)
    z2n = (z2 - z2.mean(0)) / z2.std(0)
    c = z1n.T @ z2n / n
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    return scale_loss * (on_diag + lamb * off_diag)


def vicreg_terms(z1, z2):
    """solo-learn vicreg: invariance, variance (sum over views), covariance."""
    sim = F.mse_loss(z1, z2)
    eps = 1e-4
    std_z1 = torch.sqrt(z1.var(dim=0) + eps)
    std_z2 = torch.sqrt(z2.var(dim=0) + eps)
    var = torch.mean(F.relu(1 - std_z1)) + torch.mean(F.relu(1 - std_z2))
    n, d = z1.size()
    z1c = z1 - z1.mean(dim=0)
    z2c = z2 - z2.mean(dim=0)
    cov_z1 = (z1c.T @ z1c) / (n - 1)
    cov_z2 = (z2c.T @ z2c) / (n - 1)
    diag = torch.eye(d, dtype=torch.bool)
    cov = cov_z1[~diag].pow(2).sum() / d + cov_z2[~diag].pow(2).sum() / d
    return sim, var, cov


class CovarianceLoss:
    """corinfomax-ssl / CroMo-Mixup CovarianceLoss (state kept in float64)."""

    def __init__(self, d, R_ini=1.0, la_R=0.01, la_mu=0.01, R_eps_weight=1e-8):
        self.R1 = R_ini * torch.eye(d, dtype=torch.float64)
        self.mu1 = torch.zeros(d, dtype=torch.float64)
        self.R2 = R_ini * torch.eye(d, dtype=torch.float64)
        self.mu2 = torch.zeros(d, dtype=torch.float64)
        self.la_R, self.la_mu = la_R, la_mu
        self.R_eps = R_eps_weight * torch.eye(d, dtype=torch.float64)

    def __call__(self, z1, z2):
        la_R, la_mu = self.la_R, self.la_mu
        N, D = z1.size()
        mu_update1 = torch.mean(z1, 0)
        mu_update2 = torch.mean(z2, 0)
        self.new_mu1 = la_mu * self.mu1 + (1 - la_mu) * mu_update1
        self.new_mu2 = la_mu * self.mu2 + (1 - la_mu) * mu_update2
        z1_hat = z1 - self.new_mu1
        z2_hat = z2 - self.new_mu2
        R1_update = (z1_hat.T @ z1_hat) / N
        R2_update = (z2_hat.T @ z2_hat) / N
        self.new_R1 = la_R * self.R1 + (1 - la_R) * R1_update
        self.new_R2 = la_R * self.R2 + (1 - la_R) * R2_update
        cov_loss = -(torch.logdet(self.new_R1 + self.R_eps)
                     + torch.logdet(self.new_R2 + self.R_eps)) / D
        self.R1 = self.new_R1.detach()
        self.mu1 = self.new_mu1.detach()
        self.R2 = self.new_R2.detach()
        self.mu2 = self.new_mu2.detach()
        return cov_loss


def corinfomax_step(closs, z1, z2, sim_w, cov_w, normalize):
    """CroMo-Mixup train_infomax step body."""
    if normalize:
        z1 = F.normalize(z1, p=2)
        z2 = F.normalize(z2, p=2)
    cov_loss = closs(z1, z2)
    sim_loss = F.mse_loss(z1, z2)
    return sim_w * sim_loss + cov_w * cov_loss, cov_loss, sim_loss


def mixco_loss(q_mix, k, lam, queue, tau_mix):
    """MixCo Algorithm 1 (soft-target cross-entropy form), q/k/queue normalised."""
    q_mix = F.normalize(q_mix, dim=1)
    k = F.normalize(k, dim=1)
    m = q_mix.size(0)
    logits = [torch.mm(q_mix, k.t())]
    if queue is not None:
        logits.append(torch.mm(q_mix, F.normalize(queue, dim=1).t()))
    logits = torch.cat(logits, dim=1) / tau_mix
    # lambda on key i, (1 - lambda) on key i + m, zero on the rest of the keys and the queue
    labels = torch.zeros_like(logits)
    labels[:, :m] = torch.diag(lam)
    labels[:, m:2 * m] = torch.diag(1 - lam)
    return -(labels * F.log_softmax(logits, dim=1)).sum(1).mean()


def imix_npair(q_mix, k, lam, labels_aux, temp):
    """i-Mix builder.py, method 'npair' with imixup."""
    q = F.normalize(q_mix, dim=1)
    k = F.normalize(k, dim=1)
    logits = q.mm(k.t()) / temp
    labels = torch.arange(q.size(0))
    criterion = torch.nn.CrossEntropyLoss(reduction="none")
    return (lam * criterion(logits, labels) + (1. - lam) * criterion(logits, labels_aux)).mean()


def imix_byol(p_mix, z, lam, labels_aux):
    """i-Mix builder.py, method 'byol' with imixup (target detached)."""
    q = F.normalize(p_mix, dim=1)
    k = F.normalize(z.detach(), dim=1)
    logits = q.mm(k.t())
    bsz = q.size(0)
    target_logits = lam * logits.diag() + (1. - lam) * logits[range(bsz), labels_aux]
    return (2. - 2. * target_logits).mean()


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

cases = []


def add_case(name, loss, config, inputs, fn, diff, no_grad=(), consts=None):
    """inputs: name -> float64 tensor (float32-representable). fn(**tensors) returns
    (value, outputs dict). diff: names whose gradient is recorded."""
    consts = consts or {}
    leaves = {}
    for k, v in inputs.items():
        t = v.clone().detach()
        if k in diff or k in no_grad:
            t.requires_grad_(True)
        leaves[k] = t
    value, outputs = fn(**leaves, **consts)
    value.backward()
    grads = {}
    for k in diff:
        g = leaves[k].grad
        grads[k] = enc(g if g is not None else torch.zeros_like(leaves[k]))
    for k in no_grad:
        g = leaves[k].grad
        assert g is None or bool((g == 0).all()), f"{name}: {k} got a gradient"
    enc_out = {}
    for k, v in outputs.items():
        v = v.detach()
        enc_out[k] = float(v) if v.dim() == 0 else enc(v)
    enc_consts = {k: (enc_input(v) if torch.is_tensor(v) and v.is_floating_point()
                      else {"shape": list(v.shape), "data": [int(x) for x in v.tolist()]})
                  for k, v in consts.items() if torch.is_tensor(v)}
    cases.append({
        "name": name, "loss": loss, "config": config,
        "inputs": {**{k: enc_input(v) for k, v in inputs.items()}, **enc_consts},
        "value": float(value.detach()), "outputs": enc_out,
        "grads": grads, "no_grad": list(no_grad),
    })


# InfoNCE
z1, z2 = randn(N, D), randn(N, D)
add_case("info_nce tau=0.2", "info_nce", {"temperature": 0.2}, {"z1": z1, "z2": z2},
         lambda z1, z2: (simclr_loss_func(z1, z2, 0.2), {}), ["z1", "z2"])
z1, z2, e = randn(N, D), randn(N, D), randn(24, D)
add_case("info_nce tau=0.5 + 24 extra negatives", "info_nce", {"temperature": 0.5},
         {"z1": z1, "z2": z2, "extra_negatives": e},
         lambda z1, z2, extra_negatives: (simclr_loss_func(z1, z2, 0.5, extra_negatives), {}),
         ["z1", "z2", "extra_negatives"])
# correlated views (a trained-model regime: loss well below log(2n - 1)). Much lower losses make
# the gradients cancellations of O(1/tau) terms, below what float32 resolves to 1e-4.
base = randn(N, D)
z1, z2 = base + randn(N, D, scale=0.5), base + randn(N, D, scale=0.5)
add_case("info_nce tau=0.2 correlated views", "info_nce", {"temperature": 0.2},
         {"z1": z1.float().double(), "z2": z2.float().double()},
         lambda z1, z2: (simclr_loss_func(z1, z2, 0.2), {}), ["z1", "z2"])

# CaSSLe SimCLR distillation
g1, g2, f1, f2 = randn(N, D), randn(N, D), randn(N, D), randn(N, D)
add_case("cassle_simclr_distill tau=0.2", "cassle_simclr_distill", {"temperature": 0.2},
         {"g1": g1, "g2": g2, "f1": f1, "f2": f2},
         lambda g1, g2, f1, f2: (cassle_contrastive_distill(g1, g2, f1, f2, 0.2), {}),
         ["g1", "g2"], no_grad=["f1", "f2"])

# PNR SimCLR
z1, z2, p1, p2, f1, f2 = (randn(N, D) for _ in range(6))


def _pnr(z1, z2, p1, p2, f1, f2):
    main, reg = pnr_simclr(z1, z2, p1, p2, f1, f2, 0.2)
    return main + reg, {"main": main, "reg": reg}


add_case("pnr_simclr tau=0.2", "pnr_simclr", {"temperature": 0.2},
         {"z1": z1, "z2": z2, "p1": p1, "p2": p2, "f1": f1, "f2": f2}, _pnr,
         ["z1", "z2", "p1", "p2"], no_grad=["f1", "f2"])

# MoCo v2+
q, k, queue = unit_rows(N, D), unit_rows(N, D), unit_rows(32, D)
add_case("moco_v2 tau=0.2 K=32", "moco_v2", {"temperature": 0.2},
         {"q": q, "k": k, "queue": queue},
         lambda q, k, queue: (mocov2plus_loss_func(q, k, queue, 0.2), {}),
         ["q"], no_grad=["k", "queue"])
q1, q2, k1, k2 = (unit_rows(N, D) for _ in range(4))
queue1, queue2 = unit_rows(32, D), unit_rows(32, D)
add_case("moco_v2_symmetric tau=0.2 K=32", "moco_v2_symmetric", {"temperature": 0.2},
         {"q1": q1, "q2": q2, "k1": k1, "k2": k2, "queue1": queue1, "queue2": queue2},
         lambda q1, q2, k1, k2, queue1, queue2: (
             (mocov2plus_loss_func(q1, k2, queue2, 0.2)
              + mocov2plus_loss_func(q2, k1, queue1, 0.2)) / 2, {}),
         ["q1", "q2"], no_grad=["k1", "k2", "queue1", "queue2"])

# BYOL
p, zt = randn(N, D), randn(N, D)
add_case("byol", "byol", {}, {"p": p, "z_target": zt},
         lambda p, z_target: (byol_loss_func(p, z_target), {}), ["p"], no_grad=["z_target"])
p1, p2, z1t, z2t = (randn(N, D) for _ in range(4))
add_case("byol_symmetric (sum)", "byol_symmetric", {},
         {"p1": p1, "p2": p2, "z1_target": z1t, "z2_target": z2t},
         lambda p1, p2, z1_target, z2_target: (
             byol_loss_func(p1, z2_target) + byol_loss_func(p2, z1_target), {}),
         ["p1", "p2"], no_grad=["z1_target", "z2_target"])

# Barlow Twins
z1, z2 = randn(N, D), randn(N, D)
add_case("barlow batchnorm lambda=5e-3 scale=1", "barlow",
         {"lambda_off": 5e-3, "scale": 1.0, "norm": "batch_norm", "bn_eps": 1e-5},
         {"z1": z1, "z2": z2},
         lambda z1, z2: (barlow_loss_solo(z1, z2, 5e-3, 1.0), {}), ["z1", "z2"])
base = randn(N, D)
z1, z2 = (base + randn(N, D, scale=0.5)).float().double(), (base + randn(N, D, scale=0.5)).float().double()
add_case("barlow unbiased-std lambda=5e-3 scale=0.1", "barlow",
         {"lambda_off": 5e-3, "scale": 0.1, "norm": "unbiased_std", "bn_eps": 1e-5},
         {"z1": z1, "z2": z2},
         lambda z1, z2: (barlow_loss_cromo(z1, z2, 5e-3, 0.1), {}), ["z1", "z2"])

# VICReg: column scales from 0.3 to 2 so that part of the variance hinge is active
scales = torch.linspace(0.3, 2.0, D, dtype=torch.float64)
z1 = (randn(N, D) * scales).float().double()
z2 = (randn(N, D) * scales).float().double()


def _vicreg(z1, z2):
    sim, var, cov = vicreg_terms(z1, z2)
    return 25 * sim + 25 * var + 1 * cov, {"invariance": sim, "variance": var, "covariance": cov}


add_case("vicreg 25/25/1", "vicreg", {}, {"z1": z1, "z2": z2}, _vicreg, ["z1", "z2"])

# CorInfoMax: two consecutive steps from a fresh state (defaults), gradients of step 2. The batch
# (32) exceeds d (16) as in training (512 vs 64): with n < d the running covariance keeps
# eigenvalues ~ la_R^steps and float32 no longer resolves its inverse to 1e-4.
z1a, z2a, z1b, z2b = (randn(32, D) for _ in range(4))


def _cim_two_steps(z1a, z2a, z1b, z2b):
    closs = CovarianceLoss(D, R_ini=1.0, la_R=0.01, la_mu=0.01, R_eps_weight=1e-8)
    loss_a, cov_a, inv_a = corinfomax_step(closs, z1a.detach(), z2a.detach(), 250.0, 1.0, True)
    state_a = {"step1_mu1": closs.mu1, "step1_mu2": closs.mu2, "step1_r1": closs.R1,
               "step1_r2": closs.R2}
    loss_b, cov_b, inv_b = corinfomax_step(closs, z1b, z2b, 250.0, 1.0, True)
    return loss_b, {"step1_loss": loss_a, **state_a, "cov_loss": cov_b, "inv_loss": inv_b,
                    "mu1": closs.mu1, "mu2": closs.mu2, "r1": closs.R1, "r2": closs.R2}


add_case("corinfomax defaults, two steps from a fresh state", "corinfomax_two_steps",
         {"la_r": 0.01, "la_mu": 0.01, "r_ini": 1.0, "eps": 1e-8, "inv_weight": 250.0,
          "cov_weight": 1.0, "normalize": True},
         {"z1a": z1a, "z2a": z2a, "z1b": z1b, "z2b": z2b}, _cim_two_steps, ["z1b", "z2b"],
         no_grad=["z1a", "z2a"])

# CorInfoMax: one step from a given state, no normalisation, other rates
n2 = 12
z1, z2 = randn(n2, D, scale=0.5), randn(n2, D, scale=0.5)
a1, a2 = randn(D, D), randn(D, D)
r1 = (a1 @ a1.T / D + 0.5 * torch.eye(D, dtype=torch.float64)).float().double()
r2 = (a2 @ a2.T / D + 0.5 * torch.eye(D, dtype=torch.float64)).float().double()
r1 = ((r1 + r1.T) / 2).float().double()
r2 = ((r2 + r2.T) / 2).float().double()
mu1, mu2 = randn(D, scale=0.1), randn(D, scale=0.1)


def _cim_state(z1, z2, mu1, mu2, r1, r2):
    closs = CovarianceLoss(D, la_R=0.1, la_mu=0.2, R_eps_weight=1e-6)
    closs.mu1, closs.mu2, closs.R1, closs.R2 = mu1, mu2, r1, r2
    loss, cov, inv = corinfomax_step(closs, z1, z2, 100.0, 2.0, False)
    return loss, {"cov_loss": cov, "inv_loss": inv, "mu1": closs.mu1, "mu2": closs.mu2,
                  "r1": closs.R1, "r2": closs.R2}


add_case("corinfomax from a given state, unnormalised", "corinfomax",
         {"la_r": 0.1, "la_mu": 0.2, "r_ini": 1.0, "eps": 1e-6, "inv_weight": 100.0,
          "cov_weight": 2.0, "normalize": False},
         {"z1": z1, "z2": z2}, _cim_state, ["z1", "z2"],
         consts={"mu1": mu1, "mu2": mu2, "r1": r1, "r2": r2})

# MixCo: 4 mixed queries against 8 keys (and a queue)
m = N // 2
z_mix, keys = randn(m, D), randn(N, D)
lam = torch.tensor([0.3, 0.9, 0.5, 0.05], dtype=torch.float32).double()
add_case("mixco tau=0.05", "mixco", {"temperature": 0.05, "weight": 1.0},
         {"z_mix": z_mix, "keys": keys},
         lambda z_mix, keys, lambdas: (mixco_loss(z_mix, keys, lambdas, None, 0.05), {}),
         ["z_mix", "keys"], consts={"lambdas": lam})
z_mix, keys, queue = randn(m, D), randn(N, D), randn(32, D)
add_case("mixco tau=0.05 + queue K=32", "mixco", {"temperature": 0.05, "weight": 1.0},
         {"z_mix": z_mix, "keys": keys, "extra_negatives": queue},
         lambda z_mix, keys, extra_negatives, lambdas: (
             mixco_loss(z_mix, keys, lambdas, extra_negatives, 0.05), {}),
         ["z_mix", "keys", "extra_negatives"], consts={"lambdas": lam})

# i-Mix: a fixed permutation with one fixed point (index 5)
partners = torch.tensor([3, 0, 7, 1, 6, 5, 2, 4], dtype=torch.long)
lam8 = torch.tensor([0.55, 0.9, 0.7, 0.99, 0.5, 0.6, 0.8, 0.65], dtype=torch.float32).double()
q_mix, keys = randn(N, D), randn(N, D)
add_case("imix_npair tau=0.2", "imix_npair", {"temperature": 0.2, "alpha": 1.0,
                                              "fold_lambda": True},
         {"q_mix": q_mix, "keys": keys},
         lambda q_mix, keys, lambdas, partners: (
             imix_npair(q_mix, keys, lambdas, partners, 0.2), {}),
         ["q_mix", "keys"], consts={"lambdas": lam8, "partners": partners})
p_mix, zt = randn(N, D), randn(N, D)
add_case("imix_byol", "imix_byol", {},
         {"p_mix": p_mix, "z_target": zt},
         lambda p_mix, z_target, lambdas, partners: (
             imix_byol(p_mix, z_target, lambdas, partners), {}),
         ["p_mix"], no_grad=["z_target"], consts={"lambdas": lam8, "partners": partners})

os.makedirs(os.path.dirname(OUT), exist_ok=True)
tmp = OUT + ".tmp"
with open(tmp, "w") as fh:
    json.dump({"generator": "tools/gen_loss_fixtures.py", "torch": torch.__version__,
               "n": N, "d": D, "cases": cases}, fh, separators=(",", ":"))
    fh.write("\n")
os.replace(tmp, OUT)
print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)} ({os.path.getsize(OUT)} bytes)")

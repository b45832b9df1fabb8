#!/usr/bin/env python3
"""Reference losses of cromo's continual strategies, computed by PyTorch.

Command (from the repository root; writes tests/fixtures/continual/strategies.json):

    /work/pyenv/bin/python tools/gen_continual_fixtures.py --out tests/fixtures/continual

Needs torch (CPU). Fixed version used for the committed fixture: torch 2.15.0.

What it does: builds a tiny instance of every method (small-cnn encoder on 8x8 images,
projector / predictor / distillation predictor of a few units), a frozen teacher and, for BYOL
and MoCo, an EMA target, all with weights from the name-keyed generator below; feeds fixed
current views x1, x2 (n = 6) and buffer views b1, b2 (4 images); and evaluates, for every
method x strategy at task 1, the loss terms of the step, written here from the authors' code
(solo-learn / CaSSLe for the SSL and distillation losses, PNR's `*_pnr` distillers,
CroMo-Mixup's `train_mixed_distillation.py`) in the conventions cromo documents (DESIGN.md
section 3: BYOL sums its two directions, Barlow's BatchNorm standardisation, fixed lambda).
Computation is in float64 from the float32 weights; cromo computes in float32.

Tensor generator (tests/continual.rs implements the same):

    fnv1a64(name)      = FNV-1a 64-bit hash of the UTF-8 name
    splitmix64(x)      : z = x + 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
                         z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)  (mod 2^64)
    u(name, k)         = (splitmix64(fnv1a64(name) + k) >> 11) * 2^-53 * 2 - 1     in [-1, 1)

    element k of a tensor named `name` (row-major), float64 rounded once to float32:
      rank 4 or 2 `weight`  : u * sqrt(3 / fan_in)          (fan_in = product of dims 1..)
      rank 1 `weight` (BN)  : 1 + 0.2 u
      `bias`, `running_mean`: 0.1 u
      `running_var`         : 0.5 + u^2
      queue (K, d)          : u, then each row L2-normalised
      images                : 1.5 u

The hashed name is the tensor's name in cromo (`backbone.stages.0.conv.weight`,
`projector.0.weight`, ...) for the student, prefixed with `ema.` for the EMA target and with
`teacher.` for the teacher; queues are `moco.queue.0`, `moco.queue.1`, `moco.frozen_queue.0`,
`moco.frozen_queue.1`; images `x1`, `x2`, `b1`, `b2`.
"""

import argparse
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK = (1 << 64) - 1

N, MB, HW = 6, 4, 8
PROJ_HIDDEN, PROJ_OUT, PRED_HIDDEN, DISTILL_HIDDEN = 16, 8, 12, 10
QUEUE = 10
TAU_SIMCLR, TAU_DISTILL, TAU_MOCO = 0.5, 0.2, 0.2
LAMBDA = 0.3
BARLOW_LAMB, BARLOW_SCALE = 5e-3, 0.1
CIM = dict(la_r=0.01, la_mu=0.01, eps=1e-8, inv_weight=250.0, cov_weight=1.0)
DISTILL_WEIGHT = {"vicreg": 25.0}
PNR_NEG = {"byol": 0.5, "barlow": 1.0, "vicreg": 23.0, "corinfomax": 0.92}
METHODS = ["simclr", "moco", "byol", "barlow", "vicreg", "corinfomax"]
STRATEGIES = ["finetune", "er", "cassle", "pnr", "cromo", "cromo-data"]
DT = torch.float64


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def u_stream(name, count):
    h = fnv1a64(name)
    return [((splitmix64((h + k) & MASK) >> 11) * 2.0**-53) * 2.0 - 1.0 for k in range(count)]


def gen(name, shape, leaf, hashed=None):
    """The float32-rounded generator values for a tensor, returned as float64."""
    count = math.prod(shape)
    u = torch.tensor(u_stream(hashed or name, count), dtype=torch.float64).reshape(shape)
    if leaf == "weight" and len(shape) in (2, 4):
        fan_in = math.prod(shape[1:])
        v = u * math.sqrt(3.0 / fan_in)
    elif leaf == "weight":
        v = 1.0 + 0.2 * u
    elif leaf in ("bias", "running_mean"):
        v = 0.1 * u
    elif leaf == "running_var":
        v = 0.5 + u * u
    elif leaf == "queue":
        v = u / u.norm(dim=1, keepdim=True)
    elif leaf == "image":
        v = 1.5 * u
    else:
        raise ValueError(leaf)
    return v.to(torch.float32).to(DT)


class ConvBn(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        chans, strides = [3, 32, 64, 128, 256], [1, 2, 2, 2]
        self.stages = nn.Sequential(*[ConvBn(chans[i], chans[i + 1], strides[i]) for i in range(4)])

    def forward(self, x):
        return self.stages(x).mean(dim=(2, 3))


def mlp(dims, bn, last_bias=True):
    layers = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=(not last) or last_bias))
        if not last:
            if bn:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def projector(method):
    d, w, o = 256, PROJ_HIDDEN, PROJ_OUT
    return {
        "simclr": lambda: mlp([d, w, o], False),
        "moco": lambda: mlp([d, w, o], False),
        "byol": lambda: mlp([d, w, o], True),
        "barlow": lambda: mlp([d, w, w, o], True),
        "vicreg": lambda: mlp([d, w, w, o], True),
        "corinfomax": lambda: mlp([d, w, w, o], False, last_bias=False),
    }[method]()


class Net(nn.Module):
    """backbone + projector (+ predictor, + distill_predictor) with cromo's tensor names."""

    def __init__(self, method, heads=True):
        super().__init__()
        self.method = method
        self.backbone = SmallCnn()
        self.projector = projector(method)
        if heads and method == "byol":
            self.predictor = mlp([PROJ_OUT, PRED_HIDDEN, PROJ_OUT], True)
        if heads:
            self.distill_predictor = mlp([PROJ_OUT, DISTILL_HIDDEN, PROJ_OUT], True)

    def fill(self, prefix):
        with torch.no_grad():
            for name, t in self.state_dict().items():
                leaf = name.rsplit(".", 1)[-1]
                if leaf == "num_batches_tracked":
                    continue
                t.copy_(gen(name, tuple(t.shape), leaf, hashed=prefix + name))
        return self

    def project(self, x):
        z = self.projector(self.backbone(x))
        if self.method == "moco":
            z = F.normalize(z, dim=-1)
        return z


def image(name, n):
    return gen(name, (n, 3, HW, HW), "image")


# ---- losses, after the authors' code --------------------------------------------------------


def nt_xent(a, b, tau):
    """solo-learn simclr_loss_func: positives across views, all 2n-1 others in the denominator."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=-1)
    logits = z @ z.T / tau
    mask = ~torch.eye(2 * n, dtype=torch.bool)
    idx = torch.arange(2 * n)
    pos = logits[idx, (idx + n) % (2 * n)]
    lse = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
    return (lse - pos).mean()


def cassle_distill_dir(p, z, tau):
    """CaSSLe simclr_distill_loss_func(p1, p2, z1, z2): anchors p, candidates all of z."""
    logits = p @ z.T / tau
    return (torch.logsumexp(logits, dim=1) - logits.diag()).mean()


def cassle_simclr_distill(g1, g2, f1, f2, tau):
    g = F.normalize(torch.cat([g1, g2]), dim=-1)
    f = F.normalize(torch.cat([f1, f2]), dim=-1)
    return 0.5 * (cassle_distill_dir(g, f, tau) + cassle_distill_dir(f, g, tau))


def pnr_simclr_once(p1, p2, z1, z2, f1, f2, tau):
    """PNR simclr_moco_loss_func."""
    b = z1.shape[0]
    p = F.normalize(torch.cat([p1, p2]), dim=-1)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    f = F.normalize(torch.cat([f1, f2]), dim=-1)
    eye = torch.eye(2 * b, dtype=torch.bool)
    neg_inf = float("-inf")
    l1 = torch.cat([(z @ z.T / tau).masked_fill(eye, neg_inf), (z @ f.T / tau).masked_fill(eye, neg_inf)], 1)
    idx = torch.arange(2 * b)
    pos1 = (z @ z.T / tau)[idx, (idx + b) % (2 * b)]
    loss1 = (torch.logsumexp(l1, 1) - pos1).mean()
    l2 = torch.cat([(p @ f.T / tau).masked_fill(eye, neg_inf), (p @ z.T / tau).masked_fill(eye, neg_inf)], 1)
    pos2 = (p @ f.T / tau).diag()
    loss2 = (torch.logsumexp(l2, 1) - pos2).mean()
    return loss1, loss2


def moco_ce(q, k, queue, tau):
    """solo-learn moco_loss_func with a (K, d) queue: CE over [q.k, q.queue] / tau, target 0."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def byol_dir(p, z):
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


def barlow(a, b):
    """solo-learn barlow_loss_func: BatchNorm1d(affine=False) standardisation, C = a^T b / n."""
    n, d = a.shape
    bn = lambda x: (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    c = bn(a).T @ bn(b) / n
    on = ((1 - c.diag()) ** 2).sum()
    off = (c**2).sum() - (c.diag() ** 2).sum()
    return BARLOW_SCALE * (on + BARLOW_LAMB * off)


def vicreg(a, b):
    """solo-learn vicreg_loss_func (variance sum over the views, covariance / (n-1), / d)."""
    n, d = a.shape
    inv = F.mse_loss(a, b)

    def var_cov(x):
        x = x - x.mean(0)
        std = torch.sqrt(x.var(0) + 1e-4)
        v = F.relu(1 - std).mean()
        cov = x.T @ x / (n - 1)
        off = (cov**2).sum() - (cov.diag() ** 2).sum()
        return v, off / d

    v1, c1 = var_cov(a)
    v2, c2 = var_cov(b)
    return 25 * inv + 25 * (v1 + v2) + 1 * (c1 + c2)


class CovState:
    """CroMo-Mixup's CovarianceLoss (fresh state: mu = 0, R = I), float64."""

    def __init__(self, d):
        self.mu = [torch.zeros(d, dtype=DT), torch.zeros(d, dtype=DT)]
        self.r = [torch.eye(d, dtype=DT), torch.eye(d, dtype=DT)]

    def cov_loss(self, z1, z2):
        n, d = z1.shape
        out = 0
        for i, z in enumerate([z1, z2]):
            mu = CIM["la_mu"] * self.mu[i] + (1 - CIM["la_mu"]) * z.mean(0)
            zc = z - mu
            r = CIM["la_r"] * self.r[i] + (1 - CIM["la_r"]) * (zc.T @ zc / n)
            out = out + torch.logdet(r + CIM["eps"] * torch.eye(d, dtype=DT))
        return -out / d


def corinfomax(z1, z2):
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    return CIM["cov_weight"] * CovState(PROJ_OUT).cov_loss(z1, z2) + CIM["inv_weight"] * F.mse_loss(z1, z2)


# ---- the method side ------------------------------------------------------------------------


class Student:
    def __init__(self, method):
        self.m = method
        self.net = Net(method).fill("").to(DT)
        self.net.train()
        self.ema = Net(method, heads=False).fill("ema.").to(DT) if method in ("byol", "moco") else None
        if self.ema is not None:
            self.ema.train()
        self.queue = [gen(f"moco.queue.{i}", (QUEUE, PROJ_OUT), "queue") for i in range(2)]
        self.fqueue = [gen(f"moco.frozen_queue.{i}", (QUEUE, PROJ_OUT), "queue") for i in range(2)]

    def embed(self, x):
        z = self.net.project(x)
        p = self.net.predictor(z) if self.m == "byol" else None
        return z, p

    def target(self, x):
        if self.ema is None:
            return None
        with torch.no_grad():
            return self.ema.project(x)

    def anchor(self, z, p):
        return p if p is not None else z

    def current_target(self, z, t):
        return t if self.ema is not None else z

    def g(self, z):
        return self.net.distill_predictor(z)

    def ssl(self, z1, z2, p1, p2, t1, t2):
        m = self.m
        if m == "simclr":
            return nt_xent(z1, z2, TAU_SIMCLR)
        if m == "moco":
            return 0.5 * (moco_ce(z1, t2, self.queue[1], TAU_MOCO) + moco_ce(z2, t1, self.queue[0], TAU_MOCO))
        if m == "byol":
            return byol_dir(p1, t2) + byol_dir(p2, t1)
        if m == "barlow":
            return barlow(z1, z2)
        if m == "vicreg":
            return vicreg(z1, z2)
        if m == "corinfomax":
            return corinfomax(z1, z2)

    def distill(self, g1, g2, f1, f2):
        m = self.m
        if m in ("simclr", "moco"):
            return cassle_simclr_distill(g1, g2, f1, f2, TAU_DISTILL)
        if m == "byol":
            return 0.5 * (byol_dir(g1, f1) + byol_dir(g2, f2))
        if m == "barlow":
            return 0.5 * (barlow(g1, f1) + barlow(g2, f2))
        if m == "vicreg":
            return 0.5 * (F.mse_loss(g1, f1) + F.mse_loss(g2, f2))
        if m == "corinfomax":
            gn1, gn2 = F.normalize(g1, dim=-1), F.normalize(g2, dim=-1)
            fn1, fn2 = F.normalize(f1, dim=-1), F.normalize(f2, dim=-1)
            inv = 0.5 * (F.mse_loss(gn1, fn1) + F.mse_loss(gn2, fn2))
            cov = CovState(PROJ_OUT).cov_loss(gn1, gn2)
            return CIM["inv_weight"] * inv + CIM["cov_weight"] * 0.5 * cov

    def cross(self, a, b, view):
        m = self.m
        if m == "simclr":
            return nt_xent(a, b, TAU_SIMCLR)
        if m == "moco":
            return moco_ce(F.normalize(a, dim=-1), F.normalize(b, dim=-1), self.queue[view], TAU_MOCO)
        if m == "byol":
            return byol_dir(a, b)
        if m == "barlow":
            return barlow(a, b)
        if m == "vicreg":
            return vicreg(a, b)
        if m == "corinfomax":
            return barlow(F.normalize(a, dim=-1), F.normalize(b, dim=-1))

    def pnr_negative(self, g1, g2, f1, f2):
        m = self.m
        if m == "byol":
            return 0.5 * (byol_dir(g1, f2) + byol_dir(g2, f1))
        if m == "barlow":  # PNR: simsiam_loss_func = -cos
            return 0.5 * (-F.cosine_similarity(g1, f2, dim=-1).mean() - F.cosine_similarity(g2, f1, dim=-1).mean())
        if m == "vicreg":
            return 0.5 * (F.mse_loss(g1, f2) + F.mse_loss(g2, f1))
        if m == "corinfomax":
            n = lambda x: F.normalize(x, dim=-1)
            return CIM["inv_weight"] * 0.5 * (F.mse_loss(n(g1), n(f2)) + F.mse_loss(n(g2), n(f1)))


def views(s, x1, x2):
    z1, p1 = s.embed(x1)
    z2, p2 = s.embed(x2)
    return z1, z2, p1, p2, s.target(x1), s.target(x2)


def step(method, strategy, teacher_train=False):
    torch.manual_seed(0)
    s = Student(method)
    teacher = Net(method, heads=False).fill("teacher.").to(DT)
    teacher.train(teacher_train)
    x1, x2 = image("x1", N), image("x2", N)
    b1, b2 = image("b1", MB), image("b2", MB)
    lam_d = DISTILL_WEIGHT.get(method, 1.0)
    terms = {}
    if strategy in ("finetune", "er"):
        if strategy == "er":
            x1, x2 = torch.cat([x1, b1]), torch.cat([x2, b2])
        terms["ssl"] = s.ssl(*views(s, x1, x2))
    elif strategy in ("cassle", "pnr"):
        z1, z2, p1, p2, t1, t2 = views(s, x1, x2)
        g1, g2 = s.g(z1), s.g(z2)
        with torch.no_grad():
            f1, f2 = teacher.projector(teacher.backbone(x1)), teacher.projector(teacher.backbone(x2))
        if strategy == "cassle":
            terms["ssl"] = s.ssl(z1, z2, p1, p2, t1, t2)
            terms["distill"] = lam_d * s.distill(g1, g2, f1, f2)
        elif method == "simclr":
            a = pnr_simclr_once(g1, g2, z1, z2, f1, f2, TAU_DISTILL)
            b = pnr_simclr_once(g2, g1, z2, z1, f2, f1, TAU_DISTILL)
            terms["ssl"] = 0.5 * (a[0] + b[0])
            terms["distill"] = 0.5 * (a[1] + b[1])
        elif method == "moco":
            fn1, fn2 = F.normalize(f1, dim=-1), F.normalize(f2, dim=-1)
            gn1, gn2 = F.normalize(g1, dim=-1), F.normalize(g2, dim=-1)
            neg = [torch.cat([s.queue[i], s.fqueue[i]]) for i in range(2)]
            terms["ssl"] = 0.5 * (moco_ce(z1, t2, neg[1], TAU_MOCO) + moco_ce(z2, t1, neg[0], TAU_MOCO))
            terms["distill"] = 0.5 * (moco_ce(gn1, fn1, neg[1], TAU_DISTILL) + moco_ce(gn2, fn2, neg[0], TAU_DISTILL))
        else:
            terms["ssl"] = s.ssl(z1, z2, p1, p2, t1, t2)
            terms["distill"] = lam_d * s.distill(g1, g2, f1, f2)
            terms["pnr_negative"] = -PNR_NEG[method] * s.pnr_negative(g1, g2, f1, f2)
    else:  # cromo, cromo-data
        m = min(N, MB)
        xs, bs = [x1, x2], [b1[:m], b2[:m]]
        zs, ps, ts, fs = [], [], [], []
        for v in range(2):
            mix = LAMBDA * xs[v][:m] + (1 - LAMBDA) * bs[v]
            z, p = s.embed(torch.cat([xs[v], mix]))
            zs.append(z)
            ps.append(p)
            ts.append(s.target(xs[v]))
            with torch.no_grad():
                inp = torch.cat([xs[v], bs[v]]) if strategy == "cromo" else xs[v]
                fs.append(teacher.projector(teacher.backbone(inp)))
        cur = lambda t: None if t is None else t[:N]
        terms["ssl"] = s.ssl(zs[0][:N], zs[1][:N], cur(ps[0]), cur(ps[1]), ts[0], ts[1])
        g1, g2 = s.g(zs[0][:N]), s.g(zs[1][:N])
        terms["distill"] = lam_d * s.distill(g1, g2, fs[0][:N], fs[1][:N])
        mixed = 0
        for v in range(2):
            anchor = s.anchor(zs[v], ps[v])[N:]
            tgt = s.current_target(zs[v][:m], None if ts[v] is None else ts[v][:m])
            if strategy == "cromo":
                old = fs[v][N:]
            else:
                zb, _ = s.embed(bs[v])
                old = s.current_target(zb, s.target(bs[v]))
            mixed = mixed + 0.5 * (LAMBDA * s.cross(anchor, tgt, v) + (1 - LAMBDA) * s.cross(anchor, old, v))
        terms["mixed"] = mixed
    terms = {k: float(v.detach()) for k, v in terms.items()}
    terms["total"] = sum(terms.values())
    return terms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/continual")
    args = ap.parse_args()
    cases = []
    for method in METHODS:
        for strategy in STRATEGIES:
            cases.append({"method": method, "strategy": strategy, "teacher": "eval", "terms": step(method, strategy)})
        cases.append({"method": method, "strategy": "cromo", "teacher": "train", "terms": step(method, "cromo", True)})
    fixture = {
        "generator": "tools/gen_continual_fixtures.py",
        "torch": torch.__version__,
        "config": {
            "arch": "small-cnn",
            "n": N,
            "buffer": MB,
            "image_size": HW,
            "proj_hidden": PROJ_HIDDEN,
            "proj_out": PROJ_OUT,
            "pred_hidden": PRED_HIDDEN,
            "distill_hidden": DISTILL_HIDDEN,
            "queue_size": QUEUE,
            "simclr_temperature": TAU_SIMCLR,
            "distill_temperature": TAU_DISTILL,
            "moco_temperature": TAU_MOCO,
            "mix_lambda": LAMBDA,
            "task": 1,
        },
        "cases": cases,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "strategies.json")
    with open(path, "w") as f:
        json.dump(fixture, f, indent=1)
    print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()

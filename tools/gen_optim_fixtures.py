#!/usr/bin/env python3
"""Reference optimiser updates and learning-rate schedules for cromo, computed by PyTorch.

Command (from the repository root; needs torch >= 2.0, CPU is enough):

    /work/pyenv/bin/python tools/gen_optim_fixtures.py   # writes tests/fixtures/optim/optim.json

(the committed fixture was produced with exactly that command, torch 2.15 on CPU). Output is
deterministic: parameters and gradients come from a seeded torch.Generator.

What is run:
- torch.optim.SGD (foreach=False, dampening 0) and torch.optim.AdamW (foreach=False), exactly as
  shipped with PyTorch; cromo's parameter groups are mirrored as torch param groups: one group
  per VarMap prefix with lr = base lr x lr_scale, and the 1-D parameters (biases, BN affine) of
  each prefix in a group of their own with weight_decay = 0 (cromo's `exclude_bias_n_norm`).
- LARS: an independent transcription of solo-learn's `solo/utils/lars.py` (`LARS`, which is the
  same update as the older `LARSWrapper` around SGD used by CaSSLe): for every parameter with a
  gradient, unless it is 1-D and `exclude_bias_n_norm` is set, and only when ||p|| and ||g|| are
  both non-zero, g <- (g + wd p) * lars_lr with lars_lr = eta ||p|| / (||g|| + wd ||p|| + eps)
  (and, with clip_lr, lars_lr <- min(lars_lr / lr, 1)); then PyTorch SGD momentum (first step:
  buffer = g). Note: excluded and zero-norm parameters get no weight decay at all.
  The torch groups are one per prefix (lr = base x lr_scale), all with the same weight decay:
  exclusion comes from the 1-D rule inside the optimiser, as in solo-learn.
- Schedules: solo-learn's LinearWarmupCosineAnnealingLR (from Lightning Bolts), transcribed
  below in its recursive ("chainable") form and stepped once per iteration on a dummy optimiser,
  exactly as solo-learn does with `scheduler.interval = step`; where PyTorch's own LinearLR +
  CosineAnnealingLR (SequentialLR) can express the same schedule (warm-up start > 0 and at least
  two warm-up steps) the generator asserts that both agree.

Every case is run twice: in float32 (what cromo trains in) and in float64. Parameters and
gradients are drawn in float32, so both runs start from the same values, which are stored
exactly (every float32 and float64 is an exact JSON double).

Edge cases built into the gradient sequence (5 steps):
- step 0: `projector.0.bias` has no gradient (its momentum / Adam state starts at step 1);
- step 2: `projector.1.weight` has no gradient (skipped, state untouched, Adam step not counted);
- step 3: `backbone.conv1.weight` has an all-zero gradient (LARS: ||g|| = 0 branch);
- `projector.1.weight` starts at zero (LARS: ||p|| = 0 branch on its first update);
- magnitudes are chosen so that LARS with clip_lr takes both branches of the clip (asserted).

JSON layout: {"params": {name: tensor}, "order": [names], "groups": [{prefix, lr_scale}],
"grads": [{name: tensor} per step], "optimizers": [{"name", "kind", "config", "lrs": [...],
"f32": {"params": [{name: tensor} after each step], "state": {state name: tensor}},
"f64": {...}}], "schedules": [{"config", "lrs": [lr at step 0..=total_steps]}]},
tensor = {"shape": [...], "data": [... row-major ...]}. State names are cromo's:
`<kind>.momentum_buffer.<param>`, `adamw.exp_avg.<param>`, `adamw.exp_avg_sq.<param>`,
`adamw.step.<param>`.
"""

import json
import math
import os

import torch
from torch.optim.lr_scheduler import (CosineAnnealingLR, LinearLR, SequentialLR,
                                      _LRScheduler)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "optim", "optim.json")

gen = torch.Generator().manual_seed(20240611)

STEPS = 5
GROUPS = [{"prefix": "backbone", "lr_scale": 1.0}, {"prefix": "projector", "lr_scale": 0.5}]


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale


# Parameters (float32 values): a conv weight, BN affine, a linear layer with bias, a zero weight.
PARAMS = {
    "backbone.conv1.weight": randn(4, 2, 3, 3, scale=0.5),
    "backbone.bn1.weight": 1.0 + randn(4, scale=0.1),
    "backbone.bn1.bias": randn(4, scale=0.1),
    "projector.0.weight": randn(6, 4, scale=2.0),
    "projector.0.bias": randn(6, scale=0.1),
    "projector.1.weight": torch.zeros(3, 6),
}
ORDER = list(PARAMS)
GRAD_SCALE = {
    "backbone.conv1.weight": 0.5,
    "backbone.bn1.weight": 0.2,
    "backbone.bn1.bias": 0.2,
    "projector.0.weight": 0.01,   # small next to ||p||: LARS trust ratio above lr -> clipped
    "projector.0.bias": 0.1,
    "projector.1.weight": 0.3,
}
GRADS = []
for step in range(STEPS):
    g = {}
    for name in ORDER:
        value = randn(*PARAMS[name].shape, scale=GRAD_SCALE[name])
        if step == 0 and name == "projector.0.bias":
            continue
        if step == 2 and name == "projector.1.weight":
            continue
        if step == 3 and name == "backbone.conv1.weight":
            value = torch.zeros_like(value)
        g[name] = value
    GRADS.append(g)

SGD_LRS = [0.3, 0.25, 0.2, 0.1, 0.05]
ADAMW_LRS = [1e-3, 2e-3, 1.5e-3, 1e-3, 5e-4]


def group_of(name):
    for i, gr in enumerate(GROUPS):
        if name.startswith(gr["prefix"] + "."):
            return i
    raise ValueError(name)


class SoloLars(torch.optim.Optimizer):
    """solo-learn's LARS update, transcribed (see the module docstring). Records which branch of
    the clip was taken so that the fixture provably covers both."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, eta=1e-3,
                 eps=1e-8, clip_lr=False, exclude_bias_n_norm=False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                        eta=eta, eps=eps, clip_lr=clip_lr,
                        exclude_bias_n_norm=exclude_bias_n_norm)
        super().__init__(params, defaults)
        self.branches = set()

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            wd, mom, lr = group["weight_decay"], group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if p.ndim != 1 or not group["exclude_bias_n_norm"]:
                    p_norm = torch.norm(p)
                    g_norm = torch.norm(p.grad)
                    if p_norm != 0 and g_norm != 0:
                        trust = group["eta"] * p_norm / (g_norm + p_norm * wd + group["eps"])
                        if group["clip_lr"]:
                            ratio = trust / lr
                            self.branches.add("clipped" if ratio >= 1 else "unclipped")
                            trust = min(ratio, 1)
                        d_p = d_p.add(p, alpha=wd)
                        d_p = d_p * trust
                    else:
                        self.branches.add("zero-norm")
                else:
                    self.branches.add("excluded")
                if mom != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(mom).add_(d_p)
                    d_p = d_p.add(buf, alpha=mom) if group["nesterov"] else buf
                p.add_(d_p, alpha=-lr)


def make_params(dtype):
    return {n: torch.nn.Parameter(PARAMS[n].clone().to(dtype)) for n in ORDER}


def torch_groups(params, weight_decay, split_1d):
    groups = []
    for gi, gr in enumerate(GROUPS):
        names = [n for n in ORDER if group_of(n) == gi]
        if split_1d:
            decay = [params[n] for n in names if params[n].ndim > 1]
            no_decay = [params[n] for n in names if params[n].ndim <= 1]
            groups.append({"params": decay, "weight_decay": weight_decay,
                           "lr_scale": gr["lr_scale"]})
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": gr["lr_scale"]})
        else:
            groups.append({"params": [params[n] for n in names], "weight_decay": weight_decay,
                           "lr_scale": gr["lr_scale"]})
    return groups


def build(kind, config, params):
    if kind == "sgd":
        groups = torch_groups(params, config["weight_decay"], split_1d=True)
        return torch.optim.SGD(groups, lr=1.0, momentum=config["momentum"], dampening=0.0,
                               nesterov=config["nesterov"], foreach=False)
    if kind == "adamw":
        groups = torch_groups(params, config["weight_decay"], split_1d=True)
        return torch.optim.AdamW(groups, lr=1.0, betas=(config["beta1"], config["beta2"]),
                                 eps=config["eps"], foreach=False)
    if kind == "lars":
        groups = torch_groups(params, config["weight_decay"], split_1d=False)
        return SoloLars(groups, lr=1.0, momentum=config["momentum"], nesterov=config["nesterov"],
                        eta=config["eta"], eps=config["eps"], clip_lr=config["clip_lr"],
                        exclude_bias_n_norm=True)
    raise ValueError(kind)


def enc(t):
    t = t.detach().double()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def state_of(kind, opt, params):
    out = {}
    for n in ORDER:
        st = opt.state.get(params[n], {})
        if kind in ("sgd", "lars") and "momentum_buffer" in st and st["momentum_buffer"] is not None:
            out[f"{kind}.momentum_buffer.{n}"] = enc(st["momentum_buffer"])
        if kind == "adamw" and "exp_avg" in st:
            out[f"adamw.exp_avg.{n}"] = enc(st["exp_avg"])
            out[f"adamw.exp_avg_sq.{n}"] = enc(st["exp_avg_sq"])
            out[f"adamw.step.{n}"] = {"shape": [], "data": [float(st["step"])]}
    return out


def run(kind, config, lrs, dtype):
    params = make_params(dtype)
    opt = build(kind, config, params)
    history = []
    for step in range(STEPS):
        for n in ORDER:
            g = GRADS[step].get(n)
            params[n].grad = None if g is None else g.clone().to(dtype)
        for group in opt.param_groups:
            group["lr"] = lrs[step] * group["lr_scale"]
        opt.step()
        history.append({n: enc(params[n]) for n in ORDER})
    branches = sorted(getattr(opt, "branches", set()))
    return {"params": history, "state": state_of(kind, opt, params)}, branches


OPTIMIZERS = [
    ("sgd", "sgd", {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}, SGD_LRS),
    ("sgd_nesterov", "sgd", {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": True}, SGD_LRS),
    ("sgd_strong_decay", "sgd", {"momentum": 0.9, "weight_decay": 0.1, "nesterov": False},
     SGD_LRS),
    ("sgd_no_momentum", "sgd", {"momentum": 0.0, "weight_decay": 0.01, "nesterov": False},
     SGD_LRS),
    ("adamw", "adamw", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.05},
     ADAMW_LRS),
    ("lars", "lars", {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "eta": 0.02,
                      "eps": 1e-8, "clip_lr": True}, SGD_LRS),
    ("lars_no_clip", "lars", {"momentum": 0.9, "weight_decay": 0.1, "nesterov": False,
                              "eta": 0.02, "eps": 1e-8, "clip_lr": False}, SGD_LRS),
    ("lars_nesterov", "lars", {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": True,
                               "eta": 0.02, "eps": 1e-8, "clip_lr": True}, SGD_LRS),
]


class SoloWarmupCosine(_LRScheduler):
    """solo-learn's LinearWarmupCosineAnnealingLR, recursive form (get_lr), transcribed."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0):
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min
        super().__init__(optimizer, -1)

    def get_lr(self):
        t, w, m = self.last_epoch, self.warmup_epochs, self.max_epochs
        pairs = list(zip(self.base_lrs, self.optimizer.param_groups))
        if t == 0:
            return [self.warmup_start_lr] * len(self.base_lrs)
        if t < w:
            return [g["lr"] + (b - self.warmup_start_lr) / (w - 1) for b, g in pairs]
        if t == w:
            return list(self.base_lrs)
        if (t - 1 - m) % (2 * (m - w)) == 0:
            return [g["lr"] + (b - self.eta_min) * (1 - math.cos(math.pi / (m - w))) / 2
                    for b, g in pairs]
        return [(1 + math.cos(math.pi * (t - w) / (m - w)))
                / (1 + math.cos(math.pi * (t - w - 1) / (m - w)))
                * (g["lr"] - self.eta_min) + self.eta_min for _, g in pairs]


def schedule_lrs(cfg, n):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["base_lr"])
    # solo-learn starts at the base lr when there is no warm-up
    start = cfg["warmup_start_lr"] if cfg["warmup_steps"] > 0 else cfg["base_lr"]
    sched = SoloWarmupCosine(opt, cfg["warmup_steps"], cfg["total_steps"], start, cfg["min_lr"])
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def torch_builtin_lrs(cfg, n):
    base, ws, w, t = cfg["base_lr"], cfg["warmup_start_lr"], cfg["warmup_steps"], cfg["total_steps"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    warm = LinearLR(opt, start_factor=ws / base, end_factor=1.0, total_iters=w - 1)
    cos = CosineAnnealingLR(opt, T_max=t - w, eta_min=cfg["min_lr"])
    sched = SequentialLR(opt, [warm, cos], milestones=[w])
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


SCHEDULES = [
    # CaSSLe/CroMo CIFAR: lr 0.3 x 512/256, solo-learn warm-up start 3e-5
    {"base_lr": 0.6, "warmup_start_lr": 3e-5, "min_lr": 0.0, "warmup_steps": 10,
     "total_steps": 100},
    {"base_lr": 0.4, "warmup_start_lr": 0.003, "min_lr": 1e-3, "warmup_steps": 5,
     "total_steps": 37},
    {"base_lr": 1.0, "warmup_start_lr": 0.0, "min_lr": 0.0, "warmup_steps": 4,
     "total_steps": 20},
    {"base_lr": 0.1, "warmup_start_lr": 0.0, "min_lr": 0.01, "warmup_steps": 0,
     "total_steps": 20},
    {"base_lr": 0.2, "warmup_start_lr": 0.01, "min_lr": 0.0, "warmup_steps": 1,
     "total_steps": 12},
]


def main():
    torch.set_num_threads(1)
    out = {"params": {n: enc(PARAMS[n]) for n in ORDER}, "order": ORDER, "groups": GROUPS,
           "grads": [{n: enc(g) for n, g in step.items()} for step in GRADS],
           "optimizers": [], "schedules": []}
    for name, kind, config, lrs in OPTIMIZERS:
        entry = {"name": name, "kind": kind, "config": config, "lrs": lrs}
        for label, dtype in (("f32", torch.float32), ("f64", torch.float64)):
            entry[label], branches = run(kind, config, lrs, dtype)
            if kind == "lars":
                need = {"excluded", "zero-norm"} | (
                    {"clipped", "unclipped"} if config["clip_lr"] else set())
                assert need <= set(branches), (name, branches)
        out["optimizers"].append(entry)
    for cfg in SCHEDULES:
        n = cfg["total_steps"] + 1
        lrs = schedule_lrs(cfg, n)
        if cfg["warmup_start_lr"] > 0 and cfg["warmup_steps"] >= 2:
            ref = torch_builtin_lrs(cfg, n)
            worst = max(abs(a - b) for a, b in zip(lrs, ref))
            assert worst < 1e-12, (cfg, worst)
        out["schedules"].append({"config": cfg, "lrs": lrs})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, OUT)
    print(f"wrote {os.path.normpath(OUT)}: {len(OPTIMIZERS)} optimiser cases, "
          f"{len(SCHEDULES)} schedules")


if __name__ == "__main__":
    main()

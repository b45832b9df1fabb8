#!/usr/bin/env python3
"""PyTorch reference values of BatchNorm for `tests/ops.rs` (train/eval outputs, gradients and
running statistics).

Command (from the repository root; writes tests/fixtures/ops/batch_norm.json):

    /work/pyenv/bin/python tools/gen_ops_fixtures.py --out tests/fixtures/ops

Needs torch (CPU). Committed fixture made with torch 2.15.0.

For each case (BatchNorm2d on (4,3,5,5), BatchNorm1d on (8,6)) a module with given weight, bias
and running statistics (eps, momentum 0.1) is run in train mode on `steps` inputs one after the
other; after each step the fixture keeps the output y, the running mean and the running variance,
and the gradients of L = sum(y * r) with respect to x, weight and bias (r a fixed tensor of y's
shape). Then one eval-mode forward on `eval_x` with its output and gradients. Inputs have large
channel means (offsets up to 50) so that one-pass variance formulas without a shift would lose
precision. All numbers are float32 values written as decimal floats; tensors are flat,
row-major, with their shape.
"""
import argparse
import json
import os

import torch


def flat(t):
    return {"shape": list(t.shape), "data": [float(v) for v in t.detach().reshape(-1).tolist()]}


def case(name, module, shape, steps, gen):
    c = shape[1]
    with torch.no_grad():
        module.weight.copy_(1.0 + 0.5 * torch.rand(c, generator=gen))
        module.bias.copy_(torch.randn(c, generator=gen) * 0.3)
        module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
        module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    out = {
        "name": name,
        "eps": module.eps,
        "momentum": module.momentum,
        "weight": flat(module.weight),
        "bias": flat(module.bias),
        "running_mean0": flat(module.running_mean),
        "running_var0": flat(module.running_var),
        "steps": [],
    }
    offset_shape = [1, c] + [1] * (len(shape) - 2)
    offsets = torch.linspace(-50.0, 50.0, c).reshape(offset_shape)
    module.train()
    for _ in range(steps):
        x = (torch.randn(*shape, generator=gen) * 2.0 + offsets).requires_grad_(True)
        r = torch.randn(*shape, generator=gen)
        module.zero_grad()
        y = module(x)
        (y * r).sum().backward()
        out["steps"].append({
            "x": flat(x), "r": flat(r), "y": flat(y),
            "dx": flat(x.grad), "dweight": flat(module.weight.grad), "dbias": flat(module.bias.grad),
            "running_mean": flat(module.running_mean), "running_var": flat(module.running_var),
        })
    module.eval()
    x = (torch.randn(*shape, generator=gen) * 2.0 + offsets).requires_grad_(True)
    r = torch.randn(*shape, generator=gen)
    module.zero_grad()
    y = module(x)
    (y * r).sum().backward()
    out["eval"] = {"x": flat(x), "r": flat(r), "y": flat(y), "dx": flat(x.grad),
                   "dweight": flat(module.weight.grad), "dbias": flat(module.bias.grad)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/ops")
    a = ap.parse_args()
    gen = torch.Generator().manual_seed(20240607)
    cases = [
        case("bn2d", torch.nn.BatchNorm2d(3, eps=1e-5), (4, 3, 5, 5), 3, gen),
        case("bn1d", torch.nn.BatchNorm1d(6, eps=1e-3), (8, 6), 2, gen),
    ]
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "batch_norm.json")
    with open(path, "w") as f:
        json.dump({"generator": "tools/gen_ops_fixtures.py", "torch": torch.__version__, "cases": cases}, f)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

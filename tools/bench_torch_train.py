#!/usr/bin/env python3
"""PyTorch CPU reference timings for `cromo bench train-step` (same step, same machine, same threads).

Exact command (from the repository root, with torch and torchvision installed):
    python3 tools/bench_torch_train.py --arch small-cnn --batch 256 --threads 2 --json
    python3 tools/bench_torch_train.py --arch resnet18-cifar --batch 32 --threads 2 --json

The step is the one `cromo bench train-step --method barlow --strategy finetune --optimizer sgd`
times: two views of `batch` random 32x32 images through the encoder (train-mode BatchNorm, two
separate forward calls as cromo runs them) and the Barlow Twins projector d-w-w-w
(Linear-BN1d-ReLU-Linear-BN1d-ReLU-Linear; w = 1024 for small-cnn, 2048 for ResNet-18), the
Barlow Twins loss of cromo's default configuration (per-view standardisation with the biased
variance + 1e-5, C = z1^T z2 / n, lambda_off 5e-3, scale 0.1), backward, and an SGD step
(momentum 0.9, weight decay 1e-4, lr 0.01). fp32, eager mode, torch.set_num_threads(threads).

Prints one JSON line with the keys of `cromo bench train-step --json`: arch, batch, threads,
median_ms, images_per_s, peak_rss_mb, runner="pytorch-eager <version>".
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn


def small_cnn():
    layers = []
    c_in = 3
    for c_out, stride in [(32, 1), (64, 2), (128, 2), (256, 2)]:
        layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), 256, 1024


def resnet18_cifar():
    import torchvision
    m = torchvision.models.resnet18()
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    m.fc = nn.Identity()
    return m, 512, 2048


def projector(d, w):
    return nn.Sequential(
        nn.Linear(d, w), nn.BatchNorm1d(w), nn.ReLU(),
        nn.Linear(w, w), nn.BatchNorm1d(w), nn.ReLU(),
        nn.Linear(w, w),
    )


def barlow(z1, z2, lambda_off=5e-3, scale=0.1, eps=1e-5):
    n = z1.shape[0]

    def std(z):
        z = z - z.mean(0)
        return z / torch.sqrt(z.pow(2).mean(0) + eps)

    a, b = std(z1), std(z2)
    c = a.T @ b / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return scale * (on + lambda_off * off)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="small-cnn", choices=["small-cnn", "resnet18-cifar"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc, d, w = small_cnn() if a.arch == "small-cnn" else resnet18_cifar()
    proj = projector(d, w)
    model = nn.ModuleDict({"backbone": enc, "projector": proj}).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x1 = torch.randn(a.batch, 3, 32, 32)
    x2 = torch.randn(a.batch, 3, 32, 32)
    times = []
    for i in range(a.warmup + a.runs):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        z1 = proj(enc(x1))
        z2 = proj(enc(x2))
        loss = barlow(z1, z2)
        loss.backward()
        opt.step()
        float(loss.detach())
        if i >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row = dict(arch=a.arch, batch=a.batch, threads=a.threads, median_ms=round(med, 3),
               images_per_s=round(a.batch * 1e3 / med, 1), peak_rss_mb=round(rss),
               runner=f"pytorch-eager {torch.__version__}")
    print(json.dumps(row) if a.json else f"{a.arch} batch {a.batch}: {med:8.1f} ms, {row['images_per_s']} images/s")


if __name__ == "__main__":
    main()

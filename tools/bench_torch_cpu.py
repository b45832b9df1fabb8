#!/usr/bin/env python3
"""PyTorch CPU reference timings for `cromo bench infer` (same shapes, same machine, same threads).

Exact command (from the repository root, with torch, torchvision and timm installed):
    python3 tools/bench_torch_cpu.py --threads 2 --runs 30 --json

Prints one JSON line per (arch, batch) with the same keys as `cromo bench infer --json`:
arch, batch, threads, size, median_ms, images_per_s, runner="pytorch-eager".
Weights are random (timing does not depend on the values); eval mode, torch.inference_mode(), fp32.
"""
import argparse
import json
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
    return nn.Sequential(*layers)


def build(arch):
    import torchvision
    if arch == "resnet18":
        return torchvision.models.resnet18(), 224
    if arch == "resnet18-cifar":
        m = torchvision.models.resnet18()
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
        m.fc = nn.Identity()
        return m, 32
    if arch == "efficientnet-lite0":
        import timm
        return timm.create_model("tf_efficientnet_lite0", pretrained=False), 224
    if arch == "small-cnn":
        return small_cnn(), 32
    raise SystemExit(f"unknown arch {arch}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="*", default=["resnet18", "efficientnet-lite0", "resnet18-cifar", "small-cnn"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for arch in a.arch:
        model, size = build(arch)
        model.eval()
        x = torch.randn(a.batch, 3, size, size)
        times = []
        with torch.inference_mode():
            for _ in range(a.warmup):
                model(x)
            for _ in range(a.runs):
                t = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t) * 1e3)
        med = statistics.median(times)
        row = dict(arch=arch, batch=a.batch, threads=a.threads, size=size, median_ms=round(med, 3),
                   images_per_s=round(a.batch * 1e3 / med, 1), runner=f"pytorch-eager {torch.__version__}")
        print(json.dumps(row) if a.json else f"{arch:20s} batch {a.batch} {size}x{size}: {med:8.2f} ms")


if __name__ == "__main__":
    main()

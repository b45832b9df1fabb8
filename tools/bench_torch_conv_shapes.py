#!/usr/bin/env python3
"""PyTorch CPU times of every convolution of ResNet-18 and EfficientNet-Lite0 (224x224, batch 1),
summed per kind of layer: the counterpart of `cargo run --release --example bench_conv_shapes`.

Exact command (repository root, torch installed):  python3 tools/bench_torch_conv_shapes.py --threads 2 --runs 20
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def same_pad(side, k, s):
    out = -(-side // s)
    total = max((out - 1) * s + k - side, 0)
    return total // 2, total - total // 2


def resnet18():
    v = [("resnet18 stem 7x7", 3, 64, 7, 2, 224, 1, False)]
    cin, side = 64, 56
    for i, cout in enumerate([64, 128, 256, 512]):
        s = 1 if i == 0 else 2
        v.append(("resnet18 3x3", cin, cout, 3, s, side, 1, False))
        if s == 2:
            v.append(("resnet18 1x1 downsample", cin, cout, 1, 2, side, 1, False))
        side //= s
        v += [("resnet18 3x3", cout, cout, 3, 1, side, 1, False)] * 3
        cin = cout
    return v


def effnet():
    v = [("effnet stem 3x3", 3, 32, 3, 2, 224, 1, True)]
    cin, side = 32, 112
    for r, k, s, e, out in [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                            (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]:
        for j in range(r):
            st = s if j == 0 else 1
            mid = cin * e
            if e != 1:
                v.append(("effnet 1x1 expand", cin, mid, 1, 1, side, 1, True))
            v.append(("effnet depthwise", mid, mid, k, st, side, mid, True))
            side = -(-side // st)
            v.append(("effnet 1x1 project", mid, out, 1, 1, side, 1, True))
            cin = out
    v.append(("effnet 1x1 head", 320, 1280, 1, 1, 7, 1, True))
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    totals = {}
    with torch.inference_mode():
        for g, cin, cout, k, s, side, groups, same in resnet18() + effnet():
            x = torch.randn(1, cin, side, side)
            w = torch.randn(cout, cin // groups, k, k) * 0.1

            def run():
                if same:
                    p0, p1 = same_pad(side, k, s)
                    return F.conv2d(F.pad(x, (p0, p1, p0, p1)), w, stride=s, groups=groups)
                return F.conv2d(x, w, stride=s, padding=k // 2, groups=groups)

            for _ in range(3):
                run()
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                run()
                ts.append((time.perf_counter() - t) * 1e3)
            totals[g] = totals.get(g, 0.0) + statistics.median(ts)
    print(f"| layers (224x224, batch 1, {a.threads} threads) | PyTorch {torch.__version__} ms |")
    print("| --- | ---: |")
    for g in sorted(totals):
        print(f"| {g} | {totals[g]:.2f} |")
    for net in ["resnet18", "effnet"]:
        print(f"| **{net} all convolutions** | **{sum(v for g, v in totals.items() if g.startswith(net)):.2f}** |")


if __name__ == "__main__":
    main()

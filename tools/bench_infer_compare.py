#!/usr/bin/env python3
"""cromo vs PyTorch CPU inference latency, side by side on one machine in one call.

Exact command (repository root; torch, torchvision and timm installed; cromo built with
`cargo build --release`):
    python3 tools/bench_infer_compare.py --threads 2 --rounds 3 --runs 20

Alternates `cromo bench infer --json` and `tools/bench_torch_cpu.py --json` for `--rounds` rounds, so
both see the same machine load, and prints a Markdown table of the median over rounds of each one's
median latency, with the ratio cromo / PyTorch (below 1: cromo is faster).
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="efficientnet-lite0,resnet18,resnet18-cifar,small-cnn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cromo", default=str(ROOT / "target/release/cromo"))
    a = ap.parse_args()
    archs = a.arch.split(",")
    res = {("cromo", x): [] for x in archs} | {("torch", x): [] for x in archs}
    for _ in range(a.rounds):
        for row in run([a.cromo, "bench", "infer", "--arch", a.arch, "--batch", str(a.batch),
                        "--threads", str(a.threads), "--runs", str(a.runs), "--json"]):
            res[("cromo", row["arch"])].append(row["median_ms"])
        for row in run([sys.executable, str(ROOT / "tools/bench_torch_cpu.py"), "--arch", *archs,
                        "--batch", str(a.batch), "--threads", str(a.threads), "--runs", str(a.runs),
                        "--json"]):
            res[("torch", row["arch"])].append(row["median_ms"])
    print(f"| batch-{a.batch} inference, {a.threads} threads | cromo ms | PyTorch ms | cromo / PyTorch |")
    print("| --- | ---: | ---: | ---: |")
    for x in archs:
        c = statistics.median(res[("cromo", x)])
        t = statistics.median(res[("torch", x)])
        print(f"| `{x}` | {c:.2f} | {t:.2f} | {c / t:.2f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent reference values used by tests/data_sources.rs and tests/data_splits.rs.

Command (from the project root, with the shared data next to it):
    /work/pyenv/bin/python tools/data_reference_values.py ../shared/data

Prints:
- CIFAR-10 JPEG test split: image count, per-channel mean pixel / 255 decoded with PIL
  (libjpeg), and the first image's (airplane/0000.jpg) mean value;
- MNIST and Fashion-MNIST (Debian dataset-fashion-mnist): first labels, label histograms and
  the pixel sum of the first image of each split, read with gzip + numpy;
- the class orders of cromo's TaskSplit::new for a few seeds, from an independent
  implementation of its documented algorithm (SplitMix64-driven Fisher-Yates with
  j = (u64 * (i + 1)) >> 64).
Needs numpy, Pillow and the zstd command.
"""
import gzip
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image


def cifar(data):
    raw = subprocess.run(["zstd", "-dc", os.path.join(data, "cifar10-jpeg.tar.zst")],
                         check=True, capture_output=True).stdout
    tf = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    files = {}
    for m in tf:
        if m.isfile() and m.name.startswith("cifar10-jpeg/test/"):
            files[m.name] = tf.extractfile(m).read()
    names = sorted(files)
    s = np.zeros(3)
    for n in names:
        a = np.asarray(Image.open(io.BytesIO(files[n])).convert("RGB"), dtype=np.float64)
        s += a.reshape(-1, 3).mean(0)
    first = np.asarray(Image.open(io.BytesIO(files[names[0]])).convert("RGB"), dtype=np.float64)
    print("cifar10 test", len(names), "mean/255", s / len(names) / 255, names[0], "mean", first.mean())


def idx(folder, tag):
    for split in ["train", "t10k"]:
        lb = np.frombuffer(gzip.open(f"{folder}/{split}-labels-idx1-ubyte.gz").read()[8:], np.uint8)
        im = gzip.open(f"{folder}/{split}-images-idx3-ubyte.gz").read()
        first = np.frombuffer(im[16:16 + 784], np.uint8)
        print(tag, split, "n", len(lb), "first labels", lb[:5].tolist(),
              "hist", np.bincount(lb).tolist(), "first image sum", int(first.sum(dtype=np.int64)))


def splitmix(seed):
    s = seed
    m = 2**64 - 1
    while True:
        s = (s + 0x9E3779B97F4A7C15) & m
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        yield z ^ (z >> 31)


def order(n, seed):
    g = splitmix(seed)
    o = list(range(n))
    for i in range(n - 1, 0, -1):
        j = (next(g) * (i + 1)) >> 64
        o[i], o[j] = o[j], o[i]
    return o


if __name__ == "__main__":
    data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
    cifar(data)
    idx(os.path.join(data, "mnist"), "mnist")
    if os.path.isdir("/usr/share/datasets/fashion-mnist"):
        idx("/usr/share/datasets/fashion-mnist", "fashion-mnist")
    print("splitmix64(0) first output", hex(next(splitmix(0))))
    for n, seed in [(10, 0), (10, 1), (10, 42), (20, 7)]:
        print(f"order({n}, seed={seed})", order(n, seed))

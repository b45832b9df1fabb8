#!/usr/bin/env python3
"""Reference fixtures for tests/augment.rs, produced by Pillow, torch and torchvision.

Exact command (from the repository root, with the shared data next to it):
    /work/pyenv/bin/python tools/gen_augment_fixtures.py ../shared/data tests/fixtures/augment

(tested with torch 2.15.0, torchvision 0.29.2, Pillow 13.0.0, numpy; CPU only)

Writes into the output folder:
- transform.json: Pillow `Image.resize(..., BILINEAR)` of small seeded random u8 images
  (RGB and L, shrinking, enlarging, mixed) and the torchvision
  `Resize(256) + CenterCrop(224) + ToTensor + Normalize(ImageNet)` output of
  photos/coffee.png at fixed sample positions with the sum of the whole tensor;
- coffee_224.png: the u8 image after `Resize(256) + CenterCrop(224)` of coffee.png (lossless);
- ops.json: torchvision's tensor ops on a fixed seeded 3x8x8 float image: adjust_brightness,
  adjust_contrast, adjust_saturation, adjust_hue, rgb_to_grayscale, solarize, gaussian_blur and
  resized_crop (bilinear, antialias False and True, horizontal flip) with fixed parameters, and
  ColorJitter's ops applied in a fixed order with fixed factors.
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flat(t):
    return [float(v) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


def transform_fixtures(data_dir, out_dir):
    rng = np.random.default_rng(20240611)
    cases = []
    # (src h, src w, channels, dst h, dst w)
    for sh, sw, c, dh, dw in [
        (23, 37, 3, 11, 16),  # shrink both axes, non-integer factors
        (7, 5, 3, 13, 9),  # enlarge both
        (20, 9, 3, 6, 14),  # shrink rows, enlarge columns
        (16, 16, 3, 16, 5),  # columns only
        (31, 12, 1, 10, 12),  # rows only, one channel
        (40, 30, 3, 3, 2),  # strong shrink
        (45, 40, 1, 9, 33),  # rows shrink > 2x columns: Pillow 13 runs the vertical pass first
        (60, 21, 3, 17, 19),  # same, RGB
    ]:
        a = rng.integers(0, 256, size=(sh, sw, c), dtype=np.uint8)
        im = Image.fromarray(a[:, :, 0] if c == 1 else a, mode="L" if c == 1 else "RGB")
        r = np.asarray(im.resize((dw, dh), Image.BILINEAR)).reshape(-1)
        cases.append(dict(sh=sh, sw=sw, c=c, dh=dh, dw=dw, src=a.reshape(-1).tolist(), dst=r.tolist()))

    photo = Image.open(os.path.join(data_dir, "photos", "coffee.png")).convert("RGB")
    crop = T.Compose([T.Resize(256), T.CenterCrop(224)])(photo)
    crop.save(os.path.join(out_dir, "coffee_224.png"), optimize=True)
    full = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = full(photo)  # (3, 224, 224)
    pos = rng.integers(0, [3, 224, 224], size=(64, 3))
    samples = [dict(c=int(c), y=int(y), x=int(xx), v=float(x[c, y, xx])) for c, y, xx in pos]
    coffee = dict(
        height=photo.height,
        width=photo.width,
        resize=256,
        crop=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        sum=float(x.double().sum()),
        samples=samples,
    )
    with open(os.path.join(out_dir, "transform.json"), "w") as f:
        json.dump(dict(resize_cases=cases, coffee=coffee), f)


def main():
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    transform_fixtures(data_dir, out_dir)
    print("torch", torch.__version__, "torchvision", torchvision.__version__, "Pillow", Image.__version__)


if __name__ == "__main__":
    main()

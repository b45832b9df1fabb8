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
  ColorJitter's ops applied in a fixed order with fixed factors, and the whole view pipeline
  (ToTensor, resized_crop, hflip, jitter, grayscale, blur, solarize, Normalize) with fixed
  choices on a seeded 10x12 u8 RGB image.
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


def ops_fixtures(out_dir):
    rng = np.random.default_rng(7)
    img = rng.uniform(0.0, 1.0, size=(3, 8, 8)).astype(np.float32)
    # Pixels that exercise the HSV branches: gray, max shared by G and B, max shared by R and G,
    # pure black and white.
    img[:, 0, 0] = (0.5, 0.5, 0.5)
    img[:, 0, 1] = (0.3, 0.7, 0.7)
    img[:, 0, 2] = (0.8, 0.8, 0.2)
    img[:, 0, 3] = (0.0, 0.0, 0.0)
    img[:, 0, 4] = (1.0, 1.0, 1.0)
    img[:, 0, 5] = (0.9, 0.1, 0.1)
    x = torch.from_numpy(img)
    out = dict(image=flat(img), h=8, w=8)
    out["brightness"] = [dict(f=f, out=flat(F.adjust_brightness(x, f))) for f in (0.6, 1.35)]
    out["contrast"] = [dict(f=f, out=flat(F.adjust_contrast(x, f))) for f in (0.6, 1.4)]
    out["saturation"] = [dict(f=f, out=flat(F.adjust_saturation(x, f))) for f in (0.0, 0.8, 1.2)]
    out["hue"] = [dict(f=f, out=flat(F.adjust_hue(x, f))) for f in (-0.1, 0.07, 0.5, -0.5)]
    out["grayscale"] = flat(F.rgb_to_grayscale(x, num_output_channels=3))
    out["solarize"] = [dict(t=t, out=flat(F.solarize(x, t))) for t in (0.5, 0.3)]
    out["blur"] = [
        dict(k=k, sigma=s, out=flat(F.gaussian_blur(x, [k, k], [s, s]))) for k, s in ((5, 1.3), (3, 0.7), (7, 2.0))
    ]
    crops = []
    for top, left, h, w, oh, ow, aa, flip in [
        (1, 2, 5, 6, 8, 8, False, False),  # enlarge
        (1, 2, 5, 6, 8, 8, False, True),
        (0, 0, 8, 8, 3, 4, False, False),  # shrink, plain bilinear
        (0, 0, 8, 8, 3, 4, True, False),  # shrink, antialiased (Pillow's triangle weights)
        (2, 1, 6, 7, 5, 3, True, True),
        (0, 0, 8, 8, 8, 8, False, False),  # identity
    ]:
        y = F.resized_crop(x, top, left, h, w, [oh, ow], T.InterpolationMode.BILINEAR, antialias=aa)
        if flip:
            y = F.hflip(y)
        crops.append(dict(top=top, left=left, height=h, width=w, oh=oh, ow=ow, antialias=aa, flip=flip, out=flat(y)))
    out["resized_crop"] = crops
    # ColorJitter's ops in a fixed order with fixed factors.
    jit = []
    for order, b, c, s, hf in [([2, 0, 3, 1], 1.2, 0.7, 1.3, -0.05), ([3, 1, 0, 2], 0.65, 1.35, 0.85, 0.09)]:
        y = x
        for i in order:
            if i == 0:
                y = F.adjust_brightness(y, b)
            elif i == 1:
                y = F.adjust_contrast(y, c)
            elif i == 2:
                y = F.adjust_saturation(y, s)
            else:
                y = F.adjust_hue(y, hf)
        jit.append(dict(order=order, brightness=b, contrast=c, saturation=s, hue=hf, out=flat(y)))
    out["jitter"] = jit
    # The whole view pipeline with fixed choices on a u8 HWC image:
    # ToTensor -> resized_crop -> hflip -> jitter -> grayscale -> blur -> solarize -> Normalize.
    u8 = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    t = torch.from_numpy(u8).permute(2, 0, 1).float().div(255)
    pipes = []
    for p in [
        dict(crop=(1, 2, 7, 9), size=(8, 8), antialias=True, flip=True, jitter=([1, 3, 0, 2], 1.1, 0.8, 1.25, 0.04),
             gray=False, blur=None, solarize=True, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
        dict(crop=(0, 1, 10, 10), size=(6, 5), antialias=True, flip=False, jitter=None, gray=True, blur=(3, 0.9),
             solarize=False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ]:
        top, left, h, w = p["crop"]
        y = F.resized_crop(t, top, left, h, w, list(p["size"]), T.InterpolationMode.BILINEAR, antialias=p["antialias"])
        if p["flip"]:
            y = F.hflip(y)
        if p["jitter"] is not None:
            order, b, c, s, hf = p["jitter"]
            for i in order:
                y = [lambda z: F.adjust_brightness(z, b), lambda z: F.adjust_contrast(z, c),
                     lambda z: F.adjust_saturation(z, s), lambda z: F.adjust_hue(z, hf)][i](y)
        if p["gray"]:
            y = F.rgb_to_grayscale(y, num_output_channels=3)
        if p["blur"] is not None:
            k, sg = p["blur"]
            y = F.gaussian_blur(y, [k, k], [sg, sg])
        if p["solarize"]:
            y = F.solarize(y, 0.5)
        y = F.normalize(y, p["mean"], p["std"])
        pipes.append(dict(params=p, out=flat(y)))
    out["pipeline"] = dict(image=u8.reshape(-1).tolist(), h=10, w=12, cases=pipes)
    with open(os.path.join(out_dir, "ops.json"), "w") as f:
        json.dump(out, f)


def main():
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    transform_fixtures(data_dir, out_dir)
    ops_fixtures(out_dir)
    print("torch", torch.__version__, "torchvision", torchvision.__version__, "Pillow", Image.__version__)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A second, independent set of torchvision / Pillow fixtures for tests/augment_xcheck.rs.

It was written without sight of tools/gen_augment_fixtures.py (a parallel implementation of the
same task), so its image, parameters and edge cases differ; both fixture sets must hold.

Run from the repository root (torch 2.15, torchvision 0.29, Pillow 13; the `zstd` command;
shared data beside the repository):

    /work/pyenv/bin/python tools/gen_augment_xcheck_fixtures.py ../shared/data/photos tests/fixtures/augment_xcheck

Writes:
  ops.json          a fixed float image (3, 8, 10) in [0, 1] (random values plus hand-placed gray,
                    two-channel-maximum, 0, 1, exactly-0.5 and hue-near-0/1 pixels) and, for fixed
                    parameters, torchvision.transforms.functional (tensor code) outputs of
                    adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue (±0.5 and 0
                    included), rgb_to_grayscale(3), solarize, hflip, gaussian_blur and
                    resized_crop (bilinear, antialias False and True, up- and down-scaling).
  pil_resize.json   a random RGB u8 image (13, 17) and Pillow's Image.resize(..., BILINEAR) of it
                    to several sizes (up, down, mixed, portrait, 1x1, 40x3, identity), u8.
  chelsea_224.f32.zst  torchvision Resize(256) + CenterCrop(224) + ToTensor + Normalize(ImageNet)
                    on the PIL image (convert("RGB")) of chelsea.png (451x300: a non-integer
                    resize scale), (3, 224, 224) float32 little-endian, `zstd -19`.
Nothing here is needed at run time or by the tests themselves.
"""
import json
import os
import subprocess
import sys

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def flat(t):
    # Shortest decimal that round-trips the float32 value (parsed as f64 then cast to f32).
    return [float(str(x)) for x in np.asarray(t, dtype=np.float32).reshape(-1)]


def ops_image():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 8, 10, generator=g)
    img[:, 0, 0] = 0.3  # gray: max == min
    img[:, 0, 1] = torch.tensor([0.7, 0.7, 0.2])  # max in r and g
    img[:, 0, 2] = torch.tensor([0.1, 0.6, 0.6])  # max in g and b
    img[:, 0, 3] = torch.tensor([0.0, 0.0, 0.0])
    img[:, 0, 4] = torch.tensor([1.0, 1.0, 1.0])
    img[:, 0, 5] = torch.tensor([0.5, 0.25, 0.75])  # exactly the solarisation threshold
    img[:, 0, 6] = torch.tensor([0.9, 0.1, 0.1])  # saturated red: hue near 0 wraps
    img[:, 0, 7] = torch.tensor([0.9, 0.1, 0.2])  # hue just below 1
    return img


def main():
    photos, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)

    img = ops_image()
    cases = []

    def case(op, params, out):
        cases.append({"op": op, "params": params, "shape": list(out.shape), "output": flat(out)})

    for f in [1.3, 0.6, 0.0]:
        case("brightness", {"factor": f}, F.adjust_brightness(img, f))
    for f in [1.4, 0.5, 0.0]:
        case("contrast", {"factor": f}, F.adjust_contrast(img, f))
    for f in [1.7, 0.3, 0.0]:
        case("saturation", {"factor": f}, F.adjust_saturation(img, f))
    for h in [0.1, -0.25, 0.45, -0.5, 0.0]:
        case("hue", {"hue": h}, F.adjust_hue(img, h))
    case("grayscale", {}, F.rgb_to_grayscale(img, num_output_channels=3))
    for th in [0.5, 0.3]:
        case("solarize", {"threshold": th}, F.solarize(img, th))
    case("hflip", {}, F.hflip(img))
    for k, s in [(5, 1.3), (3, 0.7), (7, 2.0)]:
        case("gaussian_blur", {"kernel_size": k, "sigma": s}, F.gaussian_blur(img, [k, k], [s, s]))
    for (top, left, h, w, oh, ow) in [(1, 2, 5, 7, 8, 12), (0, 0, 8, 10, 3, 4), (2, 1, 6, 9, 4, 13),
                                      (0, 0, 8, 10, 8, 10), (3, 3, 3, 3, 7, 5)]:
        for aa in [False, True]:
            out = F.resized_crop(img, top, left, h, w, [oh, ow],
                                 interpolation=T.InterpolationMode.BILINEAR, antialias=aa)
            case("resized_crop", {"top": top, "left": left, "height": h, "width": w,
                                  "out_h": oh, "out_w": ow, "antialias": aa}, out)

    with open(os.path.join(out_dir, "ops.json"), "w") as f:
        json.dump({
            "generator": "tools/gen_augment_xcheck_fixtures.py",
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "image_shape": list(img.shape), "image": flat(img), "cases": cases,
        }, f)

    # Pillow BILINEAR resize of a u8 RGB image.
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
    pil = Image.fromarray(src, "RGB")
    outs = []
    for (dh, dw) in [(7, 5), (26, 40), (13, 9), (5, 17), (20, 11), (13, 17), (1, 1), (40, 3)]:
        r = np.asarray(pil.resize((dw, dh), Image.BILINEAR))
        outs.append({"out_h": dh, "out_w": dw, "data": r.reshape(-1).tolist()})
    with open(os.path.join(out_dir, "pil_resize.json"), "w") as f:
        json.dump({"pillow": PIL.__version__,
                   "shape": list(src.shape), "data": src.reshape(-1).tolist(), "resizes": outs}, f)

    # Photos: Resize(256) + CenterCrop(224) + ToTensor + Normalize on PIL images.
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for name in ["chelsea.png"]:
        im = Image.open(os.path.join(photos, name)).convert("RGB")
        x = tf(im).numpy().astype("<f4")
        assert x.shape == (3, 224, 224), x.shape
        raw = os.path.join(out_dir, name.split(".")[0] + "_224.f32")
        x.tofile(raw)
        subprocess.run(["zstd", "-q", "-19", "-f", "--rm", raw, "-o", raw + ".zst"], check=True)
        print(name, im.size, "->", raw + ".zst")


if __name__ == "__main__":
    main()

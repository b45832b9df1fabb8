#!/usr/bin/env python3
"""One training step of EfficientNet-Lite0 from the shipped weights, computed by PyTorch (timm).

Command (from the repository root; writes tests/fixtures/models/efficientnet-lite0-train-step.json):

    /work/pyenv/bin/python tools/gen_effnet_train_fixture.py \
        --weights models/efficientnet_lite0.safetensors --out tests/fixtures/models

Needs torch (CPU), timm and safetensors (versions of the committed fixture: torch 2.15.0,
timm 1.0.31). The model is timm's `tf_efficientnet_lite0` with the shipped tensors mapped in by
name (`timm_lite0_from` of tools/gen_model_fixtures.py), every BatchNorm with momentum 0.1 (what
cromo's encoders use, PyTorch's default), in train mode (batch statistics, running statistics
updated with the unbiased variance).

The step, with x = u(31, k) over (8, 3, 64, 64) and target R = u(32, k) over (8, 1280) (the PRNG
of tools/gen_model_fixtures.py; x is taken as already normalised). 64x64 (Tiny-ImageNet's size)
rather than 32x32 because at 32x32 the last stages are 1x1 and their train-mode BatchNorm
statistics come from 4-8 numbers, which makes float32 gradients ill-conditioned for a test:

    f    = global-average-pooled features of x                            (8, 1280)
    loss = 0.5 * mean((f - R)^2)
    w'   = w - 0.1 * dloss/dw      for every parameter (plain SGD, no momentum, no decay)

Everything is computed in float64 and stored as float32.

Stored: the loss, and for a selection of tensors (names of the shipped file) the updated values
w' (parameters) or the updated running statistics, plus the gradient dloss/dw of the parameters.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_model_fixtures import pack, prng_input, timm_lite0_from, write  # noqa: E402

LR = 0.1
# (shipped name, timm name)
SELECTED = [
    ("_conv_stem.weight", "conv_stem.weight"),
    ("_bn0.weight", "bn1.weight"),
    ("_bn0.running_mean", "bn1.running_mean"),
    ("_bn0.running_var", "bn1.running_var"),
    ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
    ("_blocks.0._bn1.bias", "blocks.0.0.bn1.bias"),
    ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
    ("_blocks.1._bn1.running_var", "blocks.1.0.bn2.running_var"),
    ("_blocks.3._depthwise_conv.weight", "blocks.2.0.conv_dw.weight"),
    ("_blocks.5._depthwise_conv.weight", "blocks.3.0.conv_dw.weight"),
    ("_blocks.15._bn2.weight", "blocks.6.0.bn3.weight"),
    ("_bn1.weight", "bn2.weight"),
    ("_bn1.bias", "bn2.bias"),
    ("_bn1.running_mean", "bn2.running_mean"),
    ("_bn1.running_var", "bn2.running_var"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="models/efficientnet_lite0.safetensors")
    ap.add_argument("--out", default="tests/fixtures/models")
    a = ap.parse_args()
    torch.manual_seed(0)
    m = timm_lite0_from(a.weights).double()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.1
    m.train()
    x = prng_input(31, (8, 3, 64, 64)).double()
    r = prng_input(32, (8, 1280)).double()
    f = m.forward_head(m.forward_features(x), pre_logits=True)
    assert f.shape == (8, 1280), f.shape
    loss = 0.5 * ((f - r) ** 2).mean()
    loss.backward()
    params = dict(m.named_parameters())
    buffers = dict(m.named_buffers())
    tensors = {}
    with torch.no_grad():
        for ours, theirs in SELECTED:
            if theirs in params:
                p = params[theirs]
                tensors[ours] = {
                    "grad": pack(p.grad.float()),
                    "updated": pack((p - LR * p.grad).float()),
                }
            else:
                tensors[ours] = {"updated": pack(buffers[theirs].float())}
    obj = {
        "generator": "tools/gen_effnet_train_fixture.py",
        "torch": torch.__version__,
        "computed_in": "float64",
        "input": {"seed": 31, "shape": [8, 3, 64, 64]},
        "target": {"seed": 32, "shape": [8, 1280]},
        "lr": LR,
        "bn_momentum": 0.1,
        "loss": float(loss),
        "tensors": tensors,
    }
    write(os.path.join(a.out, "efficientnet-lite0-train-step.json"), obj)
    print("loss", float(loss))


if __name__ == "__main__":
    main()

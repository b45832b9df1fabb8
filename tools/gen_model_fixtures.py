#!/usr/bin/env python3
"""Reference outputs of cromo's encoders, computed by PyTorch (torchvision / timm).

Command (from the repository root; writes tests/fixtures/models/*.json):

    /work/pyenv/bin/python tools/gen_model_fixtures.py \
        --shared-models ../shared/models --out tests/fixtures/models

Needs torch (CPU is enough), torchvision, timm and safetensors. Fixed versions used for the
committed fixtures: torch 2.15.0, torchvision 0.29.2, timm 1.0.31.

Weights are not committed. They are generated from a counter-based PRNG that `tests/models.rs`
implements too, so the test rebuilds the very same tensors from the names, shapes and recipes in
the fixture (listed in the PyTorch `state_dict()` order and naming, not cromo's):

    splitmix64(x): z = x + 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
                   z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)   (mod 2^64)
    u(seed, k)   = (splitmix64((seed << 32) + k) >> 11) * 2^-53 * 2 - 1             in [-1, 1)

One stream (seed, running k from 0) fills the float tensors of the state_dict one after the
other (row-major), each by its recipe, computed in float64 and rounded to float32 once:

    fan_in  (conv / linear weight): u * sqrt(gain / fan_in), gain 3 (variance 1 / fan_in, so
                                    ResNet-18 logits stay within about 10 in magnitude)
    bias    (linear bias):          0.1 u
    bn_weight: 1 + 0.1 u    bn_bias: 0.1 u    bn_mean: 0.1 u    bn_var: 0.5 + u^2
    counter (BatchNorm num_batches_tracked, int64 scalar): 0, takes no PRNG value

The input is u(input_seed, k) for k = 0.. over the input shape (row-major NCHW), float32.

EfficientNet-Lite0 uses the real shipped weights (`efficientnet_lite0.safetensors`, names of
`efficientnet_pytorch`), mapped by name into timm's `tf_efficientnet_lite0` as described in
shared/models/README.md; only the inputs come from the PRNG.

Stored outputs (float32 values printed with 9 significant digits):
    logits (B, classes), pooled (B, D), early_mean (B, C) = spatial mean of the early map,
    early_sub = early[:, :, ::s, ::s] with s = max(1, h // 4) given beside it.
"""

import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

M64 = (1 << 64) - 1


def splitmix64(x):
    """Vectorised splitmix64 over a numpy uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed, start, n):
    """u(seed, k) for k in start..start+n, float64 in [-1, 1)."""
    with np.errstate(over="ignore"):
        base = np.uint64((seed << 32) & M64)
        ks = np.arange(start, start + n, dtype=np.uint64) + base
    bits = splitmix64(ks) >> np.uint64(11)
    return bits.astype(np.float64) * (2.0**-53) * 2.0 - 1.0


def splitmix64_scalar(x):
    """Plain-int version, used once to self-check the vectorised one."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class ConvBn(nn.Module):
    """3x3 conv (no bias) - BatchNorm - ReLU: one stage of cromo's small-cnn."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class SmallCnn(nn.Module):
    """DESIGN section 5: stages of 32, 64, 128, 256 channels, strides 1, 2, 2, 2; GAP -> 256."""

    def __init__(self):
        super().__init__()
        chans = [3, 32, 64, 128, 256]
        strides = [1, 2, 2, 2]
        self.stages = nn.Sequential(
            *[ConvBn(chans[i], chans[i + 1], strides[i]) for i in range(4)]
        )

    def forward_all(self, x):
        early = self.stages[0](x)
        y = early
        for s in self.stages[1:]:
            y = s(y)
        pooled = y.mean(dim=(2, 3))
        return None, pooled, early


def recipes(model):
    """(name, recipe dict) for every state_dict entry, recipe from the owning module's type."""
    modules = dict(model.named_modules())
    out = []
    for name, t in model.state_dict().items():
        mod_name, _, leaf = name.rpartition(".")
        mod = modules[mod_name]
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            r = {
                "weight": "bn_weight",
                "bias": "bn_bias",
                "running_mean": "bn_mean",
                "running_var": "bn_var",
                "num_batches_tracked": "counter",
            }[leaf]
            rec = {"init": r}
        elif isinstance(mod, nn.Conv2d) and leaf == "weight":
            fan_in = t.shape[1] * t.shape[2] * t.shape[3]
            rec = {"init": "fan_in", "gain": 3, "fan_in": int(fan_in)}
        elif isinstance(mod, nn.Linear) and leaf == "weight":
            rec = {"init": "fan_in", "gain": 3, "fan_in": int(t.shape[1])}
        elif isinstance(mod, (nn.Linear, nn.Conv2d)) and leaf == "bias":
            rec = {"init": "bias"}
        else:
            raise SystemExit(f"no recipe for {name} ({type(mod).__name__})")
        rec["name"] = name
        rec["shape"] = list(t.shape)
        rec["dtype"] = "I64" if rec["init"] == "counter" else "F32"
        out.append(rec)
    return out


def fill(model, seed):
    """Overwrite the model's state_dict with the PRNG recipe; returns the recipe list."""
    recs = recipes(model)
    sd = model.state_dict()
    k = 0
    new = {}
    for r in recs:
        t = sd[r["name"]]
        if r["init"] == "counter":
            new[r["name"]] = torch.zeros_like(t)
            continue
        n = t.numel()
        u = uniform(seed, k, n)
        k += n
        init = r["init"]
        if init == "fan_in":
            v = u * math.sqrt(r["gain"] / r["fan_in"])
        elif init in ("bias", "bn_bias", "bn_mean"):
            v = 0.1 * u
        elif init == "bn_weight":
            v = 1.0 + 0.1 * u
        elif init == "bn_var":
            v = 0.5 + u * u
        else:
            raise AssertionError(init)
        new[r["name"]] = torch.from_numpy(v.astype(np.float32).reshape(t.shape))
    model.load_state_dict(new, strict=True)
    return recs


def prng_input(seed, shape):
    n = int(np.prod(shape))
    return torch.from_numpy(uniform(seed, 0, n).astype(np.float32).reshape(shape))


def as_list(t):
    return [float("%.9g" % v) for v in t.detach().double().flatten().tolist()]


def pack(t):
    return {"shape": list(t.shape), "data": as_list(t)}


def outputs(logits, pooled, early):
    sub_stride = max(1, early.shape[2] // 4)
    out = {
        "pooled": pack(pooled),
        "early_shape": list(early.shape),
        "early_mean": pack(early.mean(dim=(2, 3))),
        "early_sub_stride": sub_stride,
        "early_sub": pack(early[:, :, ::sub_stride, ::sub_stride]),
    }
    if logits is not None:
        out["logits"] = pack(logits)
    return out


def resnet_forward_all(m, x):
    """torchvision ResNet forward, keeping the layer1 map and the pooled feature."""
    y = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    early = m.layer1(y)
    y = m.layer4(m.layer3(m.layer2(early)))
    pooled = torch.flatten(m.avgpool(y), 1)
    return m.fc(pooled), pooled, early


def write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def header(arch, seed, recs, input_seed, shape, mode):
    return {
        "generator": "tools/gen_model_fixtures.py",
        "torch": torch.__version__,
        "arch": arch,
        "mode": mode,
        "weights": {"seed": seed, "tensors": recs},
        "input": {"seed": input_seed, "shape": list(shape)},
    }


def gen_resnet(out_dir, cifar):
    import torchvision

    m = torchvision.models.resnet18()
    if cifar:
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    arch = "resnet18-cifar" if cifar else "resnet18"
    seed = 11 if cifar else 10
    recs = fill(m, seed)
    m.eval()
    shape = (2, 3, 32, 32) if cifar else (2, 3, 64, 64)
    x = prng_input(seed + 100, shape)
    with torch.no_grad():
        logits, pooled, early = resnet_forward_all(m, x)
    obj = header(arch, seed, recs, seed + 100, shape, "eval")
    obj["outputs"] = outputs(logits, pooled, early)
    print(arch, "logits abs max", float(logits.abs().max()), "pooled abs max", float(pooled.abs().max()))
    write(os.path.join(out_dir, f"{arch}.json"), obj)


def gen_small_cnn(out_dir):
    m = SmallCnn()
    seed = 12
    recs = fill(m, seed)
    shape = (4, 3, 32, 32)
    x = prng_input(seed + 100, shape)
    obj = header("small-cnn", seed, recs, seed + 100, shape, "eval+train")
    with torch.no_grad():
        m.eval()
        _, pooled, early = m.forward_all(x)
        obj["outputs"] = outputs(None, pooled, early)
        m.train()
        _, pooled_t, early_t = m.forward_all(x)
        obj["outputs_train"] = outputs(None, pooled_t, early_t)
        # running statistics after that one train-mode forward (momentum 0.1, unbiased var)
        obj["running_after_train"] = {
            f"stages.{i}.bn.{k}": pack(getattr(m.stages[i].bn, k))
            for i in (0, 3)
            for k in ("running_mean", "running_var")
        }
    print("small-cnn pooled abs max", float(pooled.abs().max()), float(pooled_t.abs().max()))
    write(os.path.join(out_dir, "small-cnn.json"), obj)


def timm_lite0_from(path):
    """timm tf_efficientnet_lite0 with the efficientnet_pytorch tensors mapped in by name."""
    import timm
    from safetensors.torch import load_file

    src = load_file(path)
    m = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    # efficientnet_pytorch block index -> (timm stage, index in stage)
    repeats = [1, 2, 2, 3, 3, 4, 1]
    where = []
    for s, r in enumerate(repeats):
        where += [(s, j) for j in range(r)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    b0 = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    bn = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    sd = {}
    for name, t in src.items():
        parts = name.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            s, j = where[i]
            table = b0 if i == 0 else bn
            sd[".".join(["blocks", str(s), str(j), table[parts[2]]] + parts[3:])] = t
        else:
            sd[".".join([top[parts[0]]] + parts[1:])] = t
    m.load_state_dict(sd, strict=True)
    return m.eval()


def gen_efficientnet(out_dir, shared_models):
    path = os.path.join(shared_models, "efficientnet_lite0.safetensors")
    m = timm_lite0_from(path)
    cases = [((1, 3, 224, 224), 20), ((2, 3, 64, 64), 21), ((2, 3, 32, 32), 22)]
    for shape, seed in cases:
        x = prng_input(seed, shape)
        with torch.no_grad():
            y = m.bn1(m.conv_stem(x))
            y = m.blocks[0](y)
            early = m.blocks[1](y)
            y = early
            for b in m.blocks[2:]:
                y = b(y)
            y = m.bn2(m.conv_head(y))
            pooled = y.mean(dim=(2, 3))
            logits = m.classifier(pooled)
            ref = m(x)
            assert torch.allclose(ref, logits, atol=1e-5), "manual forward differs from timm's"
        obj = {
            "generator": "tools/gen_model_fixtures.py",
            "torch": torch.__version__,
            "arch": "efficientnet-lite0",
            "mode": "eval",
            "weights": {"file": "efficientnet_lite0.safetensors"},
            "input": {"seed": seed, "shape": list(shape)},
        }
        obj["outputs"] = outputs(logits, pooled, early)
        obj["top5"] = [int(i) for i in logits[0].topk(5).indices]
        name = f"efficientnet-lite0-{shape[2]}.json"
        print(name, "logits abs max", float(logits.abs().max()), "early", list(early.shape))
        write(os.path.join(out_dir, name), obj)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared-models", default="../shared/models")
    ap.add_argument("--out", default="tests/fixtures/models")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    # self-check of the vectorised PRNG against plain integers
    for k in (0, 1, 12345):
        want = (splitmix64_scalar(((7 << 32) + k) & M64) >> 11) * 2.0**-53 * 2.0 - 1.0
        assert uniform(7, k, 1)[0] == want
    os.makedirs(a.out, exist_ok=True)
    gen_resnet(a.out, cifar=False)
    gen_resnet(a.out, cifar=True)
    gen_small_cnn(a.out)
    gen_efficientnet(a.out, a.shared_models)


if __name__ == "__main__":
    main()

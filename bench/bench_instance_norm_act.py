"""instance_norm_act: fastgen vs eager F.instance_norm + the activation vs torch.compile of it."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fastgen
from bench.harness import Case

# (N, C, H, W, act): CycleGAN's and Pix2Pix's norm layers. 16x64x64x64 is a generator's first
# block at 64x64 (4096-pixel planes); 16x256x8x8 its residual blocks on a coarse grid (many small
# planes); 1x64x128x128 one image at 128x128 (few large planes).
FULL = [
    (16, 64, 64, 64, "relu"),
    (16, 64, 64, 64, "leaky_relu"),
    (16, 256, 8, 8, "relu"),
    (16, 256, 8, 8, "leaky_relu"),
    (1, 64, 128, 128, "relu"),
    (1, 64, 128, 128, "leaky_relu"),
]
QUICK = [(2, 3, 5, 7, "relu"), (1, 4, 6, 6, "leaky_relu")]
EPS, SLOPE = 1e-5, 0.2


def eager_instance_norm_act(x, weight, bias, *, act, eps=EPS, negative_slope=SLOPE):
    """The unfused form: torch's instance_norm, then the activation (the reference provider)."""
    y = F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    if act == "relu":
        return F.relu(y)
    return F.leaky_relu(y, negative_slope) if act == "leaky_relu" else y


def _case(n, c, h, w, act) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, h, w, generator=g)
        weight, bias = 1 + 0.1 * torch.randn(c, generator=g), 0.1 * torch.randn(c, generator=g)
        return (x.to(device), weight.to(device), bias.to(device)), {}

    return Case(
        op="instance_norm_act",
        shape=f"{n}x{c}x{h}x{w} {act}",
        make_inputs=make_inputs,
        fastgen=functools.partial(fastgen.ops.instance_norm_act, act=act, negative_slope=SLOPE, eps=EPS),
        reference=functools.partial(eager_instance_norm_act, act=act),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

"""pixel_norm: fastgen vs the eager reference (leaky ReLU, square, mean, rsqrt, product) vs torch.compile of it."""
from __future__ import annotations

import functools

import torch

import fastgen
from bench.harness import Case
from fastgen.reference.pixel_norm import pixel_norm_reference

# (N, C, H, W, negative_slope): ProGAN's generator, each 3x3 convolution followed by leaky ReLU and
# pixel norm: 64x256x16x16 a 16x16 block at full width, 32x128x32x32 a 32x32 block at half width;
# 64x512x1x1 the latent vector z normalised before the first block (no activation).
FULL = [
    (64, 256, 16, 16, 0.2),
    (32, 128, 32, 32, 0.2),
    (64, 512, 1, 1, None),
]
QUICK = [(2, 3, 5, 7, 0.2), (3, 8, 1, 1, None)]
EPS = 1e-8


def _case(n, c, h, w, slope) -> Case:
    def make_inputs(device):
        x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))
        return (x.to(device),), {}

    return Case(
        op="pixel_norm",
        shape=f"{n}x{c}x{h}x{w} {'none' if slope is None else f'lrelu{slope}'}",
        make_inputs=make_inputs,
        fastgen=functools.partial(fastgen.ops.pixel_norm, negative_slope=slope, eps=EPS),
        reference=functools.partial(pixel_norm_reference, negative_slope=slope, eps=EPS),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

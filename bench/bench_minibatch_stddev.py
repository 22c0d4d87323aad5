"""minibatch_stddev: fastgen vs the eager reference (reshape, mean, square, sqrt, mean, repeat, cat)
vs torch.compile of it."""
from __future__ import annotations

import functools

import torch

import fastgen
from bench.harness import Case
from fastgen.reference.minibatch_stddev import minibatch_stddev_reference

# (N, C, H, W, group_size): ProGAN's discriminator, the stddev channel before its last (4x4)
# block: 64x256x4x4 at full width, 32x128x8x8 a wider map of a smaller model (4 samples per group).
FULL = [
    (64, 256, 4, 4, 4),
    (32, 128, 8, 8, 4),
]
QUICK = [(6, 3, 4, 4, 4), (3, 2, 5, 3, 4)]
EPS = 1e-8


def _case(n, c, h, w, group_size) -> Case:
    def make_inputs(device):
        x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))
        return (x.to(device), group_size), {}

    return Case(
        op="minibatch_stddev",
        shape=f"{n}x{c}x{h}x{w} g{group_size}",
        make_inputs=make_inputs,
        fastgen=functools.partial(fastgen.ops.minibatch_stddev, eps=EPS),
        reference=functools.partial(minibatch_stddev_reference, eps=EPS),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

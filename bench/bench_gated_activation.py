"""gated_activation: fastgen vs the eager tanh*sigmoid reference vs torch.compile of it."""
from __future__ import annotations

import torch

import fastgen
from bench.harness import Case
from fastgen.reference import gated_activation_reference

# (N, C, H, W, cond): cond is None, "class" (N, 2C) or "spatial" (N, 2C, H, W)
FULL = [
    (16, 128, 28, 28, "class"),
    (16, 128, 28, 28, None),
    (16, 128, 28, 28, "spatial"),
    (64, 64, 32, 32, "class"),
]
QUICK = [(2, 5, 7, 9, "class"), (2, 3, 5, 5, "spatial")]


def _case(n, c, h, w, cond) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 2 * c, h, w, generator=g).to(device)
        if cond == "class":
            return (x, torch.randn(n, 2 * c, generator=g).to(device)), {}
        if cond == "spatial":
            return (x, torch.randn(n, 2 * c, h, w, generator=g).to(device)), {}
        return (x,), {}

    return Case(
        op="gated_activation",
        shape=f"{n}x{2 * c}x{h}x{w} cond={cond}",
        make_inputs=make_inputs,
        fastgen=fastgen.ops.gated_activation,
        reference=gated_activation_reference,
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

"""categorical_nll: fastgen vs F.cross_entropy summed per image vs torch.compile of it."""
from __future__ import annotations

import torch

import fastgen
from bench.harness import Case
from fastgen.reference import categorical_nll_reference

# (N, L, C, H, W, layout): "contiguous" logits (N, L, C, H, W), or "head": a model head's
# (N, C*L, H, W) output viewed as (N, L, C, H, W) (strided levels, no copy).
FULL = [
    (16, 256, 3, 32, 32, "contiguous"),
    (16, 256, 3, 32, 32, "head"),
    (64, 2, 1, 28, 28, "head"),
    (128, 17, 1, 8, 8, "head"),
]
QUICK = [(2, 5, 3, 5, 7, "contiguous"), (2, 3, 1, 4, 3, "head")]


def _case(n, levels, c, h, w, layout) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        target = torch.randint(0, levels, (n, c, h, w), generator=g).to(device)
        if layout == "head":
            logits = torch.randn(n, c * levels, h, w, generator=g).to(device).view(n, c, levels, h, w).transpose(1, 2)
        else:
            logits = torch.randn(n, levels, c, h, w, generator=g).to(device)
        return (logits, target), {}

    return Case(
        op="categorical_nll",
        shape=f"{n}x{levels}x{c}x{h}x{w} {layout}",
        make_inputs=make_inputs,
        fastgen=fastgen.ops.categorical_nll,
        reference=categorical_nll_reference,
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

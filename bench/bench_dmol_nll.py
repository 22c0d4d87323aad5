"""dmol_nll: fastgen vs the eager PixelCNN++ loss vs torch.compile of it."""
from __future__ import annotations

import torch

import fastgen
from bench.harness import Case
from fastgen._core import dmol_channels
from fastgen.reference.dmol import dmol_nll_reference

# (N, C, H, W, nr_mix): the CIFAR-10 training batch of the figures, a larger batch, grey digits.
FULL = [(16, 3, 32, 32, 10), (64, 3, 32, 32, 10), (64, 1, 28, 28, 5)]
QUICK = [(2, 3, 5, 7, 3), (2, 1, 4, 3, 2)]


def make_dmol_inputs(n, c, h, w, nr_mix, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, h, w), generator=g) * (2 / 255) - 1
    params = torch.randn(n, dmol_channels(c, nr_mix), h, w, generator=g)
    noise = torch.rand(n, nr_mix + c, h, w, generator=g)
    return x.to(device), params.to(device), noise.to(device)


def _nll_case(n, c, h, w, nr_mix) -> Case:
    def make_inputs(device):
        x, params, _ = make_dmol_inputs(n, c, h, w, nr_mix, device)
        # params is the one differentiable argument; x is data and passed by keyword.
        return (params,), {"x": x, "nr_mix": nr_mix}

    return Case(
        op="dmol_nll",
        shape=f"{n}x{c}x{h}x{w} nr_mix={nr_mix}",
        make_inputs=make_inputs,
        fastgen=lambda params, x, nr_mix: fastgen.ops.dmol_nll(x, params, nr_mix=nr_mix),
        reference=lambda params, x, nr_mix: dmol_nll_reference(x, params, nr_mix),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_nll_case(*s) for s in (QUICK if quick else FULL)]

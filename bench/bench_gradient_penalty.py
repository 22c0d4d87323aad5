"""gradient_penalty: fastgen vs the eager reference vs torch.compile of it, on critic input gradients."""
from __future__ import annotations

import functools

import torch

import fastgen
from bench.harness import Case
from fastgen.reference.gradient_penalty import gradient_penalty_reference

FULL = [(64, 1, 28, 28), (64, 3, 32, 32), (256, 1, 8, 8)]
QUICK = [(3, 1, 5, 5)]


def _case(*shape) -> Case:
    def make_inputs(device):
        return (torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * 0.05,), {}

    return Case(
        op="gradient_penalty",
        shape="x".join(map(str, shape)),
        make_inputs=make_inputs,
        fastgen=functools.partial(fastgen.ops.gradient_penalty, weight=10.0),
        reference=functools.partial(gradient_penalty_reference, weight=10.0),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

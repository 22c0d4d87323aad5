"""reparameterize: fastgen vs mu + exp(logvar / 2) * eps in eager PyTorch vs torch.compile of it."""
from __future__ import annotations

import torch

import fastgen
from bench.harness import Case
from fastgen.reference.reparameterize import reparameterize_reference

FULL = [(256, 32), (4096, 128)]
QUICK = [(3, 5)]


def _case(n, latents) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        return tuple(torch.randn(n, latents, generator=g).to(device) for _ in range(3)), {}

    return Case(op="reparameterize", shape=f"{n}x{latents}", make_inputs=make_inputs,
                fastgen=fastgen.ops.reparameterize, reference=reparameterize_reference)


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

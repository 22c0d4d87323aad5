"""vae_nelbo: fastgen vs the eager reference (reconstruction NLL + analytic KL) vs torch.compile of it."""
from __future__ import annotations

import functools

import torch

import fastgen
from bench.harness import Case
from fastgen.reference.vae_nelbo import vae_nelbo_reference

# (likelihood, N, pixels, latents, levels or params)
FULL = [
    ("bernoulli", 256, 784, 32, None),
    ("categorical", 64, 784, 32, 16),
    ("gaussian", 256, 784, 32, 2),
    ("logistic", 256, 3 * 32 * 32, 64, 2),
]
QUICK = [("bernoulli", 3, 20, 4, None), ("logistic", 2, 17, 3, 2)]


def _case(likelihood, n, pixels, latents, params) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        shape = (n, pixels) if params is None else (n, params, pixels)
        recon = torch.randn(shape, generator=g)
        if likelihood == "bernoulli":
            x = (torch.rand(n, pixels, generator=g) > 0.5).float()
        elif likelihood == "gaussian":
            x = torch.randn(n, pixels, generator=g)
        else:
            x = torch.randint(0, params if likelihood == "categorical" else 256, (n, pixels), generator=g)
        mu, logvar = torch.randn(n, latents, generator=g), torch.randn(n, latents, generator=g)
        return (recon.to(device), x.to(device), mu.to(device), logvar.to(device)), {}

    return Case(
        op="vae_nelbo",
        shape=f"{likelihood} {n}x{pixels} z{latents}",
        make_inputs=make_inputs,
        fastgen=functools.partial(fastgen.ops.vae_nelbo, likelihood=likelihood),
        reference=functools.partial(vae_nelbo_reference, likelihood=likelihood),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

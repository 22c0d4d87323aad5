"""gan_loss: fastgen vs the eager reference vs torch.compile of it, discriminator and generator losses."""
from __future__ import annotations

import functools

import torch

import fastgen
from bench.harness import Case
from fastgen.reference.gan_loss import gan_loss_reference

# (kind, target, N)
FULL = [("non_saturating", "discriminator", 4096), ("non_saturating", "generator", 4096),
        ("hinge", "discriminator", 4096), ("lsgan", "discriminator", 4096), ("wasserstein", "discriminator", 4096),
        ("non_saturating", "discriminator", 64), ("non_saturating", "discriminator", 1 << 20)]
QUICK = [("non_saturating", "discriminator", 33), ("hinge", "generator", 17)]


def _case(kind, target, n) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        d_real, d_fake = torch.randn(n, 1, generator=g).to(device), torch.randn(n, 1, generator=g).to(device)
        return ((None if target == "generator" else d_real), d_fake), {}

    return Case(
        op="gan_loss",
        shape=f"{kind} {target} N={n}",
        make_inputs=make_inputs,
        fastgen=functools.partial(fastgen.ops.gan_loss, kind=kind, target=target),
        reference=functools.partial(gan_loss_reference, kind=kind, target=target),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

"""The code priors of the adversarial autoencoder (Makhzani et al., 2015), as samplers: an AAE
matches its codes to a prior through a discriminator, so it needs draws from the prior, never its
density.

    "gaussian"    N(0, I) in ``dim`` dimensions.
    "mixture"     ``components`` Gaussians with means on a circle of radius 4 in the first two
                  dimensions (component k at angle 2 pi k / components), standard deviation 0.5
                  there; any further dimensions are N(0, 1).
    "swiss_roll"  two dimensions: a point t in [0, 1) (t = sqrt(u), u uniform) at angle 3 pi t and
                  radius 0.5 + 3 t, plus N(0, 0.1^2) noise; component k is the arc of u in
                  [k / components, (k + 1) / components).

Given labels (n,), the mixture draws component ``labels[i]`` for row i and the swiss roll its arc:
that is how a class is tied to a region of the code space.
"""
from __future__ import annotations

import math

import torch

PRIORS = ("gaussian", "mixture", "swiss_roll")
MIXTURE_RADIUS, MIXTURE_STD = 4.0, 0.5
ROLL_TURNS, ROLL_NOISE = 1.5, 0.1


def check_prior(kind: str, dim: int) -> None:
    if kind not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {kind!r}")
    if kind == "mixture" and dim < 2:
        raise ValueError(f"the mixture prior lies in at least 2 dimensions, got latent_dim={dim}")
    if kind == "swiss_roll" and dim != 2:
        raise ValueError(f"the swiss_roll prior is 2-D: latent_dim must be 2, got {dim}")


def sample_prior(kind: str, n: int, dim: int, components: int, labels: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` draws (n, dim) from the prior ``kind`` (see the module). ``labels`` (n,) in
    [0, components) choose the mixture component or swiss-roll arc of each draw (None: uniformly
    at random); the Gaussian takes none. Drawn in float32 on the generator's device (the model's
    device without one), then moved, so that a seed gives the same codes in every dtype."""
    check_prior(kind, dim)
    where = generator.device if generator is not None else device
    if kind == "gaussian":
        if labels is not None:
            raise ValueError("the gaussian prior has no components for labels to choose")
        return torch.randn(n, dim, generator=generator, device=where).to(device, dtype)
    if labels is None:
        labels = torch.randint(components, (n,), generator=generator, device=where)
    labels = labels.to(where)
    if kind == "mixture":
        z = torch.randn(n, dim, generator=generator, device=where)
        angle = labels.float() * (2 * math.pi / components)
        z[:, 0] = MIXTURE_RADIUS * torch.cos(angle) + MIXTURE_STD * z[:, 0]
        z[:, 1] = MIXTURE_RADIUS * torch.sin(angle) + MIXTURE_STD * z[:, 1]
        return z.to(device, dtype)
    u = (labels.float() + torch.rand(n, generator=generator, device=where)) / components
    t = u.sqrt()
    angle, radius = 2 * math.pi * ROLL_TURNS * t, 0.5 + 3.0 * t
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    z = z + ROLL_NOISE * torch.randn(n, 2, generator=generator, device=where)
    return z.to(device, dtype)

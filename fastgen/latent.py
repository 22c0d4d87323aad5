"""Latent-space tools for VAEs and GANs: interpolation, traversals, the 2-D manifold grid and
vector arithmetic. They work on latent vectors only; decode the result with ``VAE.generate`` or
``GAN.images_from`` and tile it with ``fastgen.train.save_grid``:

>>> z0, z1 = model.noise(2)                               # or VAE means: vae.encode(x)[0]
>>> path = fastgen.latent.interpolate(z0, z1, 8, method="slerp")
>>> fastgen.train.save_grid("path.png", model.images_from(path), model.levels, nrow=8)
"""
from __future__ import annotations

import math

import torch

METHODS = ("lerp", "slerp")


def _check_latent(name: str, z: object) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() not in (1, 2):
        got = f"{z.dtype} {tuple(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a floating-point latent (D,) or batch of latents (N, D), got {got}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return z


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, *, method: str = "lerp") -> torch.Tensor:
    """``steps`` latents from z0 to z1 (both ends included), (steps, *z0.shape).

    ``"lerp"``: (1 - t) z0 + t z1. ``"slerp"``: along the great circle between the two directions
    with the norm interpolated linearly (White, 2016), which keeps Gaussian latents at typical
    norms; nearly parallel vectors fall back to lerp.
    """
    _check_latent("z0", z0)
    _check_latent("z1", z1)
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have one shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (both ends are included), got {steps!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).view(steps, *([1] * z0.dim()))
    lerp = (1 - t) * z0 + t * z1
    if method == "lerp":
        return lerp
    n0, n1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    u0, u1 = z0 / n0.clamp_min(1e-12), z1 / n1.clamp_min(1e-12)
    omega = torch.acos((u0 * u1).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / sin.clamp_min(1e-12)
    slerp = direction * ((1 - t) * n0 + t * n1)
    return torch.where(sin.abs() < 1e-6, lerp, slerp)


def traversal(z: torch.Tensor, values: torch.Tensor | None = None, dims: list[int] | None = None) -> torch.Tensor:
    """Latent traversals around one latent z (D,): for each dimension in ``dims`` (default all),
    z with that coordinate replaced by each of ``values`` (default 9 values in [-3, 3]), the others
    fixed. Returns (len(dims) * len(values), D), one row of the grid per dimension."""
    _check_latent("z", z)
    if z.dim() != 1:
        raise ValueError(f"z must be one latent (D,), got shape {tuple(z.shape)}")
    if values is not None and (not isinstance(values, torch.Tensor) or values.dim() != 1 or not len(values)
                               or not bool(torch.isfinite(values).all())):
        raise ValueError(f"values must be a non-empty 1-D tensor of finite numbers, got {values!r:.60}")
    values = torch.linspace(-3, 3, 9, dtype=z.dtype, device=z.device) if values is None else values.to(z)
    dims = list(range(z.shape[0])) if dims is None else list(dims)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < z.shape[0]:
            raise ValueError(f"dims must index the latent's {z.shape[0]} dimensions, got {d}")
    out = z.repeat(len(dims), len(values), 1)
    for row, d in enumerate(dims):
        out[row, :, d] = values
    return out.view(-1, z.shape[0])


def manifold_grid(n: int, *, low: float = 0.05, high: float = 0.95, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The n x n grid of 2-D latents at the standard normal's quantiles ``linspace(low, high, n)``
    (the learned-manifold figure of Kingma and Welling, 2014), row-major, (n * n, 2): the first
    coordinate varies along a row, the second down the columns."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"low and high must be probabilities with 0 < low < high < 1, got {low} and {high}")
    p = torch.linspace(low, high, n, dtype=torch.float64)
    q = (math.sqrt(2.0) * torch.erfinv(2 * p - 1)).to(dtype=dtype, device=device)
    rows, cols = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([cols, rows], -1).view(n * n, 2)


def vector_arithmetic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """mean(a) - mean(b) + mean(c) over the latents (N, D) of three groups, e.g. "smiling woman -
    neutral woman + neutral man" (Radford et al., 2016). Returns (D,)."""
    for name, t in (("a", a), ("b", b), ("c", c)):
        _check_latent(name, t)
        if t.dim() != 2 or t.shape[0] < 1:
            raise ValueError(f"{name} must be a group of latents (N, D) with N >= 1, got shape {tuple(t.shape)}")
    if not a.shape[1] == b.shape[1] == c.shape[1]:
        raise ValueError(f"a, b and c must have one latent size, got {a.shape[1]}, {b.shape[1]} and {c.shape[1]}")
    return a.mean(0) - b.mean(0) + c.mean(0)

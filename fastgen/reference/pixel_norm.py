r"""Reference pixel-wise feature normalisation (Karras et al., 2018, "Progressive Growing of GANs",
section 4.2), optionally after a leaky ReLU (the order of the paper's generator: conv, leaky
ReLU, pixel norm).

For x (N, C) or (N, C, *spatial), at every position (n, *p), over the C channels:

    a    = leaky_relu(x, negative_slope)   where negative_slope is given (0.0: ReLU), else a = x
    rstd = 1 / sqrt(mean_c(a^2) + eps)
    y    = a * rstd

The per-position rstd is computed in float32 (float64 for float64 x) and returned in that dtype
(N, *spatial); y has x's dtype.

Backward, from x and the saved rstd (a recomputed from x): with g = grad_y and r = rstd,

    d y_c / d a_k = r * (delta_ck - a_c a_k r^2 / C)                    (d r / d a_k = -r^3 a_k / C)
    grad_a        = r * (g - y * mean_c(g * y))
    grad_x        = grad_a * (1 if x > 0 else negative_slope)           (1 everywhere without the activation)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _activation(x: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    return x if negative_slope is None else F.leaky_relu(x, negative_slope)


def pixel_norm_rstd_reference(x: torch.Tensor, negative_slope: float | None, eps: float) -> torch.Tensor:
    """1 / sqrt(mean_c(a^2) + eps), (N, *spatial), in float32 (float64 for float64 x)."""
    a = _activation(x.to(_acc(x)), negative_slope)
    return torch.rsqrt(a.square().mean(dim=1) + eps)


def pixel_norm_reference(x: torch.Tensor, *, negative_slope: float | None = None, eps: float = 1e-8) -> torch.Tensor:
    """``a / sqrt(mean_c(a^2) + eps)`` with ``a = leaky_relu(x, negative_slope)`` (or x); see the module docstring."""
    a = _activation(x.to(_acc(x)), negative_slope)
    return (a * torch.rsqrt(a.square().mean(dim=1, keepdim=True) + eps)).to(x.dtype)


def pixel_norm_forward_reference(x, negative_slope, eps):
    """The forward op's two outputs: (y, rstd)."""
    a = _activation(x.to(_acc(x)), negative_slope)
    rstd = torch.rsqrt(a.square().mean(dim=1) + eps)
    return (a * rstd.unsqueeze(1)).to(x.dtype), rstd


def pixel_norm_backward_reference(grad_out: torch.Tensor, x: torch.Tensor, rstd: torch.Tensor,
                                  negative_slope: float | None) -> torch.Tensor:
    """grad_x from x and the saved rstd, in x's dtype, in differentiable ops (a double backward may
    go through it)."""
    acc = rstd.dtype
    xf = x.to(acc)
    r = rstd.unsqueeze(1)
    y = _activation(xf, negative_slope) * r
    g = grad_out.to(acc)
    grad_a = r * (g - y * (g * y).mean(dim=1, keepdim=True))
    if negative_slope is not None:
        grad_a = torch.where(xf > 0, grad_a, grad_a * negative_slope)
    return grad_a.to(x.dtype)

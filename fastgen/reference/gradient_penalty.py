r"""Reference WGAN-GP gradient penalty (Gulrajani et al., 2017).

For ``grad`` = dD(x_hat)/dx_hat (N, ...) at points x_hat between real and generated images:

    penalty = weight * mean_n (||grad_n||_2 - 1)^2

with the norm over all non-batch dimensions. d penalty / d grad_n = weight * 2 (||g|| - 1) g / ||g|| / N,
taken as 0 where ||g|| = 0 (as torch.linalg.vector_norm does).
"""
from __future__ import annotations

import torch


def sample_norms(grad: torch.Tensor) -> torch.Tensor:
    """||grad_n||_2 over the non-batch dimensions, (N,), in grad's dtype. The squares are summed in
    float64: in float32 they overflow for entries above ~1.8e19 whose norm float32 still holds."""
    return torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1, dtype=torch.float64).to(grad.dtype)


def gradient_penalty_reference(grad: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    return weight * ((sample_norms(grad) - 1.0) ** 2).mean()


def gradient_penalty_backward_reference(grad_out: torch.Tensor, grad: torch.Tensor, norms: torch.Tensor,
                                        weight: float) -> torch.Tensor:
    """grad_out * weight * 2 (||g_n|| - 1) / ||g_n|| * g_n / N, zero where ||g_n|| = 0, in
    differentiable ops (the double backward goes through it), in the order autograd of
    ``gradient_penalty_reference`` takes (so that both overflow alike): d penalty / d norm_n, then
    times g_n / ||g_n||. NaN where the norm is NaN, as autograd gives."""
    per_example = (-1, *([1] * (grad.dim() - 1)))
    zero = norms == 0
    d_norm = torch.where(zero, 0.0, grad_out * weight / grad.shape[0] * (2.0 * (norms - 1.0)))
    # The unit vector g_n / ||g_n|| first (it stays finite where 1 / ||g_n|| would overflow), with
    # the norm in float64 where it overflowed grad's dtype, as in autograd of the penalty.
    exact = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1, dtype=torch.float64)
    norm = torch.where(torch.isfinite(norms), norms.double(), exact)
    unit = grad.double() / torch.where(zero, 1.0, norm).view(per_example)
    return (d_norm.double().view(per_example) * unit).to(grad.dtype)

r"""Reference WGAN-GP gradient penalty (Gulrajani et al., 2017).

For ``grad`` = dD(x_hat)/dx_hat (N, ...) at points x_hat between real and generated images:

    penalty = weight * mean_n (||grad_n||_2 - 1)^2

with the norm over all non-batch dimensions. d penalty / d grad_n = weight * 2 (||g|| - 1) g / ||g|| / N,
taken as 0 where ||g|| = 0 (as torch.linalg.vector_norm does).
"""
from __future__ import annotations

import torch


def sample_norms(grad: torch.Tensor) -> torch.Tensor:
    """||grad_n||_2 over the non-batch dimensions, (N,)."""
    return torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)


def gradient_penalty_reference(grad: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    return weight * ((sample_norms(grad) - 1.0) ** 2).mean()


def gradient_penalty_backward_reference(grad_out: torch.Tensor, grad: torch.Tensor, norms: torch.Tensor,
                                        weight: float) -> torch.Tensor:
    """grad_out * weight * 2 (||g_n|| - 1) / ||g_n|| * g_n / N, zero where ||g_n|| = 0, in
    differentiable ops (the double backward goes through it)."""
    scale = torch.where(norms > 0, (norms - 1.0) / norms, 0.0) * (2.0 * weight / grad.shape[0])
    return grad_out * scale.view(-1, *([1] * (grad.dim() - 1))) * grad

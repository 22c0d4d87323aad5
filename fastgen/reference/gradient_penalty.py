r"""Reference WGAN-GP gradient penalty (Gulrajani et al., 2017).

For ``grad`` = dD(x_hat)/dx_hat (N, ...) at points x_hat between real and generated images:

    penalty = weight * mean_n (||grad_n||_2 - 1)^2

with the norm over all non-batch dimensions. d penalty / d grad_n = weight * 2 (||g|| - 1) g / ||g|| / N,
taken as 0 where ||g|| = 0 (as torch.linalg.vector_norm does).
"""
from __future__ import annotations

import torch


def gradient_penalty_reference(grad: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    norms = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)
    return weight * ((norms - 1.0) ** 2).mean()

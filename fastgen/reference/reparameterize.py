r"""Reference reparameterisation of a diagonal Gaussian (Kingma and Welling, 2014).

    z = mu + exp(logvar / 2) * eps,        eps ~ N(0, I)

Gradients: dz/dmu = 1, dz/dlogvar = exp(logvar / 2) * eps / 2, dz/deps = exp(logvar / 2).
"""
from __future__ import annotations

import torch


def reparameterize_reference(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + torch.exp(0.5 * logvar) * eps


def reparameterize_backward_reference(grad: torch.Tensor, logvar: torch.Tensor,
                                      eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_logvar, grad_eps); grad_mu is ``grad`` itself."""
    std = torch.exp(0.5 * logvar)
    return grad * eps * std * 0.5, grad * std  # autograd's order through the forward

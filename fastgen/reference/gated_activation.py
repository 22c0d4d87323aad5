r"""Reference gated activation (van den Oord et al., 2016, Conditional PixelCNN).

x has 2C channels; the optional ``cond`` is added first, then

    y = tanh(x[:, :C] + cond[:, :C]) * sigmoid(x[:, C:] + cond[:, C:])

``cond`` is (N, 2C) (class or global conditioning, broadcast over H and W) or (N, 2C, H, W)
(spatial conditioning).
"""
from __future__ import annotations

import torch


def gated_activation_reference(x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """``tanh(a) * sigmoid(b)`` where ``a, b = (x + cond).chunk(2, dim=1)``."""
    if cond is not None:
        x = x + (cond[:, :, None, None] if cond.dim() == 2 else cond)
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def gated_activation_backward_reference(
    grad_out: torch.Tensor, x: torch.Tensor, cond: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (dL/dx, dL/dx summed over H and W).

    With t = tanh(a), s = sigmoid(b):  dL/da = g s (1 - t^2),  dL/db = g t s (1 - s).
    The sum over H and W is the gradient of an (N, 2C) cond; for a spatial cond it is dL/dx itself.
    """
    if cond is not None:
        x = x + (cond[:, :, None, None] if cond.dim() == 2 else cond)
    a, b = x.chunk(2, dim=1)
    t, s = torch.tanh(a), torch.sigmoid(b)
    grad_x = torch.cat([grad_out * s * (1 - t * t), grad_out * t * s * (1 - s)], dim=1)
    return grad_x, grad_x.sum(dim=(2, 3))

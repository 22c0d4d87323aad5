"""``GatedActivation``: tanh * sigmoid gate over the two channel halves, with optional conditioning."""
from __future__ import annotations

import torch
from torch import nn

from fastgen.ops import gated_activation


class GatedActivation(nn.Module):
    """y = tanh(x[:, :C] + cond[:, :C]) * sigmoid(x[:, C:] + cond[:, C:]); see ``fastgen.ops.gated_activation``."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return gated_activation(x, cond)

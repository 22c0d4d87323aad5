"""``InstanceNormAct``: instance norm, optional per-channel affine and an activation, fused."""
from __future__ import annotations

import torch
from torch import nn

from fastgen.ops import instance_norm_act
from fastgen.reference.instance_norm_act import ACTIVATIONS


class InstanceNormAct(nn.Module):
    """y = act(instance_norm(x) * weight + bias); see ``fastgen.ops.instance_norm_act``.

    Args:
        channels: C of the (N, C, H, W) input.
        act: ``"relu"``, ``"leaky_relu"`` or ``"none"``.
        affine: learn a per-channel weight (initialised to ones) and bias (zeros), as
            ``nn.InstanceNorm2d(affine=True)``; without it both are None.
        eps: added to the variance.
        negative_slope: the leaky ReLU's slope below 0.

    Statistics are always those of the input (no running statistics), in training and eval mode.
    """

    def __init__(self, channels: int, act: str = "relu", affine: bool = True, eps: float = 1e-5,
                 negative_slope: float = 0.2):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.channels, self.act, self.eps, self.negative_slope = channels, act, float(eps), float(negative_slope)
        if affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm_act(x, self.weight, self.bias, act=self.act, negative_slope=self.negative_slope,
                                 eps=self.eps)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{self.channels}, act={self.act!r}, affine={self.weight is not None}, eps={self.eps}{slope}"

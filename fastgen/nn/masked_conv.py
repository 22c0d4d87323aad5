"""``MaskedConv2d``: the PixelCNN masked convolution as a module."""
from __future__ import annotations

import math

import torch
from torch import nn

from fastgen.ops import masked_conv2d
from fastgen._core import causal_mask


class MaskedConv2d(nn.Module):
    """A k x k convolution that sees only positions before the current one in raster order.

    Args:
        in_channels, out_channels: channel counts (each divisible by ``color_groups``).
        kernel_size: odd k (1, 3, 5, 7, ...); padding keeps H and W.
        mask_type: 'A' (excludes the centre; the first layer) or 'B' (includes it).
        color_groups: 3 for RGB sub-pixel ordering (channels split into R, G, B thirds), else 1.
        bias: learn an additive bias.

    The full k x k weight is stored (so checkpoints match ``nn.Conv2d``); masked entries never
    influence the output and receive zero gradient.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str, color_groups: int = 1,
        bias: bool = True, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if color_groups < 1 or in_channels % color_groups or out_channels % color_groups:
            raise ValueError(
                f"color_groups={color_groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.mask_type, self.color_groups = kernel_size, mask_type, color_groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        mask = causal_mask(out_channels, in_channels, kernel_size, mask_type, color_groups, device=device)
        self.register_buffer("mask", mask, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's initialisation, with fan-in counted over the taps the mask keeps.
        k, p = self.kernel_size, self.kernel_size // 2
        taps = p * k + p + (self.mask_type == "B" or self.color_groups > 1)
        fan_in = max(1, self.in_channels * taps)
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_conv2d(x, self.weight, self.bias, mask_type=self.mask_type, color_groups=self.color_groups)

    def masked_weight(self) -> torch.Tensor:
        """The weight with the causal mask applied (what cached sampling steps with)."""
        return self.weight * self.mask

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mask_type={self.mask_type!r}, "
            f"color_groups={self.color_groups}, bias={self.bias is not None}"
        )

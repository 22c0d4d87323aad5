"""The two convolutions of a Gated PixelCNN layer (van den Oord et al., 2016).

A masked k x k convolution has a blind spot when stacked; the gated architecture avoids it by
splitting the receptive field in two stacks:

- the vertical stack sees only rows strictly above the current pixel (every column within the
  kernel's width), so it can be fed to the horizontal stack without a shift;
- the horizontal stack sees the current row to the left of the pixel, plus the pixel itself
  for mask 'B' (with colour groups: the sub-pixels of earlier colours, or of earlier-or-equal
  colours for 'B').

Each is a dense convolution over a cropped kernel (every stored tap is used, so no spatial mask
and no wasted work); only the horizontal centre tap carries a channel mask, applied to the weight.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_common(in_channels: int, out_channels: int, kernel_size: int) -> None:
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and at least 3, got {kernel_size}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channel counts must be positive, got in={in_channels}, out={out_channels}")


def _init(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(max(1, fan_in))
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


class VerticalStackConv2d(nn.Module):
    """Output (i, j) sees input rows i-p..i-1 (``first=True``, for the image itself) or
    i-p..i (later layers, whose input already sees only rows above), columns j-p..j+p."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, first: bool, bias: bool = True):
        super().__init__()
        _check_common(in_channels, out_channels, kernel_size)
        p = kernel_size // 2
        self.first, self.pad = first, p
        rows = p if first else p + 1
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, rows, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init(self.weight, self.bias, in_channels * rows * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        # Pad p rows on top; for the first layer also drop the last row (negative padding), which
        # shifts the window one row up so that it ends above the current row.
        return F.conv2d(F.pad(x, (p, p, p, -1 if self.first else 0)), self.weight, self.bias)


def centre_channel_mask(out_channels: int, in_channels: int, mask_type: str, color_groups: int,
                        gate_halves: bool) -> torch.Tensor:
    """(out, in) 0/1 mask of the centre tap: input colour group g_in may reach output group g_out
    when g_in < g_out ('A') or g_in <= g_out ('B'). With ``gate_halves`` the outputs are the two
    halves of a gated activation, each split in colour groups."""
    per_out = out_channels // 2 if gate_halves else out_channels
    g_out = (torch.arange(out_channels) % per_out) // (per_out // color_groups)
    g_in = torch.arange(in_channels) // (in_channels // color_groups)
    allowed = g_in[None, :] < g_out[:, None] if mask_type == "A" else g_in[None, :] <= g_out[:, None]
    return allowed.float()


class HorizontalStackConv2d(nn.Module):
    """Output (i, j) sees input row i, columns j-p..j-1, and column j through the colour mask.

    Args:
        mask_type: 'A' (first layer: the current sub-pixel excluded) or 'B'.
        color_groups: 3 for RGB sub-pixel order, else 1; must divide both channel counts.
        gate_halves: the output feeds ``gated_activation``: each of its two halves is split in
            colour groups (else the whole output is).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str, color_groups: int = 1,
                 *, gate_halves: bool = False, bias: bool = True):
        super().__init__()
        _check_common(in_channels, out_channels, kernel_size)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        per_out = out_channels // 2 if gate_halves else out_channels
        if in_channels % color_groups or per_out % color_groups or (gate_halves and out_channels % 2):
            raise ValueError(f"color_groups={color_groups} must divide in_channels={in_channels} and the "
                             f"output channels per {'gate half' if gate_halves else 'layer'} ({per_out})")
        p = kernel_size // 2
        self.pad = p
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, p + 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        mask = torch.ones(out_channels, in_channels, 1, p + 1)
        mask[:, :, 0, p] = centre_channel_mask(out_channels, in_channels, mask_type, color_groups, gate_halves)
        self.register_buffer("mask", mask, persistent=False)
        _init(self.weight, self.bias, in_channels * (p + 1))

    def masked_weight(self) -> torch.Tensor:
        """The weight with the centre tap's colour mask applied."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (self.pad, 0, 0, 0)), self.masked_weight(), self.bias)

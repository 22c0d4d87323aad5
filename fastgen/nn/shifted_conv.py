"""PixelCNN++'s causal convolutions: padding and shifts instead of masks.

Two streams keep the model causal (Salimans et al., 2017):

- ``DownShiftedConv2d`` (kernel (2, 3) by default): zero padding of kh - 1 rows on top and
  kw // 2 columns each side, so the output row r reads input rows r - kh + 1 .. r. Fed a
  stream that holds only rows above, it keeps that property (the "u" stream).
- ``DownRightShiftedConv2d`` (kernel (2, 2)): kh - 1 rows on top, kw - 1 columns on the left, so
  output (r, c) reads rows <= r and columns <= c (the "ul" stream: above and to the left).

The transposed versions (stride 2) upsample and crop so that output (r, c) reads the input at
(r // 2, c // 2) and, for ``DownShiftedConvTranspose2d``, the columns around it. ``shift`` moves
the output down (or right) by one, zero-filled: the first layers use it so that a position never
sees its own pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _maybe_weight_norm(module: nn.Module, weight_norm: bool) -> nn.Module:
    return nn.utils.parametrizations.weight_norm(module) if weight_norm else module


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Rows move down by one; the top row becomes zero."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Columns move right by one; the left column becomes zero."""
    return F.pad(x, (1, 0))[:, :, :, :-1]


class DownShiftedConv2d(nn.Module):
    """Convolution whose output row r reads input rows r - kh + 1 .. r (centred columns)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3), stride: int = 1,
                 shift_down: bool = False, weight_norm: bool = False):
        super().__init__()
        kh, kw = kernel_size
        if kw % 2 != 1:
            raise ValueError(f"kernel_size width must be odd for a centred down-shifted conv, got {kernel_size}")
        self.kernel_size, self.stride, self.shift_down = (kh, kw), stride, shift_down
        self.pad = (kw // 2, kw // 2, kh - 1, 0)
        self.conv = _maybe_weight_norm(nn.Conv2d(in_channels, out_channels, (kh, kw), stride), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, self.pad))
        return down_shift(y) if self.shift_down else y


class DownRightShiftedConv2d(nn.Module):
    """Convolution whose output (r, c) reads input rows <= r and columns <= c."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2), stride: int = 1,
                 shift_right: bool = False, weight_norm: bool = False):
        super().__init__()
        kh, kw = kernel_size
        self.kernel_size, self.stride, self.shift_right = (kh, kw), stride, shift_right
        self.pad = (kw - 1, 0, kh - 1, 0)
        self.conv = _maybe_weight_norm(nn.Conv2d(in_channels, out_channels, (kh, kw), stride), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, self.pad))
        return right_shift(y) if self.shift_right else y


class _ShiftedConvTranspose2d(nn.Module):
    """2x upsampling by a stride-2 transposed convolution of kernel (2, kw), cropped to twice the
    input size: ``first_column`` output columns dropped on the left, the rest on the right."""

    def __init__(self, in_channels: int, out_channels: int, kw: int, first_column: int, weight_norm: bool):
        super().__init__()
        self.first_column = first_column
        self.conv = _maybe_weight_norm(
            nn.ConvTranspose2d(in_channels, out_channels, (2, kw), stride=2, output_padding=1), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        return self.conv(x)[:, :, : 2 * h, self.first_column : self.first_column + 2 * w]


class DownShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """2x upsampling, kernel (2, 3): output (r, c) reads input row r // 2, columns around c // 2."""

    def __init__(self, in_channels: int, out_channels: int, weight_norm: bool = False):
        super().__init__(in_channels, out_channels, 3, 1, weight_norm)


class DownRightShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """2x upsampling, kernel (2, 2): output (r, c) reads input (r // 2, c // 2) only."""

    def __init__(self, in_channels: int, out_channels: int, weight_norm: bool = False):
        super().__init__(in_channels, out_channels, 2, 0, weight_norm)


class NetworkInNetwork(nn.Module):
    """A 1x1 convolution (a per-position linear map over channels)."""

    def __init__(self, in_channels: int, out_channels: int, weight_norm: bool = False):
        super().__init__()
        self.conv = _maybe_weight_norm(nn.Conv2d(in_channels, out_channels, 1), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

"""PixelCNN (van den Oord et al., 2016): a 7x7 mask-A convolution, residual mask-B blocks, a 1x1 head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.models.autoregressive import AutoregressiveImageModel, check_hidden, masked_term
from fastgen.nn import MaskedConv2d
from fastgen.program import Act, Conv, Pointwise, SamplingProgram, Stream


class ResidualMaskedBlock(nn.Module):
    """x + 1x1(relu(kxk_B(relu(1x1(relu(x))) + cond))): the paper's bottleneck residual block;
    the conditioning term (if any) is added before the middle convolution's activation."""

    def __init__(self, channels: int, kernel_size: int, color_groups: int):
        super().__init__()
        half = channels // 2
        self.reduce = MaskedConv2d(channels, half, 1, "B", color_groups)
        self.conv = MaskedConv2d(half, half, kernel_size, "B", color_groups)
        self.expand = MaskedConv2d(half, channels, 1, "B", color_groups)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.reduce(F.relu(x))
        if cond is not None:
            h = h + (cond if cond.dim() == 4 else cond[:, :, None, None])
        return x + self.expand(F.relu(self.conv(F.relu(h))))


class PixelCNN(AutoregressiveImageModel):
    """PixelCNN over 1 or 3 colour channels with a categorical output of ``levels`` per sub-pixel.

    Args:
        in_channels, levels, image_size, n_classes, cond_channels: see ``AutoregressiveImageModel``.
        hidden_channels: width of the residual stream (a multiple of 2 x colour groups).
        n_layers: residual mask-B blocks after the 7x7 mask-A input layer.
        kernel_size: of the blocks' middle convolution (odd).
        head_channels: width of the 1x1 output head.
    """

    def __init__(self, in_channels: int = 1, levels: int = 256, image_size: int | tuple[int, int] = 28, *,
                 hidden_channels: int = 128, n_layers: int = 12, kernel_size: int = 3, head_channels: int | None = None,
                 n_classes: int | None = None, cond_channels: int | None = None):
        super().__init__(in_channels, levels, image_size, n_classes, cond_channels)
        groups = self.color_groups
        check_hidden(hidden_channels, 2 * groups)
        head_channels = head_channels or hidden_channels
        check_hidden(head_channels, groups, "head_channels")
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        self._config = dict(in_channels=in_channels, levels=levels, image_size=list(self.image_size),
                            hidden_channels=hidden_channels, n_layers=n_layers, kernel_size=kernel_size,
                            head_channels=head_channels, n_classes=n_classes, cond_channels=cond_channels)
        self.input = MaskedConv2d(in_channels, hidden_channels, 7, "A", groups)
        self.blocks = nn.ModuleList(ResidualMaskedBlock(hidden_channels, kernel_size, groups) for _ in range(n_layers))
        self.cond = self.layer_conditions(n_layers, hidden_channels // 2)
        self.head = self.output_head(hidden_channels, head_channels)

    def draw_inputs(self, x, cond):
        labels, cond_map = cond
        h = self.input(self.encode(x))
        for i, block in enumerate(self.blocks):
            h = block(h, self.cond[i](labels, cond_map) if self.cond is not None else None)
        return self.head(h)

    def sampling_program(self, cond) -> SamplingProgram:
        """The network in program nodes: every block's k x k convolution reads its input's rows
        above once per row and the current row per pixel (``fastgen.program``)."""
        program = self.new_program()
        hidden, half = self.input.out_channels, self.blocks[0].reduce.out_channels if self.blocks else 0
        conds = self.program_conds(program, cond, len(self.blocks))
        h = program.value(hidden, Stream.PIXEL)
        program.add(Conv(h, [masked_term(program.IMAGE, self.input)]))
        for block, block_cond in zip(self.blocks, conds):
            relu = program.value(hidden, Stream.PIXEL)
            program.add(Pointwise(relu, h, Act.RELU))
            reduced = program.value(half, Stream.PIXEL)
            program.add(Conv(reduced, [masked_term(relu, block.reduce)], act=Act.RELU, cond=block_cond))
            conv = program.value(half, Stream.PIXEL)
            program.add(Conv(conv, [masked_term(reduced, block.conv)], act=Act.RELU))
            out = program.value(hidden, Stream.PIXEL)
            program.add(Conv(out, [masked_term(conv, block.expand)], residual=h))
            h = out
        self.program_head(program, h)
        return program

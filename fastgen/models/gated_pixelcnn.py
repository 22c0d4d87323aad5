"""Gated PixelCNN (van den Oord et al., NeurIPS 2016): vertical and horizontal stacks without a
blind spot, tanh * sigmoid gates, residual and skip connections, class and spatial conditioning."""
from __future__ import annotations

from torch import nn

from fastgen.models.autoregressive import AutoregressiveImageModel, check_hidden, masked_term
from fastgen.nn import HorizontalStackConv2d, MaskedConv2d, VerticalStackConv2d
from fastgen.ops import gated_activation
from fastgen.program import Act, Conv, Pointwise, SamplingProgram, Stream, Term, replace


class GatedLayer(nn.Module):
    """One layer of both stacks.

    v' = gate(V * v + c_v)                      (vertical: rows above only)
    g  = gate(H * h + 1x1(V * v) + c_h)         (horizontal: row to the left, sees v's rows above)
    h' = h + 1x1_B(g)   (no residual in the first layer),  skip = 1x1_B(g)

    ``gate`` is ``fastgen.ops.gated_activation``; c_v, c_h are the conditioning terms.
    """

    def __init__(self, in_channels: int, channels: int, skip_channels: int, kernel_size: int, color_groups: int,
                 first: bool, dropout: float = 0.0):
        super().__init__()
        self.first = first
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.v_conv = VerticalStackConv2d(in_channels, 2 * channels, kernel_size, first=first)
        self.h_conv = HorizontalStackConv2d(in_channels, 2 * channels, kernel_size, "A" if first else "B",
                                            color_groups, gate_halves=True)
        # The vertical stack only holds rows above, so it may feed every horizontal channel.
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", color_groups)
        self.skip = MaskedConv2d(channels, skip_channels, 1, "B", color_groups)

    def forward(self, v, h, cond_v, cond_h):
        v_pre = self.v_conv(v)
        gated = self.dropout(gated_activation(self.h_conv(h) + self.v_to_h(v_pre), cond_h))
        v = gated_activation(v_pre, cond_v)
        out = self.h_out(gated)
        return v, out if self.first else h + out, self.skip(gated)


class GatedPixelCNN(AutoregressiveImageModel):
    """Gated PixelCNN over 1 or 3 colour channels with a categorical output of ``levels`` per sub-pixel.

    Args:
        in_channels, levels, image_size, n_classes, cond_channels: see ``AutoregressiveImageModel``.
        hidden_channels: channels of each stack (a multiple of the colour groups).
        n_layers: gated layers (the first takes the image).
        kernel_size: odd width of the stacks' kernels (their height is kernel_size // 2 (+1)).
        skip_channels: width of the summed skip connections and the output head.
        dropout: dropout rate on each layer's gated output (regularises small data sets).
    """

    def __init__(self, in_channels: int = 1, levels: int = 256, image_size: int | tuple[int, int] = 28, *,
                 hidden_channels: int = 128, n_layers: int = 10, kernel_size: int = 5,
                 skip_channels: int | None = None, dropout: float = 0.0, n_classes: int | None = None,
                 cond_channels: int | None = None):
        super().__init__(in_channels, levels, image_size, n_classes, cond_channels)
        groups = self.color_groups
        check_hidden(hidden_channels, groups)
        skip_channels = skip_channels or hidden_channels
        check_hidden(skip_channels, groups, "skip_channels")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self._config = dict(in_channels=in_channels, levels=levels, image_size=list(self.image_size),
                            hidden_channels=hidden_channels, n_layers=n_layers, kernel_size=kernel_size,
                            skip_channels=skip_channels, dropout=dropout, n_classes=n_classes, cond_channels=cond_channels)
        self.layers = nn.ModuleList(
            GatedLayer(in_channels if i == 0 else hidden_channels, hidden_channels, skip_channels, kernel_size, groups,
                       first=i == 0, dropout=dropout)
            for i in range(n_layers)
        )
        # One term per layer for both stacks: (N, 4C) or (N, 4C, H, W), split in two.
        self.cond = self.layer_conditions(n_layers, 4 * hidden_channels)
        self.head = self.output_head(skip_channels, skip_channels)

    def draw_inputs(self, x, cond):
        labels, cond_map = cond
        v = h = self.encode(x)
        skip = None
        for i, layer in enumerate(self.layers):
            cond_v = cond_h = None
            if self.cond is not None:
                cond_v, cond_h = self.cond[i](labels, cond_map).chunk(2, dim=1)
            v, h, s = layer(v, h, cond_v, cond_h)
            skip = s if skip is None else skip + s
        return self.head(skip)

    def sampling_program(self, cond) -> SamplingProgram:
        """The two stacks in program nodes: the vertical stack is a ROW stream (computed once per
        row for the whole row), the horizontal stack a PIXEL stream (``fastgen.program``)."""
        program = self.new_program()
        conds = self.program_conds(program, cond, len(self.layers))
        v = h = program.IMAGE
        skips = []
        for l, (layer, layer_cond) in enumerate(zip(self.layers, conds)):
            width = layer.h_out.out_channels
            p = layer.v_conv.pad
            # Vertical: rows i-p..i-1 of the image, or i-p..i of the previous vertical output.
            v_pre = program.value(2 * width, Stream.ROW)
            program.add(Conv(v_pre, [Term(v, layer.v_conv.weight, layer.v_conv.bias, top=p, left=p)]))
            # Horizontal: the current row up to the pixel, plus the vertical stack through a 1x1.
            link = Term(v_pre, layer.v_to_h.weight, layer.v_to_h.bias)
            horizontal = Term(h, layer.h_conv.masked_weight(), layer.h_conv.bias, top=0, left=p)
            h_cond = replace(layer_cond, offset=2 * width) if layer_cond is not None else None
            gated = program.value(width, Stream.PIXEL)
            program.add(Conv(gated, [horizontal, link], act=Act.TANH_GATE, cond=h_cond))
            skips.append(masked_term(gated, layer.skip))
            if l + 1 < len(self.layers):  # the last layer's stack outputs are never read
                v_next = program.value(width, Stream.ROW)
                program.add(Pointwise(v_next, v_pre, Act.TANH_GATE, cond=layer_cond))
                h_next = program.value(width, Stream.PIXEL)
                program.add(Conv(h_next, [masked_term(gated, layer.h_out)], residual=None if l == 0 else h))
                v, h = v_next, h_next
        skip = program.value(self.head[1].in_channels, Stream.PIXEL)
        program.add(Conv(skip, skips))
        self.program_head(program, skip)
        return program

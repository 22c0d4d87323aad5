"""PixelCNN++ (Salimans et al., ICLR 2017): a discretized logistic mixture output, a down/up
network of two causal streams at three resolutions with shortcut connections, gated resnet blocks
with concat_elu and dropout, optional class conditioning and weight normalisation."""
from __future__ import annotations

import torch
from torch import nn

from fastgen._core import concat_elu, dmol_channels
from fastgen.models._checks import check_positive_int
from fastgen.models.autoregressive import AutoregressiveImageModel, Cond
from fastgen.nn.shifted_conv import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    NetworkInNetwork,
)
from fastgen.ops import dmol_nll, dmol_sample
from fastgen.program import Act, Conv, CondRef, MixtureDraw, Pointwise, SamplingProgram, Stream, Term, Upsample

SCALES = 3  # resolutions: full, 1/2, 1/4


class GatedResnet(nn.Module):
    """x + a * sigmoid(b), (a, b) = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip)))))
    (+ a class embedding before the gate). ``conv`` is the stream's causal convolution."""

    def __init__(self, filters: int, conv: type, skip_inputs: int, dropout: float, n_classes: int | None,
                 weight_norm: bool):
        super().__init__()
        self.conv_input = conv(2 * filters, filters, weight_norm=weight_norm)
        self.nin_skip = NetworkInNetwork(2 * skip_inputs * filters, filters, weight_norm) if skip_inputs else None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv_out = conv(2 * filters, 2 * filters, weight_norm=weight_norm)
        self.embed = nn.Embedding(n_classes, 2 * filters) if n_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.05)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        h = self.conv_input(concat_elu(x))
        if skip is not None:
            h = h + self.nin_skip(concat_elu(skip))
        h = self.conv_out(self.dropout(concat_elu(h)))
        if self.embed is not None:
            h = h + self.embed(labels)[:, :, None, None]
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class PixelCNNpp(AutoregressiveImageModel):
    """PixelCNN++ over 1 or 3 colour channels with a discretized logistic mixture per pixel.

    The network takes images in [-1, 1] with a channel of ones (so that zero padding is told apart
    from black) and returns mixture parameters (N, K, H, W) in the layout of ``fastgen.ops.dmol_nll``
    (K = 10 nr_mix for RGB, 3 nr_mix for grey); the colours of a pixel are coupled inside the
    mixture, not by masks.

    Args:
        in_channels, levels, image_size, n_classes: see ``AutoregressiveImageModel``; the image
            height and width must be multiples of 4 (two 2x downsamplings).
        nr_resnet: gated resnet blocks per resolution in the up pass; the down pass has nr_resnet
            at 1/4 resolution and nr_resnet + 1 at 1/2 and full resolution, as in the paper.
        nr_filters: channels of both streams.
        nr_mix: logistic mixture components.
        dropout: dropout rate inside every gated resnet.
        weight_norm: weight-normalise every convolution.

    The defaults are the paper's CIFAR-10 model (about 53M parameters). On 2 CPU cores,
    ``nr_resnet=1, nr_filters=32, nr_mix=5`` trains on 8x8 digits in minutes, and
    ``nr_resnet=2, nr_filters=64`` on 32x32 RGB in hours.
    """

    def __init__(self, in_channels: int = 3, levels: int = 256, image_size: int | tuple[int, int] = 32, *,
                 nr_resnet: int = 5, nr_filters: int = 160, nr_mix: int = 10, dropout: float = 0.5,
                 n_classes: int | None = None, weight_norm: bool = False):
        super().__init__(in_channels, levels, image_size, n_classes, None)
        if any(s % 4 for s in self.image_size):
            raise ValueError(f"image_size must have height and width divisible by 4 (two 2x downsamplings), "
                             f"got {self.image_size}")
        for name, value in (("nr_resnet", nr_resnet), ("nr_filters", nr_filters), ("nr_mix", nr_mix)):
            check_positive_int(name, value)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._config = dict(in_channels=in_channels, levels=levels, image_size=list(self.image_size),
                            nr_resnet=nr_resnet, nr_filters=nr_filters, nr_mix=nr_mix, dropout=dropout,
                            n_classes=n_classes, weight_norm=weight_norm)
        self.nr_resnet, self.nr_filters, self.nr_mix = nr_resnet, nr_filters, nr_mix
        f, wn = nr_filters, weight_norm

        def resnets(count: int, conv: type, skip_inputs: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(f, conv, skip_inputs, dropout, n_classes, wn) for _ in range(count))

        inputs = in_channels + 1
        self.u_init = DownShiftedConv2d(inputs, f, (2, 3), shift_down=True, weight_norm=wn)
        self.ul_init_down = DownShiftedConv2d(inputs, f, (1, 3), shift_down=True, weight_norm=wn)
        self.ul_init_right = DownRightShiftedConv2d(inputs, f, (2, 1), shift_right=True, weight_norm=wn)
        self.up_u = nn.ModuleList(resnets(nr_resnet, DownShiftedConv2d, 0) for _ in range(SCALES))
        self.up_ul = nn.ModuleList(resnets(nr_resnet, DownRightShiftedConv2d, 1) for _ in range(SCALES))
        self.downsize_u = nn.ModuleList(DownShiftedConv2d(f, f, stride=2, weight_norm=wn) for _ in range(SCALES - 1))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv2d(f, f, stride=2, weight_norm=wn)
                                         for _ in range(SCALES - 1))
        down_counts = [nr_resnet] + [nr_resnet + 1] * (SCALES - 1)  # in down-pass order: 1/4 first
        self.down_u = nn.ModuleList(resnets(down_counts[i], DownShiftedConv2d, 1) for i in range(SCALES))
        self.down_ul = nn.ModuleList(resnets(down_counts[i], DownRightShiftedConv2d, 2) for i in range(SCALES))
        self.upsize_u = nn.ModuleList(DownShiftedConvTranspose2d(f, f, wn) for _ in range(SCALES - 1))
        self.upsize_ul = nn.ModuleList(DownRightShiftedConvTranspose2d(f, f, wn) for _ in range(SCALES - 1))
        self.head = NetworkInNetwork(f, dmol_channels(in_channels, nr_mix), wn)

    # -- the network -------------------------------------------------------------------------
    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images -> [-1, 1] with a channel of ones appended."""
        encoded = self.encode(x)
        return torch.cat([encoded, torch.ones_like(encoded[:, :1])], dim=1)

    def params(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Mixture parameters (N, K, H, W) of every pixel given the pixels before it."""
        inp = self.network_input(x)
        u_list = [self.u_init(inp)]
        ul_list = [self.ul_init_down(inp) + self.ul_init_right(inp)]
        for s in range(SCALES):  # up pass: full resolution, then 1/2, then 1/4
            for block_u, block_ul in zip(self.up_u[s], self.up_ul[s]):
                u_list.append(block_u(u_list[-1], labels=labels))
                ul_list.append(block_ul(ul_list[-1], u_list[-1], labels))
            if s < SCALES - 1:
                u_list.append(self.downsize_u[s](u_list[-1]))
                ul_list.append(self.downsize_ul[s](ul_list[-1]))
        u, ul = u_list.pop(), ul_list.pop()
        for i in range(SCALES):  # down pass: 1/4, then 1/2, then full resolution
            for block_u, block_ul in zip(self.down_u[i], self.down_ul[i]):
                u = block_u(u, u_list.pop(), labels)
                ul = block_ul(ul, torch.cat([u, ul_list.pop()], dim=1), labels)
            if i < SCALES - 1:
                u, ul = self.upsize_u[i](u), self.upsize_ul[i](ul)
        return self.head(nn.functional.elu(ul))

    # -- likelihood --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Mixture parameters (N, K, H, W) of every pixel given the ones before it."""
        x = self.check_images(x)
        return self.params(x, self.split_cond(cond, x.shape[0])[0])

    def log_prob(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Exact log-likelihood of each image in nats, (N,)."""
        x = self.check_images(x)
        params = self.params(x, self.split_cond(cond, x.shape[0])[0])
        return -dmol_nll(self.encode(x).to(params.dtype), params, nr_mix=self.nr_mix, levels=self.levels)

    # -- sampling ----------------------------------------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """Noise per image: nr_mix Gumbel numbers and one logistic number per colour, per pixel."""
        return (self.nr_mix + self.in_channels, *self.image_size)

    @property
    def draw_node(self) -> MixtureDraw:
        return MixtureDraw(src=-1, nr_mix=self.nr_mix)

    def prepare_cond(self, cond: Cond, n: int) -> tuple[torch.Tensor | None, None]:
        return self.split_cond(cond, n)[0], None

    def draw_inputs(self, x: torch.Tensor, cond) -> torch.Tensor:
        return self.params(x, cond[0])

    def draw(self, params: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Integer levels (N, C, H', W') drawn from params (N, K, H', W') with noise (N, M + C, H', W')."""
        values = dmol_sample(params, nr_mix=self.nr_mix, noise=noise.to(params.dtype), levels=self.levels)
        return torch.round((values + 1) * ((self.levels - 1) / 2)).long()

    def sampling_program(self, cond) -> SamplingProgram:
        """``params`` in program nodes, in the same order. The u stream (down-shifted: rows above
        only) is a ROW stream, computed once per row; the ul stream (down-right-shifted) is a PIXEL
        stream. A layer at 1/2^s resolution runs every 2^s rows and columns (``fastgen.program``)."""
        return _ProgramBuilder(self, cond[0]).program


def _shifted_term(src: int, module, weight_columns: slice | list | None = None) -> Term:
    """A Down(Right)ShiftedConv2d as a program term: output (a, b) reads rows from
    stride * a - (kh - 1) (a row lower after a down shift) and columns from stride * b - kw // 2
    (down-shifted) or stride * b - (kw - 1) (down-right-shifted, a column further after a right shift)."""
    conv = module.conv
    (kh, kw), stride = module.kernel_size, module.stride
    weight = conv.weight if weight_columns is None else conv.weight[:, weight_columns]
    down = int(getattr(module, "shift_down", False))
    right = int(getattr(module, "shift_right", False))
    left = kw // 2 if isinstance(module, DownShiftedConv2d) else kw - 1
    return Term(src, weight, conv.bias, top=kh - 1 + stride * down, left=left + stride * right, stride=stride,
                shift=(down, right))


def _nin_terms(module: NetworkInNetwork, skips: list[int], width: int) -> list[Term]:
    """nin(concat_elu(cat(skips))) as one 1x1 term per skip's concat_elu value: the weight columns
    of skip k are its x part [k w, (k + 1) w) and its -x part [(n + k) w, (n + k + 1) w)."""
    weight, n = module.conv.weight, len(skips)
    terms = []
    for k, src in enumerate(skips):
        columns = list(range(k * width, (k + 1) * width)) + list(range((n + k) * width, (n + k + 1) * width))
        terms.append(Term(src, weight[:, columns], module.conv.bias if k == 0 else None))
    return terms


class _ProgramBuilder:
    """Walks ``PixelCNNpp.params`` and writes each of its layers as program nodes."""

    def __init__(self, model: PixelCNNpp, labels: torch.Tensor | None):
        self.model, self.labels = model, labels
        f = model.nr_filters
        self.program = p = SamplingProgram(model.in_channels, model.levels, *model.image_size, ones_channel=True)
        self.celu: dict[int, int] = {}
        x = p.IMAGE
        u = p.value(f, Stream.ROW)
        p.add(Conv(u, [_shifted_term(x, model.u_init)]))
        ul = p.value(f, Stream.PIXEL)
        p.add(Conv(ul, [_shifted_term(x, model.ul_init_down), _shifted_term(x, model.ul_init_right)]))
        u_list, ul_list = [u], [ul]
        for s in range(SCALES):  # up pass
            for block_u, block_ul in zip(model.up_u[s], model.up_ul[s]):
                u_list.append(self.resnet(block_u, u_list[-1], [], Stream.ROW, s))
                ul_list.append(self.resnet(block_ul, ul_list[-1], [u_list[-1]], Stream.PIXEL, s))
            if s < SCALES - 1:
                u_list.append(self.conv(model.downsize_u[s], u_list[-1], Stream.ROW, s + 1))
                ul_list.append(self.conv(model.downsize_ul[s], ul_list[-1], Stream.PIXEL, s + 1))
        u, ul = u_list.pop(), ul_list.pop()
        for i in range(SCALES):  # down pass
            s = SCALES - 1 - i
            for block_u, block_ul in zip(model.down_u[i], model.down_ul[i]):
                u = self.resnet(block_u, u, [u_list.pop()], Stream.ROW, s)
                ul = self.resnet(block_ul, ul, [u, ul_list.pop()], Stream.PIXEL, s)
            if i < SCALES - 1:
                u = self.upsample(model.upsize_u[i], u, Stream.ROW, s - 1)
                ul = self.upsample(model.upsize_ul[i], ul, Stream.PIXEL, s - 1)
        elu = p.value(f, Stream.PIXEL)
        p.add(Pointwise(elu, ul, Act.ELU))
        params = p.value(model.head.conv.out_channels, Stream.PIXEL)
        p.add(Conv(params, [Term(elu, model.head.conv.weight, model.head.conv.bias)]))
        p.add(MixtureDraw(params, model.nr_mix))

    def concat_elu(self, v: int) -> int:
        """concat_elu of value v, made once however many layers read it."""
        if v not in self.celu:
            value = self.program.values[v]
            self.celu[v] = self.program.value(2 * value.channels, value.stream, value.scale)
            self.program.add(Pointwise(self.celu[v], v, Act.CONCAT_ELU))
        return self.celu[v]

    def conv(self, module, src: int, stream: Stream, scale: int) -> int:
        out = self.program.value(self.model.nr_filters, stream, scale)
        self.program.add(Conv(out, [_shifted_term(src, module)]))
        return out

    def resnet(self, block: GatedResnet, x: int, skips: list[int], stream: Stream, scale: int) -> int:
        """x + a * sigmoid(b) (``GatedResnet.forward``)."""
        p, f = self.program, self.model.nr_filters
        terms = [_shifted_term(self.concat_elu(x), block.conv_input)]
        if skips:
            terms += _nin_terms(block.nin_skip, [self.concat_elu(s) for s in skips], f)
        hidden = p.value(f, stream, scale)
        p.add(Conv(hidden, terms))
        cond: CondRef | None = None
        if block.embed is not None:
            cond = p.cond(block.embed(self.labels).detach()[:, None, None, :].contiguous())
        out = p.value(f, stream, scale)
        p.add(Conv(out, [_shifted_term(self.concat_elu(hidden), block.conv_out)], act=Act.SIGMOID_GATE, cond=cond,
                   residual=x))
        return out

    def upsample(self, module, src: int, stream: Stream, scale: int) -> int:
        out = self.program.value(self.model.nr_filters, stream, scale)
        self.program.add(Upsample(out, src, module.conv.weight, module.conv.bias, module.first_column))
        return out

r"""Reference interpreter of a sampling program (``fastgen/program.py``), in eager PyTorch.

It fills an image in raster order exactly like the naive sampler (same noise, same draw), but
evaluates every value once per position: when image row i starts, the ROW nodes compute their row
and the PIXEL nodes' terms on rows above (or on ROW values) are computed for the whole row; then,
at each pixel (and once per colour for a categorical draw), the PIXEL nodes add their current-row
taps, and the draw fills the pixel. This is the specification the C++ and CUDA interpreters
follow; it keeps every value as a whole zero-padded map, for clarity.

Cost per image: the rows-above part of every kernel runs once per row as a row-sized
convolution, the current-row part once per pixel (and colour) as an einsum over at most kw taps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgen._core import concat_elu, encode_levels, sample_from_logits
from fastgen.program import (
    Act,
    Carry,
    CategoricalDraw,
    Conv,
    LSTMCell,
    MixtureDraw,
    Pointwise,
    SamplingProgram,
    Stream,
    Term,
    Upsample,
)
from fastgen.reference.dmol import dmol_sample_reference


def activate(x: torch.Tensor, act: Act) -> torch.Tensor:
    """``act`` over dim 1 (channels)."""
    if act == Act.NONE:
        return x
    if act == Act.RELU:
        return F.relu(x)
    if act == Act.ELU:
        return F.elu(x)
    if act == Act.CONCAT_ELU:
        return concat_elu(x)
    a, b = x.chunk(2, dim=1)
    return (torch.tanh(a) if act == Act.TANH_GATE else a) * torch.sigmoid(b)


def draw_mixture(params: torch.Tensor, noise: torch.Tensor, nr_mix: int, levels: int) -> torch.Tensor:
    """Levels (N, C) drawn from mixture parameters (N, K) with noise (N, nr_mix + C)."""
    values = dmol_sample_reference(params[:, :, None, None], nr_mix, noise[:, :, None, None], levels)[:, :, 0, 0]
    return torch.round((values + 1) * ((levels - 1) / 2)).long()


class _Maps:
    """Every value as a zero-padded map (N, channels, pad + H_s, pad + W_s + pad)."""

    def __init__(self, program: SamplingProgram, n: int, pad: int):
        self.pad = pad
        self.maps = [torch.zeros(n, v.channels, pad + (program.height >> v.scale),
                                 2 * pad + (program.width >> v.scale), dtype=program.dtype, device=program.device)
                     for v in program.values]

    def read(self, v: int, row0: int, rows: int, col0: int, cols: int) -> torch.Tensor:
        """Rows row0.. and columns col0.. of value v (negative: the zero padding)."""
        p = self.pad
        return self.maps[v][:, :, p + row0: p + row0 + rows, p + col0: p + col0 + cols]

    def at(self, v: int, a: int, b: int) -> torch.Tensor:
        return self.maps[v][:, :, self.pad + a, self.pad + b]

    def put(self, v: int, a: int, b: int | None, value: torch.Tensor) -> None:
        """Position (a, b), or the whole row a when b is None."""
        p = self.pad
        if b is None:
            self.maps[v][:, :, p + a, p: p + value.shape[-1]] = value
        else:
            self.maps[v][:, :, p + a, p + b] = value


def _row_taps(term: Term, src_stream: Stream) -> list[int]:
    """The kernel rows of a term computed once per row: all of them on a ROW value, the rows
    above the output row on a PIXEL value."""
    kh = term.weight.shape[2]
    return list(range(kh)) if src_stream == Stream.ROW or kh - 1 < term.top else list(range(kh - 1))


def _term_row(maps: _Maps, term: Term, src_stream: Stream, a: int, width: int) -> torch.Tensor | None:
    """A term's rows-above part (or all of it, on a ROW value) for output row a: (N, O, width)."""
    taps = _row_taps(term, src_stream)
    if not taps:
        return None
    kw, st = term.weight.shape[3], term.stride
    strip = torch.cat([maps.read(term.src, st * a - term.top + ty, 1, -term.left, st * (width - 1) + kw)
                       for ty in taps], dim=2)
    out = F.conv2d(strip, term.weight[:, :, taps], stride=(1, st))[:, :, 0]
    if term.shift[1]:
        out[:, :, : term.shift[1]] = 0
    return out if a >= term.shift[0] else torch.zeros_like(out)


def _term_pixel(maps: _Maps, term: Term, src_stream: Stream, a: int, b: int) -> torch.Tensor | None:
    """A term's current-row part at (a, b), (N, O): the taps on the output row up to its column."""
    kh = term.weight.shape[2]
    if src_stream == Stream.ROW or kh - 1 < term.top or a < term.shift[0] or b < term.shift[1]:
        return None
    st, taps = term.stride, min(term.weight.shape[3], term.left + 1)
    window = maps.read(term.src, st * a, 1, st * b - term.left, taps)[:, :, 0]
    return torch.einsum("nik,oik->no", window, term.weight[:, :, -1, :taps])


def _term_bias(term: Term, a: int, b: int) -> torch.Tensor | float:
    """A term's bias at (a, b): zero where its shift leaves the output empty."""
    if term.bias is None or a < term.shift[0] or b < term.shift[1]:
        return 0.0
    return term.bias


def _cond(program: SamplingProgram, ref, channels: int, a: int, b: int | None) -> torch.Tensor | float:
    """The conditioning term at (a, b) (N, K), or for row a (N, K, W or 1); 0 without cond."""
    if ref is None:
        return 0.0
    c = program.conds[ref.index][..., ref.offset: ref.offset + channels]  # (N, Hc, Wc, K)
    row = c[:, a if c.shape[1] > 1 else 0]  # (N, Wc, K)
    return row.transpose(1, 2) if b is None else row[:, b if c.shape[2] > 1 else 0]


class _Interpreter:
    def __init__(self, program: SamplingProgram, image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                 return_draw_inputs: bool):
        self.p = program
        n, self.colours, self.height, self.width = image.shape
        pad = 1 + max([max(t.top, t.left, *t.weight.shape[2:]) for node in program.nodes
                       for t in getattr(node, "terms", []) + getattr(node, "recurrent", [])] + [2])
        self.maps = _Maps(program, n, pad)
        self.image, self.known, self.noise = image.clone(), known, noise
        self.row_terms: dict[int, torch.Tensor] = {}
        self.draw_inputs = (torch.zeros(n, program.draw_channels(), self.height, self.width, dtype=program.dtype,
                                        device=image.device) if return_draw_inputs else None)

    def stream(self, v: int) -> Stream:
        return self.p.values[v].stream

    def width_of(self, v: int) -> int:
        return self.width >> self.p.values[v].scale

    # -- row phase ----------------------------------------------------------------------------
    def row_phase(self, i: int) -> None:
        encoded = encode_levels(self.image[:, :, i], self.p.levels, self.p.dtype)
        if self.p.ones_channel:
            encoded = torch.cat([encoded, torch.ones_like(encoded[:, :1])], dim=1)
        self.maps.put(SamplingProgram.IMAGE, i, None, encoded)
        for index, node in enumerate(self.p.nodes):
            out = getattr(node, "out", getattr(node, "h", None))
            if out is None or i % (1 << self.p.values[out].scale):
                continue
            a = i >> self.p.values[out].scale
            if isinstance(node, Conv):
                self.conv_row(index, node, a)
            elif self.stream(out) == Stream.ROW and isinstance(node, Pointwise):
                row = self.maps.read(node.src, a, 1, 0, self.width_of(node.src))[:, :, 0]
                self.maps.put(node.out, a, None, activate(row + _cond(self.p, node.cond, row.shape[1], a, None),
                                                          node.act))
            elif self.stream(out) == Stream.ROW and isinstance(node, Upsample):
                self.maps.put(node.out, a, None, self.upsample_row(node, a))
            elif self.stream(out) == Stream.ROW and isinstance(node, LSTMCell):
                for b in reversed(range(self.width_of(node.h))):
                    self.lstm_at(node, a, b)

    def conv_row(self, index: int, node: Conv, a: int) -> None:
        """A ROW conv's row, or a PIXEL conv's rows-above part (kept for its pixels)."""
        width = self.width_of(node.out)
        total = 0.0
        for term in node.terms:
            part = _term_row(self.maps, term, self.stream(term.src), a, width)
            if part is not None:
                total = total + part
        if self.stream(node.out) == Stream.PIXEL:
            self.row_terms[index] = total
            return
        for term in node.terms:
            if term.bias is not None and a >= term.shift[0]:
                bias = term.bias[None, :, None].expand(total.shape[0], -1, width).clone()
                bias[:, :, : term.shift[1]] = 0
                total = total + bias
        total = total + _cond(self.p, node.cond, total.shape[1], a, None)
        out = activate(total, node.act)
        if node.residual is not None:
            out = out + self.maps.read(node.residual, a, 1, 0, width)[:, :, 0]
        self.maps.put(node.out, a, None, out)

    def upsample_row(self, node: Upsample, a: int) -> torch.Tensor:
        src_width, width = self.width_of(node.src), self.width_of(node.out)
        row = self.maps.read(node.src, a // 2, 1, 0, src_width)
        full = F.conv_transpose2d(row, node.weight[:, :, a % 2: a % 2 + 1], node.bias, stride=(1, 2))[:, :, 0]
        full = F.pad(full, (0, max(0, node.first_column + width - full.shape[-1])))
        return full[:, :, node.first_column: node.first_column + width]

    # -- pixel phase --------------------------------------------------------------------------
    def pixel_phase(self, i: int, j: int, colour: int) -> None:
        for index, node in enumerate(self.p.nodes):
            if isinstance(node, (CategoricalDraw, MixtureDraw)):
                self.draw(node, i, j, colour)
                continue
            out = node.h if isinstance(node, LSTMCell) else node.out
            scale = self.p.values[out].scale
            if self.stream(out) != Stream.PIXEL or i % (1 << scale) or j % (1 << scale):
                continue
            a, b = i >> scale, j >> scale
            if isinstance(node, Conv):
                self.conv_at(index, node, a, b)
            elif isinstance(node, Pointwise):
                x = self.maps.at(node.src, a, b)
                self.maps.put(node.out, a, b, activate(x + _cond(self.p, node.cond, x.shape[1], a, b), node.act))
            elif isinstance(node, Upsample):
                x = self.maps.at(node.src, a // 2, b // 2)
                value = x @ node.weight[:, :, a % 2, b % 2]
                self.maps.put(node.out, a, b, value + node.bias if node.bias is not None else value)
            else:
                self.lstm_at(node, a, b)

    def conv_at(self, index: int, node: Conv, a: int, b: int) -> None:
        total = self.row_terms[index]
        total = total[:, :, b] if isinstance(total, torch.Tensor) else 0.0
        for term in node.terms:
            part = _term_pixel(self.maps, term, self.stream(term.src), a, b)
            if part is not None:
                total = total + part
            total = total + _term_bias(term, a, b)
        total = total + _cond(self.p, node.cond, self.p.values[node.out].channels * (
            2 if node.act in (Act.TANH_GATE, Act.SIGMOID_GATE) else 1), a, b)
        out = activate(total, node.act)
        if node.residual is not None:
            out = out + self.maps.at(node.residual, a, b)
        self.maps.put(node.out, a, b, out)

    def lstm_at(self, node: LSTMCell, a: int, b: int) -> None:
        gates = self.maps.at(node.gates, a, b)
        for term in node.recurrent:  # the whole kernel: taps on unknown positions are zero
            kh, kw = term.weight.shape[2:]
            window = self.maps.read(node.h, a - term.top, kh, b - term.left, kw)
            gates = gates + torch.einsum("nikl,oikl->no", window, term.weight) + _term_bias(term, a, b)
        i, f, o, g = gates.chunk(4, dim=1)
        prev = {Carry.ABOVE: (a - 1, b), Carry.LEFT: (a, b - 1), Carry.RIGHT: (a, b + 1)}[node.carry]
        c_prev = self.maps.read(node.c, prev[0], 1, prev[1], 1)[:, :, 0, 0]
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        self.maps.put(node.c, a, b, c)
        self.maps.put(node.h, a, b, torch.sigmoid(o) * torch.tanh(c))

    def draw(self, node, i: int, j: int, colour: int) -> None:
        params = self.maps.at(node.src, i, j)
        levels = self.p.levels
        if isinstance(node, CategoricalDraw):
            logits = params[:, colour * levels: (colour + 1) * levels]
            if self.draw_inputs is not None:
                self.draw_inputs[:, colour * levels: (colour + 1) * levels, i, j] = logits
            drawn = sample_from_logits(logits, self.noise[:, colour, i, j])
            keep = self.known[:, colour, i, j]
            self.image[:, colour, i, j] = torch.where(keep, self.image[:, colour, i, j], drawn)
            channels = slice(colour, colour + 1)
        else:
            if self.draw_inputs is not None:
                self.draw_inputs[:, :, i, j] = params
            drawn = draw_mixture(params, self.noise[:, :, i, j].to(params.dtype), node.nr_mix, levels)
            keep = self.known[:, :, i, j].all(dim=1, keepdim=True)
            self.image[:, :, i, j] = torch.where(keep, self.image[:, :, i, j], drawn)
            channels = slice(0, self.colours)
        encoded = encode_levels(self.image[:, channels, i, j], levels, self.p.dtype)
        self.maps.maps[SamplingProgram.IMAGE][:, channels, self.maps.pad + i, self.maps.pad + j] = encoded

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        passes = self.colours if isinstance(self.p.draw, CategoricalDraw) else 1
        for i in range(self.height):
            self.row_phase(i)
            for j in range(self.width):
                for colour in range(passes):
                    self.pixel_phase(i, j, colour)
        empty = self.image.new_empty(0, dtype=self.p.dtype)
        return self.image, self.draw_inputs if self.draw_inputs is not None else empty


def run_program(program: SamplingProgram, image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                return_draw_inputs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample with ``program``: (images (N, C, H, W) int64 filled where ``known`` is False, the
    draw's inputs at every pixel (N, K, H, W), or an empty tensor)."""
    return _Interpreter(program, image, known, noise, return_draw_inputs).run()


def sample_program_reference(tensors: list[torch.Tensor], ints: list[int], image: torch.Tensor, known: torch.Tensor,
                             noise: torch.Tensor, return_draw_inputs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``fastgen::sample_program`` on its flat arguments (``SamplingProgram.encode``)."""
    return run_program(SamplingProgram.decode(tensors, ints), image, known, noise, return_draw_inputs)

r"""Reference of ``pixelcnnpp_sample_row``: the pixel stream of PixelCNN++'s cached sampler.

For one image row ``row`` and each pixel j in it, in order: every pixel layer of ``program`` whose
scale s divides both row and j runs at (a, b) = (row >> s, j >> s), then the head gives the
mixture parameters of pixel (row, j), a pixel that ``known`` does not keep is drawn
(``dmol_sample``), written to ``image`` as levels and to caches[0] (the network input) encoded.

Caches: (N, C, H_s + 1, W_s + 2) per layer output, zero-padded by one row on top and one column on
each side, position (a, b) at [a + 1, b + 1] (see ``fastgen/sampling/pixelcnnpp.py``).

Program: PROGRAM_FIELDS ints per layer, ``kind, scale, out, src, mid, skip0, skip1, weight, cond``
(cache indices; -1 where unused). ``weight`` indexes the first of the layer's tensors in
``weights``; a convolution is given as a (K, O) matrix over a gathered window (channel, then tap:
a conv weight's ``flatten(1).t()``) and a bias. By kind:

    UL_INIT   down_shift(conv (1, 3)) + right_shift(conv (2, 1)) of the input: 4 tensors
    RESNET    src + a * sigmoid(b), (a, b) = conv_out(celu(mid)) (+ cond[n]), mid = conv_in(celu(src))
              (+ nin(celu(cat(skip0, skip1)))): conv_in, its bias, [nin, its bias,] conv_out, its bias;
              kernels (2, 2) down-right-shifted; ``cond`` indexes an (N, 2C) class term or is -1
    STRIDED   stride-2 (2, 2) down-right-shifted convolution: 2 tensors
    UPSAMPLE  stride-2 (2, 2) transposed convolution: (Cin, Cout) per tap (0,0), (0,1), (1,0), (1,1), bias
    HEAD      the last node: 1x1 over elu(src) to the mixture parameters: 2 tensors
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgen._core import concat_elu, encode_levels
from fastgen.reference.dmol import dmol_sample_reference

PROGRAM_FIELDS = 9
UL_INIT, RESNET, STRIDED, UPSAMPLE, HEAD = range(5)


def window(cache: torch.Tensor, row0: int, rows: int, col0: int, cols: int) -> torch.Tensor:
    """Rows row0.., columns col0.. (unpadded indices; -1 is the padding) of a padded cache."""
    return cache[:, :, row0 + 1 : row0 + 1 + rows, col0 + 1 : col0 + 1 + cols]


def _linear(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.addmm(bias, v.reshape(v.shape[0], -1), weight)


def run_layer(node: list[int], caches: list[torch.Tensor], weights: list[torch.Tensor], a: int, b: int) -> None:
    """One pixel layer of the program at its position (a, b)."""
    kind, _, out, src, mid, skip0, skip1, first, cond = node
    w, x, y = weights[first:], caches[src], caches[out]
    if kind == UL_INIT:
        if a == 0 and b == 0:
            return  # both shifted convolutions read the zero padding only
        value = 0
        if a > 0:
            value = _linear(window(x, a - 1, 1, b - 1, 3), w[0], w[1])
        if b > 0:
            value = value + _linear(window(x, a - 1, 2, b - 1, 1), w[2], w[3])
        y[:, :, a + 1, b + 1] = value
    elif kind == RESNET:
        h = _linear(concat_elu(window(x, a - 1, 2, b - 1, 2)), w[0], w[1])
        rest = w[2:]
        if skip0 >= 0:
            skips = [caches[i][:, :, a + 1, b + 1] for i in (skip0, skip1) if i >= 0]
            h = h + _linear(concat_elu(torch.cat(skips, dim=1)), rest[0], rest[1])
            rest = rest[2:]
        caches[mid][:, :, a + 1, b + 1] = h
        t = _linear(concat_elu(window(caches[mid], a - 1, 2, b - 1, 2)), rest[0], rest[1])
        if cond >= 0:
            t = t + weights[cond]
        gate, value = t.chunk(2, dim=1)
        y[:, :, a + 1, b + 1] = x[:, :, a + 1, b + 1] + gate * torch.sigmoid(value)
    elif kind == STRIDED:
        y[:, :, a + 1, b + 1] = _linear(window(x, 2 * a - 1, 2, 2 * b - 1, 2), w[0], w[1])
    elif kind == UPSAMPLE:
        y[:, :, a + 1, b + 1] = torch.addmm(w[4], x[:, :, a // 2 + 1, b // 2 + 1], w[2 * (a % 2) + b % 2])
    else:
        raise ValueError(f"pixelcnnpp_sample_row: unknown program kind {kind}")


def pixelcnnpp_sample_row_reference(caches: list[torch.Tensor], weights: list[torch.Tensor], program: list[int],
                                    image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor, row: int,
                                    nr_mix: int, levels: int) -> None:
    """The pixel stream for one image row, in place (see the module docstring)."""
    nodes = [list(program[k : k + PROGRAM_FIELDS]) for k in range(0, len(program), PROGRAM_FIELDS)]
    head = nodes.pop()
    steps = levels - 1
    for j in range(image.shape[3]):
        for node in nodes:
            scale = node[1]
            if row % (1 << scale) == 0 and j % (1 << scale) == 0:
                run_layer(node, caches, weights, row >> scale, j >> scale)
        todo = ~known[:, row, j]
        if not todo.any():
            continue
        params = _linear(F.elu(caches[head[3]][:, :, row + 1, j + 1]), weights[head[7]], weights[head[7] + 1])
        values = dmol_sample_reference(params[:, :, None, None], nr_mix, noise[:, :, row : row + 1, j : j + 1], levels)
        drawn = torch.round((values[:, :, 0, 0] + 1) * (steps / 2)).long()
        image[:, :, row, j] = torch.where(todo[:, None], drawn, image[:, :, row, j])
        caches[0][:, :-1, row + 1, j + 1] = encode_levels(image[:, :, row, j], levels, caches[0].dtype)

r"""Samplers of PixelCNN++: naive (one forward pass per pixel) and cached incremental.

The cached sampler follows the protocol of ``fastgen/reference/cached_sampling.py``: every layer
keeps what it has computed, and only new positions are evaluated. PixelCNN++'s two streams map
onto it directly:

- the **u** stream (down-shifted convolutions) sees only rows above, so it is a *row stream*:
  each of its layers computes a whole output row once, when the pixel row starts, as row-sized
  convolutions (here, in PyTorch);
- the **ul** stream (down-right-shifted convolutions) sees the current row up to the pixel, so
  it is a *pixel stream*: each of its layers computes one position per pixel
  (``fastgen.ops.pixelcnnpp_sample_row``, one call per image row, with the head and the draw).

Three resolutions: a layer at scale s (1/2^s) has position (a, b) = (i >> s, j >> s) of pixel
(i, j). Its row a is computed when image row a << s starts and its position (a, b) at pixel
(a << s, b << s): **strided layers update every 2^s rows and columns**, the first time their
inputs are complete (a strided window (2a-1..2a, 2b-1..2b) ends at (2a, 2b)). **Transposed
layers expand**: output (r, c) of the ul upsampling reads input (r // 2, c // 2) through the
kernel tap (r % 2, c % 2), and a row of the u upsampling reads one input row. **Layers whose
consumers will not read an output skip it**: positions off the 2^s grid are never computed, and
the output head runs only where a pixel is drawn (not at the known pixels of ``partial``).

Every cache is a layer's output at its scale, zero-padded by one row on top and one column on
each side: (N, C, H_s + 1, W_s + 2), position (a, b) at [a + 1, b + 1]. Every causal window of the
model ((2, 3) down-shifted, (2, 2) down-right-shifted, strides 1 and 2) then lies inside the
padded map, and concat_elu keeps the padding at zero.

Cost: each layer output position is computed once, as in one forward pass.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from fastgen.nn.shifted_conv import DownShiftedConvTranspose2d, concat_elu
from fastgen.ops import pixelcnnpp_sample_row
from fastgen.reference.pixelcnnpp_sampling import HEAD, RESNET, STRIDED, UL_INIT, UPSAMPLE


def naive_sample_dmol(model, image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                      labels: torch.Tensor | None) -> torch.Tensor:
    """Fill the pixels of ``image`` (n, C, H, W) where ``known`` (n, H, W) is False, in raster
    order, with one full forward pass (``model.params``) per pixel."""
    x = image.clone()
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            todo = ~known[:, i, j]
            if not todo.any():
                continue
            params = model.params(x, labels)[:, :, i : i + 1, j : j + 1]
            drawn = model.draw(params, noise[:, :, i : i + 1, j : j + 1])[:, :, 0, 0]
            x[:, :, i, j] = torch.where(todo[:, None], drawn, x[:, :, i, j])
    return x


def _weights(module) -> tuple[torch.Tensor, torch.Tensor]:
    conv = module.conv
    return conv.weight, conv.bias  # the weight-normalised weight when the module has one


def _matrix(module) -> list[torch.Tensor]:
    """A convolution as (K, O) weights over a gathered window (channel, then tap), and its bias."""
    weight, bias = _weights(module)
    return [weight.flatten(1).t(), bias]


class _Cache:
    """A layer's output at scale s, padded: (N, C, H_s + 1, W_s + 2)."""

    def __init__(self, n: int, channels: int, height: int, width: int, scale: int, like: torch.Tensor):
        self.scale = scale
        self.map = like.new_zeros(n, channels, (height >> scale) + 1, (width >> scale) + 2)

    def rows(self, row0: int, rows: int) -> torch.Tensor:
        """Whole padded rows row0.. (unpadded index; -1 is the padding row)."""
        return self.map[:, :, row0 + 1 : row0 + 1 + rows]

    def row(self, a: int) -> torch.Tensor:
        return self.map[:, :, a + 1, 1:-1]

    def put_row(self, a: int, value: torch.Tensor) -> None:
        self.map[:, :, a + 1, 1:-1] = value


def _conv_row(module, src: _Cache, a: int, transform: Callable | None = None) -> torch.Tensor:
    """Output row a (N, C', W_out) of a DownShiftedConv2d (without its output shift) over ``src``."""
    kh, _ = module.kernel_size
    rows = src.rows(module.stride * a - kh + 1, kh)
    weight, bias = _weights(module)
    return F.conv2d(transform(rows) if transform else rows, weight, bias, stride=(1, module.stride))[:, :, 0]


class _ResnetRows:
    """The row stream of one u-stream GatedResnet; ``mid`` caches its inner activation."""

    def __init__(self, block, src: _Cache, skip: _Cache | None, out: _Cache, mid: _Cache, cond: torch.Tensor | None):
        self.block, self.src, self.skip, self.out, self.mid, self.cond = block, src, skip, out, mid, cond

    def __call__(self, a: int) -> None:
        h = _conv_row(self.block.conv_input, self.src, a, concat_elu)
        if self.skip is not None:
            weight, bias = _weights(self.block.nin_skip)
            h = h + torch.einsum("ncw,oc->now", concat_elu(self.skip.row(a)), weight.flatten(1)) + bias[:, None]
        self.mid.put_row(a, h)
        h = _conv_row(self.block.conv_out, self.mid, a, concat_elu)
        if self.cond is not None:
            h = h + self.cond[:, :, None]
        gate, value = h.chunk(2, dim=1)
        self.out.put_row(a, self.src.row(a) + gate * torch.sigmoid(value))


class _Plan:
    """The model as caches, row steps (u stream, in PyTorch) and a pixel program (ul stream and
    head, for ``pixelcnnpp_sample_row``), both in forward-pass order."""

    def __init__(self, model, image: torch.Tensor, labels: torch.Tensor | None):
        n, _, height, width = image.shape
        like = next(model.parameters())
        f = model.nr_filters
        self.rows: list[tuple[int, Callable[[int], None]]] = []  # (scale, step(a))
        self.caches: list[_Cache] = []
        self.program: list[int] = []
        self.weights: list[torch.Tensor] = []

        def cache(channels: int, scale: int) -> _Cache:
            self.caches.append(_Cache(n, channels, height, width, scale, like))
            return self.caches[-1]

        def cond(block) -> torch.Tensor | None:
            return block.embed(labels) if block.embed is not None else None

        x = cache(model.in_channels + 1, 0)
        x.map[:, -1, 1:, 1:-1] = 1.0  # the channel of ones, at every position
        x.map[:, :-1, 1:, 1:-1] = model.encode(image).to(like.dtype)
        u0, ul0 = cache(f, 0), cache(f, 0)

        def u_init(a: int) -> None:  # down-shifted output: row a is the convolution's row a - 1
            if a > 0:
                u0.put_row(a, _conv_row(model.u_init, x, a - 1))

        self.rows.append((0, u_init))
        self.node(UL_INIT, ul0, x, tensors=_matrix(model.ul_init_down) + _matrix(model.ul_init_right))
        u_list, ul_list = [u0], [ul0]
        scales = len(model.up_u)
        for s in range(scales):
            for block_u, block_ul in zip(model.up_u[s], model.up_ul[s]):
                u, ul = cache(f, s), cache(f, s)
                self.rows.append((s, _ResnetRows(block_u, u_list[-1], None, u, cache(f, s), cond(block_u))))
                self.resnet(block_ul, ul_list[-1], (u,), ul, cache(f, s), cond(block_ul))
                u_list.append(u)
                ul_list.append(ul)
            if s < scales - 1:
                u_list.append(self.strided_rows(model.downsize_u[s], u_list[-1], cache(f, s + 1)))
                ul_list.append(cache(f, s + 1))
                self.node(STRIDED, ul_list[-1], ul_list[-2], tensors=_matrix(model.downsize_ul[s]))
        u, ul = u_list.pop(), ul_list.pop()
        for i in range(scales):
            s = scales - 1 - i
            for block_u, block_ul in zip(model.down_u[i], model.down_ul[i]):
                u_next, ul_next = cache(f, s), cache(f, s)
                self.rows.append((s, _ResnetRows(block_u, u, u_list.pop(), u_next, cache(f, s), cond(block_u))))
                self.resnet(block_ul, ul, (u_next, ul_list.pop()), ul_next, cache(f, s), cond(block_ul))
                u, ul = u_next, ul_next
            if i < scales - 1:
                u = self.upsized_rows(model.upsize_u[i], u, cache(f, s - 1))
                weight, bias = _weights(model.upsize_ul[i])
                ul_up = cache(f, s - 1)
                self.node(UPSAMPLE, ul_up, ul, tensors=[weight[:, :, r, c] for r in (0, 1) for c in (0, 1)] + [bias])
                ul = ul_up
        self.node(HEAD, ul, ul, tensors=_matrix(model.head))
        self.x = x

    def rows_at(self, i: int) -> None:
        """The row stream's work when image row i starts: every layer whose scale divides i."""
        for scale, step in self.rows:
            if i % (1 << scale) == 0:
                step(i >> scale)

    def node(self, kind: int, out: _Cache, src: _Cache, mid: _Cache | None = None, skips: tuple[_Cache, ...] = (),
             tensors: list[torch.Tensor] = (), cond: torch.Tensor | None = None) -> None:
        """Append one pixel layer to the program (layout: fastgen/reference/pixelcnnpp_sampling.py)."""
        index = self.caches.index
        skip = [index(c) for c in skips] + [-1, -1]
        first = len(self.weights)
        self.weights += [t.detach().contiguous() for t in tensors]
        cond_at = -1
        if cond is not None:
            cond_at = len(self.weights)
            self.weights.append(cond.detach().contiguous())
        self.program += [kind, out.scale, index(out), index(src), index(mid) if mid else -1, skip[0], skip[1], first,
                         cond_at]

    def resnet(self, block, src: _Cache, skips: tuple[_Cache, ...], out: _Cache, mid: _Cache,
               cond: torch.Tensor | None) -> None:
        tensors = _matrix(block.conv_input) + _matrix(block.nin_skip) + _matrix(block.conv_out)
        self.node(RESNET, out, src, mid, skips, tensors, cond)

    def strided_rows(self, module, src: _Cache, out: _Cache) -> _Cache:
        self.rows.append((out.scale, lambda a: out.put_row(a, _conv_row(module, src, a))))
        return out

    def upsized_rows(self, module: DownShiftedConvTranspose2d, src: _Cache, out: _Cache) -> _Cache:
        weight, bias = _weights(module)

        def step(a: int) -> None:
            row = src.rows(a // 2, 1)[:, :, :, 1:-1]  # one input row
            full = F.conv_transpose2d(row, weight, bias, stride=2, output_padding=1)
            out.put_row(a, full[:, :, a % 2, 1 : 2 * row.shape[3] + 1])

        self.rows.append((out.scale, step))
        return out


def cached_sample_pixelcnnpp(model, image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                             labels: torch.Tensor | None) -> torch.Tensor:
    """Fill the pixels of ``image`` (n, C, H, W) where ``known`` (n, H, W) is False, in raster
    order, evaluating every layer of ``model`` once per position (see the module docstring).
    Draws the same images as ``naive_sample_dmol`` from the same noise."""
    x = image.clone().contiguous()
    # Inference mode: the row stream is thousands of small PyTorch calls, each cheaper without
    # autograd's bookkeeping. The caches stay inside; the returned images are ordinary tensors.
    with torch.inference_mode():
        plan = _Plan(model, x, labels)
        maps = [c.map for c in plan.caches]
        noise = noise.to(plan.x.map.dtype).contiguous()
        known = known.contiguous()
        for i in range(x.shape[2]):
            plan.rows_at(i)
            pixelcnnpp_sample_row(maps, plan.weights, plan.program, x, known, noise, i, model.nr_mix, model.levels)
    return x

r"""Reference cached incremental sampling of PixelCNN and Gated PixelCNN, in eager PyTorch ops.

Both samplers fill an image in raster order, colours in order, exactly like the naive sampler
(``fastgen.sampling.naive_sample``: same noise, same inverse-CDF draw), but never run the whole
network again: every layer keeps what it has already computed and only the new positions are
evaluated.

The caching rests on one observation about causal layers. Split a layer's input into *streams*:

- a **row stream** is known for a whole row before the row starts (the Gated PixelCNN's vertical
  stack: it sees only rows above the image row);
- a **pixel stream** is known position by position (the image itself and everything computed
  from its current row).

A causal kernel reading a pixel stream is split in two: the taps on rows above the output row,
evaluated once per row for the whole row (matrix-matrix work), and the taps on the output row
(columns j-p..j, centre masked), evaluated per pixel (``split_causal_kernel``). A layer reading a
row stream is evaluated once per row, all its taps at once. That is the whole protocol: a model
supports cached sampling by describing its layers as such kernels (``sampling_plan``).

Weights come as the model's *sampling plan*, a flat list of float tensors with masks applied:

PixelCNN (``pixelcnn_sample_reference``)::

    input:  in_w (hidden, C, 7, 7) mask A, in_b (hidden,)
    block b (6 each): reduce_w (half, hidden), reduce_b, conv_w (half, half, k, k) mask B, conv_b,
                      expand_w (hidden, half), expand_b
    head (4): head1_w (head, hidden), head1_b, head2_w (C * L, head), head2_b

Gated PixelCNN (``gated_pixelcnn_sample_reference``)::

    layer l (10 each): v_w (2D, in, rows, k) (rows = p for the first layer, p + 1 after), v_b,
                       v_to_h_w (2D, 2D), v_to_h_b, h_w (2D, in, p + 1) centre masked, h_b,
                       h_out_w (D, D) masked, h_out_b, skip_w (S, D) masked, skip_b
    head (4): as for PixelCNN, from the summed skips

``cond`` is ``None`` or the per-layer conditioning terms, channels last: (layers, N, Hc, Wc, K)
with (Hc, Wc) = (1, 1) for a class embedding or (H, W) for a spatial map; K is the block's
``half`` for PixelCNN and 4D (vertical then horizontal 2D) for Gated PixelCNN.

Cost per image (k x k kernels, p = k // 2, D channels): the row part is the rows-above taps of
every causal kernel and every row-stream layer, run once per row as one matrix product over the
row's W positions; the pixel part is the p + 1 current-row taps and the 1x1 layers, run per
pixel and per colour (RGB recomputes the pixel's column of every layer for each colour, since a
later colour sees the earlier ones). Cache memory: every causal kernel keeps its input's last
p + 1 rows (here the whole padded map, for clarity).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgen._core import encode_levels, sample_from_logits

# The dims of the tensors of one PixelCNN block, one Gated PixelCNN layer, the head (see above).
PIXELCNN_BLOCK_DIMS = (2, 1, 4, 1, 2, 1)
GATED_LAYER_DIMS = (4, 1, 2, 1, 3, 1, 2, 1, 2, 1)
HEAD_DIMS = (2, 1, 2, 1)
PIXELCNN_BLOCK, GATED_LAYER, HEAD = len(PIXELCNN_BLOCK_DIMS), len(GATED_LAYER_DIMS), len(HEAD_DIMS)


def split_causal_kernel(weight: torch.Tensor, rows_above: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Split a causal kernel (out, in, kh, kw) whose row ``rows_above`` holds the output row into
    (taps on rows above (out, in, rows_above, kw) or None, taps on the output row (out, in, p + 1)
    for columns j-p..j); taps right of the centre are zero in a causal kernel and are dropped."""
    p = weight.shape[-1] // 2
    above = weight[:, :, :rows_above] if rows_above else None
    return above, weight[:, :, rows_above, : p + 1]


def _row_taps(window: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """window (N, in, p + 1) of one row's columns j-p..j, taps (out, in, p + 1) -> (N, out)."""
    return torch.einsum("nik,oik->no", window, taps)


def _cond_at(cond: torch.Tensor | None, layer: int, i: int, j: int | None = None) -> torch.Tensor | float:
    """The layer's conditioning term at row i (N, W or 1, K) or at (i, j) (N, K); 0 without cond."""
    if cond is None:
        return 0.0
    term = cond[layer, :, i if cond.shape[2] > 1 else 0]
    return term if j is None else term[:, j if cond.shape[3] > 1 else 0]


def _gate(x: torch.Tensor, dim: int) -> torch.Tensor:
    a, b = x.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def _head(h: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    w1, b1, w2, b2 = weights
    return F.linear(F.relu(F.linear(F.relu(h), w1, b1)), w2, b2)


class _Draws:
    """The sampling loop's bookkeeping shared by both models: the image being filled, the draw of
    each sub-pixel from its logits, and (optionally) the logits of every draw."""

    def __init__(self, image, known, noise, levels, return_logits):
        self.x, self.known, self.noise, self.levels = image.clone(), known, noise, levels
        n, c, h, w = image.shape
        self.logits = image.new_empty((n, levels, c, h, w), dtype=torch.float32) if return_logits else None

    def draw(self, head_out: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
        """head_out (N, C * L) at (i, j): draws colour c and returns its values (N,)."""
        logits = head_out.view(head_out.shape[0], -1, self.levels)[:, c]
        if self.logits is not None:
            self.logits[:, :, c, i, j] = logits
        drawn = sample_from_logits(logits, self.noise[:, c, i, j])
        value = torch.where(self.known[:, c, i, j], self.x[:, c, i, j], drawn)
        self.x[:, c, i, j] = value
        return value

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.logits if self.logits is not None else self.x.new_empty(0, dtype=torch.float32)


def pixelcnn_sample_reference(weights: list[torch.Tensor], cond: torch.Tensor | None, image: torch.Tensor,
                              known: torch.Tensor, noise: torch.Tensor, levels: int,
                              return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached sampling of a PixelCNN plan: (images (N, C, H, W) int64, logits of every draw
    (N, L, C, H, W) or an empty tensor)."""
    in_w, in_b = weights[:2]
    blocks = [weights[2 + PIXELCNN_BLOCK * b: 2 + PIXELCNN_BLOCK * (b + 1)]
              for b in range((len(weights) - 2 - HEAD) // PIXELCNN_BLOCK)]
    head = weights[-HEAD:]
    draws = _Draws(image, known, noise, levels, return_logits)
    n, colours, height, width = image.shape
    dtype = in_w.dtype

    q = in_w.shape[-1] // 2
    in_above, in_row = split_causal_kernel(in_w, q)
    x_map = F.pad(encode_levels(image, levels, dtype), (q, q, q, 0))      # image row i at map row i + q
    p = [blk[2].shape[-1] // 2 for blk in blocks]
    conv_split = [split_causal_kernel(blk[2], pb) for blk, pb in zip(blocks, p)]
    maps = [image.new_zeros((n, blk[2].shape[1], height + pb, width + 2 * pb), dtype=dtype)
            for blk, pb in zip(blocks, p)]                                  # each conv's input

    for i in range(height):
        in_rows = F.conv2d(x_map[:, :, i:i + q], in_above, in_b)[:, :, 0]   # (N, hidden, W)
        conv_rows = [(F.conv2d(m[:, :, i:i + pb], above, blk[3])[:, :, 0] if above is not None
                      else blk[3][None, :, None].expand(n, -1, width))
                     for m, pb, (above, _), blk in zip(maps, p, conv_split, blocks)]
        for j in range(width):
            for c in range(colours):
                h = _row_taps(x_map[:, :, i + q, j:j + q + 1], in_row) + in_rows[:, :, j]
                for b, (rw, rb, _, _, ew, eb) in enumerate(blocks):
                    r = F.relu(F.linear(F.relu(h), rw, rb) + _cond_at(cond, b, i, j))
                    maps[b][:, :, i + p[b], j + p[b]] = r
                    t = _row_taps(maps[b][:, :, i + p[b], j:j + p[b] + 1], conv_split[b][1]) + conv_rows[b][:, :, j]
                    h = h + F.linear(F.relu(t), ew, eb)
                value = draws.draw(_head(h, head), c, i, j)
                x_map[:, c, i + q, j + q] = encode_levels(value, levels, dtype)
    return draws.result()


def gated_pixelcnn_sample_reference(weights: list[torch.Tensor], cond: torch.Tensor | None, image: torch.Tensor,
                                    known: torch.Tensor, noise: torch.Tensor, levels: int,
                                    return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached sampling of a Gated PixelCNN plan: (images (N, C, H, W) int64, logits of every draw
    (N, L, C, H, W) or an empty tensor)."""
    layers = [weights[GATED_LAYER * l: GATED_LAYER * (l + 1)] for l in range((len(weights) - HEAD) // GATED_LAYER)]
    head = weights[-HEAD:]
    draws = _Draws(image, known, noise, levels, return_logits)
    n, colours, height, width = image.shape
    dtype = weights[0].dtype
    p = layers[0][0].shape[-1] // 2
    channels = layers[0][6].shape[0]
    x_map = F.pad(encode_levels(image, levels, dtype), (p, p, p, 0))      # image row i at map row i + p
    # Row stream: the vertical output of layer l - 1 feeds layer l (padded map, row i at i + p).
    v_maps = [None] + [image.new_zeros((n, channels, height + p, width + 2 * p), dtype=dtype) for _ in layers[1:]]
    # Pixel stream: the current row of the horizontal output of layer l - 1 (p columns of padding).
    h_rows = [None] + [image.new_zeros((n, channels, width + p), dtype=dtype) for _ in layers[1:]]

    for i in range(height):
        v_to_h = []
        for l, (vw, vb, vhw, vhb, _, hb, *_rest) in enumerate(layers):
            rows = x_map[:, :, i:i + p] if l == 0 else v_maps[l][:, :, i:i + p + 1]
            v_pre = F.conv2d(rows, vw, vb)[:, :, 0]                           # (N, 2D, W)
            term = _cond_at(cond, l, i)
            cond_v, cond_h = (term.transpose(1, 2).chunk(2, dim=1) if cond is not None else (0.0, 0.0))
            v_to_h.append(F.conv1d(v_pre, vhw[:, :, None], vhb) + hb[None, :, None] + cond_h)
            if l + 1 < len(layers):
                v_maps[l + 1][:, :, i + p, p:p + width] = _gate(v_pre + cond_v, dim=1)
        for row in h_rows[1:]:
            row.zero_()
        for j in range(width):
            for c in range(colours):
                skip = 0.0
                for l, (_, _, _, _, hw, _, ow, ob, sw, sb) in enumerate(layers):
                    window = x_map[:, :, i + p, j:j + p + 1] if l == 0 else h_rows[l][:, :, j:j + p + 1]
                    gated = _gate(_row_taps(window, hw) + v_to_h[l][:, :, j], dim=1)
                    out = F.linear(gated, ow, ob)
                    if l + 1 < len(layers):
                        h_rows[l + 1][:, :, j + p] = out if l == 0 else h_rows[l][:, :, j + p] + out
                    skip = skip + F.linear(gated, sw, sb)
                value = draws.draw(_head(skip, head), c, i, j)
                x_map[:, c, i + p, j + p] = encode_levels(value, levels, dtype)
    return draws.result()

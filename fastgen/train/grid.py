"""Sample grids as PNG files."""
from __future__ import annotations

import io

import numpy as np
import torch

from fastgen.train.checkpoint import atomic_write


def image_grid(images: torch.Tensor, levels: int, nrow: int, *, scale: int = 1, pad: int = 1) -> np.ndarray:
    """Tile integer images (N, C, H, W) in [0, levels) into one uint8 (H', W', C) array, ``nrow``
    images per row, each enlarged ``scale`` times, separated by ``pad`` pixels."""
    n, c, h, w = images.shape
    pixels = (images.float() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    h, w = h * scale, w * scale
    rows = (n + nrow - 1) // nrow
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = pixels[k].permute(1, 2, 0).cpu().numpy()
    return grid


def save_grid(path: str, images: torch.Tensor, levels: int, nrow: int, *, scale: int = 4, pad: int = 1) -> str:
    """Write ``image_grid(...)`` as a PNG (atomically) and return the path (one image, unscaled
    and unpadded, with ``nrow=1, scale=1, pad=0``)."""
    from PIL import Image

    grid = image_grid(images, levels, nrow, scale=scale, pad=pad)
    image = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path

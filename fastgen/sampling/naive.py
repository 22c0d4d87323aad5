"""The naive autoregressive sampler: one full forward pass per (sub)pixel.

It is slow (H * W * C forward passes, or H * W for a mixture) and obviously right, which makes it
the reference every faster sampler is checked against.

Randomness is drawn up front as ``noise`` (``draw_noise``): uniform numbers in [0, 1), one per
sub-pixel for a categorical draw, (nr_mix + C) per pixel for a mixture (see fastgen/program.py).
A categorical sub-pixel (c, i, j) takes the smallest level k whose cumulative probability exceeds
``noise[:, c, i, j]`` (inverse-CDF sampling, in float64). Two samplers that compute the same
distributions and are given the same noise therefore draw the same images.
"""
from __future__ import annotations

import torch

from fastgen._core import sample_from_logits
from fastgen.program import CategoricalDraw
from fastgen.reference.sample_program import draw_mixture


def draw_noise(n: int, shape: tuple[int, int, int], *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform [0, 1) noise of shape (n, *shape), drawn on the CPU from ``generator`` (so a seeded
    generator gives the same noise on every device), then moved to ``device``."""
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64).to(device)


def naive_sample(model, cond, image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Fill the unknown sub-pixels of ``image`` (n, C, H, W) in raster order (colours in order for a
    categorical draw; a mixture draws a pixel's colours at once and keeps a pixel only when all
    its colours are known), each from ``model.draw_inputs(x, cond)`` of the whole image so far."""
    x = image.clone()
    draw = model.draw_node
    _, channels, height, width = x.shape
    levels = model.levels
    categorical = isinstance(draw, CategoricalDraw)
    for i in range(height):
        for j in range(width):
            for c in range(channels if categorical else 1):
                todo = ~known[:, c, i, j] if categorical else ~known[:, :, i, j].all(dim=1)
                if not todo.any():
                    continue
                inputs = model.draw_inputs(x, cond)[:, :, i, j]
                if categorical:
                    drawn = sample_from_logits(inputs[:, c * levels: (c + 1) * levels], noise[:, c, i, j])
                    x[:, c, i, j] = torch.where(todo, drawn, x[:, c, i, j])
                else:
                    drawn = draw_mixture(inputs, noise[:, :, i, j].to(inputs.dtype), draw.nr_mix, levels)
                    x[:, :, i, j] = torch.where(todo[:, None], drawn, x[:, :, i, j])
    return x

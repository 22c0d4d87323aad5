"""The naive autoregressive sampler: one full forward pass per (sub)pixel.

It is slow (H * W * C forward passes) and obviously right, which makes it the reference every
faster sampler is checked against.

Randomness is drawn up front as ``noise``: one uniform number in [0, 1) per sub-pixel, shape
(n, C, H, W). The value of sub-pixel (c, i, j) is the smallest level k whose cumulative
probability exceeds ``noise[:, c, i, j]`` (inverse-CDF sampling, in float64). Two samplers that
compute the same distributions and are given the same noise therefore draw the same images.
"""
from __future__ import annotations

from typing import Callable

import torch

from fastgen._core import sample_from_logits


def draw_noise(n: int, shape: tuple[int, int, int], *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform [0, 1) noise of shape (n, C, H, W), drawn on the CPU from ``generator`` (so a
    seeded generator gives the same noise on every device), then moved to ``device``."""
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64).to(device)


def partial_image(partial: tuple[torch.Tensor, torch.Tensor] | None, n: int, shape: tuple[int, int, int], levels: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``partial = (image, known)`` and return (start image int64, known mask bool), both
    (n, C, H, W). ``known`` may also be (n, 1, H, W), (n, H, W) or (H, W): it is broadcast."""
    image = torch.zeros((n, *shape), dtype=torch.long, device=device)
    known = torch.zeros((n, *shape), dtype=torch.bool, device=device)
    if partial is None:
        return image, known
    if not (isinstance(partial, (tuple, list)) and len(partial) == 2):
        raise TypeError("partial must be a pair (image, known): image (n, C, H, W) of levels and a boolean mask "
                        "of the pixels to keep")
    given, mask = partial
    if not isinstance(given, torch.Tensor) or tuple(given.shape) != (n, *shape):
        got = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise ValueError(f"partial image must be a tensor of shape {(n, *shape)}, got {got}")
    if given.is_floating_point():
        raise ValueError(f"partial image must hold integer levels, got dtype {given.dtype}")
    mask = torch.as_tensor(mask, device=device)
    if mask.dim() == 3 and mask.shape[0] == n:
        mask = mask.unsqueeze(1)
    try:
        known = mask.to(torch.bool).expand(n, *shape).clone()
    except RuntimeError:
        raise ValueError(f"partial mask of shape {tuple(mask.shape)} does not broadcast to {(n, *shape)}") from None
    given = given.to(device=device, dtype=torch.long)
    if known.any():
        kept = given[known]
        if kept.min() < 0 or kept.max() >= levels:
            raise ValueError(f"partial image values must lie in [0, {levels}) where known")
    return torch.where(known, given, image), known


def naive_sample(logits_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, known: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
    """Fill the unknown sub-pixels of ``image`` (n, C, H, W) in raster order, colours in order.

    ``logits_fn(x)`` returns (n, L, C, H, W) logits of the full image x (a full forward pass).
    """
    x = image.clone()
    _, channels, height, width = x.shape
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                todo = ~known[:, c, i, j]
                if not todo.any():
                    continue
                drawn = sample_from_logits(logits_fn(x)[:, :, c, i, j], noise[:, c, i, j])
                x[:, c, i, j] = torch.where(todo, drawn, x[:, c, i, j])
    return x

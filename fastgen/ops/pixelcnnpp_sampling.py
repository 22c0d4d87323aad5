"""``pixelcnnpp_sample_row``: the pixel stream of PixelCNN++'s cached sampler for one image row.

The C++ kernel runs every pixel layer, the head and the draw for the whole row in one call, each
thread on its share of the batch; elsewhere the op runs its reference. ``fastgen.sampling.pixelcnnpp``
builds the caches and the program and calls it once per row.
"""
from __future__ import annotations

import torch

from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.pixelcnnpp_sampling import pixelcnnpp_sample_row_reference

register_implementations("pixelcnnpp_sample_row", pixelcnnpp_sample_row_reference)


@torch.library.register_fake("fastgen::pixelcnnpp_sample_row")
def _(caches, weights, program, image, known, noise, row, nr_mix, levels):
    return None


def pixelcnnpp_sample_row(caches: list[torch.Tensor], weights: list[torch.Tensor], program: list[int],
                          image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor, row: int, nr_mix: int,
                          levels: int) -> None:
    """Run the pixel stream of row ``row`` in place (layouts: ``fastgen/reference/pixelcnnpp_sampling.py``)."""
    if reference_forced():
        return pixelcnnpp_sample_row_reference(caches, weights, program, image, known, noise, row, nr_mix, levels)
    torch.ops.fastgen.pixelcnnpp_sample_row(caches, weights, program, image, known, noise, row, nr_mix, levels)

"""``fastgen.sampling.sample``: the one driver behind every autoregressive model's ``sample``.

It owns what every model's sampling shares: the argument checks, the noise convention, ``partial``
completion, eval mode (restored afterwards) and the choice between the cached sampler (the model's
``sampling_program`` run by ``fastgen.ops.sample_program``, on the C++, CUDA or reference
interpreter) and the naive loop.

A model provides: ``in_channels``, ``levels``, ``image_size``, ``noise_shape``, ``draw_node`` (the
kind of draw), ``prepare_cond(cond, n)`` (validates ``cond`` and returns what the next two take),
``sampling_program(prepared)`` and ``draw_inputs(x, prepared)`` (a forward pass: the draw's
inputs at every pixel).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from fastgen._core import check_uniform_noise
from fastgen.ops import sample_program
from fastgen.sampling.naive import draw_noise, naive_sample
from fastgen.sampling.partial import partial_image


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, its training flag restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def sample(model: nn.Module, n: int, cond=None, *, partial: tuple[torch.Tensor, torch.Tensor] | None = None,
           noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
           cache: bool = True) -> torch.Tensor:
    """Draw n images (n, C, H, W) int64 from an autoregressive ``model``.

    Args:
        cond: what the model is conditioned on (labels (n,), a map, or both), or None.
        partial: (image, known) to complete images: sub-pixels where ``known`` is True keep the
            values of ``image`` (n, C, H, W); the rest are sampled given them. A mixture draw keeps
            a pixel only when all its colours are known.
        noise: uniform [0, 1) noise of shape (n, *model.noise_shape); the same noise gives the
            same images. Checked: finite, in [0, 1), floating.
        generator: where noise is drawn from when not given (on the CPU, up front).
        cache: the cached incremental sampler (about one forward pass of work per image); False
            runs the naive one (one forward pass per sub-pixel). Both draw the same images.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False, got {cache!r}")
    parameter = next(model.parameters())
    device = parameter.device
    prepared = model.prepare_cond(cond, n)
    shape = (n, *model.noise_shape)
    if noise is None:
        noise = draw_noise(n, model.noise_shape, generator=generator, device=device)
    else:
        check_uniform_noise(noise, shape)
        noise = noise.to(device=device, dtype=torch.float64)
    image, known = partial_image(partial, n, (model.in_channels, *model.image_size), model.levels, device)
    with eval_mode(model), torch.no_grad():
        if not cache:
            return naive_sample(model, prepared, image, known, noise)
        return sample_program(model.sampling_program(prepared), image, known, noise)[0]

"""``fastgen.ops.pixelcnn_sample`` / ``gated_pixelcnn_sample``: cached incremental sampling.

Models call these through ``model.sample(..., cache=True)``; the sampling plan (weights with masks
applied, conditioning terms) is described in ``fastgen/reference/cached_sampling.py``. On the CPU
the C++ kernel runs the whole loop (every layer, every pixel, the draw) in one call. On CUDA the
block sampler (``fastgen::block_sample``, csrc/cuda/block_sampler.cuh) does, one thread block per
image, from a *block plan* (``block_plan``). Without a compiled kernel, the reference runs the same
caching algorithm with one eager PyTorch op per layer per pixel.
"""
from __future__ import annotations

import torch

from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.cached_sampling import (
    GATED_LAYER_DIMS,
    HEAD_DIMS,
    PIXELCNN_BLOCK_DIMS,
    gated_pixelcnn_sample_reference,
    pixelcnn_sample_reference,
    split_causal_kernel,
)

_ops = torch.ops.fastgen


def _taps_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *taps) -> (taps * in, out): the (K, O) matrix of the block plan, K ordered (tap
    row, tap column, input channel) like a channels-last window."""
    return weight.permute(*range(2, weight.dim()), 1, 0).reshape(-1, weight.shape[0])


def block_plan(model: str, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """The block sampler's weights from a sampling plan (layouts in csrc/cuda/block_sampler.cuh)."""
    head = weights[-4:]
    head = [head[0].t(), head[1], head[2].t(), head[3]]
    if model == "pixelcnn":
        in_above, in_row = split_causal_kernel(weights[0], weights[0].shape[-1] // 2)
        plan = [_taps_matrix(in_above), _taps_matrix(in_row), weights[1]]
        for i in range(2, len(weights) - 4, 6):
            reduce_w, reduce_b, conv_w, conv_b, expand_w, expand_b = weights[i:i + 6]
            above, row = split_causal_kernel(conv_w, conv_w.shape[-1] // 2)
            above = above if above is not None else conv_w.new_zeros(conv_w.shape[0], conv_w.shape[1], 0, 1)
            plan += [reduce_w.t(), reduce_b, _taps_matrix(above), _taps_matrix(row), conv_b, expand_w.t(), expand_b]
    else:
        plan, skip_bias = [], 0.0
        for i in range(0, len(weights) - 4, 10):
            v_w, v_b, vh_w, vh_b, h_w, h_b, out_w, out_b, skip_w, skip_b = weights[i:i + 10]
            plan += [_taps_matrix(v_w), v_b, vh_w.t(), vh_b + h_b, _taps_matrix(h_w), out_w.t(), out_b, skip_w.t()]
            skip_bias = skip_bias + skip_b
        plan.append(skip_bias)
    return [t.contiguous() for t in plan + head]


def _block_sampler(model: str):
    """``model``'s sampler served by the block sampler kernel."""
    def sample(weights, cond, image, known, noise, levels, return_logits):
        return _ops.block_sample(model, block_plan(model, weights), cond, image, known, noise, levels, return_logits)
    return sample


_BLOCK_KERNEL_ON_CUDA = torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::block_sample", "CUDA")
register_implementations("pixelcnn_sample", pixelcnn_sample_reference,
                         cuda=_block_sampler("pixelcnn") if _BLOCK_KERNEL_ON_CUDA else None)
register_implementations("gated_pixelcnn_sample", gated_pixelcnn_sample_reference,
                         cuda=_block_sampler("gated_pixelcnn") if _BLOCK_KERNEL_ON_CUDA else None)


def _block_sample_reference(model, plan, cond, image, known, noise, levels, return_logits):
    raise NotImplementedError("fastgen::block_sample runs only as a compiled kernel (fastgen._C); "
                              "use fastgen.ops.pixelcnn_sample or gated_pixelcnn_sample")


register_implementations("block_sample", _block_sample_reference)


def _fake(weights, cond, image, known, noise, levels, return_logits):
    n, c, h, w = image.shape
    logits = image.new_empty((n, levels, c, h, w) if return_logits else (0,), dtype=torch.float32)
    return torch.empty_like(image), logits


torch.library.register_fake("fastgen::pixelcnn_sample")(_fake)
torch.library.register_fake("fastgen::gated_pixelcnn_sample")(_fake)
torch.library.register_fake("fastgen::block_sample")(lambda model, *args: _fake(*args))


def check_plan(weights: list[torch.Tensor], first_dims: tuple[int, ...], per_layer: tuple[int, ...],
               model: str) -> None:
    """A plan is tensors with ``first_dims``, whole layers of tensors with ``per_layer`` dims, then
    the head."""
    first, size, head = len(first_dims), len(per_layer), len(HEAD_DIMS)
    if len(weights) < first + size + head or (len(weights) - first - head) % size:
        raise ValueError(f"weights must be a {model} sampling plan ({first} + {size} per layer + {head} tensors, "
                         f"see fastgen/reference/cached_sampling.py), got {len(weights)} tensors")
    expected = [*first_dims, *per_layer * ((len(weights) - first - head) // size), *HEAD_DIMS]
    got = [w.dim() for w in weights]
    if got != expected:
        raise ValueError(f"weights do not have the dims of a {model} sampling plan: expected {expected}, got {got}")


def check_sample_args(weights: list[torch.Tensor], cond: torch.Tensor | None, image: torch.Tensor,
                      known: torch.Tensor, noise: torch.Tensor, levels: int) -> None:
    """Raise a ValueError naming the offending argument; used before any kernel runs."""
    if image.dim() != 4 or image.dtype != torch.int64:
        raise ValueError(f"image must be an int64 tensor (N, C, H, W), got {image.dtype} {tuple(image.shape)}")
    if known.dtype != torch.bool or known.shape != image.shape:
        raise ValueError(f"known must be a bool tensor of the image's shape {tuple(image.shape)}, "
                         f"got {known.dtype} {tuple(known.shape)}")
    if noise.dtype != torch.float64 or noise.shape != image.shape:
        raise ValueError(f"noise must be a float64 tensor of the image's shape {tuple(image.shape)}, "
                         f"got {noise.dtype} {tuple(noise.shape)}")
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    dtype = weights[0].dtype
    for t in (*weights, cond, known, noise):
        if t is not None and t.device != image.device:
            raise ValueError(f"every tensor must be on the image's device {image.device}, found one on {t.device}")
    if any(w.dtype != dtype for w in weights) or (cond is not None and cond.dtype != dtype):
        raise ValueError("the plan's weights and cond must share one floating dtype")
    if weights[-2].shape[0] != image.shape[1] * levels:
        raise ValueError(f"the plan's head has {weights[-2].shape[0]} outputs but C * levels = "
                         f"{image.shape[1]} * {levels}")
    if cond is not None and (cond.dim() != 5 or cond.shape[1] != image.shape[0]):
        raise ValueError(f"cond must be (layers, N, Hc, Wc, K) with N = {image.shape[0]}, got {tuple(cond.shape)}")


def _use_reference(weights: list[torch.Tensor]) -> bool:
    # The compiled samplers are float32 only; other dtypes (float64 for checks) take the reference.
    return reference_forced() or weights[0].dtype != torch.float32


def pixelcnn_sample(weights: list[torch.Tensor], cond: torch.Tensor | None, image: torch.Tensor, known: torch.Tensor,
                    noise: torch.Tensor, levels: int, return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached sampling of a ``PixelCNN.sampling_plan``: (images, logits of every draw or empty)."""
    check_plan(weights, (4, 1), PIXELCNN_BLOCK_DIMS, "PixelCNN")
    check_sample_args(weights, cond, image, known, noise, levels)
    if _use_reference(weights):
        return pixelcnn_sample_reference(weights, cond, image, known, noise, levels, return_logits)
    return _ops.pixelcnn_sample(weights, cond, image, known, noise, levels, return_logits)


def gated_pixelcnn_sample(weights: list[torch.Tensor], cond: torch.Tensor | None, image: torch.Tensor,
                          known: torch.Tensor, noise: torch.Tensor, levels: int,
                          return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached sampling of a ``GatedPixelCNN.sampling_plan``: (images, logits of every draw or empty)."""
    check_plan(weights, (), GATED_LAYER_DIMS, "Gated PixelCNN")
    check_sample_args(weights, cond, image, known, noise, levels)
    if _use_reference(weights):
        return gated_pixelcnn_sample_reference(weights, cond, image, known, noise, levels, return_logits)
    return _ops.gated_pixelcnn_sample(weights, cond, image, known, noise, levels, return_logits)

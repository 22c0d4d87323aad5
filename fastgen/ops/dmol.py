"""``fastgen.ops.dmol_nll`` and ``dmol_sample``: the discretized logistic mixture of PixelCNN++, fused.

The eager loss keeps some thirty tensors of (N, C, nr_mix, H, W) for autograd. The fused forward
keeps only the per-pixel log-likelihood (N, H, W); the backward recomputes every bin in one pass
and writes the gradient of params directly. ``x`` is data: no gradient flows to it.
"""
from __future__ import annotations

import torch

from fastgen._core import accumulation_dtype, check_uniform_noise, dmol_channels
from fastgen.ops._checks import FLOAT_DTYPES, check_copy_size, check_tensor, has_memory, has_values, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.dmol import (
    dmol_nll_reference,
    dmol_pixel_log_prob_reference,
    dmol_sample_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.dmol"


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(x, params, nr_mix, levels):
    check_dmol_nll_args(x, params, nr_mix, levels, same_dtype=True)
    acc = accumulation_dtype(params.dtype)
    pixel = dmol_pixel_log_prob_reference(x.to(acc), params.to(acc), nr_mix, levels)
    return (-pixel.flatten(1).sum(1)).to(params.dtype), pixel


def _reference_backward(grad, x, params, pixel_log_prob, nr_mix, levels):
    check_dmol_nll_backward_args(grad, x, params, pixel_log_prob, nr_mix, levels)
    with torch.enable_grad():
        p = params.detach().requires_grad_(True)
        nll = dmol_nll_reference(x, p, nr_mix, levels)
        (jacobian_rows,) = torch.autograd.grad(nll, p, torch.ones_like(nll))
    # grad[n] times d nll[n] / d params[n], as the kernels compute it: an inf grad[n] gives +-inf
    # (not the NaN that inf - inf inside autograd's chain would).
    return jacobian_rows * grad.to(jacobian_rows.dtype).view(-1, 1, 1, 1)


def _reference_sample(params, noise, nr_mix, levels):
    check_dmol_sample_args(params, noise, nr_mix, levels, values=False)
    return dmol_sample_reference(params, nr_mix, noise, levels)


register_implementations("dmol_nll", _reference_forward, (_TRITON, "dmol_nll_triton"))
register_implementations("dmol_nll_backward", _reference_backward, (_TRITON, "dmol_nll_backward_triton"))
register_implementations("dmol_sample", _reference_sample, (_TRITON, "dmol_sample_triton"))


@torch.library.register_fake("fastgen::dmol_nll")
def _(x, params, nr_mix, levels):
    check_dmol_nll_args(x, params, nr_mix, levels, same_dtype=True)
    n, _, h, w = x.shape
    return params.new_empty(n), params.new_empty(n, h, w, dtype=accumulation_dtype(params.dtype))


@torch.library.register_fake("fastgen::dmol_nll_backward")
def _(grad, x, params, pixel_log_prob, nr_mix, levels):
    check_dmol_nll_backward_args(grad, x, params, pixel_log_prob, nr_mix, levels)
    return torch.empty_like(params, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastgen::dmol_sample")
def _(params, noise, nr_mix, levels):
    check_dmol_sample_args(params, noise, nr_mix, levels, values=False)
    n, k, h, w = noise.shape
    return params.new_empty(n, k - nr_mix, h, w)


def _setup_context(ctx, inputs, output):
    x, params, nr_mix, levels = inputs
    if x.requires_grad:  # torch.ops.fastgen.dmol_nll called directly: refuse, as dmol_nll does
        raise ValueError("dmol_nll treats x as data and has no gradient for it; pass x.detach()")
    _, pixel_log_prob = output
    ctx.mark_non_differentiable(pixel_log_prob)
    ctx.save_for_backward(x, params, pixel_log_prob)
    ctx.nr_mix, ctx.levels = nr_mix, levels


def _backward(ctx, grad_nll, _grad_pixel):
    x, params, pixel_log_prob = ctx.saved_tensors
    grad_params = None
    if ctx.needs_input_grad[1]:
        grad_params = _ops.dmol_nll_backward(grad_nll, x, params, pixel_log_prob, ctx.nr_mix, ctx.levels)
    return None, grad_params, None, None


torch.library.register_autograd("fastgen::dmol_nll", _backward, setup_context=_setup_context)
register_autocast("dmol_nll", torch.float32)


def _check_params(params: torch.Tensor, channels: int, nr_mix: int, levels: int, x_name: str,
                  x_shape: tuple[int, ...]) -> None:
    check_tensor("params", params, dims=4, layout="(N, K, H, W)")
    if not isinstance(nr_mix, int) or isinstance(nr_mix, bool) or nr_mix < 1:
        raise ValueError(f"nr_mix must be a positive integer, got {nr_mix!r}")
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if channels not in (1, 3):
        raise ValueError(f"{x_name} must have 1 or 3 colour channels, got {channels}")
    want = dmol_channels(channels, nr_mix)
    n, _, h, w = x_shape
    if tuple(params.shape) != (n, want, h, w):
        raise ValueError(f"params must be (N, K, H, W) = {(n, want, h, w)} for {x_name} {tuple(x_shape)} and "
                         f"nr_mix={nr_mix} (K = {10 if channels == 3 else 3} * nr_mix), got {tuple(params.shape)}")


def check_dmol_nll_args(x: torch.Tensor, params: torch.Tensor, nr_mix: int, levels: int, *,
                        same_dtype: bool = False) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs.
    The op (``same_dtype``) takes x in params' dtype; ``dmol_nll`` casts it."""
    check_tensor("x", x, dims=4, layout="(N, C, H, W) in [-1, 1]")
    _check_params(params, x.shape[1], nr_mix, levels, "x", tuple(x.shape))
    if x.device != params.device:
        raise ValueError(f"x is on {x.device} but params is on {params.device}; move them to one device")
    if same_dtype and x.dtype != params.dtype:
        raise ValueError(f"x has dtype {x.dtype} but params has {params.dtype}; they must match")
    if x.requires_grad:
        raise ValueError("dmol_nll treats x as data and has no gradient for it; pass x.detach()")
    if has_values(x):
        low, high = torch.aminmax(x)
        if not (low >= -1 and high <= 1):
            raise ValueError(f"x must lie in [-1, 1] (levels mapped as 2 * k / (levels - 1) - 1), "
                             f"got values in [{float(low)}, {float(high)}]")


def check_dmol_nll_backward_args(grad, x, params, pixel_log_prob, nr_mix, levels) -> None:
    check_dmol_nll_args(x, params, nr_mix, levels, same_dtype=True)
    n, _, h, w = x.shape
    check_tensor("grad", grad, dims=1, layout=f"(N,) = ({n},)")
    if grad.shape[0] != n:
        raise ValueError(f"grad must be (N,) = ({n},), got {tuple(grad.shape)}")
    acc = accumulation_dtype(params.dtype)
    check_tensor("pixel_log_prob", pixel_log_prob, dims=3, layout=f"(N, H, W) = {(n, h, w)}")
    if tuple(pixel_log_prob.shape) != (n, h, w) or pixel_log_prob.dtype != acc:
        raise ValueError(f"pixel_log_prob must be (N, H, W) = {(n, h, w)} in {acc}, "
                         f"got {tuple(pixel_log_prob.shape)} in {pixel_log_prob.dtype}")
    for name, t in (("grad", grad), ("pixel_log_prob", pixel_log_prob)):
        if t.device != params.device:
            raise ValueError(f"{name} is on {t.device} but params is on {params.device}; move them to one device")


def check_dmol_sample_args(params: torch.Tensor, noise: torch.Tensor, nr_mix: int, levels: int, *,
                           values: bool = True) -> None:
    """Raise a ValueError/TypeError naming the offending argument. With ``values``, as in
    ``dmol_sample``, the noise's values too (finite, in [0, 1)), through ``_core.check_uniform_noise``,
    the one check of sampling noise; the op itself (kernels and reference) clamps noise into
    [1e-5, 1 - 1e-5] and checks only its dtype and shape."""
    if not isinstance(noise, torch.Tensor) or noise.dim() != 4:
        raise ValueError("noise must be a (N, nr_mix + C, H, W) tensor of uniform [0, 1) numbers")
    channels = noise.shape[1] - nr_mix if isinstance(nr_mix, int) and not isinstance(nr_mix, bool) else -1
    if channels not in (1, 3):
        raise ValueError(f"noise must have nr_mix + 1 or nr_mix + 3 channels (nr_mix={nr_mix!r}), "
                         f"got shape {tuple(noise.shape)}")
    _check_params(params, channels, nr_mix, levels, "noise (as N, C, H, W)", (noise.shape[0], channels,
                                                                               *noise.shape[2:]))
    if noise.device != params.device:
        raise ValueError(f"noise is on {noise.device} but params is on {params.device}; move them to one device")
    check_copy_size("noise", noise)
    if values and has_memory(noise) and (noise.dtype in FLOAT_DTYPES or not noise.is_floating_point()):
        check_uniform_noise(noise, tuple(noise.shape), "noise")
    elif noise.dtype not in FLOAT_DTYPES:  # float8 too: no kernel reads it
        raise ValueError(f"noise must be a floating tensor of uniform [0, 1) numbers (float32, float64, float16 "
                         f"or bfloat16), got dtype {noise.dtype}")


def dmol_nll(x: torch.Tensor, params: torch.Tensor, *, nr_mix: int, levels: int = 256) -> torch.Tensor:
    """nll[n] = -sum over pixels of log sum_k pi_k prod_c P(x_c in its bin | logistic_ck).

    Args:
        x: (N, C, H, W) images in [-1, 1] (level k of ``levels`` at 2k / (levels - 1) - 1), C = 1 or 3.
        params: (N, K, H, W) mixture parameters in the layout of the original PixelCNN++ code
            (``fastgen/reference/dmol.py``): K = 10 * nr_mix for RGB, 3 * nr_mix for one channel.
        nr_mix: mixture components.
        levels: values per sub-pixel (256 for 8-bit images).

    Returns:
        (N,) negative log-likelihood of each image in nats.
    """
    check_dmol_nll_args(x, params, nr_mix, levels)
    if reference_forced():
        return dmol_nll_reference(x.to(params.dtype), params, nr_mix, levels)
    return _ops.dmol_nll(x.to(params.dtype), params, nr_mix, levels)[0]


def dmol_sample(params: torch.Tensor, *, nr_mix: int, noise: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """One image per params: x_c = clamp(mu_c + e^s_c logit(u_c), -1, 1) rounded to the grid, at the
    component chosen by Gumbel-max; the same noise gives the same image.

    Args:
        params: (N, K, H, W) mixture parameters (see ``dmol_nll``).
        nr_mix: mixture components.
        noise: (N, nr_mix + C, H, W) uniform in [0, 1): nr_mix channels for the component choice,
            then one per colour for the logistic draw.
        levels: values per sub-pixel.

    Returns:
        (N, C, H, W) in [-1, 1], on the grid of ``levels`` values, params' dtype.
    """
    check_dmol_sample_args(params, noise, nr_mix, levels)
    if reference_forced():
        return dmol_sample_reference(params, nr_mix, noise, levels)
    return _ops.dmol_sample(params, noise, nr_mix, levels)

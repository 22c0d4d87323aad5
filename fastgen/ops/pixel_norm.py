"""``fastgen.ops.pixel_norm``: ProGAN's pixel-wise feature normalisation, optionally after a leaky
ReLU, in one op. Forward, per position: one read of the C channels for the mean square (the second
read, which writes y, mostly hits cache) and the per-position rstd kept for the backward; backward,
one pass from x, grad_y and rstd (a and y recomputed, nothing else kept). The eager form runs the
activation, the square, the mean, the rsqrt and the product as separate ops, each writing a
tensor, and keeps several of them for autograd.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_same, check_scalar, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.pixel_norm import (
    pixel_norm_backward_reference,
    pixel_norm_forward_reference,
    pixel_norm_reference,
    pixel_norm_rstd_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.pixel_norm"


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _rstd_shape(x: torch.Tensor) -> tuple:
    return (x.shape[0], *x.shape[2:])


# Every implementation returns contiguous tensors, whatever the input layout. Where no compiled
# kernel serves a device, the reference does, behind the same checks.
def _reference_forward(x, negative_slope, eps):
    check_pixel_norm_args(x, negative_slope, eps)
    return tuple(t.contiguous() for t in pixel_norm_forward_reference(x, negative_slope, eps))


def _reference_backward(grad_out, x, rstd, negative_slope):
    check_pixel_norm_backward_args(grad_out, x, rstd, negative_slope)
    return pixel_norm_backward_reference(grad_out, x, rstd, negative_slope).contiguous()


register_implementations("pixel_norm", _reference_forward, (_TRITON, "pixel_norm_triton"))
register_implementations("pixel_norm_backward", _reference_backward, (_TRITON, "pixel_norm_backward_triton"))


@torch.library.register_fake("fastgen::pixel_norm")
def _(x, negative_slope, eps):
    check_pixel_norm_args(x, negative_slope, eps)
    rstd = x.new_empty(_rstd_shape(x), dtype=_stat_dtype(x))
    return torch.empty_like(x, memory_format=torch.contiguous_format), rstd


@torch.library.register_fake("fastgen::pixel_norm_backward")
def _(grad_out, x, rstd, negative_slope):
    check_pixel_norm_backward_args(grad_out, x, rstd, negative_slope)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, negative_slope, eps = inputs
    _, rstd = output
    ctx.mark_non_differentiable(rstd)
    # Not y nor a: the backward recomputes both from x and rstd.
    ctx.save_for_backward(x, rstd)
    ctx.args = (negative_slope, eps)


def _backward(ctx, grad, _grad_rstd):
    x, rstd = ctx.saved_tensors
    negative_slope, eps = ctx.args
    if not ctx.needs_input_grad[0]:
        return None, None, None
    if torch.is_grad_enabled():  # create_graph: the backward must itself be differentiable (in x too)
        rstd = pixel_norm_rstd_reference(x, negative_slope, eps)
        return pixel_norm_backward_reference(grad, x, rstd, negative_slope), None, None
    return _ops.pixel_norm_backward(grad, x, rstd, negative_slope), None, None


torch.library.register_autograd("fastgen::pixel_norm", _backward, setup_context=_setup_context)
# Memory-bound, like instance_norm_act: bfloat16 in and out under autocast; rstd and the sums are
# float32 whatever the input dtype.
register_autocast("pixel_norm", torch.bfloat16)


def _check_x(name: str, x) -> None:
    if isinstance(x, torch.Tensor) and x.dim() < 2:
        raise ValueError(f"{name} must be (N, C) or (N, C, *spatial), got a {x.dim()}-D tensor of shape "
                         f"{tuple(x.shape)}")
    check_tensor(name, x, dims=x.dim() if isinstance(x, torch.Tensor) else 2, layout="(N, C) or (N, C, *spatial)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel (C >= 1), got shape {tuple(x.shape)}")


def _check_slope(negative_slope) -> None:
    if negative_slope is not None:
        check_scalar("negative_slope", negative_slope)


def check_pixel_norm_args(x, negative_slope, eps) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    _check_x("x", x)
    _check_slope(negative_slope)
    if not check_scalar("eps", eps) > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")


def check_pixel_norm_backward_args(grad_out, x, rstd, negative_slope) -> None:
    _check_x("x", x)
    _check_slope(negative_slope)
    check_tensor("grad_out", grad_out, dims=x.dim(), layout=f"x's shape {tuple(x.shape)}")
    if grad_out.shape != x.shape:
        raise ValueError(f"grad_out must have x's shape {tuple(x.shape)}, got {tuple(grad_out.shape)}")
    check_same("x", x, grad_out=grad_out)
    expected = _rstd_shape(x)
    check_tensor("rstd", rstd, dims=x.dim() - 1, layout=f"(N, *spatial) = {tuple(expected)}")
    if tuple(rstd.shape) != tuple(expected):
        raise ValueError(f"rstd must be (N, *spatial) = {tuple(expected)}, got {tuple(rstd.shape)}")
    # The forward's statistics: float32, or float64 for float64 x (not cast by autocast).
    if rstd.dtype != _stat_dtype(x):
        raise ValueError(f"rstd must have dtype {_stat_dtype(x)} (the forward's statistics of a {x.dtype} x), "
                         f"got {rstd.dtype}")
    if rstd.device != x.device:
        raise ValueError(f"rstd is on {rstd.device} but x is on {x.device}; move them to one device")


def pixel_norm(x: torch.Tensor, *, negative_slope: float | None = None, eps: float = 1e-8) -> torch.Tensor:
    """y = a / sqrt(mean_c(a^2) + eps) at every position, a = leaky_relu(x, negative_slope) (or x).

    Args:
        x: (N, C) or (N, C, *spatial); any layout (the output is contiguous).
        negative_slope: where given, a leaky ReLU with this slope comes first (0.0: a ReLU); None:
            no activation.
        eps: added to the mean square, > 0 (1e-8 as in the paper).

    Returns:
        y of x's shape: each position's channel vector scaled to unit root mean square (ProGAN's
        pixel-wise feature normalisation, Karras et al. 2018).
    """
    check_pixel_norm_args(x, negative_slope, eps)
    slope = None if negative_slope is None else float(negative_slope)
    if reference_forced():
        return pixel_norm_reference(x, negative_slope=slope, eps=float(eps))
    return _ops.pixel_norm.default(x, slope, float(eps))[0]

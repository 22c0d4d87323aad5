"""``fastgen.ops.instance_norm_act``: instance normalisation, per-channel affine and an activation
(ReLU, leaky ReLU or none) in one op. Forward, per (n, c) plane: two passes for the statistics
(the second from cache) and one that writes y; backward, one pass of sums and one that writes
grad_x, from x and the saved per-plane mean and rstd. The eager form runs the norm and the
activation as separate ops, writes and reads the norm's output in between and keeps it for the
activation's backward.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_output_mask, check_same, check_scalar, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.instance_norm_act import (
    ACTIVATIONS,
    instance_norm_act_backward_reference,
    instance_norm_act_forward_reference,
    instance_norm_act_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.instance_norm_act"


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# Every implementation returns contiguous (NCHW) tensors, whatever the input layout. Where no
# compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(x, weight, bias, act, negative_slope, eps):
    check_instance_norm_act_args(x, weight, bias, act, negative_slope, eps)
    return tuple(t.contiguous() for t in instance_norm_act_forward_reference(x, weight, bias, act, negative_slope, eps))


def _reference_backward(grad_out, x, weight, bias, mean, rstd, act, negative_slope, output_mask):
    check_instance_norm_act_backward_args(grad_out, x, weight, bias, mean, rstd, act, negative_slope, output_mask)
    grads = instance_norm_act_backward_reference(grad_out, x, weight, bias, mean, rstd, act, negative_slope)
    return tuple(g.contiguous() if wanted else x.new_empty(0) for g, wanted in zip(grads, output_mask))


register_implementations("instance_norm_act", _reference_forward, (_TRITON, "instance_norm_act_triton"))
register_implementations("instance_norm_act_backward", _reference_backward,
                         (_TRITON, "instance_norm_act_backward_triton"))


@torch.library.register_fake("fastgen::instance_norm_act")
def _(x, weight, bias, act, negative_slope, eps):
    check_instance_norm_act_args(x, weight, bias, act, negative_slope, eps)
    n, c = x.shape[0], x.shape[1]
    stats = x.new_empty(n, c, dtype=_stat_dtype(x))
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)


@torch.library.register_fake("fastgen::instance_norm_act_backward")
def _(grad_out, x, weight, bias, mean, rstd, act, negative_slope, output_mask):
    check_instance_norm_act_backward_args(grad_out, x, weight, bias, mean, rstd, act, negative_slope, output_mask)
    c = x.shape[1]
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else x.new_empty(0)
    return grad_x, x.new_empty(c if output_mask[1] else 0), x.new_empty(c if output_mask[2] else 0)


def _setup_context(ctx, inputs, output):
    x, weight, bias, act, negative_slope, _ = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    # Not y nor xhat: the backward recomputes z (for act') and xhat from x and the statistics.
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.args = (act, negative_slope)


def _backward(ctx, grad, _grad_mean, _grad_rstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    output_mask = list(ctx.needs_input_grad[:3])
    if not any(output_mask):
        return (None,) * 6
    grads = _ops.instance_norm_act_backward(grad, x, weight, bias, mean, rstd, *ctx.args, output_mask)
    return tuple(g if wanted else None for g, wanted in zip(grads, output_mask)) + (None, None, None)


torch.library.register_autograd("fastgen::instance_norm_act", _backward, setup_context=_setup_context)
# Memory-bound, like gated_activation: bfloat16 in and out under autocast; the statistics and the
# sums are float32 whatever the input dtype.
register_autocast("instance_norm_act", torch.bfloat16)


def _check_channel_vector(name: str, t, channels: int) -> None:
    if t is None:
        return
    check_tensor(name, t, dims=1, layout=f"(C,) = ({channels},)")
    if t.shape[0] != channels:
        raise ValueError(f"{name} must be (C,) = ({channels},) for x with {channels} channels, got {tuple(t.shape)}")


def _check_common(x, weight, bias, act: str, negative_slope: float) -> None:
    check_tensor("x", x, dims=4, layout="(N, C, H, W)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x must have at least one pixel per plane (H, W >= 1), got shape {tuple(x.shape)}")
    _check_channel_vector("weight", weight, x.shape[1])
    _check_channel_vector("bias", bias, x.shape[1])
    check_same("x", x, weight=weight, bias=bias)
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    check_scalar("negative_slope", negative_slope)


def check_instance_norm_act_args(x, weight, bias, act: str, negative_slope: float, eps: float) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    _check_common(x, weight, bias, act, negative_slope)
    if not check_scalar("eps", eps) > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")


def check_instance_norm_act_backward_args(grad_out, x, weight, bias, mean, rstd, act, negative_slope,
                                          output_mask) -> None:
    _check_common(x, weight, bias, act, negative_slope)
    check_tensor("grad_out", grad_out, dims=4, layout=f"(N, C, H, W) = {tuple(x.shape)}")
    if grad_out.shape != x.shape:
        raise ValueError(f"grad_out must have x's shape {tuple(x.shape)}, got {tuple(grad_out.shape)}")
    check_same("x", x, grad_out=grad_out)
    expected = tuple(x.shape[:2])
    for name, t in (("mean", mean), ("rstd", rstd)):
        check_tensor(name, t, dims=2, layout=f"(N, C) = {expected}")
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} must be (N, C) = {expected}, got {tuple(t.shape)}")
        # The forward's statistics: float32, or float64 for float64 x (not cast by autocast).
        if t.dtype != _stat_dtype(x):
            raise ValueError(f"{name} must have dtype {_stat_dtype(x)} (the forward's statistics of a {x.dtype} x), "
                             f"got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move them to one device")
    check_output_mask("output_mask", output_mask, 3)


def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
                      act: str = "relu", negative_slope: float = 0.2, eps: float = 1e-5) -> torch.Tensor:
    """y = act((x - mean_hw(x)) / sqrt(var_hw(x) + eps) * weight[c] + bias[c]) per (n, c) plane.

    Args:
        x: (N, C, H, W); any layout (the output is contiguous NCHW).
        weight, bias: optional (C,) affine parameters (1 and 0 where None).
        act: ``"relu"``, ``"leaky_relu"`` (slope ``negative_slope`` below 0) or ``"none"``.
        negative_slope: the leaky ReLU's slope for negative inputs.
        eps: added to the biased variance, > 0.

    Returns:
        y (N, C, H, W), equal to ``F.instance_norm(x, weight=weight, bias=bias, eps=eps)`` followed
        by the activation (a plane of one pixel is allowed: y = act(bias)).
    """
    check_instance_norm_act_args(x, weight, bias, act, negative_slope, eps)
    if reference_forced():
        return instance_norm_act_reference(x, weight, bias, act=act, negative_slope=negative_slope, eps=eps)
    return _ops.instance_norm_act.default(x, weight, bias, act, float(negative_slope), float(eps))[0]


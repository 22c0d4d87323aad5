"""``fastgen.ops.minibatch_stddev``: ProGAN's minibatch standard deviation channel in one op.
Forward, per group: one read of its G samples that writes their copy into the output and sums the
per-(c, h, w) standard deviations, then the extra channel; backward, one pass that recomputes the
group statistics from x and writes grad_x (the copied part plus the stddev channel's share). The
eager form reshapes, subtracts the mean, squares, averages, takes the root, averages again, tiles
and concatenates, each op writing a tensor that autograd mostly keeps.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_same, check_scalar, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.minibatch_stddev import (
    minibatch_stddev_backward_reference,
    minibatch_stddev_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.minibatch_stddev"


# Every implementation returns a contiguous (NCHW) tensor, whatever the input layout. Where no
# compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(x, group_size, eps):
    check_minibatch_stddev_args(x, group_size, eps)
    return minibatch_stddev_reference(x, group_size, eps=eps).contiguous()


def _reference_backward(grad_out, x, group_size, eps):
    check_minibatch_stddev_backward_args(grad_out, x, group_size, eps)
    return minibatch_stddev_backward_reference(grad_out, x, group_size, eps).contiguous()


register_implementations("minibatch_stddev", _reference_forward, (_TRITON, "minibatch_stddev_triton"))
register_implementations("minibatch_stddev_backward", _reference_backward,
                         (_TRITON, "minibatch_stddev_backward_triton"))


@torch.library.register_fake("fastgen::minibatch_stddev")
def _(x, group_size, eps):
    check_minibatch_stddev_args(x, group_size, eps)
    n, c, h, w = x.shape
    return x.new_empty(n, c + 1, h, w)


@torch.library.register_fake("fastgen::minibatch_stddev_backward")
def _(grad_out, x, group_size, eps):
    check_minibatch_stddev_backward_args(grad_out, x, group_size, eps)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, group_size, eps = inputs
    # Nothing but x: the backward recomputes the group means and standard deviations from it.
    ctx.save_for_backward(x)
    ctx.args = (group_size, eps)


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None
    if torch.is_grad_enabled():  # create_graph (WGAN-GP's critic): the backward must itself be differentiable
        return minibatch_stddev_backward_reference(grad, x, *ctx.args), None, None
    return _ops.minibatch_stddev_backward(grad, x, *ctx.args), None, None


torch.library.register_autograd("fastgen::minibatch_stddev", _backward, setup_context=_setup_context)
# Memory-bound (a copy of x and a few flops per element): bfloat16 in and out under autocast; the
# statistics are float32 whatever the input dtype.
register_autocast("minibatch_stddev", torch.bfloat16)


def _check_common(x, group_size) -> None:
    check_tensor("x", x, dims=4, layout="(N, C, H, W)")
    if min(x.shape) == 0:
        raise ValueError(f"x must have at least one sample, channel and pixel (N, C, H, W >= 1), "
                         f"got shape {tuple(x.shape)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__} {group_size!r}")
    if not 1 <= group_size < 2**63:  # the schema's int is int64; any size above N means one group
        raise ValueError(f"group_size must be >= 1 and < 2**63 (an int64), got {group_size}")


def check_minibatch_stddev_args(x, group_size, eps) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    _check_common(x, group_size)
    if not check_scalar("eps", eps) > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")


def check_minibatch_stddev_backward_args(grad_out, x, group_size, eps) -> None:
    check_minibatch_stddev_args(x, group_size, eps)
    n, c, h, w = x.shape
    expected = (n, c + 1, h, w)
    check_tensor("grad_out", grad_out, dims=4, layout=f"(N, C + 1, H, W) = {expected}")
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"grad_out must be (N, C + 1, H, W) = {expected}, got {tuple(grad_out.shape)}")
    check_same("x", x, grad_out=grad_out)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, *, eps: float = 1e-8) -> torch.Tensor:
    """cat([x, s], 1), s[n] = mean_{c,h,w} sqrt(var_group(x)[c,h,w] + eps) of sample n's group.

    Args:
        x: (N, C, H, W); any layout (the output is contiguous NCHW).
        group_size: at most this many samples per group, >= 1. The group size G is the largest
            divisor of N that is <= group_size, so any N works; group m holds samples m, m + N/G,
            m + 2N/G, ... (the paper's reshape to (G, N/G, C, H, W)).
        eps: added to the population variance, > 0.

    Returns:
        (N, C + 1, H, W): x, then the group's average standard deviation as a constant channel
        (ProGAN's minibatch standard deviation, Karras et al. 2018).
    """
    check_minibatch_stddev_args(x, group_size, eps)
    if reference_forced():
        return minibatch_stddev_reference(x, group_size, eps=float(eps))
    return _ops.minibatch_stddev.default(x, group_size, float(eps))

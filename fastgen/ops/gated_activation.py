"""``fastgen.ops.gated_activation``: tanh(a + c_a) * sigmoid(b + c_b), fused, with class or spatial cond."""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_same, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.gated_activation import gated_activation_backward_reference, gated_activation_reference

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.gated_activation"


# Every implementation returns contiguous (NCHW) tensors, whatever the input layout. Where no
# compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(x, cond):
    check_gated_activation_args(x, cond)
    return gated_activation_reference(x, cond).contiguous()


def _reference_backward(grad_out, x, cond):
    check_gated_activation_backward_args(grad_out, x, cond)
    return tuple(t.contiguous() for t in gated_activation_backward_reference(grad_out, x, cond))


register_implementations("gated_activation", _reference_forward, (_TRITON, "gated_activation_triton"))
register_implementations("gated_activation_backward", _reference_backward,
                         (_TRITON, "gated_activation_backward_triton"))


@torch.library.register_fake("fastgen::gated_activation")
def _(x, cond):
    check_gated_activation_args(x, cond)
    return x.new_empty(x.shape[0], x.shape[1] // 2, x.shape[2], x.shape[3])


@torch.library.register_fake("fastgen::gated_activation_backward")
def _(grad_out, x, cond):
    check_gated_activation_backward_args(grad_out, x, cond)
    return x.new_empty(x.shape), x.new_empty(x.shape[0], x.shape[1])


def _setup_context(ctx, inputs, output):
    x, cond = inputs
    ctx.save_for_backward(x, cond)  # the backward recomputes the gates: nothing else is kept


def _backward(ctx, grad):
    x, cond = ctx.saved_tensors
    needs_x, needs_cond = ctx.needs_input_grad
    if not (needs_x or needs_cond):
        return None, None
    grad_x, grad_x_hw_sum = _ops.gated_activation_backward(grad, x, cond)
    grad_cond = None
    if needs_cond:
        grad_cond = grad_x_hw_sum if cond.dim() == 2 else grad_x
    return (grad_x if needs_x else None), grad_cond


torch.library.register_autograd("fastgen::gated_activation", _backward, setup_context=_setup_context)
register_autocast("gated_activation", torch.bfloat16)


def check_gated_activation_args(x: torch.Tensor, cond: torch.Tensor | None) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    check_tensor("x", x, dims=4, layout="(N, 2C, H, W)")
    if x.shape[1] % 2:
        raise ValueError(f"x must have an even channel count 2C (gate halves), got {x.shape[1]}")
    if cond is None:
        return
    check_tensor("cond", cond, dims=(2, 4), layout="(N, 2C) or (N, 2C, H, W)")
    if tuple(cond.shape) not in (tuple(x.shape[:2]), tuple(x.shape)):
        raise ValueError(
            f"cond must be (N, 2C) = {tuple(x.shape[:2])} or (N, 2C, H, W) = {tuple(x.shape)}, "
            f"got {tuple(cond.shape)}"
        )
    check_same("x", x, cond=cond)


def check_gated_activation_backward_args(grad_out, x, cond) -> None:
    check_gated_activation_args(x, cond)
    check_tensor("grad_out", grad_out, dims=4, layout="(N, C, H, W)")
    expected = (x.shape[0], x.shape[1] // 2, x.shape[2], x.shape[3])
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"grad_out must be (N, C, H, W) = {expected} for x of shape {tuple(x.shape)}, "
                         f"got {tuple(grad_out.shape)}")
    check_same("x", x, grad_out=grad_out)


def gated_activation(x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """y = tanh(x[:, :C] + cond[:, :C]) * sigmoid(x[:, C:] + cond[:, C:]).

    Args:
        x: (N, 2C, H, W) pre-activations.
        cond: optional (N, 2C) class/global conditioning (broadcast over H, W) or (N, 2C, H, W)
            spatial conditioning, added to x before the gates.

    Returns:
        (N, C, H, W).
    """
    check_gated_activation_args(x, cond)
    if reference_forced():
        return gated_activation_reference(x, cond)
    return _ops.gated_activation(x, cond)

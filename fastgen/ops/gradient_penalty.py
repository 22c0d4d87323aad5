"""``fastgen.ops.gradient_penalty``: the WGAN-GP penalty from the critic's input gradients, one
pass over the gradients each way (the per-sample norms are kept for the backward).

The penalty sits on top of a double backward: ``grad`` comes from ``torch.autograd.grad(...,
create_graph=True)``, and the training loss differentiates through it. Our backward is
differentiable too: when autograd records it (``create_graph``), it is computed with the
reference's differentiable ops instead of the fused kernel.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_float_dtype, check_scalar, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.gradient_penalty import (
    gradient_penalty_backward_reference,
    gradient_penalty_reference,
    sample_norms,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.gradient_penalty"


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(grad, weight):
    check_gradient_penalty_args(grad, weight)
    return gradient_penalty_reference(grad, weight), sample_norms(grad)


def _reference_backward(grad_out, grad, norms, weight):
    check_gradient_penalty_backward_args(grad_out, grad, norms, weight)
    return gradient_penalty_backward_reference(grad_out, grad, norms, weight).contiguous()


register_implementations("gradient_penalty", _reference_forward, (_TRITON, "gradient_penalty_triton"))
register_implementations("gradient_penalty_backward", _reference_backward,
                         (_TRITON, "gradient_penalty_backward_triton"))


@torch.library.register_fake("fastgen::gradient_penalty")
def _(grad, weight):
    check_gradient_penalty_args(grad, weight)
    return grad.new_empty(()), grad.new_empty(grad.shape[0])


@torch.library.register_fake("fastgen::gradient_penalty_backward")
def _(grad_out, grad, norms, weight):
    check_gradient_penalty_backward_args(grad_out, grad, norms, weight)
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    grad, weight = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(grad, output[1])
    ctx.weight = weight


def _backward(ctx, grad_out, _grad_norms):
    grad, norms = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the backward must itself be differentiable
        return gradient_penalty_backward_reference(grad_out, grad, sample_norms(grad), ctx.weight), None
    return _ops.gradient_penalty_backward(grad_out, grad, norms, ctx.weight), None


torch.library.register_autograd("fastgen::gradient_penalty", _backward, setup_context=_setup_context)
register_autocast("gradient_penalty", torch.float32)


def check_gradient_penalty_args(grad, weight) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    check_tensor("grad", grad, dims=tuple(range(1, 9)), layout="the critic's input gradient (N, ...)")
    if grad.shape[0] == 0:
        raise ValueError("grad must hold at least one sample (N >= 1)")
    check_scalar("weight", weight)


def check_gradient_penalty_backward_args(grad_out, grad, norms, weight) -> None:
    check_gradient_penalty_args(grad, weight)
    check_tensor("norms", norms, dims=1, layout=f"(N,) = ({grad.shape[0]},)")
    if norms.shape[0] != grad.shape[0]:
        raise ValueError(f"norms must be (N,) = ({grad.shape[0]},), got {tuple(norms.shape)}")
    if not isinstance(grad_out, torch.Tensor) or grad_out.numel() != 1:
        raise ValueError(f"grad_out must be a scalar tensor, got {grad_out!r:.80}")
    check_float_dtype("grad_out", grad_out)
    for name, t in (("norms", norms), ("grad_out", grad_out)):
        if t.device != grad.device:
            raise ValueError(f"{name} is on {t.device} but grad is on {grad.device}; move them to one device")


def gradient_penalty(grad: torch.Tensor, *, weight: float = 10.0) -> torch.Tensor:
    """weight * mean_n (||grad_n||_2 - 1)^2, the norm over all non-batch dimensions.

    Args:
        grad: the critic's gradient with respect to its inputs, (N, ...), usually from
            ``torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)`` (see
            ``fastgen.models.GAN.gradient_penalty``, which does all of it).
        weight: lambda, the penalty's weight (10 in the WGAN-GP paper).

    Returns:
        A scalar tensor; differentiable twice.
    """
    check_gradient_penalty_args(grad, weight)
    if reference_forced():
        return gradient_penalty_reference(grad, float(weight))
    return _ops.gradient_penalty(grad, float(weight))[0]

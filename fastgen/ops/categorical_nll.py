"""``fastgen.ops.categorical_nll``: softmax cross-entropy over levels, summed per image, fused.

The fused path never forms softmax or log-softmax copies of the logits: the forward keeps only
the per-pixel logsumexp (1/L of the logits' size) for the backward, which recomputes the softmax
on the fly and writes the gradient in one pass.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_copy_size, check_tensor, has_values, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen._core import accumulation_dtype, logits_kernel_layout
from fastgen.reference.categorical_nll import (
    categorical_logsumexp_reference,
    categorical_nll_backward_reference,
    categorical_nll_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.categorical_nll"


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(logits, target):
    check_categorical_nll_args(logits, target)
    return categorical_nll_reference(logits, target), categorical_logsumexp_reference(logits)


def _reference_backward(grad, logits, target, lse):
    check_categorical_nll_backward_args(grad, logits, target, lse)
    out = torch.empty_like(logits_kernel_layout(logits))
    return out.copy_(categorical_nll_backward_reference(grad, logits, target, lse))


register_implementations("categorical_nll", _reference_forward, (_TRITON, "categorical_nll_triton"))
register_implementations("categorical_nll_backward", _reference_backward, (_TRITON, "categorical_nll_backward_triton"))


@torch.library.register_fake("fastgen::categorical_nll")
def _(logits, target):
    check_categorical_nll_args(logits, target)
    n, _, c, h, w = logits.shape
    return logits.new_empty(n), logits.new_empty(n, c, h, w, dtype=accumulation_dtype(logits.dtype))


@torch.library.register_fake("fastgen::categorical_nll_backward")
def _(grad, logits, target, lse):
    check_categorical_nll_backward_args(grad, logits, target, lse)
    return torch.empty_like(logits_kernel_layout(logits))


def _setup_context(ctx, inputs, output):
    logits, target = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(logits, target, lse)


def _backward(ctx, grad_nll, _grad_lse):
    logits, target, lse = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None
    return _ops.categorical_nll_backward(grad_nll, logits, target, lse), None


torch.library.register_autograd("fastgen::categorical_nll", _backward, setup_context=_setup_context)
register_autocast("categorical_nll", torch.float32)


def check_categorical_nll_args(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    check_tensor("logits", logits, dims=5, layout="(N, L, C, H, W)")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor (N, C, H, W) of level indices, got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must be an int64 tensor of level indices, got dtype {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target must be (N, C, H, W) = {expected} for logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits is on {logits.device}; move them to one device")
    if logits.shape[1] < 1:
        raise ValueError("logits must have at least one level (L = logits.shape[1] >= 1)")
    check_copy_size("target", target)
    if has_values(target):
        low, high = torch.aminmax(target)
        if low < 0 or high >= logits.shape[1]:
            raise ValueError(f"target values must lie in [0, {logits.shape[1]}) (L = logits.shape[1]), "
                             f"got values in [{int(low)}, {int(high)}]")


def check_categorical_nll_backward_args(grad, logits, target, lse) -> None:
    check_categorical_nll_args(logits, target)
    check_tensor("grad", grad, dims=1, layout=f"(N,) = ({logits.shape[0]},)")
    if grad.shape[0] != logits.shape[0]:
        raise ValueError(f"grad must be (N,) = ({logits.shape[0]},), got {tuple(grad.shape)}")
    acc = accumulation_dtype(logits.dtype)
    check_tensor("lse", lse, dims=4, layout="(N, C, H, W) logsumexp over levels")
    if tuple(lse.shape) != tuple(target.shape) or lse.dtype != acc:
        raise ValueError(f"lse must be (N, C, H, W) = {tuple(target.shape)} in {acc}, "
                         f"got {tuple(lse.shape)} in {lse.dtype}")
    for name, t in (("grad", grad), ("lse", lse)):
        if t.device != logits.device:
            raise ValueError(f"{name} is on {t.device} but logits is on {logits.device}; move them to one device")


def categorical_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nll[n] = sum over (c, h, w) of logsumexp_l logits[n, :, c, h, w] - logits[n, target, c, h, w].

    Args:
        logits: (N, L, C, H, W) unnormalised log-probabilities over L levels per sub-pixel (any
            strides; a head's (N, C*L, H, W) output viewed as (N, C, L, H, W).transpose(1, 2) is
            read without a copy).
        target: (N, C, H, W) int64 level indices in [0, L).

    Returns:
        (N,) negative log-likelihood of each image in nats (float32 accumulation).
    """
    check_categorical_nll_args(logits, target)
    if reference_forced():
        return categorical_nll_reference(logits, target)
    return _ops.categorical_nll(logits, target)[0]

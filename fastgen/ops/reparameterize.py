"""``fastgen.ops.reparameterize``: a sample z = mu + exp(logvar / 2) * eps of a diagonal Gaussian,
differentiable in mu and logvar, in one pass (the eager form takes four ops and keeps their
intermediates for the backward)."""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_output_mask, check_same, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.reparameterize import reparameterize_backward_reference, reparameterize_reference

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.reparameterize"


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(mu, logvar, eps):
    check_reparameterize_args(mu, logvar, eps)
    return reparameterize_reference(mu, logvar, eps)


def _reference_backward(grad, logvar, eps, output_mask):
    check_reparameterize_backward_args(grad, logvar, eps, output_mask)
    grad_logvar, grad_eps = reparameterize_backward_reference(grad, logvar, eps)
    return (grad_logvar if output_mask[0] else grad.new_empty(0)), (grad_eps if output_mask[1] else grad.new_empty(0))


register_implementations("reparameterize", _reference_forward, (_TRITON, "reparameterize_triton"))
register_implementations("reparameterize_backward", _reference_backward, (_TRITON, "reparameterize_backward_triton"))


@torch.library.register_fake("fastgen::reparameterize")
def _(mu, logvar, eps):
    check_reparameterize_args(mu, logvar, eps)
    return torch.empty_like(mu, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastgen::reparameterize_backward")
def _(grad, logvar, eps, output_mask):
    check_reparameterize_backward_args(grad, logvar, eps, output_mask)

    def out(wanted):
        return torch.empty_like(grad, memory_format=torch.contiguous_format) if wanted else grad.new_empty(0)

    return out(output_mask[0]), out(output_mask[1])


def _setup_context(ctx, inputs, output):
    _, logvar, eps = inputs
    ctx.save_for_backward(logvar, eps)


def _backward(ctx, grad):
    logvar, eps = ctx.saved_tensors
    need_mu, need_logvar, need_eps = ctx.needs_input_grad
    grad_logvar = grad_eps = None
    if need_logvar or need_eps:
        grad_logvar, grad_eps = _ops.reparameterize_backward(grad, logvar, eps, [need_logvar, need_eps])
    return (grad if need_mu else None), (grad_logvar if need_logvar else None), (grad_eps if need_eps else None)


# The C++ extension registers a C++ autograd node for the Autograd key; without it, this one.
if not torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::reparameterize", "Autograd"):
    torch.library.register_autograd("fastgen::reparameterize", _backward, setup_context=_setup_context)
register_autocast("reparameterize", torch.float32)


def _check_like(ref_name: str, ref, **others) -> None:
    check_tensor(ref_name, ref, dims=tuple(range(1, 9)), layout="a tensor (N, ...)")
    for name, t in others.items():
        check_tensor(name, t, dims=ref.dim(), layout=f"{tuple(ref.shape)} like {ref_name}")
        if t.shape != ref.shape:
            raise ValueError(f"{name} must have {ref_name}'s shape {tuple(ref.shape)}, got {tuple(t.shape)}")
    check_same(ref_name, ref, **others)


def check_reparameterize_args(mu, logvar, eps) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    _check_like("mu", mu, logvar=logvar, eps=eps)


def check_reparameterize_backward_args(grad, logvar, eps, output_mask) -> None:
    _check_like("logvar", logvar, grad=grad, eps=eps)
    check_output_mask("output_mask", output_mask, 2)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps.

    Args:
        mu, logvar: the posterior's mean and log-variance, one shape (e.g. (N, latent_dim)).
        eps: standard normal noise of that shape; drawn (with ``generator``) when None.

    Returns:
        z, contiguous, of ``mu``'s shape.
    """
    check_tensor("mu", mu, dims=tuple(range(1, 9)), layout="a tensor (N, ...)")
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    check_reparameterize_args(mu, logvar, eps)
    if reference_forced():
        return reparameterize_reference(mu, logvar, eps)
    return _ops.reparameterize.default(mu, logvar, eps)

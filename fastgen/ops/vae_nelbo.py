"""``fastgen.ops.vae_nelbo``: the per-example negative ELBO of a VAE (reconstruction NLL plus beta
times the analytic KL to N(0, I)) in one pass over the decoder output, and its gradient in one
more; the eager form runs some ten element-wise ops and keeps their outputs for the backward.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import (check_copy_size, check_output_mask, check_same, check_scalar, check_tensor,
                                 has_values, register_autocast)
from fastgen.ops._dispatch import implementations, reference_forced, register_implementations
from fastgen.reference.vae_nelbo import (
    LIKELIHOODS,
    gaussian_kl_grad_reference,
    gaussian_kl_reference,
    parameter_planes,
    recon_nll_grad_reference,
    recon_nll_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.vae_nelbo"


def _per_example(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return grad.view(-1, *([1] * (like.dim() - 1)))


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(recon, x, mu, logvar, likelihood, beta, levels, keep_grad):
    check_vae_nelbo_args(recon, x, mu, logvar, likelihood, levels)
    check_scalar("beta", beta)
    nll, kl = recon_nll_reference(recon, x, likelihood, levels), gaussian_kl_reference(mu, logvar)
    recon_grad = recon_nll_grad_reference(recon, x, likelihood, levels) if keep_grad else recon.new_empty(0)
    return nll + beta * kl, nll, kl, recon_grad


def _reference_backward(grad, recon, x, mu, logvar, recon_grad, likelihood, beta, levels, output_mask):
    check_vae_nelbo_backward_args(grad, recon, x, mu, logvar, recon_grad, likelihood, beta, levels, output_mask)
    if recon_grad is None or not recon_grad.numel():
        recon_grad = recon_nll_grad_reference(recon, x, likelihood, levels)
    grad_mu, grad_logvar = gaussian_kl_grad_reference(mu, logvar)
    grads = (recon_grad * _per_example(grad, recon), grad_mu * beta * _per_example(grad, mu),
             grad_logvar * beta * _per_example(grad, logvar))
    return tuple(g.contiguous() if m else t.new_empty(0) for g, t, m in zip(grads, (recon, mu, logvar), output_mask))


register_implementations("vae_nelbo", _reference_forward, (_TRITON, "vae_nelbo_triton"))
register_implementations("vae_nelbo_backward", _reference_backward, (_TRITON, "vae_nelbo_backward_triton"))


@torch.library.register_fake("fastgen::vae_nelbo")
def _(recon, x, mu, logvar, likelihood, beta, levels, keep_grad):
    check_vae_nelbo_args(recon, x, mu, logvar, likelihood, levels)
    check_scalar("beta", beta)
    n = recon.shape[0]
    recon_grad = torch.empty_like(recon, memory_format=torch.contiguous_format) if keep_grad else recon.new_empty(0)
    return recon.new_empty(n), recon.new_empty(n), recon.new_empty(n), recon_grad


@torch.library.register_fake("fastgen::vae_nelbo_backward")
def _(grad, recon, x, mu, logvar, recon_grad, likelihood, beta, levels, output_mask):
    check_vae_nelbo_backward_args(grad, recon, x, mu, logvar, recon_grad, likelihood, beta, levels, output_mask)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) if m else t.new_empty(0)
                 for t, m in zip((recon, mu, logvar), output_mask))


def _setup_context(ctx, inputs, output):
    recon, x, mu, logvar, likelihood, beta, levels, _ = inputs
    ctx.mark_non_differentiable(*output[1:])
    ctx.save_for_backward(recon, x, mu, logvar, output[3])
    ctx.args = (likelihood, beta, levels)


def _backward(ctx, grad, _grad_nll, _grad_kl, _grad_recon_grad):
    recon, x, mu, logvar, recon_grad = ctx.saved_tensors
    need = ctx.needs_input_grad
    likelihood = ctx.args[0]
    # x is float data for bernoulli and gaussian: d/dx (softplus(r) - x r) = -r, and the
    # gaussian's d/dx = -d/dm (the same as the C++ node's).
    need_x_via_recon = need[1] and likelihood == "gaussian"
    mask = [need[0] or need_x_via_recon, need[2], need[3]]
    if not (any(mask) or need[1]):
        return (None,) * 8
    grad_recon = grad_mu = grad_logvar = grad_x = None
    if any(mask):
        grad_recon, grad_mu, grad_logvar = _ops.vae_nelbo_backward(grad, recon, x, mu, logvar, recon_grad, *ctx.args,
                                                                   mask)
    if need[1]:
        grad_x = -grad_recon[:, 0] if likelihood == "gaussian" else -_per_example(grad, recon) * recon
    return (grad_recon if need[0] else None), grad_x, (grad_mu if need[2] else None), \
        (grad_logvar if need[3] else None), None, None, None, None


# The C++ extension registers a C++ autograd node for the Autograd key; without it, this one.
if not torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::vae_nelbo", "Autograd"):
    torch.library.register_autograd("fastgen::vae_nelbo", _backward, setup_context=_setup_context)
# The C++ CPU kernel checks the range of x's values itself (see check_vae_nelbo_args).
_CPU_KERNEL_CHECKS_VALUES = implementations()["vae_nelbo"]["CPU"].startswith("C++")
register_autocast("vae_nelbo", torch.float32)


def check_vae_nelbo_args(recon, x, mu, logvar, likelihood: str, levels: int, *, values: bool = True) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs.
    ``values=False`` leaves the range of x's values to the C++ kernel, which checks it in its own
    pass (with the same message) for less than the separate reduction costs here."""
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if not isinstance(levels, int) or isinstance(levels, bool):
        raise TypeError(f"levels must be an int, got {type(levels).__name__} {levels!r}")
    if likelihood == "logistic" and levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    check_tensor("recon", recon, dims=tuple(range(2, 9)), layout="the decoder output (N, ...)")
    check_tensor("mu", mu, dims=tuple(range(2, 9)), layout="the posterior mean (N, latent...)")
    check_tensor("logvar", logvar, dims=mu.dim(), layout=f"{tuple(mu.shape)} like mu")
    if logvar.shape != mu.shape:
        raise ValueError(f"logvar must have mu's shape {tuple(mu.shape)}, got {tuple(logvar.shape)}")
    if mu.shape[0] != recon.shape[0]:
        raise ValueError(f"mu must have recon's batch size {recon.shape[0]}, got {tuple(mu.shape)}")
    check_same("recon", recon, mu=mu, logvar=logvar)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (N, ...), got {type(x).__name__}")
    planes = parameter_planes(likelihood, recon.shape[1])
    expected = tuple(recon.shape) if planes is None else (recon.shape[0], *recon.shape[2:])
    if tuple(x.shape) != expected:
        layout = ("recon's shape" if planes is None else
                  f"recon's shape without its {'level' if likelihood == 'categorical' else 'parameter'} dimension 1")
        raise ValueError(f"x must be {expected} ({layout}) for a {likelihood} recon of shape {tuple(recon.shape)}, "
                         f"got {tuple(x.shape)}")
    if likelihood == "categorical" and recon.shape[1] < 1:
        raise ValueError(f"recon must hold at least one level (recon.shape[1] >= 1), got {tuple(recon.shape)}")
    if planes is not None and recon.shape[1] != planes:
        raise ValueError(f"recon must be (N, 2, ...) = (mean, log-scale) for the {likelihood} likelihood, "
                         f"got {tuple(recon.shape)}")
    if x.device != recon.device:
        raise ValueError(f"x is on {x.device} but recon is on {recon.device}; move them to one device")
    if likelihood in ("categorical", "logistic"):
        high = recon.shape[1] if likelihood == "categorical" else levels
        if x.dtype != torch.int64:
            raise ValueError(f"x must be an int64 tensor of levels in [0, {high}) for the {likelihood} likelihood, "
                             f"got dtype {x.dtype}")
        bounds = (0, high - 1)
    else:
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor for the {likelihood} likelihood, got dtype {x.dtype}")
        check_tensor("x", x, dims=len(expected), layout=f"{expected}")
        check_same("recon", recon, x=x)
        bounds = (0, 1) if likelihood == "bernoulli" else None
    check_copy_size("x", x)
    if values and bounds and has_values(x):
        low, high = torch.aminmax(x)
        if not (low >= bounds[0] and high <= bounds[1]):  # NaN fails both
            what = "integers" if likelihood != "bernoulli" else "values"
            raise ValueError(f"x must hold {what} in [{bounds[0]}, {bounds[1]}] for the {likelihood} likelihood, "
                             f"got values in [{low.item():g}, {high.item():g}]")


def check_vae_nelbo_backward_args(grad, recon, x, mu, logvar, recon_grad, likelihood, beta, levels,
                                  output_mask) -> None:
    # x's values matter only where the gradient of recon is computed from them (none kept).
    kept = recon_grad is not None and recon_grad.numel() > 0
    from_x = not kept and isinstance(output_mask, (list, tuple)) and len(output_mask) == 3 and output_mask[0]
    check_vae_nelbo_args(recon, x, mu, logvar, likelihood, levels, values=from_x)
    check_scalar("beta", beta)
    check_tensor("grad", grad, dims=1, layout=f"(N,) = ({recon.shape[0]},)")
    if grad.shape[0] != recon.shape[0]:
        raise ValueError(f"grad must be (N,) = ({recon.shape[0]},), got {tuple(grad.shape)}")
    if recon_grad is not None and recon_grad.numel():
        check_tensor("recon_grad", recon_grad, dims=recon.dim(), layout=f"{tuple(recon.shape)} like recon")
        if recon_grad.shape != recon.shape:
            raise ValueError(f"recon_grad must have recon's shape {tuple(recon.shape)} (or be empty), "
                             f"got {tuple(recon_grad.shape)}")
    for name, t in (("grad", grad), ("recon_grad", recon_grad)):
        if t is not None and t.device != recon.device:
            raise ValueError(f"{name} is on {t.device} but recon is on {recon.device}; move them to one device")
    check_output_mask("output_mask", output_mask, 3)


def vae_nelbo(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *, likelihood: str,
              beta: float = 1.0, levels: int = 256, return_parts: bool = False):
    """nelbo[n] = -log p(x[n] | recon[n]) + beta * KL(N(mu[n], exp(logvar[n])) || N(0, I)), in nats.

    Args:
        recon: the decoder output: logits (N, *S) for ``"bernoulli"``, logits (N, L, *S) for
            ``"categorical"``, (N, 2, *S) = (mean, log-scale) for ``"gaussian"`` and ``"logistic"``.
        x: the data (N, *S): floats in [0, 1] (bernoulli), int64 levels (categorical, logistic) or
            floats (gaussian).
        mu, logvar: the posterior's mean and log-variance, (N, latent...).
        likelihood: ``"bernoulli"``, ``"categorical"``, ``"gaussian"`` or ``"logistic"`` (see
            ``fastgen.reference.vae_nelbo`` for the formulas; log-scales are clamped to [-7, 7]).
        beta: weight of the KL term (beta-VAE).
        levels: values per sub-pixel of the discretized logistic.
        return_parts: also return the reconstruction NLL and the KL (N,) (not differentiable).

    Returns:
        nelbo (N,), or (nelbo, recon_nll, kl) with ``return_parts``.
    """
    fused = not reference_forced()
    check_scalar("beta", beta)
    check_vae_nelbo_args(recon, x, mu, logvar, likelihood, levels,
                         values=not (fused and x.device.type == "cpu" and _CPU_KERNEL_CHECKS_VALUES))
    if not fused:
        nll, kl = recon_nll_reference(recon, x, likelihood, levels), gaussian_kl_reference(mu, logvar)
        out = (nll + beta * kl, nll.detach(), kl.detach())
    else:
        # The forward keeps d recon_nll / d recon only when a backward will read it.
        keep_grad = recon.requires_grad and torch.is_grad_enabled()
        out = _ops.vae_nelbo(recon, x, mu, logvar, likelihood, float(beta), int(levels), keep_grad)[:3]
    return out if return_parts else out[0]

"""Triton reparameterisation z = mu + exp(logvar / 2) * eps: one element-wise pass each way."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_output_mask, check_same, check_tensor, compute_dtype, require

_BLOCK = 1024


@triton.jit
def _reparameterize_fwd_kernel(mu_ptr, lv_ptr, eps_ptr, z_ptr, n, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    mu = tl.load(mu_ptr + offs, mask=ok, other=0.0).to(ACC)
    lv = tl.load(lv_ptr + offs, mask=ok, other=0.0).to(ACC)
    eps = tl.load(eps_ptr + offs, mask=ok, other=0.0).to(ACC)
    tl.store(z_ptr + offs, (mu + tl.exp(0.5 * lv) * eps).to(z_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _reparameterize_bwd_kernel(g_ptr, lv_ptr, eps_ptr, glv_ptr, geps_ptr, n, WANT_LV: tl.constexpr,
                               WANT_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    grad = tl.load(g_ptr + offs, mask=ok, other=0.0).to(ACC)
    std = tl.exp(0.5 * tl.load(lv_ptr + offs, mask=ok, other=0.0).to(ACC))
    if WANT_LV:
        eps = tl.load(eps_ptr + offs, mask=ok, other=0.0).to(ACC)
        # Autograd's order of products through the reference's forward (grad * eps * std * 0.5),
        # so that both overflow alike near float's max.
        tl.store(glv_ptr + offs, (grad * eps * std * 0.5).to(glv_ptr.dtype.element_ty), mask=ok)
    if WANT_EPS:
        tl.store(geps_ptr + offs, (grad * std).to(geps_ptr.dtype.element_ty), mask=ok)


def _check_like(op: str, ref_name: str, ref: torch.Tensor, *, incoming_grad: str | None = None, **others) -> None:
    check_tensor(op, ref_name, ref)
    for name, t in others.items():
        check_tensor(op, name, t, incoming_grad=name == incoming_grad)
        check_same(op, ref_name, ref, **{name: t})
        require(t.shape == ref.shape, op, f"{name} must have {ref_name}'s shape {tuple(ref.shape)}, got {tuple(t.shape)}")


def reparameterize_triton(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    _check_like("reparameterize_triton", "mu", mu, logvar=logvar, eps=eps)
    mu, logvar, eps = mu.contiguous(), logvar.contiguous(), eps.contiguous()
    z = torch.empty_like(mu)
    n = mu.numel()
    _reparameterize_fwd_kernel[(triton.cdiv(n, _BLOCK),)](mu, logvar, eps, z, n, ACC=compute_dtype(mu.dtype),
                                                          BLOCK=_BLOCK)
    return z


def reparameterize_backward_triton(grad: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
                                   output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    op = "reparameterize_backward_triton"
    _check_like(op, "logvar", logvar, incoming_grad="grad", grad=grad, eps=eps)
    output_mask = check_output_mask(op, output_mask, 2)
    grad, logvar, eps = grad.contiguous(), logvar.contiguous(), eps.contiguous()
    grad_logvar = torch.empty_like(logvar) if output_mask[0] else logvar.new_empty(0)
    grad_eps = torch.empty_like(eps) if output_mask[1] else eps.new_empty(0)
    n = grad.numel()
    _reparameterize_bwd_kernel[(triton.cdiv(n, _BLOCK),)](
        grad, logvar, eps, grad_logvar, grad_eps, n, WANT_LV=bool(output_mask[0]), WANT_EPS=bool(output_mask[1]),
        ACC=compute_dtype(grad.dtype), BLOCK=_BLOCK)
    return grad_logvar, grad_eps

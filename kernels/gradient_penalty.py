"""Triton WGAN-GP penalty: one program per sample computes ||g_n||; the backward writes
grad_out * weight * 2 / N * (||g_n|| - 1) / ||g_n|| * g over (sample, block) programs."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same, check_scalar, check_tensor, compute_dtype, require

_BLOCK = 1024


@triton.jit
def _norm_kernel(g_ptr, norm_ptr, D, ACC: tl.constexpr, BLOCK: tl.constexpr):
    row = g_ptr + tl.program_id(0).to(tl.int64) * D
    total = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        v = tl.load(row + offs, mask=offs < D, other=0.0).to(ACC)
        total += v * v
    tl.store(norm_ptr + tl.program_id(0), tl.sqrt(tl.sum(total, axis=0)).to(norm_ptr.dtype.element_ty))


@triton.jit
def _gradient_penalty_bwd_kernel(go_ptr, g_ptr, norm_ptr, out_ptr, D, weight, N, ACC: tl.constexpr,
                                 BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < D
    norm = tl.load(norm_ptr + n).to(ACC)
    # d penalty / d norm times v / norm, the reference's order of operations. Zero where the norm is
    # 0, NaN where it is NaN or inf.
    d_norm = tl.where(norm == 0, 0.0, tl.load(go_ptr).to(ACC) * weight / N * (2.0 * (norm - 1.0)))
    v = tl.load(g_ptr + n * D + offs, mask=ok, other=0.0).to(ACC)
    # The unit vector first: it stays finite where 1 / norm would overflow.
    tl.store(out_ptr + n * D + offs, (d_norm * (v / tl.where(norm == 0, 1.0, norm))).to(out_ptr.dtype.element_ty),
             mask=ok)


def _check_grad(op: str, grad: torch.Tensor, weight: float) -> None:
    check_tensor(op, "grad", grad)
    require(grad.dim() >= 1 and grad.shape[0] >= 1, op, f"grad must be (N, ...) with N >= 1, got {tuple(grad.shape)}")
    check_scalar(op, "weight", weight)


def gradient_penalty_triton(grad: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_grad("gradient_penalty_triton", grad, weight)
    grad = grad.contiguous()
    n = grad.shape[0]
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    norms = torch.empty(n, dtype=acc, device=grad.device)
    # Squares summed in float64, as the reference (fastgen.reference.gradient_penalty.sample_norms).
    _norm_kernel[(n,)](grad, norms, grad.numel() // n, ACC=tl.float64, BLOCK=_BLOCK)
    penalty = weight * ((norms - 1.0) ** 2).mean()
    return penalty.to(grad.dtype), norms.to(grad.dtype)


def gradient_penalty_backward_triton(grad_out: torch.Tensor, grad: torch.Tensor, norms: torch.Tensor,
                                     weight: float) -> torch.Tensor:
    op = "gradient_penalty_backward_triton"
    _check_grad(op, grad, weight)
    check_tensor(op, "norms", norms, dims=1)
    require(norms.shape[0] == grad.shape[0], op, f"norms must be (N,) = ({grad.shape[0]},), got {tuple(norms.shape)}")
    check_tensor(op, "grad_out", grad_out, incoming_grad=True)
    require(grad_out.numel() == 1, op, f"grad_out must be a scalar, got shape {tuple(grad_out.shape)}")
    check_same(op, "grad", grad, dtype=False, norms=norms, grad_out=grad_out)
    grad = grad.contiguous()
    n = grad.shape[0]
    d = grad.numel() // n
    out = torch.empty_like(grad)
    _gradient_penalty_bwd_kernel[(n, triton.cdiv(d, _BLOCK))](
        grad_out.contiguous(), grad, norms.contiguous(), out, d, float(weight), float(n), ACC=compute_dtype(grad.dtype),
        BLOCK=_BLOCK)
    return out

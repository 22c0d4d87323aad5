"""Triton WGAN-GP penalty: one program per sample computes ||g_n||; the backward writes
grad_out * weight * 2 / N * (||g_n|| - 1) / ||g_n|| * g over (sample, block) programs."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import compute_dtype

_BLOCK = 1024


@triton.jit
def _norm_kernel(g_ptr, norm_ptr, D, ACC: tl.constexpr, BLOCK: tl.constexpr):
    row = g_ptr + tl.program_id(0).to(tl.int64) * D
    total = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        v = tl.load(row + offs, mask=offs < D, other=0.0).to(ACC)
        total += v * v
    tl.store(norm_ptr + tl.program_id(0), tl.sqrt(tl.sum(total, axis=0)))


@triton.jit
def _gradient_penalty_bwd_kernel(go_ptr, g_ptr, norm_ptr, out_ptr, D, scale, ACC: tl.constexpr,
                                 BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < D
    norm = tl.load(norm_ptr + n).to(ACC)
    factor = tl.where(norm > 0, tl.load(go_ptr).to(ACC) * scale * (norm - 1.0) / norm, 0.0)
    v = tl.load(g_ptr + n * D + offs, mask=ok, other=0.0).to(ACC)
    tl.store(out_ptr + n * D + offs, (factor * v).to(out_ptr.dtype.element_ty), mask=ok)


def gradient_penalty_triton(grad: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    grad = grad.contiguous()
    n = grad.shape[0]
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    norms = torch.empty(n, dtype=acc, device=grad.device)
    _norm_kernel[(n,)](grad, norms, grad.numel() // n, ACC=compute_dtype(grad.dtype), BLOCK=_BLOCK)
    penalty = weight * ((norms - 1.0) ** 2).mean()
    return penalty.to(grad.dtype), norms.to(grad.dtype)


def gradient_penalty_backward_triton(grad_out: torch.Tensor, grad: torch.Tensor, norms: torch.Tensor,
                                     weight: float) -> torch.Tensor:
    grad = grad.contiguous()
    n = grad.shape[0]
    d = grad.numel() // n
    out = torch.empty_like(grad)
    _gradient_penalty_bwd_kernel[(n, triton.cdiv(d, _BLOCK))](
        grad_out.contiguous(), grad, norms.contiguous(), out, d, 2.0 * weight / n, ACC=compute_dtype(grad.dtype),
        BLOCK=_BLOCK)
    return out

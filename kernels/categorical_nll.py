"""Triton categorical NLL (softmax cross-entropy over levels), forward and backward.

One program per (image n, channel c, block of pixels). The logits are read through their
strides ((N, L, C, H, W) with contiguous pixels), so a model head's (N, C*L, H, W) output needs
no copy. The forward loops over the L levels twice (max, then sum of exponentials), writes the
per-pixel logsumexp and one partial sum per program; the partials are added per image on the
host side in a fixed order (deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastgen._core import accumulation_dtype, logits_kernel_layout

from ._common import check_same, check_shape, check_tensor, compute_dtype, require

_BLOCK = 128


@triton.jit
def _nll_fwd_kernel(z_ptr, t_ptr, lse_ptr, part_ptr, L, C, HW, s_n, s_l, s_c, ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HW
    base = z_ptr + (nc // C) * s_n + (nc % C) * s_c + offs
    m = tl.load(base, mask=ok, other=0.0).to(ACC)
    for l in range(1, L):
        m = tl.maximum(m, tl.load(base + l * s_l, mask=ok, other=0.0).to(ACC))
    m = tl.where(m - m == 0.0, m, 0.0)  # an infinite maximum: shift by 0, as torch.logsumexp
    s = tl.zeros([BLOCK], dtype=ACC)
    for l in range(0, L):
        s += tl.exp(tl.load(base + l * s_l, mask=ok, other=0.0).to(ACC) - m)
    lse = m + tl.log(s)
    t = tl.load(t_ptr + nc * HW + offs, mask=ok, other=0)
    z_t = tl.load(base + t * s_l, mask=ok, other=0.0).to(ACC)
    tl.store(lse_ptr + nc * HW + offs, lse, mask=ok)
    tl.store(part_ptr + nc * tl.num_programs(1) + tl.program_id(1), tl.sum(tl.where(ok, lse - z_t, 0.0), axis=0))


@triton.jit
def _nll_bwd_kernel(g_ptr, z_ptr, t_ptr, lse_ptr, gz_ptr, L, C, HW, s_n, s_l, s_c, ACC: tl.constexpr,
                    BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HW
    off = (nc // C) * s_n + (nc % C) * s_c + offs
    g = tl.load(g_ptr + nc // C).to(ACC)
    lse = tl.load(lse_ptr + nc * HW + offs, mask=ok, other=0.0)
    t = tl.load(t_ptr + nc * HW + offs, mask=ok, other=0)
    for l in range(0, L):
        z = tl.load(z_ptr + off + l * s_l, mask=ok, other=0.0).to(ACC)
        grad = (tl.exp(z - lse) - tl.where(t == l, 1.0, 0.0)) * g  # the reference's order
        tl.store(gz_ptr + off + l * s_l, grad.to(gz_ptr.dtype.element_ty), mask=ok)


def _layout(logits: torch.Tensor) -> tuple[int, ...]:
    n, levels, c, h, w = logits.shape
    return levels, c, h * w, logits.stride(0), logits.stride(1), logits.stride(2)


def _check(op: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    check_tensor(op, "logits", logits, dims=5)
    check_tensor(op, "target", target, dims=4, dtype="index")
    check_same(op, "logits", logits, dtype=False, target=target)
    check_shape(op, "target", target, (logits.shape[0], *logits.shape[2:]), "(N, C, H, W)")
    require(logits.shape[1] >= 1, op, "logits need at least one level (L = logits.shape[1] >= 1)")


def _check_target_range(op: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    if target.numel():  # the forward gathers logits at the targets: out-of-range ones would read out of bounds
        low, high = torch.aminmax(target)
        require(bool(low >= 0) and bool(high < logits.shape[1]), op,
                f"target values must lie in [0, {logits.shape[1]}), got values in [{int(low)}, {int(high)}]")


def categorical_nll_triton(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    op = "categorical_nll_triton"
    _check(op, logits, target)
    _check_target_range(op, logits, target)
    logits, target = logits_kernel_layout(logits), target.contiguous()
    n, _, c, h, w = logits.shape
    acc = accumulation_dtype(logits.dtype)
    lse = torch.empty(n, c, h, w, dtype=acc, device=logits.device)
    blocks = triton.cdiv(h * w, _BLOCK)
    partial = torch.empty(n * c, blocks, dtype=acc, device=logits.device)
    _nll_fwd_kernel[(n * c, blocks)](logits, target, lse, partial, *_layout(logits), ACC=compute_dtype(logits.dtype),
                                     BLOCK=_BLOCK)
    return partial.view(n, -1).sum(1).to(logits.dtype), lse


def categorical_nll_backward_triton(grad: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                                    lse: torch.Tensor) -> torch.Tensor:
    op = "categorical_nll_backward_triton"
    _check(op, logits, target)
    check_tensor(op, "grad", grad, dims=1, incoming_grad=True)
    check_tensor(op, "lse", lse, dims=4)
    check_same(op, "logits", logits, dtype=False, grad=grad, lse=lse)
    check_shape(op, "grad", grad, (logits.shape[0],), "(N,)")
    check_shape(op, "lse", lse, tuple(target.shape), "(N, C, H, W)")
    require(lse.dtype == accumulation_dtype(logits.dtype), op,
            f"lse must be in {accumulation_dtype(logits.dtype)}, got {lse.dtype}")
    _check_target_range(op, logits, target)  # as the CPU kernel does
    logits, target, lse = logits_kernel_layout(logits), target.contiguous(), lse.contiguous()
    n, _, c, h, w = logits.shape
    grad_logits = torch.empty_like(logits)
    _nll_bwd_kernel[(n * c, triton.cdiv(h * w, _BLOCK))](
        grad.contiguous(), logits, target, lse, grad_logits, *_layout(logits), ACC=compute_dtype(logits.dtype),
        BLOCK=_BLOCK,
    )
    return grad_logits

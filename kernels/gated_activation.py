"""Triton gated activation: y = tanh(a + ca) * sigmoid(b + cb), forward and backward.

Forward: one program per (channel plane, block of pixels). Backward: one program per channel
plane, looping over its pixels, so the sum of grad over H and W (the gradient of an (N, 2C)
cond) is reduced in registers without atomics and is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same, check_shape, check_tensor, compute_dtype, require, tanh

_NO_COND, _GLOBAL_COND, _SPATIAL_COND = 0, 1, 2


@triton.jit
def _sigmoid(v):
    e = tl.exp(-tl.abs(v))  # in (0, 1]: no overflow for any finite v
    return tl.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _gate_inputs(x_ptr, c_ptr, ia, ib, HW, offs, ok, COND: tl.constexpr, ACC: tl.constexpr):
    u = tl.load(x_ptr + ia * HW + offs, mask=ok, other=0.0).to(ACC)
    v = tl.load(x_ptr + ib * HW + offs, mask=ok, other=0.0).to(ACC)
    if COND == 1:
        u += tl.load(c_ptr + ia).to(ACC)
        v += tl.load(c_ptr + ib).to(ACC)
    if COND == 2:
        u += tl.load(c_ptr + ia * HW + offs, mask=ok, other=0.0).to(ACC)
        v += tl.load(c_ptr + ib * HW + offs, mask=ok, other=0.0).to(ACC)
    return u, v


@triton.jit
def _gated_fwd_kernel(x_ptr, c_ptr, y_ptr, C, HW, COND: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)  # n * C + c
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HW
    ia = (plane // C) * 2 * C + plane % C
    u, v = _gate_inputs(x_ptr, c_ptr, ia, ia + C, HW, offs, ok, COND, ACC)
    y = tanh(u) * _sigmoid(v)
    tl.store(y_ptr + plane * HW + offs, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gated_bwd_kernel(g_ptr, x_ptr, c_ptr, gx_ptr, gsum_ptr, C, HW, COND: tl.constexpr, ACC: tl.constexpr,
                      BLOCK: tl.constexpr):
    # With t = tanh(u), s = sigmoid(v):  d/du = g s (1 - t^2),  d/dv = g t s (1 - s).
    plane = tl.program_id(0).to(tl.int64)
    ia = (plane // C) * 2 * C + plane % C
    ib = ia + C
    sum_a = tl.zeros((BLOCK,), dtype=ACC)
    sum_b = tl.zeros((BLOCK,), dtype=ACC)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < HW
        u, v = _gate_inputs(x_ptr, c_ptr, ia, ib, HW, offs, ok, COND, ACC)
        t = tanh(u)
        s = _sigmoid(v)
        g = tl.load(g_ptr + plane * HW + offs, mask=ok, other=0.0).to(ACC)
        da = g * s * (1.0 - t * t)
        db = g * t * s * (1.0 - s)
        tl.store(gx_ptr + ia * HW + offs, da.to(gx_ptr.dtype.element_ty), mask=ok)
        tl.store(gx_ptr + ib * HW + offs, db.to(gx_ptr.dtype.element_ty), mask=ok)
        sum_a += tl.where(ok, da, 0.0)
        sum_b += tl.where(ok, db, 0.0)
    tl.store(gsum_ptr + ia, tl.sum(sum_a, axis=0).to(gsum_ptr.dtype.element_ty))
    tl.store(gsum_ptr + ib, tl.sum(sum_b, axis=0).to(gsum_ptr.dtype.element_ty))


def _cond_kind(cond: torch.Tensor | None) -> int:
    if cond is None:
        return _NO_COND
    return _GLOBAL_COND if cond.dim() == 2 else _SPATIAL_COND


def _block(hw: int) -> int:
    return min(1024, triton.next_power_of_2(max(hw, 16)))


def _check(op: str, x: torch.Tensor, cond: torch.Tensor | None) -> None:
    check_tensor(op, "x", x, dims=4)
    require(x.shape[1] % 2 == 0, op, f"x must be (N, 2C, H, W) with an even channel count, got {tuple(x.shape)}")
    if cond is not None:
        check_tensor(op, "cond", cond, dims=(2, 4))
        check_same(op, "x", x, cond=cond)
        require(tuple(cond.shape) in (tuple(x.shape[:2]), tuple(x.shape)), op,
                f"cond must be (N, 2C) or (N, 2C, H, W) = {tuple(x.shape)}, got {tuple(cond.shape)}")


def gated_activation_triton(x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    _check("gated_activation_triton", x, cond)
    x = x.contiguous()
    cond = cond.contiguous() if cond is not None else None
    n, c2, h, w = x.shape
    c, hw = c2 // 2, h * w
    y = torch.empty(n, c, h, w, device=x.device, dtype=x.dtype)
    block = _block(hw)
    _gated_fwd_kernel[(n * c, triton.cdiv(hw, block))](
        x, cond if cond is not None else x, y, c, hw, COND=_cond_kind(cond), ACC=compute_dtype(x.dtype), BLOCK=block
    )
    return y


def gated_activation_backward_triton(grad_out: torch.Tensor, x: torch.Tensor,
                                     cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    op = "gated_activation_backward_triton"
    _check(op, x, cond)
    check_tensor(op, "grad_out", grad_out, dims=4, incoming_grad=True)
    check_same(op, "x", x, grad_out=grad_out)
    check_shape(op, "grad_out", grad_out, (x.shape[0], x.shape[1] // 2, *x.shape[2:]), "(N, C, H, W)")
    x, grad_out = x.contiguous(), grad_out.contiguous()
    cond = cond.contiguous() if cond is not None else None
    n, c2, h, w = x.shape
    grad_x = torch.empty_like(x)
    grad_sum = torch.empty(n, c2, device=x.device, dtype=x.dtype)
    _gated_bwd_kernel[(n * (c2 // 2),)](
        grad_out, x, cond if cond is not None else x, grad_x, grad_sum, c2 // 2, h * w, COND=_cond_kind(cond),
        ACC=compute_dtype(x.dtype), BLOCK=_block(h * w),
    )
    return grad_x, grad_sum

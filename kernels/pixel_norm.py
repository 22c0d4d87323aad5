"""Triton pixel norm (ProGAN), optionally after a leaky ReLU, forward and backward.

x is read as (N, C, S), S the product of the spatial sizes. One program per tile of one sample
and BLOCK_S consecutive positions (contiguous in memory, the fast axis of the tile), looping over
the channels in BLOCK_C rows. Forward: one loop sums a^2 per position, one writes y = a * rstd
(the second read of the tile mostly hits L2). Backward: one loop sums g * a per position, one
writes grad_x. With S = 1 ((N, C) input) a tile is one position, its channels contiguous.

The scalars eps and negative_slope: a Python float argument is a float32 in a Triton kernel, so
for float64 input (gradcheck) they are handed over in a small float64 tensor instead.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same, check_scalar, check_tensor, compute_dtype, require, scalar_arg


@triton.jit
def _activate(x, slope, ACT: tl.constexpr):
    # leaky_relu as torch has it: x > 0 ? x : x * slope (NaN stays NaN).
    if ACT:
        x = tl.where(x > 0, x, x * slope)
    return x


@triton.jit
def _pixel_norm_fwd_kernel(x_ptr, s_ptr, y_ptr, rstd_ptr, C, S, tiles, eps, slope, ACT: tl.constexpr,
                           SCALARS_IN_MEMORY: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                           BLOCK_S: tl.constexpr):
    # a = act(x);  rstd = 1 / sqrt(mean_c(a^2) + eps);  y = a * rstd.
    pid = tl.program_id(0).to(tl.int64)
    n = pid // tiles
    offs_s = (pid % tiles) * BLOCK_S + tl.arange(0, BLOCK_S)
    ok_s = offs_s < S
    base = n * C * S
    eps = scalar_arg(eps, s_ptr, 0, SCALARS_IN_MEMORY)
    slope = scalar_arg(slope, s_ptr, 1, SCALARS_IN_MEMORY)
    total = tl.zeros((BLOCK_S,), dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        ok = (offs_c < C)[:, None] & ok_s[None, :]
        offs = base + offs_c.to(tl.int64)[:, None] * S + offs_s[None, :]
        a = _activate(tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC), slope, ACT)
        total += tl.sum(a * a, axis=0)
    rstd = 1.0 / tl.sqrt(total / C + eps)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        ok = (offs_c < C)[:, None] & ok_s[None, :]
        offs = base + offs_c.to(tl.int64)[:, None] * S + offs_s[None, :]
        a = _activate(tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC), slope, ACT)
        tl.store(y_ptr + offs, (a * rstd[None, :]).to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(rstd_ptr + n * S + offs_s, rstd.to(rstd_ptr.dtype.element_ty), mask=ok_s)


@triton.jit
def _pixel_norm_bwd_kernel(g_ptr, x_ptr, rstd_ptr, s_ptr, gx_ptr, C, S, tiles, slope, ACT: tl.constexpr,
                           SCALARS_IN_MEMORY: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                           BLOCK_S: tl.constexpr):
    # With r = rstd and y = a * r: d r / d a_k = -r^3 a_k / C, so
    #   grad_a_k = sum_c g_c d y_c / d a_k = r g_k - a_k r^3 sum_c(g_c a_c) / C = r (g_k - y_k mean_c(g y)),
    #   grad_x   = grad_a * (1 if x > 0 else slope)   (grad_a without the activation).
    # One loop sums g * a over the channels, one writes grad_x = act'(x) * r * (g - a * k) with
    # k = r^2 * sum_c(g a) / C.
    pid = tl.program_id(0).to(tl.int64)
    n = pid // tiles
    offs_s = (pid % tiles) * BLOCK_S + tl.arange(0, BLOCK_S)
    ok_s = offs_s < S
    base = n * C * S
    slope = scalar_arg(slope, s_ptr, 1, SCALARS_IN_MEMORY)
    r = tl.load(rstd_ptr + n * S + offs_s, mask=ok_s, other=0.0).to(ACC)
    dot = tl.zeros((BLOCK_S,), dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        ok = (offs_c < C)[:, None] & ok_s[None, :]
        offs = base + offs_c.to(tl.int64)[:, None] * S + offs_s[None, :]
        a = _activate(tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC), slope, ACT)
        g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(ACC)
        dot += tl.sum(g * a, axis=0)
    k = r * r * dot / C
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        ok = (offs_c < C)[:, None] & ok_s[None, :]
        offs = base + offs_c.to(tl.int64)[:, None] * S + offs_s[None, :]
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(ACC)
        grad = r[None, :] * (g - _activate(x, slope, ACT) * k[None, :])
        if ACT:
            grad = tl.where(x > 0, grad, grad * slope)
        tl.store(gx_ptr + offs, grad.to(gx_ptr.dtype.element_ty), mask=ok)


def _blocks(c: int, s: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_S): up to 64 contiguous positions, about 4096 elements per tile."""
    block_s = min(64, triton.next_power_of_2(max(s, 1)))
    block_c = max(1, min(triton.next_power_of_2(max(c, 1)), 4096 // block_s))
    return block_c, block_s


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(op: str, x, negative_slope) -> None:
    check_tensor(op, "x", x)
    require(x.dim() >= 2, op, f"x must be (N, C) or (N, C, *spatial), got shape {tuple(x.shape)}")
    require(x.shape[1] >= 1, op, f"x must have at least one channel (C >= 1), got shape {tuple(x.shape)}")
    if negative_slope is not None:
        check_scalar(op, "negative_slope", negative_slope)


def _scalar_args(x: torch.Tensor, eps: float, negative_slope: float | None):
    """(eps, slope, scalars tensor, SCALARS_IN_MEMORY) for a launch: float64 scalars in memory for
    float64 x, plain (float32) arguments otherwise."""
    slope = 0.0 if negative_slope is None else float(negative_slope)
    if x.dtype == torch.float64:
        return 0.0, 0.0, torch.tensor([eps, slope], dtype=torch.float64, device=x.device), True
    return float(eps), slope, x, False


def _layout(x: torch.Tensor) -> tuple[int, int, int]:
    n, c = x.shape[0], x.shape[1]
    return n, c, x.numel() // max(n * c, 1)


def pixel_norm_triton(x: torch.Tensor, negative_slope: float | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    op = "pixel_norm_triton"
    _check(op, x, negative_slope)
    require(check_scalar(op, "eps", eps) > 0, op, f"eps must be positive, got {eps!r}")
    x = x.contiguous()
    n, c, s = _layout(x)
    y = torch.empty_like(x)
    rstd = torch.empty((n, *x.shape[2:]), dtype=_stat_dtype(x), device=x.device)
    if x.numel() == 0:
        return y, rstd
    block_c, block_s = _blocks(c, s)
    tiles = triton.cdiv(s, block_s)
    eps_arg, slope_arg, scalars, in_memory = _scalar_args(x, eps, negative_slope)
    _pixel_norm_fwd_kernel[(n * tiles,)](
        x, scalars, y, rstd, c, s, tiles, eps_arg, slope_arg, ACT=negative_slope is not None,
        SCALARS_IN_MEMORY=in_memory, ACC=compute_dtype(x.dtype), BLOCK_C=block_c, BLOCK_S=block_s)
    return y, rstd


def pixel_norm_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, rstd: torch.Tensor,
                               negative_slope: float | None) -> torch.Tensor:
    op = "pixel_norm_backward_triton"
    _check(op, x, negative_slope)
    check_tensor(op, "grad_out", grad_out, incoming_grad=True)
    check_same(op, "x", x, grad_out=grad_out)
    require(grad_out.shape == x.shape, op,
            f"grad_out must have x's shape {tuple(x.shape)}, got {tuple(grad_out.shape)}")
    check_tensor(op, "rstd", rstd)
    expected = (x.shape[0], *x.shape[2:])
    require(tuple(rstd.shape) == tuple(expected), op,
            f"rstd must be (N, *spatial) = {tuple(expected)}, got {tuple(rstd.shape)}")
    require(rstd.dtype == _stat_dtype(x), op, f"rstd must have dtype {_stat_dtype(x)} (the forward's statistics "
                                              f"of a {x.dtype} x), got {rstd.dtype}")
    check_same(op, "x", x, dtype=False, rstd=rstd)
    x, grad_out, rstd = x.contiguous(), grad_out.contiguous(), rstd.contiguous()
    n, c, s = _layout(x)
    grad_x = torch.empty_like(x)
    if x.numel() == 0:
        return grad_x
    block_c, block_s = _blocks(c, s)
    tiles = triton.cdiv(s, block_s)
    _, slope_arg, scalars, in_memory = _scalar_args(x, 1.0, negative_slope)
    _pixel_norm_bwd_kernel[(n * tiles,)](
        grad_out, x, rstd, scalars, grad_x, c, s, tiles, slope_arg, ACT=negative_slope is not None,
        SCALARS_IN_MEMORY=in_memory, ACC=compute_dtype(x.dtype), BLOCK_C=block_c, BLOCK_S=block_s)
    return grad_x

"""Triton minibatch standard deviation (ProGAN), forward and backward.

G is the largest divisor of N <= group_size, M = N / G; group m holds samples m, m + M, ... (x
viewed as (G, M, C, H, W)); CHW = C * H * W.

Forward: one program per group, looping over its CHW elements in blocks: per block, one loop over
the G members sums x and writes its copy into y, one sums the squared deviations from the mean
(the reference's two-pass formula; the second read mostly hits L2), and the block's std values
are accumulated; at the end the program writes s[m] = sum(std) / CHW into the extra channel of
its G members. One launch writes all of y.

Backward: one program per (group, block of CHW elements): it sums the stddev channel's gradient
over its group (gs[m], G * H * W values, recomputed by every program of the group: no second
launch), recomputes mean and std over the members and writes
    grad_x[g, m, chw] = grad_y[g, m, chw] + gs[m] / (CHW * G) * (x[g, m, chw] - mean) / std
(d std / d x[g] = (x[g] - mean) / (G * std): the mean's own derivative sums to zero over the group).

eps: a Python float argument is a float32 in a Triton kernel, so for float64 input (gradcheck) it
is handed over in a one-element float64 tensor instead.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_int, check_same, check_scalar, check_tensor, compute_dtype, require


@triton.jit
def _eps(eps, s_ptr, IN_MEMORY: tl.constexpr):
    if IN_MEMORY:
        eps = tl.load(s_ptr)
    return eps


@triton.jit
def _minibatch_stddev_fwd_kernel(x_ptr, s_ptr, y_ptr, M, G, CHW, HW, eps, SCALARS_IN_MEMORY: tl.constexpr,
                                 ACC: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    eps = _eps(eps, s_ptr, SCALARS_IN_MEMORY)
    std_sum = tl.zeros((BLOCK,), dtype=ACC)
    for start in range(0, CHW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < CHW
        total = tl.zeros((BLOCK,), dtype=ACC)
        for g in range(0, G):
            sample = g * M + m  # int64: member g of group m
            v = tl.load(x_ptr + sample * CHW + offs, mask=ok, other=0.0)
            tl.store(y_ptr + sample * (CHW + HW) + offs, v, mask=ok)
            total += v.to(ACC)
        mean = total / G
        m2 = tl.zeros((BLOCK,), dtype=ACC)
        for g in range(0, G):
            v = tl.load(x_ptr + (g * M + m) * CHW + offs, mask=ok, other=0.0).to(ACC)
            d = tl.where(ok, v - mean, 0.0)
            m2 += d * d
        std_sum += tl.where(ok, tl.sqrt(m2 / G + eps), 0.0)
    s = tl.sum(std_sum, axis=0) / CHW
    fill = (tl.zeros((BLOCK,), dtype=ACC) + s).to(y_ptr.dtype.element_ty)
    for g in range(0, G):
        channel = y_ptr + (g * M + m) * (CHW + HW) + CHW
        for start in range(0, HW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            tl.store(channel + offs, fill, mask=offs < HW)


@triton.jit
def _minibatch_stddev_bwd_kernel(g_ptr, x_ptr, s_ptr, gx_ptr, M, G, CHW, HW, eps, SCALARS_IN_MEMORY: tl.constexpr,
                                 ACC: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < CHW
    eps = _eps(eps, s_ptr, SCALARS_IN_MEMORY)
    # gs[m]: the stddev channel's gradient summed over the group's members and pixels.
    channel_sum = tl.zeros((BLOCK,), dtype=ACC)
    for g in range(0, G):
        channel = g_ptr + (g * M + m) * (CHW + HW) + CHW
        for start in range(0, HW, BLOCK):
            hw = start + tl.arange(0, BLOCK)
            channel_sum += tl.load(channel + hw, mask=hw < HW, other=0.0).to(ACC)
    coef = tl.sum(channel_sum, axis=0) / CHW / G
    total = tl.zeros((BLOCK,), dtype=ACC)
    for g in range(0, G):
        total += tl.load(x_ptr + (g * M + m) * CHW + offs, mask=ok, other=0.0).to(ACC)
    mean = total / G
    m2 = tl.zeros((BLOCK,), dtype=ACC)
    for g in range(0, G):
        d = tl.load(x_ptr + (g * M + m) * CHW + offs, mask=ok, other=0.0).to(ACC) - mean
        m2 += d * d
    factor = coef / tl.sqrt(m2 / G + eps)
    for g in range(0, G):
        sample = g * M + m
        d = tl.load(x_ptr + sample * CHW + offs, mask=ok, other=0.0).to(ACC) - mean
        gy = tl.load(g_ptr + sample * (CHW + HW) + offs, mask=ok, other=0.0).to(ACC)
        tl.store(gx_ptr + sample * CHW + offs, (gy + d * factor).to(gx_ptr.dtype.element_ty), mask=ok)


def group_count(n: int, group_size: int) -> int:
    """G: the largest divisor of n that is <= group_size."""
    for g in range(min(group_size, n), 0, -1):
        if n % g == 0:
            return g
    return 1


def _block(chw: int) -> int:
    return min(1024, triton.next_power_of_2(max(chw, 16)))


def _check(op: str, x, group_size, eps) -> None:
    check_tensor(op, "x", x, dims=4)
    require(min(x.shape) >= 1, op, f"x must have at least one sample, channel and pixel (N, C, H, W >= 1), "
                                   f"got shape {tuple(x.shape)}")
    check_int(op, "group_size", group_size, 1)
    require(check_scalar(op, "eps", eps) > 0, op, f"eps must be positive, got {eps!r}")


def _scalar_args(x: torch.Tensor, eps: float):
    """(eps, scalars tensor, SCALARS_IN_MEMORY): float64 eps in memory for float64 x."""
    if x.dtype == torch.float64:
        return 0.0, torch.tensor([eps], dtype=torch.float64, device=x.device), True
    return float(eps), x, False


def minibatch_stddev_triton(x: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    op = "minibatch_stddev_triton"
    _check(op, x, group_size, eps)
    x = x.contiguous()
    n, c, h, w = x.shape
    groups = n // group_count(n, group_size)
    y = torch.empty(n, c + 1, h, w, dtype=x.dtype, device=x.device)
    eps_arg, scalars, in_memory = _scalar_args(x, eps)
    _minibatch_stddev_fwd_kernel[(groups,)](
        x, scalars, y, groups, n // groups, c * h * w, h * w, eps_arg, SCALARS_IN_MEMORY=in_memory,
        ACC=compute_dtype(x.dtype), BLOCK=_block(c * h * w))
    return y


def minibatch_stddev_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, group_size: int,
                                     eps: float) -> torch.Tensor:
    op = "minibatch_stddev_backward_triton"
    _check(op, x, group_size, eps)
    check_tensor(op, "grad_out", grad_out, dims=4, incoming_grad=True)
    check_same(op, "x", x, grad_out=grad_out)
    n, c, h, w = x.shape
    require(tuple(grad_out.shape) == (n, c + 1, h, w), op,
            f"grad_out must be (N, C + 1, H, W) = {(n, c + 1, h, w)}, got {tuple(grad_out.shape)}")
    x, grad_out = x.contiguous(), grad_out.contiguous()
    groups = n // group_count(n, group_size)
    grad_x = torch.empty_like(x)
    block = _block(c * h * w)
    eps_arg, scalars, in_memory = _scalar_args(x, eps)
    _minibatch_stddev_bwd_kernel[(groups, triton.cdiv(c * h * w, block))](
        grad_out, x, scalars, grad_x, groups, n // groups, c * h * w, h * w, eps_arg, SCALARS_IN_MEMORY=in_memory,
        ACC=compute_dtype(x.dtype), BLOCK=block)
    return grad_x

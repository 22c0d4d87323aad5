"""Triton instance norm + per-channel affine + activation, forward and backward.

One program per (n, c) plane, looping over its H * W pixels in blocks. Forward: the sum, then the
sum of squared deviations from the mean (the reference's two-pass formula; the second read of the
plane mostly hits L2), then y. Backward: one loop of the sums of g and g * xhat (g = grad_y *
act'(z), z recomputed from x and the saved mean and rstd), one loop writing grad_x; each plane's
two sums go to an (N, C) buffer that the launcher reduces over N (deterministic, no atomics).

The scalars eps and negative_slope: a Python float argument is a float32 in a Triton kernel, so
for float64 input (gradcheck) they are handed over in a small float64 tensor instead, and the
float64 results are exact to float64 rounding.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (check_output_mask, check_same, check_scalar, check_tensor, compute_dtype, require,
                      scalar_arg)

ACTIVATIONS = ("relu", "leaky_relu", "none")  # the kernels' ACT is the index in this tuple


@triton.jit
def _activate(z, slope, ACT: tl.constexpr):
    # Comparisons false for NaN, as torch's: NaN stays NaN.
    if ACT == 0:
        z = tl.where(z < 0, 0.0, z)
    if ACT == 1:
        z = tl.where(z < 0, z * slope, z)
    return z


@triton.jit
def _act_backward(z, g, slope, ACT: tl.constexpr):
    # g * act'(z) as autograd has it: relu passes g where z > 0 (or NaN), leaky_relu scales it by
    # the slope where z <= 0.
    if ACT == 0:
        g = tl.where(z <= 0, 0.0, g)
    if ACT == 1:
        g = tl.where(z > 0, g, g * slope)
    return g


@triton.jit
def _channel_value(ptr, c, default, HAS: tl.constexpr, ACC: tl.constexpr):
    v = default
    if HAS:
        v = tl.load(ptr + c).to(ACC)
    return v


@triton.jit
def _instance_norm_act_fwd_kernel(x_ptr, w_ptr, b_ptr, s_ptr, y_ptr, mean_ptr, rstd_ptr, C, HW, eps, slope,
                                  HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
                                  SCALARS_IN_MEMORY: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)  # n * C + c
    c = plane % C
    base = plane * HW
    eps = scalar_arg(eps, s_ptr, 0, SCALARS_IN_MEMORY)
    slope = scalar_arg(slope, s_ptr, 1, SCALARS_IN_MEMORY)
    total = tl.zeros((BLOCK,), dtype=ACC)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        total += tl.load(x_ptr + base + offs, mask=offs < HW, other=0.0).to(ACC)
    mean = tl.sum(total, axis=0) / HW
    squares = tl.zeros((BLOCK,), dtype=ACC)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < HW
        d = tl.where(ok, tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(ACC) - mean, 0.0)
        squares += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(squares, axis=0) / HW + eps)
    w = _channel_value(w_ptr, c, 1.0, HAS_W, ACC)
    b = _channel_value(b_ptr, c, 0.0, HAS_B, ACC)
    scale = rstd * w
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < HW
        z = (tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(ACC) - mean) * scale + b
        tl.store(y_ptr + base + offs, _activate(z, slope, ACT).to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(mean_ptr + plane, mean.to(mean_ptr.dtype.element_ty))
    tl.store(rstd_ptr + plane, rstd.to(rstd_ptr.dtype.element_ty))


@triton.jit
def _instance_norm_act_bwd_kernel(g_ptr, x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, s_ptr, gx_ptr, sum_g_ptr,
                                  sum_gxhat_ptr, C, HW, slope, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                                  ACT: tl.constexpr, WANT_X: tl.constexpr, SCALARS_IN_MEMORY: tl.constexpr,
                                  ACC: tl.constexpr, BLOCK: tl.constexpr):
    # g = grad_y * act'(z);  grad_bias = sum g;  grad_weight = sum g * xhat;  gx = g * w;
    # grad_x = rstd * (gx - mean_hw(gx) - xhat * mean_hw(gx * xhat))
    #        = rstd * w * (g - sum_hw(g) / HW - xhat * sum_hw(g * xhat) / HW).
    plane = tl.program_id(0).to(tl.int64)
    c = plane % C
    base = plane * HW
    slope = scalar_arg(slope, s_ptr, 1, SCALARS_IN_MEMORY)
    mean = tl.load(mean_ptr + plane).to(ACC)
    rstd = tl.load(rstd_ptr + plane).to(ACC)
    w = _channel_value(w_ptr, c, 1.0, HAS_W, ACC)
    b = _channel_value(b_ptr, c, 0.0, HAS_B, ACC)
    scale = rstd * w
    acc_g = tl.zeros((BLOCK,), dtype=ACC)
    acc_gxhat = tl.zeros((BLOCK,), dtype=ACC)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < HW
        d = tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(ACC) - mean
        # z as the forward computed it, so that act' sees the sign the forward saw.
        g = _act_backward(d * scale + b, tl.load(g_ptr + base + offs, mask=ok, other=0.0).to(ACC), slope, ACT)
        g = tl.where(ok, g, 0.0)
        acc_g += g
        acc_gxhat += g * (d * rstd)
    sum_g = tl.sum(acc_g, axis=0)
    sum_gxhat = tl.sum(acc_gxhat, axis=0)
    tl.store(sum_g_ptr + plane, sum_g)
    tl.store(sum_gxhat_ptr + plane, sum_gxhat)
    if WANT_X:
        mean_g = sum_g / HW
        mean_gxhat = sum_gxhat / HW
        for start in range(0, HW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = offs < HW
            d = tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(ACC) - mean
            g = _act_backward(d * scale + b, tl.load(g_ptr + base + offs, mask=ok, other=0.0).to(ACC), slope, ACT)
            gx = scale * (g - mean_g - (d * rstd) * mean_gxhat)
            tl.store(gx_ptr + base + offs, gx.to(gx_ptr.dtype.element_ty), mask=ok)


def _block(hw: int) -> int:
    return min(1024, triton.next_power_of_2(max(hw, 16)))


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(op: str, x, weight, bias, act, negative_slope) -> None:
    check_tensor(op, "x", x, dims=4)
    require(x.shape[2] >= 1 and x.shape[3] >= 1, op,
            f"x must have at least one pixel per plane (H, W >= 1), got {tuple(x.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        check_tensor(op, name, t)
        require(t.dim() == 1 and t.shape[0] == x.shape[1], op,
                f"{name} must be (C,) = ({x.shape[1]},), got {tuple(t.shape)}")
    check_same(op, "x", x, weight=weight, bias=bias)
    require(isinstance(act, str) and act in ACTIVATIONS, op, f"act must be one of {ACTIVATIONS}, got {act!r}")
    check_scalar(op, "negative_slope", negative_slope)


def _scalar_args(x: torch.Tensor, eps: float, negative_slope: float):
    """(eps, slope, scalars tensor, SCALARS_IN_MEMORY) for a launch: float64 scalars in memory for
    float64 x, plain (float32) arguments otherwise."""
    if x.dtype == torch.float64:
        return 0.0, 0.0, torch.tensor([eps, negative_slope], dtype=torch.float64, device=x.device), True
    return float(eps), float(negative_slope), x, False


def _optional(t: torch.Tensor | None, like: torch.Tensor):
    return (t.contiguous(), True) if t is not None else (like, False)


def instance_norm_act_triton(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, act: str,
                             negative_slope: float, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "instance_norm_act_triton"
    _check(op, x, weight, bias, act, negative_slope)
    require(check_scalar(op, "eps", eps) > 0, op, f"eps must be positive, got {eps!r}")
    x = x.contiguous()
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    mean = torch.empty(n, c, dtype=_stat_dtype(x), device=x.device)
    rstd = torch.empty_like(mean)
    if n * c == 0:
        return y, mean, rstd
    weight, has_w = _optional(weight, x)
    bias, has_b = _optional(bias, x)
    eps_arg, slope_arg, scalars, in_memory = _scalar_args(x, eps, negative_slope)
    _instance_norm_act_fwd_kernel[(n * c,)](
        x, weight, bias, scalars, y, mean, rstd, c, h * w, eps_arg, slope_arg, HAS_W=has_w, HAS_B=has_b,
        ACT=ACTIVATIONS.index(act), SCALARS_IN_MEMORY=in_memory, ACC=compute_dtype(x.dtype), BLOCK=_block(h * w))
    return y, mean, rstd


def instance_norm_act_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                                      bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor, act: str,
                                      negative_slope: float, output_mask) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    op = "instance_norm_act_backward_triton"
    _check(op, x, weight, bias, act, negative_slope)
    check_tensor(op, "grad_out", grad_out, dims=4, incoming_grad=True)
    check_same(op, "x", x, grad_out=grad_out)
    require(grad_out.shape == x.shape, op,
            f"grad_out must have x's shape {tuple(x.shape)}, got {tuple(grad_out.shape)}")
    for name, t in (("mean", mean), ("rstd", rstd)):
        check_tensor(op, name, t, dims=2)
        require(tuple(t.shape) == tuple(x.shape[:2]), op, f"{name} must be (N, C) = {tuple(x.shape[:2])}, "
                                                          f"got {tuple(t.shape)}")
        require(t.dtype == _stat_dtype(x), op, f"{name} must have dtype {_stat_dtype(x)} (the forward's statistics "
                                               f"of a {x.dtype} x), got {t.dtype}")
        check_same(op, "x", x, dtype=False, **{name: t})
    mask = check_output_mask(op, output_mask, 3)
    x, grad_out = x.contiguous(), grad_out.contiguous()
    n, c, h, w = x.shape
    grad_x = torch.empty_like(x) if mask[0] else x.new_empty(0)
    sums = torch.empty(2, n, c, dtype=_stat_dtype(x), device=x.device)
    if n * c > 0 and any(mask):
        weight, has_w = _optional(weight, x)
        bias, has_b = _optional(bias, x)
        _, slope_arg, scalars, in_memory = _scalar_args(x, 1.0, negative_slope)
        _instance_norm_act_bwd_kernel[(n * c,)](
            grad_out, x, weight, bias, mean.contiguous(), rstd.contiguous(), scalars, grad_x if mask[0] else x,
            sums[0], sums[1], c, h * w, slope_arg, HAS_W=has_w, HAS_B=has_b, ACT=ACTIVATIONS.index(act),
            WANT_X=mask[0], SCALARS_IN_MEMORY=in_memory, ACC=compute_dtype(x.dtype), BLOCK=_block(h * w))
    else:
        sums.zero_()
    # grad_bias[c] = sum_n sum_hw g,  grad_weight[c] = sum_n sum_hw g * xhat.
    grad_w = sums[1].sum(0).to(x.dtype) if mask[1] else x.new_empty(0)
    grad_b = sums[0].sum(0).to(x.dtype) if mask[2] else x.new_empty(0)
    return grad_x, grad_w, grad_b

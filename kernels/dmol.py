"""Triton discretized logistic mixture (PixelCNN++): NLL forward, backward and sampling.

One program per (image, block of pixels); it loops over the nr_mix components and handles the
C = 1 or 3 colours of each in registers. The maths and the branch-free form of one bin are those
of csrc/cpu/dmol.cpp (derivations there); the forward keeps only the per-pixel log-likelihood,
the backward recomputes the bins and writes all K gradient planes.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastgen._core import EDGE, LOG_SCALE_MIN, NOISE_EPS, SMALL_BIN, accumulation_dtype

from ._common import check_int, check_same, check_shape, check_tensor, clamp, clamp_min, compute_dtype, \
    logsumexp_planes, require, tanh

_BLOCK = 128
# The reference's constants, as compile-time constants of the kernels.
_LOG_SCALE_MIN = tl.constexpr(LOG_SCALE_MIN)
_EDGE = tl.constexpr(EDGE)
_SMALL_BIN = tl.constexpr(SMALL_BIN)
_NOISE_EPS = tl.constexpr(NOISE_EPS)


@triton.jit
def _bin(x, mu, s_raw, half, log_bin):
    """(lp, dlp/dmu, dlp/ds) of x's bin under one logistic; see csrc/cpu/dmol.cpp. dlp/ds is not yet
    zeroed below the clamp (``_clamped`` does it after scaling, as autograd's where)."""
    s = clamp_min(s_raw, _LOG_SCALE_MIN)
    inv = tl.exp(-s)
    cen = x - mu
    p = inv * (cen + half)
    q = inv * (cen - half)
    mid = inv * cen
    ep = tl.exp(-tl.abs(p))
    eq = tl.exp(-tl.abs(q))
    em = tl.exp(-tl.abs(mid))
    rp = 1.0 / (1.0 + ep)
    rq = 1.0 / (1.0 + eq)
    rm = 1.0 / (1.0 + em)
    sig_p = tl.where(p >= 0, rp, ep * rp)
    sig_q = tl.where(q >= 0, rq, eq * rq)
    gap = p - q
    # 1 - e^-gap without cancellation at small gap.
    one_minus = tl.where(gap < 0.1, gap * (1.0 - gap * (0.5 - gap * (1.0 / 6.0 - gap * (1.0 / 24.0 - gap / 120.0)))),
                         1.0 - tl.exp(-gap))
    tail = tl.where(q >= 0, eq, ep) * one_minus * rp * rq
    delta = tl.where((q >= 0) | (p < 0), tail, sig_p - sig_q)
    bottom = x < -_EDGE
    top = x > _EDGE
    inner = (~bottom) & (~top) & (delta > _SMALL_BIN)
    small = (~bottom) & (~top) & (~inner)
    lp_bottom = tl.minimum(p, 0.0) - tl.log(1.0 + ep)
    lp_top = -tl.maximum(q, 0.0) - tl.log(1.0 + eq)
    lp_inner = tl.log(tl.where(inner, delta, 1.0))
    lp_small = mid - s - 2.0 * (tl.maximum(mid, 0.0) + tl.log(1.0 + em)) + log_bin
    lp = tl.where(bottom, lp_bottom, tl.where(top, lp_top, tl.where(inner, lp_inner, lp_small)))
    inv_delta = 1.0 / tl.where(inner, delta, 1.0)
    dp = tl.where(bottom, tl.where(p >= 0, ep * rp, rp), tl.where(inner, ep * rp * rp * inv_delta, 0.0))
    dq = tl.where(top, -sig_q, tl.where(inner, -eq * rq * rq * inv_delta, 0.0))
    dmid = tl.where(small, tl.where(mid >= 0, em - 1.0, 1.0 - em) * rm, 0.0)
    dmu = -inv * (dp + dq + dmid)
    ds = -(p * dp + q * dq + mid * dmid) - tl.where(small, 1.0, 0.0)
    return lp, dmu, ds


@triton.jit
def _clamped(s_raw, grad):
    """Zero below the log-scale clamp and at NaN, whatever grad holds (autograd of clamp)."""
    return tl.where(s_raw >= _LOG_SCALE_MIN, grad, 0.0)


@triton.jit
def _nll_fwd_kernel(x_ptr, p_ptr, lp_ptr, part_ptr, HW, M, half, log_bin, C: tl.constexpr, ACC: tl.constexpr,
                    BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HW
    PER: tl.constexpr = 3 if C == 3 else 2
    p_base = p_ptr + n * (M + C * PER * M) * HW
    x_base = x_ptr + n * C * HW
    x0 = tl.load(x_base + offs, mask=ok, other=0.0).to(ACC)
    if C == 3:
        x1 = tl.load(x_base + HW + offs, mask=ok, other=0.0).to(ACC)
        x2 = tl.load(x_base + 2 * HW + offs, mask=ok, other=0.0).to(ACC)
    lse = logsumexp_planes(p_base, offs, ok, HW, M, ACC)
    best = tl.full([BLOCK], -float("inf"), ACC)
    total = tl.zeros([BLOCK], ACC)
    for k in range(0, M):
        comp = tl.load(p_base + k * HW + offs, mask=ok, other=0.0).to(ACC) - lse
        b0 = M + k
        m0 = tl.load(p_base + b0 * HW + offs, mask=ok, other=0.0).to(ACC)
        s0 = tl.load(p_base + (b0 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
        comp += _bin(x0, m0, s0, half, log_bin)[0]
        if C == 3:
            b1 = b0 + 3 * M
            b2 = b1 + 3 * M
            t0 = tl.load(p_base + (b0 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC)
            t1 = tl.load(p_base + (b1 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC)
            t2 = tl.load(p_base + (b2 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC)
            m1 = tl.load(p_base + b1 * HW + offs, mask=ok, other=0.0).to(ACC) + tanh(t0) * x0
            m2 = tl.load(p_base + b2 * HW + offs, mask=ok, other=0.0).to(ACC) + tanh(t1) * x0 + tanh(t2) * x1
            s1 = tl.load(p_base + (b1 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
            s2 = tl.load(p_base + (b2 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
            comp += _bin(x1, m1, s1, half, log_bin)[0] + _bin(x2, m2, s2, half, log_bin)[0]
        # Online logsumexp over the components; while every one so far is -inf the sum stays 0
        # (the reference's logsumexp gives -inf there, not the NaN of exp(-inf - -inf)).
        new_best = tl.maximum(best, comp)
        none_yet = new_best == -float("inf")
        total = tl.where(none_yet, 0.0, total * tl.exp(best - new_best) + tl.exp(comp - new_best))
        best = new_best
    pixel = best + tl.log(total)
    tl.store(lp_ptr + n * HW + offs, pixel, mask=ok)
    tl.store(part_ptr + n * tl.num_programs(1) + tl.program_id(1), tl.sum(tl.where(ok, pixel, 0.0), axis=0))


@triton.jit
def _nll_bwd_kernel(g_ptr, x_ptr, p_ptr, lp_ptr, gp_ptr, HW, M, half, log_bin, C: tl.constexpr, ACC: tl.constexpr,
                    BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HW
    PER: tl.constexpr = 3 if C == 3 else 2
    base = n * (M + C * PER * M) * HW
    p_base = p_ptr + base
    g_base = gp_ptr + base
    x_base = x_ptr + n * C * HW
    g = tl.load(g_ptr + n).to(ACC)
    pixel = tl.load(lp_ptr + n * HW + offs, mask=ok, other=0.0)
    x0 = tl.load(x_base + offs, mask=ok, other=0.0).to(ACC)
    if C == 3:
        x1 = tl.load(x_base + HW + offs, mask=ok, other=0.0).to(ACC)
        x2 = tl.load(x_base + 2 * HW + offs, mask=ok, other=0.0).to(ACC)
    lse = logsumexp_planes(p_base, offs, ok, HW, M, ACC)
    OUT = gp_ptr.dtype.element_ty
    for k in range(0, M):
        a = tl.load(p_base + k * HW + offs, mask=ok, other=0.0).to(ACC)
        b0 = M + k
        m0 = tl.load(p_base + b0 * HW + offs, mask=ok, other=0.0).to(ACC)
        s0 = tl.load(p_base + (b0 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
        lp0, dm0, ds0 = _bin(x0, m0, s0, half, log_bin)
        comp = a - lse + lp0
        if C == 3:
            b1 = b0 + 3 * M
            b2 = b1 + 3 * M
            t0 = tanh(tl.load(p_base + (b0 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC))
            t1 = tanh(tl.load(p_base + (b1 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC))
            t2 = tanh(tl.load(p_base + (b2 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC))
            m1 = tl.load(p_base + b1 * HW + offs, mask=ok, other=0.0).to(ACC) + t0 * x0
            m2 = tl.load(p_base + b2 * HW + offs, mask=ok, other=0.0).to(ACC) + t1 * x0 + t2 * x1
            s1 = tl.load(p_base + (b1 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
            s2 = tl.load(p_base + (b2 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
            lp1, dm1, ds1 = _bin(x1, m1, s1, half, log_bin)
            lp2, dm2, ds2 = _bin(x2, m2, s2, half, log_bin)
            comp += lp1 + lp2
        r = tl.exp(comp - pixel)
        # Each derivative first, then times g (the reference's order: both overflow alike).
        tl.store(g_base + k * HW + offs, ((tl.exp(a - lse) - r) * g).to(OUT), mask=ok)
        tl.store(g_base + b0 * HW + offs, (-r * dm0 * g).to(OUT), mask=ok)
        tl.store(g_base + (b0 + M) * HW + offs, _clamped(s0, -r * ds0 * g).to(OUT), mask=ok)
        if C == 3:
            tl.store(g_base + b1 * HW + offs, (-r * dm1 * g).to(OUT), mask=ok)
            tl.store(g_base + (b1 + M) * HW + offs, _clamped(s1, -r * ds1 * g).to(OUT), mask=ok)
            tl.store(g_base + b2 * HW + offs, (-r * dm2 * g).to(OUT), mask=ok)
            tl.store(g_base + (b2 + M) * HW + offs, _clamped(s2, -r * ds2 * g).to(OUT), mask=ok)
            tl.store(g_base + (b0 + 2 * M) * HW + offs, (-r * dm1 * x0 * (1.0 - t0 * t0) * g).to(OUT), mask=ok)
            tl.store(g_base + (b1 + 2 * M) * HW + offs, (-r * dm2 * x0 * (1.0 - t1 * t1) * g).to(OUT), mask=ok)
            tl.store(g_base + (b2 + 2 * M) * HW + offs, (-r * dm2 * x1 * (1.0 - t2 * t2) * g).to(OUT), mask=ok)


@triton.jit
def _logistic_draw(mean, s_raw, u):
    s = clamp_min(s_raw, _LOG_SCALE_MIN)
    return mean + tl.exp(s) * (tl.log(u) - tl.log(1.0 - u))


@triton.jit
def _to_grid(v, steps):
    v = clamp(v, -1.0, 1.0)
    # Round half to even, as torch.round and std::nearbyint do.
    t = (v + 1.0) * (steps / 2.0)
    r = tl.floor(t + 0.5)
    r = tl.where((r - t == 0.5) & (r - 2.0 * tl.floor(r / 2.0) == 1.0), r - 1.0, r)
    return (2.0 * r - steps) / steps


@triton.jit
def _sample_kernel(p_ptr, u_ptr, out_ptr, HW, M, steps, C: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HW
    PER: tl.constexpr = 3 if C == 3 else 2
    p_base = p_ptr + n * (M + C * PER * M) * HW
    u_base = u_ptr + n * (M + C) * HW
    best = tl.full([BLOCK], -float("inf"), ACC)
    choice = tl.zeros([BLOCK], tl.int32)
    for k in range(0, M):
        u = clamp(tl.load(u_base + k * HW + offs, mask=ok, other=0.5).to(ACC), _NOISE_EPS, 1.0 - _NOISE_EPS)
        score = tl.load(p_base + k * HW + offs, mask=ok, other=0.0).to(ACC) - tl.log(-tl.log(u))
        # As torch.argmax: ties keep the first, and a NaN score beats any number (the first NaN wins).
        better = (score > best) | ((score != score) & (best == best))
        choice = tl.where(better, k, choice)
        best = tl.where(better, score, best)
    b0 = M + choice
    u0 = clamp(tl.load(u_base + M * HW + offs, mask=ok, other=0.5).to(ACC), _NOISE_EPS, 1.0 - _NOISE_EPS)
    m0 = tl.load(p_base + b0 * HW + offs, mask=ok, other=0.0).to(ACC)
    s0 = tl.load(p_base + (b0 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
    v0 = _to_grid(_logistic_draw(m0, s0, u0), steps)
    OUT = out_ptr.dtype.element_ty
    out_base = out_ptr + n * C * HW
    tl.store(out_base + offs, v0.to(OUT), mask=ok)
    if C == 3:
        b1 = b0 + 3 * M
        b2 = b1 + 3 * M
        u1 = clamp(tl.load(u_base + (M + 1) * HW + offs, mask=ok, other=0.5).to(ACC), _NOISE_EPS, 1.0 - _NOISE_EPS)
        u2 = clamp(tl.load(u_base + (M + 2) * HW + offs, mask=ok, other=0.5).to(ACC), _NOISE_EPS, 1.0 - _NOISE_EPS)
        t0 = tanh(tl.load(p_base + (b0 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC))
        t1 = tanh(tl.load(p_base + (b1 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC))
        t2 = tanh(tl.load(p_base + (b2 + 2 * M) * HW + offs, mask=ok, other=0.0).to(ACC))
        m1 = tl.load(p_base + b1 * HW + offs, mask=ok, other=0.0).to(ACC)
        s1 = tl.load(p_base + (b1 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
        v1 = _to_grid(_logistic_draw(m1, s1, u1) + t0 * v0, steps)
        m2 = tl.load(p_base + b2 * HW + offs, mask=ok, other=0.0).to(ACC)
        s2 = tl.load(p_base + (b2 + M) * HW + offs, mask=ok, other=0.0).to(ACC)
        v2 = _to_grid(_logistic_draw(m2, s2, u2) + t1 * v0 + t2 * v1, steps)
        tl.store(out_base + HW + offs, v1.to(OUT), mask=ok)
        tl.store(out_base + 2 * HW + offs, v2.to(OUT), mask=ok)


def _constants(levels: int) -> tuple[float, float]:
    return 1.0 / (levels - 1), math.log(2.0 / (levels - 1))


def _check_params(op: str, params: torch.Tensor, n: int, c: int, h: int, w: int, nr_mix: int, levels: int) -> None:
    check_tensor(op, "params", params, dims=4)
    check_int(op, "nr_mix", nr_mix, 1)
    check_int(op, "levels", levels, 2)
    require(c in (1, 3), op, f"images must have C = 1 or 3 colours, got {c}")
    per = 10 if c == 3 else 3
    check_shape(op, "params", params, (n, per * nr_mix, h, w), f"(N, K, H, W) with K = {per} * nr_mix")


def _check_nll(op: str, x: torch.Tensor, params: torch.Tensor, nr_mix: int, levels: int) -> None:
    check_tensor(op, "x", x, dims=4)
    _check_params(op, params, *x.shape, nr_mix, levels)
    check_same(op, "x", x, params=params)


def _check_x_range(op: str, x: torch.Tensor) -> None:
    if x.numel():  # the CPU kernel's check, and the reference's domain
        low, high = (float(v) for v in torch.aminmax(x))
        require(low >= -1 and high <= 1, op, f"x must lie in [-1, 1], got values in [{low}, {high}]")


def dmol_nll_triton(x: torch.Tensor, params: torch.Tensor, nr_mix: int, levels: int):
    op = "dmol_nll_triton"
    _check_nll(op, x, params, nr_mix, levels)
    _check_x_range(op, x)
    x, params = x.contiguous(), params.contiguous()
    n, c, h, w = x.shape
    acc = accumulation_dtype(params.dtype)
    pixel = torch.empty(n, h, w, dtype=acc, device=params.device)
    blocks = triton.cdiv(h * w, _BLOCK)
    partial = torch.empty(n, blocks, dtype=acc, device=params.device)
    _nll_fwd_kernel[(n, blocks)](x, params, pixel, partial, h * w, nr_mix, *_constants(levels), C=c,
                                 ACC=compute_dtype(params.dtype), BLOCK=_BLOCK)
    return (-partial.sum(1)).to(params.dtype), pixel


def dmol_nll_backward_triton(grad: torch.Tensor, x: torch.Tensor, params: torch.Tensor, pixel_log_prob: torch.Tensor,
                             nr_mix: int, levels: int) -> torch.Tensor:
    op = "dmol_nll_backward_triton"
    _check_nll(op, x, params, nr_mix, levels)
    check_tensor(op, "grad", grad, dims=1, incoming_grad=True)
    check_tensor(op, "pixel_log_prob", pixel_log_prob, dims=3)
    check_same(op, "params", params, dtype=False, grad=grad, pixel_log_prob=pixel_log_prob)
    check_shape(op, "grad", grad, (x.shape[0],), "(N,)")
    check_shape(op, "pixel_log_prob", pixel_log_prob, (x.shape[0], *x.shape[2:]), "(N, H, W)")
    require(pixel_log_prob.dtype == accumulation_dtype(params.dtype), op,
            f"pixel_log_prob must be in {accumulation_dtype(params.dtype)}, got {pixel_log_prob.dtype}")
    _check_x_range(op, x)
    x, params = x.contiguous(), params.contiguous()
    n, c, h, w = x.shape
    grad_params = torch.empty_like(params)
    _nll_bwd_kernel[(n, triton.cdiv(h * w, _BLOCK))](
        grad.contiguous(), x, params, pixel_log_prob.contiguous(), grad_params, h * w, nr_mix, *_constants(levels),
        C=c, ACC=compute_dtype(params.dtype), BLOCK=_BLOCK)
    return grad_params


def dmol_sample_triton(params: torch.Tensor, noise: torch.Tensor, nr_mix: int, levels: int) -> torch.Tensor:
    # Noise is checked for dtype and shape here; its range, [0, 1), by fastgen.ops.dmol_sample
    # (_core.check_uniform_noise): out-of-range noise is clamped as in the reference, in bounds.
    op = "dmol_sample_triton"
    check_tensor(op, "noise", noise, dims=4)
    check_int(op, "nr_mix", nr_mix, 1)
    require(noise.shape[1] - nr_mix in (1, 3), op,
            f"noise must be (N, nr_mix + C, H, W) with C = 1 or 3, got {tuple(noise.shape)} for nr_mix = {nr_mix}")
    n, k, h, w = noise.shape
    _check_params(op, params, n, k - nr_mix, h, w, nr_mix, levels)
    check_same(op, "params", params, dtype=False, noise=noise)
    params, noise = params.contiguous(), noise.to(params.dtype).contiguous()
    n, k, h, w = noise.shape
    out = torch.empty(n, k - nr_mix, h, w, dtype=params.dtype, device=params.device)
    _sample_kernel[(n, triton.cdiv(h * w, _BLOCK))](params, noise, out, h * w, nr_mix, float(levels - 1),
                                                      C=k - nr_mix, ACC=compute_dtype(params.dtype), BLOCK=_BLOCK)
    return out

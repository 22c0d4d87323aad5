"""Triton VAE negative ELBO: the maths and per-element gradients of csrc/cpu/vae_nelbo.cpp.

Forward: one program per (example, block of sub-pixels) sums its reconstruction NLL into a
partial (added per example on the host in a fixed order), and one program per example sums the
KL over its latents. Backward: the same grid writes grad_recon; one program per example writes
the KL gradients. Categorical: the L level planes are read twice per block (max, then sum of
exponentials), as in the categorical_nll kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_int, check_output_mask, check_same, check_scalar, check_shape, check_tensor, clamp, \
    compute_dtype, logsumexp_planes, require

_BLOCK = 256
_LIKELIHOODS = {"bernoulli": 0, "categorical": 1, "gaussian": 2, "logistic": 3}
_HALF_LOG_2PI = tl.constexpr(0.9189385332046727)  # a global a jit function reads must be constexpr


@triton.jit
def _softplus(v):
    return tl.maximum(v, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(v)))


@triton.jit
def _sigmoid(v):
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _clamp_log_scale(s):
    return clamp(s, -7.0, 7.0)


@triton.jit
def _logistic_parts(r, x, offs, ok, D, levels, ACC: tl.constexpr):
    """(a, b, e^-s, width, is-bottom, is-top, raw log-scale, a / e^-s, b / e^-s) of the discretized
    logistic."""
    half_bin = 1.0 / (levels - 1).to(ACC)
    k = tl.load(x + offs, mask=ok, other=0)
    v = k.to(ACC) * (2.0 * half_bin) - 1.0
    m = tl.load(r + offs, mask=ok, other=0.0).to(ACC)
    raw = tl.load(r + D + offs, mask=ok, other=0.0).to(ACC)
    inv = tl.exp(-_clamp_log_scale(raw))
    centre_a, centre_b = v + half_bin - m, v - half_bin - m
    return centre_a * inv, centre_b * inv, inv, 2.0 * half_bin * inv, k == 0, k == levels - 1, raw, centre_a, centre_b


@triton.jit
def _recon_nll_kernel(r_ptr, x_ptr, part_ptr, D, P, levels, LIK: tl.constexpr, ACC: tl.constexpr,
                      SERIES_BELOW: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < D
    r = r_ptr + n * P * D
    x = x_ptr + n * D
    if LIK == 0:
        rv = tl.load(r + offs, mask=ok, other=0.0).to(ACC)
        xv = tl.load(x + offs, mask=ok, other=0.0).to(ACC)
        # (1 - x) relu(r) + x relu(-r) + log1p(e^-|r|), as the reference: infinite r gives +inf.
        nll = (1.0 - xv) * tl.where(rv <= 0, 0.0, rv) + xv * tl.where(rv >= 0, 0.0, -rv) \
            + tl.log(1.0 + tl.exp(-tl.abs(rv)))
    elif LIK == 1:
        target = tl.load(x + offs, mask=ok, other=0)
        nll = logsumexp_planes(r, offs, ok, D, P, ACC) - tl.load(r + target * D + offs, mask=ok, other=0.0).to(ACC)
    elif LIK == 2:
        s = _clamp_log_scale(tl.load(r + D + offs, mask=ok, other=0.0).to(ACC))
        diff = tl.load(x + offs, mask=ok, other=0.0).to(ACC) - tl.load(r + offs, mask=ok, other=0.0).to(ACC)
        nll = _HALF_LOG_2PI + s + 0.5 * diff * diff * tl.exp(-2.0 * s)
    else:
        a, b, inv, width, bottom, top, raw, centre_a, centre_b = _logistic_parts(r, x, offs, ok, D, levels, ACC)
        series = width * (1.0 - width * (0.5 - width * (1.0 / 6.0 - width * (1.0 / 24.0 - width / 120.0))))
        mass = tl.where(width < SERIES_BELOW, series, 1.0 - tl.exp(-width))
        nll = tl.where(top, 0.0, _softplus(-a)) + tl.where(bottom, 0.0, _softplus(b)) \
            - tl.where(bottom | top, 0.0, tl.log(mass))
    tl.store(part_ptr + n * tl.num_programs(1) + tl.program_id(1), tl.sum(tl.where(ok, nll, 0.0), axis=0))


@triton.jit
def _kl_kernel(mu_ptr, lv_ptr, kl_ptr, Z, ACC: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    total = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, Z, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < Z
        mu = tl.load(mu_ptr + n * Z + offs, mask=ok, other=0.0).to(ACC)
        lv = tl.load(lv_ptr + n * Z + offs, mask=ok, other=0.0).to(ACC)
        total += tl.where(ok, mu * mu + tl.exp(lv) - 1.0 - lv, 0.0)
    tl.store(kl_ptr + n, 0.5 * tl.sum(total, axis=0))


@triton.jit
def _recon_grad_kernel(g_ptr, r_ptr, x_ptr, gr_ptr, D, P, levels, LIK: tl.constexpr, ACC: tl.constexpr,
                       SERIES_BELOW: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < D
    r = r_ptr + n * P * D
    x = x_ptr + n * D
    gr = gr_ptr + n * P * D
    g = tl.load(g_ptr + n).to(ACC)
    out_ty = gr_ptr.dtype.element_ty
    if LIK == 0:
        rv = tl.load(r + offs, mask=ok, other=0.0).to(ACC)
        tl.store(gr + offs, ((_sigmoid(rv) - tl.load(x + offs, mask=ok, other=0.0).to(ACC)) * g).to(out_ty), mask=ok)
    elif LIK == 1:
        target = tl.load(x + offs, mask=ok, other=0)
        lse = logsumexp_planes(r, offs, ok, D, P, ACC)
        for lv in range(0, P):
            z = tl.load(r + lv * D + offs, mask=ok, other=0.0).to(ACC)
            tl.store(gr + lv * D + offs, ((tl.exp(z - lse) - tl.where(target == lv, 1.0, 0.0)) * g).to(out_ty),
                     mask=ok)
    elif LIK == 2:
        raw = tl.load(r + D + offs, mask=ok, other=0.0).to(ACC)
        inv_var = tl.exp(-2.0 * _clamp_log_scale(raw))
        diff = tl.load(x + offs, mask=ok, other=0.0).to(ACC) - tl.load(r + offs, mask=ok, other=0.0).to(ACC)
        tl.store(gr + offs, (-diff * inv_var * g).to(out_ty), mask=ok)
        inside = (raw >= -7.0) & (raw <= 7.0)
        tl.store(gr + D + offs, tl.where(inside, (1.0 - diff * diff * inv_var) * g, 0.0).to(out_ty), mask=ok)
    else:
        a, b, inv, width, bottom, top, raw, centre_a, centre_b = _logistic_parts(r, x, offs, ok, D, levels, ACC)
        upper = tl.where(top, 0.0, _sigmoid(-a))
        lower = tl.where(bottom, 0.0, _sigmoid(b))
        series = width * (1.0 + width * (0.5 + width * (1.0 / 6.0 + width * (1.0 / 24.0 + width / 120.0))))
        expm1 = tl.where(width < SERIES_BELOW, series, tl.exp(width) - 1.0)
        inner = tl.where(bottom | top, 0.0, width / expm1)
        inside = (raw >= -7.0) & (raw <= 7.0)
        tl.store(gr + offs, (inv * (upper - lower) * g).to(out_ty), mask=ok)
        # a A - b B as (A centre_a - B centre_b) e^-s, the reference's products (see it).
        d_scale = (upper * centre_a - lower * centre_b) * inv + inner
        tl.store(gr + D + offs, tl.where(inside, d_scale * g, 0.0).to(out_ty), mask=ok)


@triton.jit
def _kl_grad_kernel(g_ptr, mu_ptr, lv_ptr, gmu_ptr, glv_ptr, Z, beta, WANT_MU: tl.constexpr, WANT_LV: tl.constexpr,
                    ACC: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    g = tl.load(g_ptr + n).to(ACC)
    for start in range(0, Z, BLOCK):  # the reference's order of products: derivative * beta * g
        offs = n * Z + start + tl.arange(0, BLOCK)
        ok = start + tl.arange(0, BLOCK) < Z
        if WANT_MU:
            mu = tl.load(mu_ptr + offs, mask=ok, other=0.0).to(ACC)
            tl.store(gmu_ptr + offs, (mu * beta * g).to(gmu_ptr.dtype.element_ty), mask=ok)
        if WANT_LV:
            lv = tl.load(lv_ptr + offs, mask=ok, other=0.0).to(ACC)
            tl.store(glv_ptr + offs, (0.5 * (tl.exp(lv) - 1.0) * beta * g).to(glv_ptr.dtype.element_ty), mask=ok)


def _series_below(dtype: torch.dtype) -> float:
    """Below this bin width e^w - 1 and 1 - e^-w come from their 5-term series (no cancellation);
    the series' truncation error, w^6 / 720, must stay under the dtype's rounding."""
    return 0.002 if dtype == torch.float64 else 0.1


def _shape(recon: torch.Tensor, likelihood: str) -> tuple[int, int, int]:
    n = recon.shape[0]
    p = 1 if likelihood == "bernoulli" else recon.shape[1]
    return n, p, recon.numel() // max(1, n * p)


def _check(op: str, recon, x, mu, logvar, likelihood: str, levels: int) -> None:
    """The layouts of fastgen/reference/vae_nelbo.py, and x's values in their range (the categorical
    kernels gather recon at x's levels)."""
    require(isinstance(likelihood, str) and likelihood in _LIKELIHOODS, op,
            f"likelihood must be bernoulli, categorical, gaussian or logistic, got {likelihood!r}")
    check_tensor(op, "recon", recon, dims=tuple(range(2, 9)))
    check_tensor(op, "mu", mu, dims=tuple(range(2, 9)))
    check_tensor(op, "logvar", logvar)
    check_same(op, "recon", recon, mu=mu, logvar=logvar)
    check_shape(op, "logvar", logvar, tuple(mu.shape), "mu's shape")
    require(mu.shape[0] == recon.shape[0], op, f"mu must have recon's N = {recon.shape[0]}, got {tuple(mu.shape)}")
    integer = likelihood in ("categorical", "logistic")
    check_tensor(op, "x", x, dtype="index" if integer else "float")
    check_same(op, "recon", recon, dtype=not integer, x=x)
    expected = tuple(recon.shape) if likelihood == "bernoulli" else (recon.shape[0], *recon.shape[2:])
    check_shape(op, "x", x, expected, "recon's shape" + ("" if likelihood == "bernoulli" else " without dimension 1"))
    if likelihood in ("gaussian", "logistic"):
        require(recon.shape[1] == 2, op, f"recon must be (N, 2, ...) = (mean, log-scale), got {tuple(recon.shape)}")
    if likelihood == "categorical":
        require(recon.shape[1] >= 1, op, "recon must hold at least one level")
    check_int(op, "levels", levels, 2 if likelihood == "logistic" else -2**63)


def _check_values(op: str, recon, x, likelihood: str, levels: int) -> None:
    if not x.numel() or likelihood == "gaussian":
        return
    low, high = (float(v) for v in torch.aminmax(x))
    top = {"bernoulli": 1, "categorical": recon.shape[1] - 1, "logistic": levels - 1}[likelihood]
    what = "values" if likelihood == "bernoulli" else "integers"
    require(low >= 0 and high <= top, op, f"x must hold {what} in [0, {top}] for the {likelihood} likelihood, "
                                          f"got values in [{low:g}, {high:g}]")


def vae_nelbo_triton(recon, x, mu, logvar, likelihood: str, beta: float, levels: int, keep_grad: bool):
    op = "vae_nelbo_triton"
    _check(op, recon, x, mu, logvar, likelihood, levels)
    check_scalar(op, "beta", beta)
    _check_values(op, recon, x, likelihood, levels)
    recon, x, mu, logvar = recon.contiguous(), x.contiguous(), mu.contiguous(), logvar.contiguous()
    n, p, d = _shape(recon, likelihood)
    z = mu.numel() // n
    acc, acc_dtype = compute_dtype(recon.dtype), torch.float64 if recon.dtype == torch.float64 else torch.float32
    blocks = triton.cdiv(d, _BLOCK)
    partial = torch.empty(n, blocks, dtype=acc_dtype, device=recon.device)
    _recon_nll_kernel[(n, blocks)](recon, x, partial, d, p, levels, LIK=_LIKELIHOODS[likelihood], ACC=acc,
                                   SERIES_BELOW=_series_below(recon.dtype), BLOCK=_BLOCK)
    kl = torch.empty(n, dtype=acc_dtype, device=recon.device)
    _kl_kernel[(n,)](mu, logvar, kl, z, ACC=acc, BLOCK=_BLOCK)
    nll = partial.sum(1)
    recon_grad = recon.new_empty(0)
    if keep_grad:  # a second kernel here, not the same pass as on the CPU
        recon_grad = torch.empty_like(recon)
        _recon_grad_kernel[(n, blocks)](torch.ones(n, dtype=recon.dtype, device=recon.device), recon, x, recon_grad,
                                        d, p, levels, LIK=_LIKELIHOODS[likelihood], ACC=acc,
                                        SERIES_BELOW=_series_below(recon.dtype), BLOCK=_BLOCK)
    return (nll + beta * kl).to(recon.dtype), nll.to(recon.dtype), kl.to(recon.dtype), recon_grad


def vae_nelbo_backward_triton(grad, recon, x, mu, logvar, recon_grad, likelihood: str, beta: float, levels: int,
                              output_mask: list[bool]):
    op = "vae_nelbo_backward_triton"
    _check(op, recon, x, mu, logvar, likelihood, levels)
    check_scalar(op, "beta", beta)
    check_tensor(op, "grad", grad, dims=1, incoming_grad=True)
    check_same(op, "recon", recon, dtype=False, grad=grad)
    check_shape(op, "grad", grad, (recon.shape[0],), "(N,)")
    output_mask = check_output_mask(op, output_mask, 3)
    kept = recon_grad is not None and recon_grad.numel() > 0
    if kept:
        check_tensor(op, "recon_grad", recon_grad)
        check_same(op, "recon", recon, recon_grad=recon_grad)
        require(recon_grad.shape == recon.shape, op, f"recon_grad must have recon's shape {tuple(recon.shape)}, "
                                                     f"got {tuple(recon_grad.shape)}")
    elif output_mask[0]:
        _check_values(op, recon, x, likelihood, levels)
    recon, x, mu, logvar = recon.contiguous(), x.contiguous(), mu.contiguous(), logvar.contiguous()
    grad = grad.contiguous()
    n, p, d = _shape(recon, likelihood)
    acc = compute_dtype(recon.dtype)
    grad_recon = torch.empty_like(recon) if output_mask[0] else recon.new_empty(0)
    grad_mu = torch.empty_like(mu) if output_mask[1] else mu.new_empty(0)
    grad_logvar = torch.empty_like(logvar) if output_mask[2] else logvar.new_empty(0)
    if output_mask[0] and recon_grad is not None and recon_grad.numel():
        torch.mul(recon_grad, grad.view(-1, *([1] * (recon.dim() - 1))), out=grad_recon)
    elif output_mask[0]:
        _recon_grad_kernel[(n, triton.cdiv(d, _BLOCK))](grad, recon, x, grad_recon, d, p, levels,
                                                        LIK=_LIKELIHOODS[likelihood], ACC=acc,
                                                        SERIES_BELOW=_series_below(recon.dtype), BLOCK=_BLOCK)
    if output_mask[1] or output_mask[2]:
        _kl_grad_kernel[(n,)](grad, mu, logvar, grad_mu, grad_logvar, mu.numel() // n, beta,
                              WANT_MU=bool(output_mask[1]), WANT_LV=bool(output_mask[2]), ACC=acc, BLOCK=_BLOCK)
    return grad_recon, grad_mu, grad_logvar

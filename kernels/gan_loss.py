"""Triton GAN losses: per input, one kernel sums the loss term over blocks (partial sums added on
the host in a fixed order) and one writes g / n * term'(v). The terms are those of
csrc/cpu/gan_loss.cpp; the table of which term each loss takes is ``TERMS``."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same, check_tensor, compute_dtype, require

_BLOCK = 1024
SOFTPLUS, SOFTPLUS_NEG, NEG_SOFTPLUS, SQUARE_TO_ONE, SQUARE_TO_ZERO, HINGE_REAL, HINGE_FAKE, PLUS, MINUS = range(9)
# (kind, generator) -> (term of d_real, term of d_fake); the generator losses do not read d_real.
TERMS = {
    ("minimax", False): (SOFTPLUS_NEG, SOFTPLUS), ("non_saturating", False): (SOFTPLUS_NEG, SOFTPLUS),
    ("lsgan", False): (SQUARE_TO_ONE, SQUARE_TO_ZERO), ("hinge", False): (HINGE_REAL, HINGE_FAKE),
    ("wasserstein", False): (MINUS, PLUS),
    ("minimax", True): (None, NEG_SOFTPLUS), ("non_saturating", True): (None, SOFTPLUS_NEG),
    ("lsgan", True): (None, SQUARE_TO_ONE), ("hinge", True): (None, MINUS), ("wasserstein", True): (None, MINUS),
}


@triton.jit
def _softplus(v):
    return tl.maximum(v, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(v)))


@triton.jit
def _term(v, TERM: tl.constexpr):
    if TERM == 0:
        out = _softplus(v)
    elif TERM == 1:
        out = _softplus(-v)
    elif TERM == 2:
        out = -_softplus(v)
    elif TERM == 3:
        out = 0.5 * (v - 1.0) * (v - 1.0)
    elif TERM == 4:
        out = 0.5 * v * v
    elif TERM == 5:  # relu as torch.relu: NaN in, NaN out (tl.maximum would drop it)
        out = tl.where(v >= 1.0, 0.0, 1.0 - v)
    elif TERM == 6:
        out = tl.where(v <= -1.0, 0.0, 1.0 + v)
    elif TERM == 7:
        out = v
    else:
        out = -v
    return out


@triton.jit
def _derivative(v, TERM: tl.constexpr):
    if TERM == 0:
        out = 1.0 / (1.0 + tl.exp(-v))
    elif TERM == 1:
        out = -1.0 / (1.0 + tl.exp(v))
    elif TERM == 2:
        out = -1.0 / (1.0 + tl.exp(-v))
    elif TERM == 3:  # 0.5 * (2 (v - 1)): autograd's order, so that both overflow alike
        out = 0.5 * (2.0 * (v - 1.0))
    elif TERM == 4:
        out = 0.5 * (2.0 * v)
    elif TERM == 5:  # NaN passes the gradient, as autograd of torch.relu
        out = tl.where(v >= 1.0, 0.0, -1.0)
    elif TERM == 6:
        out = tl.where(v <= -1.0, 0.0, 1.0)
    elif TERM == 7:
        out = tl.zeros_like(v) + 1.0
    else:
        out = tl.zeros_like(v) - 1.0
    return out


@triton.jit
def _gan_loss_fwd_kernel(v_ptr, part_ptr, n, TERM: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    v = tl.load(v_ptr + offs, mask=ok, other=0.0).to(ACC)
    tl.store(part_ptr + tl.program_id(0), tl.sum(tl.where(ok, _term(v, TERM), 0.0), axis=0))


@triton.jit
def _gan_loss_bwd_kernel(g_ptr, v_ptr, out_ptr, n, TERM: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    v = tl.load(v_ptr + offs, mask=ok, other=0.0).to(ACC)
    scale = tl.load(g_ptr).to(ACC) / n
    tl.store(out_ptr + offs, (scale * _derivative(v, TERM)).to(out_ptr.dtype.element_ty), mask=ok)


def _mean(v: torch.Tensor, term: int) -> torch.Tensor:
    v = v.contiguous()
    blocks = triton.cdiv(v.numel(), _BLOCK)
    acc = torch.float64 if v.dtype == torch.float64 else torch.float32
    partial = torch.empty(blocks, dtype=acc, device=v.device)
    _gan_loss_fwd_kernel[(blocks,)](v, partial, v.numel(), TERM=term, ACC=compute_dtype(v.dtype), BLOCK=_BLOCK)
    return partial.sum() / v.numel()


def _grad(grad: torch.Tensor, v: torch.Tensor, term: int) -> torch.Tensor:
    v = v.contiguous()
    out = torch.empty_like(v)
    _gan_loss_bwd_kernel[(triton.cdiv(v.numel(), _BLOCK),)](grad.contiguous(), v, out, v.numel(), TERM=term,
                                                            ACC=compute_dtype(v.dtype), BLOCK=_BLOCK)
    return out


def _check(op: str, d_real: torch.Tensor | None, d_fake: torch.Tensor, kind: str, generator: bool) -> None:
    require(isinstance(generator, bool), op, f"generator must be a bool, got {generator!r}")
    require(isinstance(kind, str) and (kind, generator) in TERMS, op,
            f"kind must be minimax, non_saturating, lsgan, hinge or wasserstein, got {kind!r}")
    check_tensor(op, "d_fake", d_fake)
    require(d_fake.numel() > 0, op, "d_fake must hold at least one discriminator output")
    require(d_real is None or isinstance(d_real, torch.Tensor), op, f"d_real must be a tensor or None, got {d_real!r:.60}")
    if d_real is not None:  # on d_fake's device even where the loss ignores it
        check_same(op, "d_fake", d_fake, dtype=False, d_real=d_real)
    if not generator:
        require(d_real is not None, op, "the discriminator loss needs d_real")
        check_tensor(op, "d_real", d_real)
        check_same(op, "d_fake", d_fake, d_real=d_real)
        require(d_real.numel() > 0, op, "d_real must hold at least one discriminator output")


def gan_loss_triton(d_real: torch.Tensor | None, d_fake: torch.Tensor, kind: str, generator: bool) -> torch.Tensor:
    _check("gan_loss_triton", d_real, d_fake, kind, generator)
    real_term, fake_term = TERMS[(kind, generator)]
    loss = _mean(d_fake, fake_term)
    if real_term is not None:
        loss = loss + _mean(d_real, real_term)
    return loss.to(d_fake.dtype)


def gan_loss_backward_triton(grad: torch.Tensor, d_real: torch.Tensor | None, d_fake: torch.Tensor, kind: str,
                             generator: bool) -> tuple[torch.Tensor, torch.Tensor]:
    op = "gan_loss_backward_triton"
    _check(op, d_real, d_fake, kind, generator)
    check_tensor(op, "grad", grad, incoming_grad=True)
    require(grad.numel() == 1, op, f"grad must be a scalar, got shape {tuple(grad.shape)}")
    check_same(op, "d_fake", d_fake, dtype=False, grad=grad)
    real_term, fake_term = TERMS[(kind, generator)]
    grad_real = _grad(grad, d_real, real_term) if real_term is not None else d_fake.new_empty(0)
    return grad_real, _grad(grad, d_fake, fake_term)

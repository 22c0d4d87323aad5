"""Fuzzing of every public op entry point: ``fastgen.ops.<op>``, the ``torch.ops.fastgen.<op>``
overloads and (where triton is installed) the Triton launchers ``fastgen.kernels.<op>_triton``.

    python -m tests.fuzz_ops --cases N --seed S --out FILE [--entries NAME,...]

Each case starts from a valid random call of one entry point and applies one random mutation
(wrong rank, size, dtype or device; a stride-0, non-contiguous or empty tensor; a huge expanded
tensor; NaN, inf or huge values; a bad string, int or mask; a non-tensor). The entry's ``valid``
oracle, written from the op's documented contract, not from its code, says whether the mutated
call is still valid:

* invalid: the call must raise (any Python exception). Returning is an ``accepted`` bad input.
* valid: the entry point and its reference must agree: both raise, or both return the same
  values (NaN where NaN, inf where inf, close elsewhere; shapes only on meta tensors). For
  ``fastgen.ops`` functions the gradients must agree too, for a random choice of the inputs
  that require grad: which inputs get one, and its values. A disagreement is ``silent``; the
  entry raising where its reference returns is ``refused``.

The cases run in a worker subprocess; a case that kills it by a signal is a ``crash``, and the
parent restarts the worker at the next case. Cases are reproducible from (seed, entry, index).

Adding an op: write its valid-call generator, its ``valid`` oracle and its reference, and add
``Entry`` rows to ``ENTRIES`` (see the masked_conv2d rows; ``_entry_rows`` makes the three rows
of a forward op: public function, torch.ops overload, Triton launcher).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

if __name__ == "__main__" and "--worker" in sys.argv:
    # The Triton launchers run on CPU tensors through the interpreter, decided before triton loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
COPY_LIMIT = 1 << 28  # bytes; fastgen.ops._checks.MAX_OVERLAP_COPY_BYTES
HAS_TRITON = importlib.util.find_spec("triton") is not None
SPECIAL_VALUES = (float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 3e38, -3e38, 1e4, -1e4, 88.8, 100.0,
                  -100.0, 200.0, 1e-40, 0.0, -0.0)
BAD_STRINGS = ("", "a", "b", "AB", "A ", " B", "minimax ", "Hinge", "gauss", "bernoulli\0", "\u00c4", "x" * 300,
               "logistic,gaussian")
BAD_INTS = (0, -1, -7, 2, 3, 4, 7, 2**31, 2**62, -2**63, 2**63 - 1)


# -- the contract's predicates -----------------------------------------------------------------

def is_float(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in FLOAT_DTYPES


def is_index(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.int64


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def one_device(*ts) -> bool:
    devices = {t.device for t in ts if isinstance(t, torch.Tensor)}
    return len(devices) <= 1


def one_dtype(*ts) -> bool:
    return len({t.dtype for t in ts if isinstance(t, torch.Tensor)}) <= 1


def copy_ok(*ts) -> bool:
    """Within the limit on dense copies of inputs that repeat their memory."""
    for t in ts:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.numel() == 0:
            continue
        span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
        if t.numel() > span and t.numel() * t.element_size() > COPY_LIMIT:
            return False
    return True


def is_meta(call: dict) -> bool:
    return any(isinstance(v, torch.Tensor) and v.device.type == "meta" for v in call.values())


def values(t: torch.Tensor) -> torch.Tensor | None:
    """t's values as float64 for range checks, or None where they cannot be read (meta)."""
    return None if t.device.type == "meta" else t.detach().double()


def in_range(t: torch.Tensor, low: float, high: float) -> bool:
    v = values(t)
    return v is None or v.numel() == 0 or bool(((v >= low) & (v <= high)).all())


def finite_moderate(t, bound: float = 1e18) -> bool:
    """No NaN or inf, and no value whose products with O(1) numbers could overflow float32 sums."""
    v = values(t) if isinstance(t, torch.Tensor) and t.dtype in FLOAT_DTYPES else None
    return v is None or v.numel() == 0 or bool((v.abs() <= bound).all())


def is_scalar(v) -> bool:
    """A beta or weight: a finite number within float32's range."""
    return is_number(v) and abs(v) <= 3.4028234663852886e38


def _acc(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def consistent(saved: torch.Tensor, recomputed: torch.Tensor) -> bool | None:
    """A backward op's saved statistic (lse, norms, ...) against the forward's value for its inputs:
    True when it is that value; else None, the contract's "unspecified" (a backward op cannot afford
    to recompute what it is handed, so it returns something, not an error, and must not crash)."""
    if saved.device.type == "meta":
        return True
    tol = 1e-10 if saved.dtype == torch.float64 else 1e-4
    ok = tuple(saved.shape) == tuple(recomputed.shape) and bool(
        torch.isclose(saved.double(), recomputed.double(), rtol=tol, atol=tol, equal_nan=True).all())
    return True if ok else None


def is_mask(m, n: int) -> bool:
    return isinstance(m, (list, tuple)) and len(m) == n and all(isinstance(b, bool) for b in m)


# -- valid random calls ----------------------------------------------------------------------------

class Maker:
    """Random tensors for one case, from a seeded generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.gen = torch.Generator().manual_seed(rng.getrandbits(62))
        self.dtype = rng.choice((torch.float32, torch.float64))

    def randn(self, *shape, scale=1.0, dtype=None):
        return torch.randn(shape, generator=self.gen, dtype=torch.float64).mul(scale).to(dtype or self.dtype)

    def rand(self, *shape, dtype=None):
        return torch.rand(shape, generator=self.gen, dtype=torch.float64).to(dtype or self.dtype)

    def randint(self, low, high, *shape):
        return torch.randint(low, high, shape, generator=self.gen)

    def size(self, low=1, high=4):
        return self.rng.randint(low, high)


def _mc_forward(m: Maker) -> dict:
    g = m.rng.choice((1, 1, 3))
    cin, cout, k = g * m.size(1, 2), g * m.size(1, 3), m.rng.choice((1, 3, 5))
    n, h, w = m.size(1, 2), m.size(1, 5), m.size(1, 5)
    return dict(x=m.randn(n, cin, h, w), weight=m.randn(cout, cin, k, k),
                bias=m.randn(cout) if m.rng.random() < 0.7 else None, mask_type=m.rng.choice("AB"), color_groups=g)


def _mc_backward(m: Maker) -> dict:
    c = _mc_forward(m)
    x, w = c["x"], c["weight"]
    grad_out = m.randn(x.shape[0], w.shape[0], *x.shape[2:])
    mask = [m.rng.random() < 0.7 for _ in range(3)]
    return dict(grad_out=grad_out, x=x, weight=w, mask_type=c["mask_type"], color_groups=c["color_groups"],
                output_mask=mask)


def _mc_valid(c: dict) -> bool | None:
    ok = _mc_shapes_valid(c)
    # Which products a convolution forms decides where a non-finite input, or a product that
    # overflows, ends up: ATen's convolution multiplies the masked taps and the zero padding (inf * 0
    # is NaN), the tap kernel never reads them. Such values are the contract's "unspecified".
    if ok and any(not finite_moderate(c.get(k)) for k in ("x", "weight", "bias", "grad_out")):
        return None
    return ok


def _mc_shapes_valid(c: dict) -> bool:
    x, w, b, mt, g = c["x"], c["weight"], c.get("bias"), c["mask_type"], c["color_groups"]
    ok = (is_float(x) and is_float(w) and x.dim() == 4 and w.dim() == 4 and w.shape[2] == w.shape[3]
          and w.shape[2] % 2 == 1 and x.shape[1] == w.shape[1] and w.shape[0] >= 1 and w.shape[1] >= 1
          and x.shape[2] >= 1 and x.shape[3] >= 1
          and (b is None or (is_float(b) and b.dim() == 1 and b.shape[0] == w.shape[0]))
          and one_dtype(x, w, b) and one_device(x, w, b) and mt in ("A", "B") and is_int(g) and g >= 1
          and w.shape[0] % g == 0 and w.shape[1] % g == 0 and copy_ok(x, w, b))
    if "grad_out" in c:
        go = c["grad_out"]
        ok = ok and is_float(go) and tuple(go.shape) == (x.shape[0], w.shape[0], *x.shape[2:]) \
            and one_dtype(x, go) and one_device(x, go) and is_mask(c["output_mask"], 3)
    return ok


def _ga_forward(m: Maker) -> dict:
    n, c, h, w = m.size(1, 2), m.size(1, 3), m.size(1, 5), m.size(1, 5)
    cond = m.rng.choice((None, (n, 2 * c), (n, 2 * c, h, w)))
    return dict(x=m.randn(n, 2 * c, h, w, scale=2), cond=None if cond is None else m.randn(*cond))


def _ga_backward(m: Maker) -> dict:
    c = _ga_forward(m)
    x = c["x"]
    return dict(grad_out=m.randn(x.shape[0], x.shape[1] // 2, *x.shape[2:]), **c)


def _ga_valid(c: dict) -> bool:
    x, cond = c["x"], c["cond"]
    ok = is_float(x) and x.dim() == 4 and x.shape[1] % 2 == 0 and copy_ok(x, cond) and one_device(x, cond) \
        and (cond is None or (is_float(cond) and tuple(cond.shape) in (tuple(x.shape[:2]), tuple(x.shape))
                              and one_dtype(x, cond)))
    if "grad_out" in c:
        go = c["grad_out"]
        ok = ok and is_float(go) and tuple(go.shape) == (x.shape[0], x.shape[1] // 2, *x.shape[2:]) \
            and one_dtype(x, go) and one_device(x, go)
    return ok


_INA_ACTS = ("relu", "leaky_relu", "none")
_INA_EPS = 1e-5  # the eps of the statistics handed to the backward op


def _ina_forward(m: Maker) -> dict:
    n, c, h, w = m.size(1, 2), m.size(1, 4), m.size(1, 5), m.size(1, 5)
    return dict(x=m.randn(n, c, h, w, scale=2), weight=m.randn(c) if m.rng.random() < 0.7 else None,
                bias=m.randn(c) if m.rng.random() < 0.7 else None, act=m.rng.choice(_INA_ACTS),
                negative_slope=m.rng.choice((0.2, 0.01, 0.0)), eps=m.rng.choice((1e-5, 1e-3)))


def _ina_backward(m: Maker) -> dict:
    c = _ina_forward(m)
    x = c["x"]
    mean, rstd = _ina_stats(c)
    return dict(grad_out=m.randn(*x.shape), x=x, weight=c["weight"], bias=c["bias"], mean=mean, rstd=rstd,
                act=c["act"], negative_slope=c["negative_slope"], output_mask=[m.rng.random() < 0.7 for _ in range(3)])


def _ina_stats(c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from fastgen.reference.instance_norm_act import instance_norm_stats_reference
    return instance_norm_stats_reference(c["x"], _INA_EPS)


def _ina_valid(c: dict) -> bool | None:
    x, w, b = c["x"], c["weight"], c["bias"]
    ok = (is_float(x) and x.dim() == 4 and x.shape[2] >= 1 and x.shape[3] >= 1
          and all(t is None or (is_float(t) and t.dim() == 1 and t.shape[0] == x.shape[1]) for t in (w, b))
          and one_dtype(x, w, b) and one_device(x, w, b) and copy_ok(x, w, b)
          and isinstance(c["act"], str) and c["act"] in _INA_ACTS and is_scalar(c["negative_slope"]))
    if "eps" in c:
        ok = ok and is_scalar(c["eps"]) and c["eps"] > 0
    backward = "grad_out" in c
    if ok and backward:
        go, mean, rstd = c["grad_out"], c["mean"], c["rstd"]
        ok = (is_float(go) and tuple(go.shape) == tuple(x.shape) and one_dtype(x, go)
              and all(is_float(t) and tuple(t.shape) == tuple(x.shape[:2]) and t.dtype == _acc(x) for t in (mean, rstd))
              and one_device(x, go, mean, rstd) and copy_ok(mean, rstd) and is_mask(c["output_mask"], 3))
    if not ok:
        return False
    # Huge and non-finite values are unspecified: whether a float32 sum overflows depends on its
    # order, and the kernels' fused expressions meet inf * 0 and inf - inf in other places than the
    # reference's (its autograd among them).
    if any(not finite_moderate(c[k]) for k in ("x", "weight", "bias", "grad_out") if k in c):
        return None
    if not backward:
        return True
    want_mean, want_rstd = _ina_stats(c)
    return consistent(c["mean"], want_mean) and consistent(c["rstd"], want_rstd)


_PN_SLOPES = (None, 0.2, 0.0)
_PN_EPS = 1e-8  # the eps of the rstd handed to the backward op


def _pn_forward(m: Maker) -> dict:
    n, c = m.size(1, 3), m.size(1, 5)
    spatial = m.rng.choice(((), (1, 1), (m.size(1, 4),), (m.size(1, 4), m.size(1, 5))))
    return dict(x=m.randn(n, c, *spatial, scale=2), negative_slope=m.rng.choice(_PN_SLOPES),
                eps=m.rng.choice((1e-8, 1e-3)))


def _pn_backward(m: Maker) -> dict:
    c = _pn_forward(m)
    x = c["x"]
    return dict(grad_out=m.randn(*x.shape), x=x, rstd=_pn_stat(c), negative_slope=c["negative_slope"])


def _pn_stat(c: dict) -> torch.Tensor:
    from fastgen.reference.pixel_norm import pixel_norm_rstd_reference
    return pixel_norm_rstd_reference(c["x"], c["negative_slope"], _PN_EPS)


def _pn_valid(c: dict) -> bool | None:
    x, slope = c["x"], c["negative_slope"]
    ok = (is_float(x) and x.dim() >= 2 and x.shape[1] >= 1 and copy_ok(x) and (slope is None or is_scalar(slope)))
    if "eps" in c:
        ok = ok and is_scalar(c["eps"]) and c["eps"] > 0
    backward = "grad_out" in c
    if ok and backward:
        go, rstd = c["grad_out"], c["rstd"]
        ok = (is_float(go) and tuple(go.shape) == tuple(x.shape) and one_dtype(x, go) and is_float(rstd)
              and tuple(rstd.shape) == (x.shape[0], *x.shape[2:]) and rstd.dtype == _acc(x)
              and one_device(x, go, rstd) and copy_ok(rstd))
    if not ok:
        return False
    # Huge and non-finite values are unspecified, as for instance_norm_act: the fused backward meets
    # inf * 0 and inf - inf in other places than the reference's autograd.
    if any(not finite_moderate(c[k]) for k in ("x", "grad_out") if k in c):
        return None
    return consistent(c["rstd"], _pn_stat(c)) if backward else True


def _ms_forward(m: Maker) -> dict:
    n = m.rng.choice((1, 2, 3, 4, 6, 8))
    return dict(x=m.randn(n, m.size(1, 3), m.size(1, 4), m.size(1, 4), scale=2), group_size=m.rng.choice((1, 2, 4, 5)),
                eps=m.rng.choice((1e-8, 1e-3)))


def _ms_backward(m: Maker) -> dict:
    c = _ms_forward(m)
    n, ch, h, w = c["x"].shape
    return dict(grad_out=m.randn(n, ch + 1, h, w), **c)


def _ms_valid(c: dict) -> bool | None:
    x, group_size = c["x"], c["group_size"]
    ok = (is_float(x) and x.dim() == 4 and min(x.shape) >= 1 and copy_ok(x) and is_int(group_size)
          and group_size >= 1 and is_scalar(c["eps"]) and c["eps"] > 0)
    if ok and "grad_out" in c:
        go = c["grad_out"]
        n, ch, h, w = x.shape
        ok = is_float(go) and tuple(go.shape) == (n, ch + 1, h, w) and one_dtype(x, go) and one_device(x, go)
    if not ok:
        return False
    # As for pixel_norm: the fused backward and the reference's autograd meet inf in other places.
    if any(not finite_moderate(c[k]) for k in ("x", "grad_out") if k in c):
        return None
    return True


def _cat_forward(m: Maker) -> dict:
    n, levels, c, h, w = m.size(1, 2), m.size(1, 6), m.size(1, 3), m.size(1, 4), m.size(1, 4)
    logits = m.randn(n, levels, c, h, w, scale=3)
    if m.rng.random() < 0.3:  # a head's (N, C*L, H, W) output viewed as (N, L, C, H, W)
        logits = m.randn(n, c, levels, h, w, scale=3).transpose(1, 2)
    return dict(logits=logits, target=m.randint(0, levels, n, c, h, w))


def _cat_backward(m: Maker) -> dict:
    c = _cat_forward(m)
    logits = c["logits"]
    return dict(grad=m.randn(logits.shape[0]), logits=logits, target=c["target"], lse=_cat_stat(c))


def _cat_valid(c: dict) -> bool | None:
    z, t = c["logits"], c["target"]
    if not (is_float(z) and z.dim() == 5 and is_index(t) and tuple(t.shape) == (z.shape[0], *z.shape[2:])
            and z.shape[1] >= 1 and one_device(z, t) and copy_ok(z, t) and in_range(t, 0, z.shape[1] - 1)):
        return False
    if "lse" not in c:
        return True
    g, lse = c["grad"], c["lse"]
    if not (is_float(g) and tuple(g.shape) == (z.shape[0],) and is_float(lse) and tuple(lse.shape) == tuple(t.shape)
            and lse.dtype == _acc(z) and one_device(z, g, lse) and copy_ok(lse)):
        return False
    return consistent(lse, _cat_stat(c))


def _cat_stat(c: dict) -> torch.Tensor:
    return torch.logsumexp(c["logits"].to(_acc(c["logits"])), dim=1)


def _rep_forward(m: Maker) -> dict:
    shape = tuple(m.size(1, 4) for _ in range(m.rng.randint(1, 3)))
    return dict(mu=m.randn(*shape), logvar=m.randn(*shape, scale=2), eps=m.randn(*shape))


def _rep_backward(m: Maker) -> dict:
    c = _rep_forward(m)
    return dict(grad=m.randn(*c["mu"].shape), logvar=c["logvar"], eps=c["eps"],
                output_mask=[m.rng.random() < 0.7 for _ in range(2)])


def _rep_valid(c: dict) -> bool:
    if "mu" in c:
        ts = (c["mu"], c["logvar"], c["eps"])
        extra = True
    else:
        ts = (c["logvar"], c["grad"], c["eps"])
        extra = is_mask(c["output_mask"], 2)
    return extra and all(is_float(t) for t in ts) and 1 <= ts[0].dim() <= 8 \
        and all(t.shape == ts[0].shape for t in ts) and one_dtype(*ts) and one_device(*ts) and copy_ok(*ts)


_VAE = ("bernoulli", "categorical", "gaussian", "logistic")


def _vae_forward(m: Maker) -> dict:
    lik = m.rng.choice(_VAE)
    n, spatial, z = m.size(1, 3), tuple(m.size(1, 4) for _ in range(m.rng.randint(1, 2))), m.size(1, 4)
    levels = m.rng.choice((2, 5, 256))
    if lik == "bernoulli":
        recon, x = m.randn(n, *spatial, scale=3), m.rand(n, *spatial)
    elif lik == "categorical":
        lv = m.size(1, 5)
        recon, x = m.randn(n, lv, *spatial, scale=3), m.randint(0, lv, n, *spatial)
    elif lik == "gaussian":
        recon, x = m.randn(n, 2, *spatial), m.randn(n, *spatial)
    else:
        recon, x = m.randn(n, 2, *spatial), m.randint(0, levels, n, *spatial)
    return dict(recon=recon, x=x, mu=m.randn(n, z), logvar=m.randn(n, z), likelihood=lik,
                beta=m.rng.choice((1.0, 0.5, 4.0)), levels=levels)


def _vae_backward(m: Maker) -> dict:
    c = _vae_forward(m)
    kept = m.rng.random() < 0.4
    recon_grad = _vae_stat(c) if kept else None
    return dict(grad=m.randn(c["recon"].shape[0]), recon=c["recon"], x=c["x"], mu=c["mu"], logvar=c["logvar"],
                recon_grad=recon_grad, likelihood=c["likelihood"], beta=c["beta"], levels=c["levels"],
                output_mask=[m.rng.random() < 0.7 for _ in range(3)])


def _vae_valid(c: dict) -> bool | None:
    r, x, mu, lv, lik, levels = c["recon"], c["x"], c["mu"], c["logvar"], c["likelihood"], c["levels"]
    if not (isinstance(lik, str) and lik in _VAE and is_int(levels) and is_scalar(c["beta"])):
        return False
    if not (is_float(r) and is_float(mu) and is_float(lv) and 2 <= r.dim() <= 8 and 2 <= mu.dim() <= 8
            and mu.shape == lv.shape and mu.shape[0] == r.shape[0] and one_dtype(r, mu, lv)
            and one_device(r, x, mu, lv) and copy_ok(r, x, mu, lv)):
        return False
    backward = "grad" in c
    kept = backward and isinstance(c["recon_grad"], torch.Tensor) and c["recon_grad"].numel() > 0
    # x's values matter where the gradient of recon is computed from them: the forward, and a
    # backward asked for it with none kept.
    read_x = not backward or (not kept and is_mask(c["output_mask"], 3) and c["output_mask"][0])
    if lik == "bernoulli":
        ok = is_float(x) and x.shape == r.shape and one_dtype(r, x) and (not read_x or in_range(x, 0, 1))
    else:
        ok = isinstance(x, torch.Tensor) and tuple(x.shape) == (r.shape[0], *r.shape[2:])
        if lik == "gaussian":
            ok = ok and is_float(x) and one_dtype(r, x) and r.shape[1] == 2
        elif lik == "categorical":
            ok = ok and is_index(x) and r.shape[1] >= 1 and (not read_x or in_range(x, 0, r.shape[1] - 1))
        else:
            ok = ok and is_index(x) and r.shape[1] == 2 and levels >= 2 and (not read_x or in_range(x, 0, levels - 1))
    if not ok or not backward:
        return ok
    g, rg = c["grad"], c["recon_grad"]
    if not (is_float(g) and tuple(g.shape) == (r.shape[0],) and one_device(r, g, rg) and is_mask(c["output_mask"], 3)
            and (rg is None or (isinstance(rg, torch.Tensor) and rg.numel() == 0)
                 or (is_float(rg) and rg.shape == r.shape and copy_ok(rg)))):
        return False
    return consistent(rg, _vae_stat(c)) if kept else True


def _vae_stat(c: dict) -> torch.Tensor:
    from fastgen.reference.vae_nelbo import recon_nll_grad_reference
    return recon_nll_grad_reference(c["recon"], c["x"], c["likelihood"], c["levels"])


_KINDS = ("minimax", "non_saturating", "lsgan", "hinge", "wasserstein")


def _gan_forward(m: Maker) -> dict:
    shape = lambda: tuple(m.size(1, 5) for _ in range(m.rng.randint(1, 3)))  # noqa: E731
    return dict(d_real=m.randn(*shape(), scale=3), d_fake=m.randn(*shape(), scale=3), kind=m.rng.choice(_KINDS),
                generator=m.rng.random() < 0.5)


def _gan_backward(m: Maker) -> dict:
    c = _gan_forward(m)
    return dict(grad=m.randn(), **c)


def _gan_valid(c: dict, *, public: bool = False) -> bool:
    r, f, kind, gen = c["d_real"], c["d_fake"], c["kind"], c["generator"]
    # d_real, where given, is a tensor on d_fake's device even where the loss ignores it (the
    # public function drops it for the generator).
    ok = isinstance(kind, str) and kind in _KINDS and isinstance(gen, bool) and is_float(f) and f.numel() > 0 \
        and copy_ok(f) and (public or r is None or (isinstance(r, torch.Tensor) and one_device(r, f)))
    if not gen:
        ok = ok and is_float(r) and r.numel() > 0 and one_dtype(r, f) and one_device(r, f) and copy_ok(r)
    if "grad" in c:
        g = c["grad"]
        ok = ok and is_float(g) and g.numel() == 1 and one_device(g, f)
    return ok


def _gan_public_valid(c: dict) -> bool:
    if c["target"] not in ("discriminator", "generator"):
        return False
    return _gan_valid(dict(c, generator=c["target"] == "generator"), public=True)


def _gp_forward(m: Maker) -> dict:
    shape = tuple(m.size(1, 4) for _ in range(m.rng.randint(1, 4)))
    return dict(grad=m.randn(*shape, scale=m.rng.choice((0.01, 1.0, 10.0))), weight=m.rng.choice((10.0, 1.0, 0.0)))


def _gp_backward(m: Maker) -> dict:
    c = _gp_forward(m)
    return dict(grad_out=m.randn(), grad=c["grad"], norms=_gp_stat(c), weight=c["weight"])


def _gp_valid(c: dict) -> bool | None:
    g, w = c["grad"], c["weight"]
    if not (is_float(g) and 1 <= g.dim() <= 8 and g.shape[0] >= 1 and is_scalar(w) and copy_ok(g)):
        return False
    if "norms" not in c:
        return True
    nm, go = c["norms"], c["grad_out"]
    if not (is_float(nm) and tuple(nm.shape) == (g.shape[0],) and is_float(go) and go.numel() == 1
            and one_device(g, nm, go) and copy_ok(nm)):
        return False
    return consistent(nm, _gp_stat(c))


def _gp_stat(c: dict) -> torch.Tensor:
    from fastgen.reference.gradient_penalty import sample_norms
    return sample_norms(c["grad"])


def _dmol_forward(m: Maker) -> dict:
    c, nr_mix = m.rng.choice((1, 3)), m.size(1, 3)
    n, h, w = m.size(1, 2), m.size(1, 4), m.size(1, 4)
    levels = m.rng.choice((2, 16, 256))
    x = (2 * m.randint(0, levels, n, c, h, w).to(m.dtype) / (levels - 1) - 1)
    params = m.randn(n, nr_mix * (10 if c == 3 else 3), h, w)
    return dict(x=x, params=params, nr_mix=nr_mix, levels=levels)


def _dmol_backward(m: Maker) -> dict:
    c = _dmol_forward(m)
    return dict(grad=m.randn(c["x"].shape[0]), pixel_log_prob=_dmol_stat(c), **c)


def _dmol_params_ok(params, n, channels, h, w, nr_mix, levels) -> bool:
    return is_int(nr_mix) and nr_mix >= 1 and is_int(levels) and levels >= 2 and channels in (1, 3) \
        and is_float(params) and params.dim() == 4 \
        and tuple(params.shape) == (n, nr_mix * (10 if channels == 3 else 3), h, w) and copy_ok(params)


def _dmol_valid(c: dict, *, cast_x: bool = False) -> bool | None:
    x, p = c["x"], c["params"]
    if not (is_float(x) and x.dim() == 4 and _dmol_params_ok(p, x.shape[0], x.shape[1], *x.shape[2:], c["nr_mix"],
                                                             c["levels"])
            and one_device(x, p) and (cast_x or one_dtype(x, p)) and copy_ok(x) and in_range(x, -1, 1)
            and not x.requires_grad):
        return False
    if _dmol_infinite_mean(c):
        return None
    if "pixel_log_prob" not in c:
        return True
    g, lp = c["grad"], c["pixel_log_prob"]
    if not (is_float(g) and tuple(g.shape) == (x.shape[0],) and is_float(lp)
            and tuple(lp.shape) == (x.shape[0], *x.shape[2:]) and lp.dtype == _acc(p) and one_device(p, g, lp)
            and copy_ok(lp)):
        return False
    return consistent(lp, _dmol_stat(c))


def _dmol_infinite_mean(c: dict) -> bool:
    """Whether a component mean is infinite. The likelihood there is unspecified (the call must only
    not crash): the reference's formula gives NaN for a mean of -inf at most levels and a finite
    value for +inf, artefacts of how it writes the logistic's CDF, which the kernels do not copy."""
    x, p, m = c["x"], c["params"], c["nr_mix"]
    if is_meta(c) or p.numel() == 0:
        return False
    blocks = p[:, m:].reshape(p.shape[0], x.shape[1], -1, m, *p.shape[2:])
    return bool(torch.isinf(blocks[:, :, 0]).any())


def _dmol_stat(c: dict) -> torch.Tensor:
    from fastgen.reference.dmol import dmol_pixel_log_prob_reference
    acc = _acc(c["params"])
    return dmol_pixel_log_prob_reference(c["x"].to(acc), c["params"].to(acc), c["nr_mix"], c["levels"])


def _dmol_sample_forward(m: Maker) -> dict:
    c = _dmol_forward(m)
    n, channels, h, w = c["x"].shape
    noise = m.rand(n, c["nr_mix"] + channels, h, w, dtype=m.rng.choice((torch.float32, torch.float64)))
    return dict(params=c["params"], noise=noise, nr_mix=c["nr_mix"], levels=c["levels"])


def _dmol_sample_valid(c: dict, *, noise_values: bool) -> bool:
    p, u, nr_mix = c["params"], c["noise"], c["nr_mix"]
    if not (is_float(u) and u.dim() == 4 and is_int(nr_mix) and u.shape[1] - nr_mix in (1, 3)):
        return False
    ok = _dmol_params_ok(p, u.shape[0], u.shape[1] - nr_mix, *u.shape[2:], nr_mix, c["levels"]) \
        and one_device(p, u) and copy_ok(u)
    if noise_values:  # fastgen.ops.dmol_sample: finite noise in [0, 1) (the op itself clamps)
        v = values(u)
        ok = ok and (v is None or v.numel() == 0 or bool(((v >= 0) & (v < 1)).all()))
    return ok


def _fs_forward(m: Maker) -> dict:
    b, d = m.size(0, 5), m.size(1, 6)
    return dict(features=m.randn(b, d, scale=2), shift=m.randn(d), total=m.randn(d, dtype=torch.float64),
                cross=m.randn(d, d, dtype=torch.float64))


def _fs_valid(c: dict) -> bool | None:
    f, s, t, x = (c[k] for k in _FS)
    if not all(isinstance(v, torch.Tensor) for v in (f, s, t, x)):
        return False
    ok = (f.dtype in (torch.float32, torch.float64) and f.dim() == 2 and f.shape[1] >= 1
          and tuple(s.shape) == (f.shape[1],) and s.dtype == f.dtype and tuple(t.shape) == (f.shape[1],)
          and tuple(x.shape) == (f.shape[1],) * 2 and t.dtype == torch.float64 and x.dtype == torch.float64
          and t.is_contiguous() and x.is_contiguous() and one_device(f, s, t, x) and copy_ok(f, s))
    # float32 products of huge values overflow, and whether a sum of them does depends on its order:
    # unspecified. NaN and inf give NaN and inf whatever the order.
    if ok and f.dtype == torch.float32 and any(not _finite_below(v, 1e15) for v in (f, s)):
        return None
    return ok


def _finite_below(t: torch.Tensor, bound: float) -> bool:
    v = values(t)
    return v is None or v.numel() == 0 or bool((v[torch.isfinite(v)].abs() <= bound).all())


# -- entry points ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Entry:
    name: str
    make: Callable[[Maker], dict]            # a valid call (keyword arguments)
    call: Callable[[dict], Any]              # runs the entry point
    valid: Callable[[dict], bool]            # the contract: may this (mutated) call return?
    reference: Callable[[dict], Any] | None  # the same call on the reference, for valid calls
    grads: tuple[str, ...] = ()              # float inputs that may require grad (public functions)
    triton: bool = False                     # a Triton launcher: valid calls are not run (interpreter: slow)


def _ops():
    return torch.ops.fastgen


def _mod(op: str):
    return importlib.import_module(f"fastgen.ops.{op}")


def _kernels(module: str):
    return importlib.import_module(f"fastgen.kernels.{module}")


def _public(fn_name: str, positional: tuple[str, ...]):
    def call(c):
        import fastgen
        kwargs = {k: (torch.Generator().manual_seed(0) if isinstance(v, _SeededGenerator) else v)
                  for k, v in c.items() if k not in positional}
        return getattr(fastgen.ops, fn_name)(*(c[k] for k in positional), **kwargs)
    return call


def _public_reference(fn_name: str, positional: tuple[str, ...]):
    run = _public(fn_name, positional)

    def call(c):
        import fastgen
        with fastgen.use_reference():
            return run(c)
    return call


def _positional(fn: Callable[[], Callable], order: tuple[str, ...]):
    return lambda c: fn()(*(c[k] for k in order))


def _entry_rows(op: str, public: str | None, order: tuple[str, ...], make, valid, *, reference: str,
                public_positional: tuple[str, ...] = (), public_make=None, public_valid=None, grads=(),
                module: str | None = None) -> list[Entry]:
    """The rows of one schema op: the public function (when ``public``), the torch.ops overload and
    the Triton launcher, each called with the schema's argument ``order``."""
    module = module or op.removesuffix("_backward")
    rows = []
    if public:
        rows.append(Entry(f"fastgen.ops.{public}", public_make or make, _public(public, public_positional),
                          public_valid or valid, _public_reference(public, public_positional), grads))
    rows.append(Entry(f"torch.ops.fastgen.{op}", make, _positional(lambda: getattr(_ops(), op), order), valid,
                      _positional(lambda: getattr(_mod(module), reference), order)))
    if HAS_TRITON:
        rows.append(Entry(f"fastgen.kernels.{op}_triton", make,
                          _positional(lambda: getattr(_kernels(module), f"{op}_triton"), order), valid, None,
                          triton=True))
    return rows


def _gan_public_make(m: Maker) -> dict:
    c = _gan_forward(m)
    return dict(d_real=c["d_real"], d_fake=c["d_fake"], kind=c["kind"],
                target="generator" if c["generator"] else "discriminator")


def _rep_public_make(m: Maker) -> dict:
    return dict(_rep_forward(m), generator=_SeededGenerator())


def _rep_public_valid(c: dict) -> bool:
    if c["eps"] is None and is_float(c["mu"]):  # drawn like mu
        c = dict(c, eps=torch.empty_like(c["mu"]))
    return _rep_valid({k: c[k] for k in ("mu", "logvar", "eps")})


class _SeededGenerator:
    """Stands for ``generator=``: every call gets a fresh generator with one seed, so that the
    eps reparameterize draws agree between kernel and reference."""


def _vae_public_make(m: Maker) -> dict:
    c = _vae_forward(m)
    c["return_parts"] = m.rng.random() < 0.5
    return c


def _dmol_public_make(m: Maker) -> dict:
    c = _dmol_forward(m)
    if m.rng.random() < 0.3:  # dmol_nll casts x to params' dtype
        c["x"] = c["x"].to(m.rng.choice((torch.float32, torch.float64)))
    return c


def _dmol_sample_public_make(m: Maker) -> dict:
    c = _dmol_sample_forward(m)
    return c


_MC = ("x", "weight", "bias", "mask_type", "color_groups")
_MCB = ("grad_out", "x", "weight", "mask_type", "color_groups", "output_mask")
_VAEF = ("recon", "x", "mu", "logvar", "likelihood", "beta", "levels", "keep_grad")
_INA = ("x", "weight", "bias", "act", "negative_slope", "eps")
_INAB = ("grad_out", "x", "weight", "bias", "mean", "rstd", "act", "negative_slope", "output_mask")
_VAEB = ("grad", "recon", "x", "mu", "logvar", "recon_grad", "likelihood", "beta", "levels", "output_mask")


def _vae_op_make(m: Maker) -> dict:
    c = _vae_forward(m)
    c["keep_grad"] = m.rng.random() < 0.5
    return c


ENTRIES: list[Entry] = [
    *_entry_rows("masked_conv2d", "masked_conv2d", _MC, _mc_forward, _mc_valid, reference="_reference_forward",
                 public_positional=("x", "weight", "bias"), grads=("x", "weight", "bias")),
    *_entry_rows("masked_conv2d_backward", None, _MCB, _mc_backward, _mc_valid, reference="_reference_backward"),
    *_entry_rows("gated_activation", "gated_activation", ("x", "cond"), _ga_forward, _ga_valid,
                 reference="_reference_forward", public_positional=("x", "cond"), grads=("x", "cond")),
    *_entry_rows("gated_activation_backward", None, ("grad_out", "x", "cond"), _ga_backward, _ga_valid,
                 reference="_reference_backward"),
    *_entry_rows("instance_norm_act", "instance_norm_act", _INA, _ina_forward, _ina_valid,
                 reference="_reference_forward", public_positional=("x", "weight", "bias"),
                 grads=("x", "weight", "bias")),
    *_entry_rows("instance_norm_act_backward", None, _INAB, _ina_backward, _ina_valid,
                 reference="_reference_backward"),
    *_entry_rows("pixel_norm", "pixel_norm", ("x", "negative_slope", "eps"), _pn_forward, _pn_valid,
                 reference="_reference_forward", public_positional=("x",), grads=("x",)),
    *_entry_rows("pixel_norm_backward", None, ("grad_out", "x", "rstd", "negative_slope"), _pn_backward, _pn_valid,
                 reference="_reference_backward"),
    *_entry_rows("minibatch_stddev", "minibatch_stddev", ("x", "group_size", "eps"), _ms_forward, _ms_valid,
                 reference="_reference_forward", public_positional=("x", "group_size"), grads=("x",)),
    *_entry_rows("minibatch_stddev_backward", None, ("grad_out", "x", "group_size", "eps"), _ms_backward, _ms_valid,
                 reference="_reference_backward"),
    *_entry_rows("categorical_nll", "categorical_nll", ("logits", "target"), _cat_forward, _cat_valid,
                 reference="_reference_forward", public_positional=("logits", "target"), grads=("logits",)),
    *_entry_rows("categorical_nll_backward", None, ("grad", "logits", "target", "lse"), _cat_backward, _cat_valid,
                 reference="_reference_backward"),
    *_entry_rows("reparameterize", "reparameterize", ("mu", "logvar", "eps"), _rep_forward, _rep_valid,
                 reference="_reference_forward", public_positional=("mu", "logvar", "eps"), public_make=_rep_public_make,
                 public_valid=_rep_public_valid, grads=("mu", "logvar", "eps")),
    *_entry_rows("reparameterize_backward", None, ("grad", "logvar", "eps", "output_mask"), _rep_backward,
                 _rep_valid, reference="_reference_backward"),
    *_entry_rows("vae_nelbo", "vae_nelbo", _VAEF, _vae_op_make, _vae_valid, reference="_reference_forward",
                 public_positional=("recon", "x", "mu", "logvar"), public_make=_vae_public_make,
                 grads=("recon", "x", "mu", "logvar")),
    *_entry_rows("vae_nelbo_backward", None, _VAEB, _vae_backward, _vae_valid, reference="_reference_backward"),
    *_entry_rows("gan_loss", "gan_loss", ("d_real", "d_fake", "kind", "generator"), _gan_forward, _gan_valid,
                 reference="_reference_forward", public_positional=("d_real", "d_fake"), public_make=_gan_public_make,
                 public_valid=_gan_public_valid, grads=("d_real", "d_fake")),
    *_entry_rows("gan_loss_backward", None, ("grad", "d_real", "d_fake", "kind", "generator"), _gan_backward,
                 _gan_valid, reference="_reference_backward"),
    *_entry_rows("gradient_penalty", "gradient_penalty", ("grad", "weight"), _gp_forward, _gp_valid,
                 reference="_reference_forward", public_positional=("grad",), grads=("grad",)),
    *_entry_rows("gradient_penalty_backward", None, ("grad_out", "grad", "norms", "weight"), _gp_backward, _gp_valid,
                 reference="_reference_backward"),
    *_entry_rows("dmol_nll", "dmol_nll", ("x", "params", "nr_mix", "levels"), _dmol_forward, _dmol_valid,
                 reference="_reference_forward", public_positional=("x", "params"), public_make=_dmol_public_make,
                 public_valid=lambda c: _dmol_valid(c, cast_x=True), grads=("params",), module="dmol"),
    *_entry_rows("dmol_nll_backward", None, ("grad", "x", "params", "pixel_log_prob", "nr_mix", "levels"),
                 _dmol_backward, _dmol_valid, reference="_reference_backward", module="dmol"),
    *_entry_rows("dmol_sample", "dmol_sample", ("params", "noise", "nr_mix", "levels"), _dmol_sample_forward,
                 lambda c: _dmol_sample_valid(c, noise_values=False), reference="_reference_sample",
                 public_positional=("params",), public_make=_dmol_sample_public_make,
                 public_valid=lambda c: _dmol_sample_valid(c, noise_values=True), module="dmol"),
]

_FS = ("features", "shift", "total", "cross")


def _fs_copy(t):
    """A copy of an accumulator in the same layout (strides, offset, repeated memory), so that the
    kernel and the reference each update their own and see what the call passed."""
    if not isinstance(t, torch.Tensor) or t.device.type == "meta":
        return t
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage().clone(), t.storage_offset(), t.shape, t.stride())


def _fs_call(fn: Callable[[], Callable]):
    """An in-place entry point as a function of the call: runs it on copies of the accumulators and
    returns them (the op itself returns nothing)."""
    def call(c):
        c = {k: _fs_copy(v) if k in ("total", "cross") else v for k, v in c.items()}
        fn()(*(c[k] for k in _FS))
        return c["total"], c["cross"]
    return call


def _fs_public_reference():
    import fastgen

    def update(*args):
        with fastgen.use_reference():
            fastgen.ops.feature_stats_update(*args)
    return update


def _fastgen_ops():
    import fastgen.ops
    return fastgen.ops


ENTRIES += [
    Entry("fastgen.ops.feature_stats_update", _fs_forward, _fs_call(lambda: _fastgen_ops().feature_stats_update),
          _fs_valid, _fs_call(_fs_public_reference)),
    Entry("torch.ops.fastgen.feature_stats_update", _fs_forward, _fs_call(lambda: _ops().feature_stats_update),
          _fs_valid, _fs_call(lambda: _mod("feature_stats")._reference_update)),
]
if HAS_TRITON:
    ENTRIES.append(Entry("fastgen.kernels.feature_stats_update_triton", _fs_forward,
                         _fs_call(lambda: _kernels("feature_stats").feature_stats_update_triton), _fs_valid, None,
                         triton=True))
ENTRY_NAMES = [e.name for e in ENTRIES]

# Entries that check the driver itself (tests/test_fuzz_ops.py), never run by default: one crashes
# by a signal on every case, one accepts every (invalid) input, one disagrees with its reference.
SELFTEST_ENTRIES = [
    Entry("selftest.crash", lambda m: dict(x=m.randn(3)), lambda c: __import__("ctypes").string_at(0),
          lambda c: False, None),
    Entry("selftest.accepts", lambda m: dict(x=m.randn(3)), lambda c: None, lambda c: False, None),
    Entry("selftest.disagrees", lambda m: dict(x=m.randn(3)), lambda c: torch.ones(1), lambda c: True,
          lambda c: torch.zeros(1)),
]
_ALL = {e.name: e for e in ENTRIES + SELFTEST_ENTRIES}


def _forward_output(op: str, args: tuple[str, ...], index: int, **extra):
    """The statistic a backward op is handed, as its forward op (the kernel) computes it."""
    def stat(c):
        return getattr(_ops(), op)(*(c[a] for a in args), *extra.values())[index]
    return stat


# The statistics backward ops are handed, and how the forward op computes them (the kernel's own,
# as in training: a backward is exact only for its forward's statistic).
STATISTICS = {
    "lse": _forward_output("categorical_nll", ("logits", "target"), 1),
    "norms": _forward_output("gradient_penalty", ("grad", "weight"), 1),
    "pixel_log_prob": _forward_output("dmol_nll", ("x", "params", "nr_mix", "levels"), 1),
    "mean": _forward_output("instance_norm_act", ("x",), 1, weight=None, bias=None, act="none", negative_slope=0.0,
                            eps=_INA_EPS),
    "rstd": lambda c: (_forward_output("instance_norm_act", ("x",), 2, weight=None, bias=None, act="none",
                                       negative_slope=0.0, eps=_INA_EPS) if "mean" in c  # instance_norm_act_backward
                       else _forward_output("pixel_norm", ("x", "negative_slope"), 1, eps=_PN_EPS))(c),
    "recon_grad": _forward_output("vae_nelbo", ("recon", "x", "mu", "logvar", "likelihood", "beta", "levels"), 3,
                                  keep_grad=True),
}


# -- mutations -------------------------------------------------------------------------------------

def _tensor_args(c: dict) -> list[str]:
    return [k for k, v in c.items() if isinstance(v, torch.Tensor)]


def _refill(t: torch.Tensor, shape: tuple[int, ...], m: Maker) -> torch.Tensor:
    """A tensor like t (dtype, device) of another shape."""
    if t.dtype in FLOAT_DTYPES:
        return m.randn(*shape, dtype=t.dtype).to(t.device)
    high = max(1, int(t.max()) + 1) if t.numel() and t.device.type != "meta" else 2
    return m.randint(0, high, *shape).to(t.dtype).to(t.device)


def _mutate(c: dict, m: Maker) -> str:
    """Apply one random mutation to the call c in place; returns its name."""
    rng = m.rng
    tensors = _tensor_args(c)
    strings = [k for k, v in c.items() if isinstance(v, str)]
    ints = [k for k, v in c.items() if is_int(v)]
    numbers = [k for k, v in c.items() if isinstance(v, float)]
    masks = [k for k, v in c.items() if isinstance(v, list)]
    floats = [k for k in tensors if c[k].dtype in FLOAT_DTYPES]
    kinds = ["rank", "size", "dtype", "all_dtype", "meta_one", "meta_all", "noncontig", "stride0", "huge", "empty",
             "special", "special", "special", "not_tensor"]
    kinds += ["string"] * bool(strings) + ["int"] * 2 * bool(ints) + ["number"] * bool(numbers) \
        + ["mask"] * bool(masks) + ["none"] * bool(tensors)
    kind = rng.choice(kinds)
    if not tensors and kind not in ("string", "int", "number", "mask"):
        kind = "none"
    name = rng.choice(tensors) if tensors else None
    t = c.get(name)
    if kind == "rank":
        if t.dim() > 0 and rng.random() < 0.5:
            c[name] = t.flatten(0, 1) if t.dim() >= 2 else t.reshape(()) if t.numel() == 1 else t[0]
        else:
            c[name] = t.unsqueeze(rng.randint(0, t.dim()))
    elif kind == "size" and t.dim() > 0:
        shape = list(t.shape)
        d = rng.randrange(len(shape))
        shape[d] = max(0, shape[d] + rng.choice((-1, 1, 2, 3)))
        c[name] = _refill(t, tuple(shape), m)
    elif kind == "dtype":
        c[name] = t.to(rng.choice((torch.int32, torch.int64, torch.bool, torch.uint8, torch.complex64,
                                   torch.float8_e4m3fn, torch.float16, torch.bfloat16, torch.float32,
                                   torch.float64)))
    elif kind == "all_dtype" and floats:
        dtype = rng.choice((torch.float16, torch.bfloat16, torch.float32, torch.float64))
        for k in floats:
            c[k] = c[k].to(dtype)
    elif kind == "meta_one":
        c[name] = t.to("meta")
    elif kind == "meta_all":
        for k in tensors:
            c[k] = c[k].to("meta")
    elif kind == "noncontig" and t.dim() > 0:
        c[name] = torch.stack([t, t], dim=-1).select(-1, 0) if rng.random() < 0.5 else \
            t.transpose(0, -1).contiguous().transpose(0, -1)
    elif kind == "stride0" and t.dim() > 0 and t.shape[0] > 0:
        c[name] = t[:1].expand(t.shape)  # the first row, repeated: a valid view of other values
    elif kind == "huge":
        shape = list(t.shape) or [1]
        d = rng.randrange(len(shape))
        others = 1
        for i, s in enumerate(shape):
            others *= max(s, 1) if i != d else 1
        shape[d] = (COPY_LIMIT // 2) // max(others, 1) + rng.choice((1, 2**20))  # > 256 MiB in 4-byte elements
        c[name] = torch.zeros((1,) * len(shape), dtype=t.dtype).expand(shape)
    elif kind == "empty" and t.dim() > 0:
        shape = list(t.shape)
        shape[rng.randrange(len(shape))] = 0
        c[name] = _refill(t, tuple(shape), m)
    elif kind == "special" and floats:
        k = rng.choice(floats)
        v = c[k].detach().clone()
        if v.numel():
            flat = v.view(-1) if v.is_contiguous() else v.reshape(-1)
            for _ in range(rng.randint(1, 3)):
                flat[rng.randrange(flat.numel())] = rng.choice(SPECIAL_VALUES)
            v = flat.view(v.shape)
        c[k] = v
        name = k
    elif kind == "not_tensor":
        c[name] = rng.choice(([1.0, 2.0], 3.0, "tensor", None, (1,), t.tolist() if t.numel() < 50 else 0))
    elif kind == "none":
        c[name] = None
    elif kind == "string":
        name = rng.choice(strings)
        c[name] = rng.choice(BAD_STRINGS)
    elif kind == "int":
        name = rng.choice(ints)
        c[name] = rng.choice(BAD_INTS + (c[name] + 1, c[name] - 1))
    elif kind == "number":
        name = rng.choice(numbers)
        c[name] = rng.choice((float("nan"), float("inf"), -1.0, 1e300, 0.0))
    elif kind == "mask":
        name = rng.choice(masks)
        n = len(c[name])
        c[name] = [True] * rng.choice([k for k in range(6) if k != n])
    else:
        return "none"
    return f"{kind}:{name}"


# -- comparing results -----------------------------------------------------------------------------

def _flat(out) -> list:
    if isinstance(out, (tuple, list)):
        return [y for o in out for y in _flat(o)]
    return [out]


def _close(a, b) -> str | None:
    """None when a and b agree, else why not."""
    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
        return f"types {type(a).__name__} and {type(b).__name__}"
    if not isinstance(a, torch.Tensor):
        return None if a == b else f"{a!r} != {b!r}"
    if tuple(a.shape) != tuple(b.shape):
        return f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    if a.device.type == "meta" or b.device.type == "meta" or a.numel() == 0:
        return None
    low = a.dtype in (torch.float16, torch.bfloat16) or b.dtype in (torch.float16, torch.bfloat16)
    if a.dtype == torch.float64 and b.dtype == torch.float64:
        rtol, atol = 1e-6, 1e-6
    else:
        rtol, atol = (5e-2, 5e-2) if low else (2e-3, 2e-3)
    x, y = a.detach().double(), b.detach().double()
    # Errors are judged against the scale of each example's values (dim 0), at least 1: an
    # element that is the difference of two large terms cannot be more exact than they are.
    magnitude = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).abs()
    if y.dim() >= 1 and y.shape[0] > 0:
        scale = magnitude.reshape(y.shape[0], -1).amax(1).clamp(min=1.0).view(-1, *([1] * (y.dim() - 1)))
    else:
        scale = magnitude.clamp(min=1.0)
    ok = torch.isclose(x, y, rtol=rtol, atol=0.0, equal_nan=True) | ((x - y).abs() <= atol * scale)
    if bool(ok.all()):
        return None
    i = int((~ok).flatten().nonzero()[0])
    return f"values differ at flat index {i}: {x.flatten()[i].item()!r} vs {y.flatten()[i].item()!r}"


def _close_low(a, ref_low, exact) -> str | None:
    """A result computed from float16/bfloat16 inputs against the reference on the same values in
    float64: non-finite where the exact value, rounded to the result's dtype, is; elsewhere an error
    at most twice the same-precision reference's (``ref_low``, None if it could not run) or 1e-2 of
    the example's scale (ARCHITECTURE.md's rule for low precision)."""
    if not isinstance(a, torch.Tensor) or a.device.type == "meta" or a.numel() == 0:
        return _close(a, exact)
    if tuple(a.shape) != tuple(exact.shape):
        return f"shapes {tuple(a.shape)} and {tuple(exact.shape)}"
    x, e = a.detach().double(), exact.detach().to(a.dtype).double()
    finite = torch.isfinite(e)
    pattern = (torch.isnan(x) == torch.isnan(e)) & (~finite | (x == e) | torch.isfinite(x))
    y = exact.detach().double()
    magnitude = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).abs()
    scale = magnitude.reshape(y.shape[0], -1).amax(1).clamp(min=1.0).view(-1, *([1] * (y.dim() - 1))) \
        if y.dim() >= 1 and y.shape[0] > 0 else magnitude.clamp(min=1.0)
    allowed = 1e-2 * scale
    if isinstance(ref_low, torch.Tensor) and tuple(ref_low.shape) == tuple(y.shape):
        allowed = torch.maximum(allowed, 2 * torch.nan_to_num((ref_low.detach().double() - y).abs(), nan=float("inf")))
    ok = pattern & (~finite | ((x - y).abs() <= allowed))
    if bool(ok.all()):
        return None
    i = int((~ok).flatten().nonzero()[0])
    return f"low precision: flat index {i}: {x.flatten()[i].item()!r} vs exact {y.flatten()[i].item()!r}"


def _compare_low(out, ref_low, exact) -> str | None:
    a, b, e = _flat(out), _flat(ref_low) if ref_low is not None else None, _flat(exact)
    if len(a) != len(e):
        return f"{len(a)} outputs vs {len(e)}"
    for i, (x, y) in enumerate(zip(a, e)):
        why = _close_low(x, b[i] if b is not None and len(b) == len(e) else None, y)
        if why:
            return f"output {i}: {why}"
    return None


def _upcast(c: dict) -> dict:
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.dtype in FLOAT_DTYPES else v) for k, v in c.items()}


def _compare(out, ref) -> str | None:
    a, b = _flat(out), _flat(ref)
    if len(a) != len(b):
        return f"{len(a)} outputs vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        why = _close(x, y)
        if why:
            return f"output {i}: {why}"
    return None


def _with_grads(entry: Entry, c: dict, names: tuple[str, ...], fn: Callable[[dict], Any], seed: int):
    """(outputs, {name: grad or None}) of fn on a copy of c whose inputs ``names`` require grad."""
    c = {k: (v.detach().clone().requires_grad_(True) if k in names else v) for k, v in c.items()}
    out = fn(c)
    first = _flat(out)[0]
    grads = {}
    if isinstance(first, torch.Tensor) and first.requires_grad:
        g = torch.randn(first.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        first.backward(g.to(first.dtype))
        grads = {k: c[k].grad for k in names}
    else:
        grads = {k: None for k in names}
    return out, grads


# -- one case --------------------------------------------------------------------------------------

def run_case(entry: Entry, seed: int, index: int) -> dict:
    rng = random.Random(f"{seed}:{entry.name}:{index}")
    m = Maker(rng)
    c = entry.make(m)
    mutation = _mutate(c, m)
    # A backward op's saved statistic follows its mutated inputs (so that extreme values reach the
    # backward kernels consistently), unless the mutation was of the statistic itself.
    kind, _, target = mutation.partition(":")
    for key, stat in STATISTICS.items():
        if key in c and (target != key or kind in ("all_dtype", "meta_all")) and isinstance(c[key], torch.Tensor) \
                and c[key].numel():
            try:
                c[key] = stat(c)
            except Exception:  # noqa: BLE001 - inputs the reference cannot take: the statistic stays
                pass
    try:
        verdict = entry.valid(c)
    except Exception as e:  # an oracle that cannot judge the call is a bug of this driver
        raise RuntimeError(f"the valid() oracle of {entry.name} failed on {mutation}: {e!r}") from e
    expected_valid = bool(verdict)
    result = dict(entry=entry.name, case=index, mutation=mutation, valid=expected_valid)
    if verdict is None:  # unspecified by the contract: it must only not crash
        try:
            entry.call(c)
            result["raised"] = False
        except Exception:  # noqa: BLE001
            result["raised"] = True
        result["outcome"] = "unchecked"
        return result
    if expected_valid and entry.triton:
        result["outcome"] = "skipped"
        return result
    names = ()
    if expected_valid and entry.grads and not is_meta(c):
        candidates = [k for k in entry.grads if is_float(c.get(k)) and c[k].dtype in (torch.float32, torch.float64)]
        names = tuple(k for k in candidates if rng.random() < 0.6)
    try:
        if names:
            out, grads = _with_grads(entry, c, names, entry.call, seed + index)
        else:
            out, grads = entry.call(c), {}
        error = None
    except Exception as e:  # noqa: BLE001 - any Python exception is a refusal
        out, grads, error = None, {}, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    result["raised"] = error is not None
    if not expected_valid:
        result["outcome"] = "raised" if error else "accepted"
        result["error"] = error
        return result
    try:
        if names:
            ref, ref_grads = _with_grads(entry, c, names, entry.reference, seed + index)
        else:
            ref, ref_grads = entry.reference(c), {}
        ref_error = None
    except Exception as e:  # noqa: BLE001
        ref, ref_grads, ref_error = None, {}, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if error and ref_error:
        result["outcome"] = "agree"
    elif error:
        result["outcome"], result["error"] = "refused", error
    elif ref_error:
        result["outcome"], result["error"] = "silent", f"returned where the reference raised {ref_error}"
    else:
        low = not is_meta(c) and any(isinstance(v, torch.Tensor) and v.dtype in (torch.float16, torch.bfloat16)
                                     for v in c.values())
        if low:
            try:
                exact = entry.reference(_upcast(c))
            except Exception:  # noqa: BLE001 - the float64 call is not valid (it changed dtypes)
                exact = None
            why = _compare_low(out, ref, exact) if exact is not None else _compare(out, ref)
        else:
            why = _compare(out, ref)
        for k in names:
            if why:
                break
            if (grads[k] is None) != (ref_grads[k] is None):
                why = f"{k} has a gradient in {'the reference' if grads[k] is None else 'the kernel'} only"
            elif grads[k] is not None:
                why = _close(grads[k], ref_grads[k])
                why = why and f"grad of {k}: {why}"
        result["outcome"] = "silent" if why else "agree"
        if why:
            result["error"] = why
    if names:
        result["grads"] = list(names)
    return result


# -- for the op test files --------------------------------------------------------------------------

def kernel_refusal_tests(module: str, cases: list[tuple[str, Callable[[], tuple], str]]):
    """Two parametrized tests for an op test file: the C++ kernel ``torch.ops.fastgen.<op>`` raises
    RuntimeError (ValueError for data values) and the Triton launcher ``fastgen.kernels.<module>.<op>_triton`` ValueError,
    matching ``match``, for each ``(op, make_args, match)`` of ``cases``: each checks its own
    arguments, whatever the Python wrapper checked.

        test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
            kernel_refusal_tests("gated_activation", KERNEL_BAD)
    """
    import pytest

    from tests.conftest import HAS_TRITON as has_triton
    from tests.conftest import compiled_cpu

    ids = [f"{op}-{match[:28]}" for op, _, match in cases]

    @pytest.mark.skipif(not compiled_cpu(cases[0][0]), reason="fastgen._C not built")
    @pytest.mark.parametrize("op,args,match", cases, ids=ids)
    def test_cpp(op, args, match):
        # TORCH_CHECK raises RuntimeError; TORCH_CHECK_VALUE (the checks of data values) ValueError.
        with pytest.raises((RuntimeError, ValueError), match=match):
            getattr(torch.ops.fastgen, op)(*args())

    @pytest.mark.skipif(not has_triton, reason="triton not installed")
    @pytest.mark.parametrize("op,args,match", cases, ids=ids)
    def test_triton(op, args, match):
        # On CPU tensors a launcher runs its kernel in the interpreter: a launch past a bad
        # argument reads or writes out of bounds of host memory. It must raise before.
        with pytest.raises(ValueError, match=match):
            getattr(_kernels(module), f"{op}_triton")(*args())

    return test_cpp, test_triton


# -- worker and parent -----------------------------------------------------------------------------

def _worker(args) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    entries = [_ALL[name] for name in args.entries.split(",")]
    if any(not e.name.startswith("selftest.") for e in entries):
        import fastgen  # noqa: F401
    start_entry, start_case = (int(v) for v in args.start.split(":"))
    for ei, entry in enumerate(entries):
        if ei < start_entry:
            continue
        for i in range(start_case if ei == start_entry else 0, args.cases):
            print(json.dumps(dict(begin=[ei, i])), flush=True)
            try:
                result = run_case(entry, args.seed, i)
            except Exception:  # noqa: BLE001 - a driver error: report it, do not hide it as a refusal
                result = dict(entry=entry.name, case=i, outcome="driver_error", error=traceback.format_exc()[-800:])
            print(json.dumps(result), flush=True)


def run(cases: int, seed: int, entries: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Run ``cases`` cases per entry point in worker subprocesses; returns (counts per entry, the
    failing cases)."""
    names = entries or ENTRY_NAMES
    unknown = [n for n in names if n not in _ALL]
    if unknown:
        raise ValueError(f"unknown entry points {unknown}; known: {', '.join(_ALL)}")
    counts = {n: dict(cases=0, valid=0, exceptions=0, crashes=0, accepted=0, silent=0, refused=0, unchecked=0,
                      skipped=0) for n in names}
    failures = []
    start = (0, 0)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONFAULTHANDLER="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while True:
        cmd = [sys.executable, "-m", "tests.fuzz_ops", "--worker", "--cases", str(cases), "--seed", str(seed),
               "--entries", ",".join(names), "--start", f"{start[0]}:{start[1]}"]
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        begun = None
        for line in proc.stdout:
            msg = json.loads(line)
            if "begin" in msg:
                begun = tuple(msg["begin"])
                continue
            begun = None
            n = counts[msg["entry"]]
            n["cases"] += 1
            n["valid"] += bool(msg.get("valid"))
            n["exceptions"] += bool(msg.get("raised"))
            for key in ("accepted", "silent", "refused", "unchecked", "skipped"):
                n[key] += msg["outcome"] == key
            if msg["outcome"] in ("accepted", "silent", "refused", "driver_error"):
                failures.append(msg)
        stderr = proc.stderr.read()
        rc = proc.wait()
        if begun is None and rc == 0:
            break
        if begun is None:
            raise RuntimeError(f"fuzz worker failed (rc {rc}) between cases:\n{stderr[-2000:]}")
        entry = names[begun[0]]
        counts[entry]["cases"] += 1
        counts[entry]["crashes"] += 1
        failures.append(dict(entry=entry, case=begun[1], outcome="crash", error=f"rc {rc}: {stderr[-1500:]}"))
        start = (begun[0], begun[1] + 1) if begun[1] + 1 < cases else (begun[0] + 1, 0)
        if start[0] >= len(names):
            break
    return counts, failures


def format_counts(counts: dict) -> str:
    cols = ("cases", "valid", "exceptions", "crashes", "accepted", "silent", "refused", "unchecked", "skipped")
    width = max(len(n) for n in counts)
    lines = [f"{'entry point':<{width}}  " + "  ".join(f"{c:>10}" for c in cols)]
    total = {c: 0 for c in cols}
    for name, n in counts.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{n[c]:>10}" for c in cols))
        for c in cols:
            total[c] += n[c]
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{total[c]:>10}" for c in cols))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=int(os.environ.get("FASTGEN_FUZZ_CASES", "50")),
                        help="cases per entry point (default: $FASTGEN_FUZZ_CASES or 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the counts and the failing cases to this file")
    parser.add_argument("--entries", default=",".join(ENTRY_NAMES), help="comma-separated entry points")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", default="0:0", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    t0 = time.time()
    counts, failures = run(args.cases, args.seed, args.entries.split(","))
    elapsed = time.time() - t0
    report = [f"fuzz_ops: {args.cases} cases per entry point, seed {args.seed}, {elapsed:.0f} s, "
              f"torch {torch.__version__}", "", format_counts(counts), ""]
    for f in failures:
        report.append(json.dumps(f))
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""``fastgen.ops.feature_stats_update``: one batch of streaming feature statistics, in place.

FID needs the mean and covariance of some 50,000 feature vectors of 2,048 numbers. Holding them
all takes 400 MB in float32 and ``torch.cov`` then forms all D x D products in one matrix product;
the streaming form keeps two float64 accumulators, ``total`` (D,) and ``cross`` (D, D), adds each
batch into them, and forms only the upper triangle of the products (half the multiply-adds).

Statistics are not differentiated: the op has no autograd formula and refuses tensors that
require grad while grad mode is on (pass ``features.detach()`` or run it under ``torch.no_grad()``,
as a feature extractor in eval mode usually is). Under autocast the op is not cast either: its
float64 accumulators are updated in place, so casting them would update copies.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_copy_size, has_memory
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.ops._lib import lib
from fastgen.reference.feature_stats import feature_stats_update_reference

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.feature_stats"
FEATURE_DTYPES = (torch.float32, torch.float64)


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_update(features, shift, total, cross):
    check_feature_stats_update_args(features, shift, total, cross, grad=False)
    feature_stats_update_reference(features, shift, total, cross)


register_implementations("feature_stats_update", _reference_update, (_TRITON, "feature_stats_update_triton"))


@torch.library.register_fake("fastgen::feature_stats_update")
def _(features, shift, total, cross):
    check_feature_stats_update_args(features, shift, total, cross, grad=False)
    return None


# A non-differentiable op: an Autograd kernel that refuses inputs requiring grad (while grad mode
# is on) and otherwise re-invokes the op below autograd, as torch.library's guidance for such
# ops says. Without it PyTorch's autograd fallback would give the mutated accumulators a grad_fn
# that only fails at backward time.
def _autograd(features, shift, total, cross):
    _refuse_grad(features, shift, total, cross)
    with torch._C._AutoDispatchBelowAutograd():
        _ops.feature_stats_update.default(features, shift, total, cross)


lib.impl("feature_stats_update", _autograd, "Autograd")


# The op writes total and cross in place: bump their version counters, as ATen's in-place ops do,
# so that autograd notices if a graph saved them (ADInplaceOrView, the key below Autograd).
def _inplace(features, shift, total, cross):
    with torch._C._AutoDispatchBelowADInplaceOrView():
        _ops.feature_stats_update.default(features, shift, total, cross)
    torch.autograd.graph.increment_version((total, cross))


lib.impl("feature_stats_update", _inplace, "ADInplaceOrView")


def _refuse_grad(features, shift, total, cross) -> None:
    if not torch.is_grad_enabled():
        return
    for name, t in (("features", features), ("shift", shift), ("total", total), ("cross", cross)):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            raise ValueError(f"feature_stats_update accumulates statistics, which have no gradient, but {name} "
                             f"requires grad; pass {name}.detach() or call it under torch.no_grad()")


def _check_tensor(name: str, t: object, dims: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {layout}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
    return t


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b share memory (by the byte ranges they span in one storage)."""
    if not (has_memory(a) and has_memory(b)) or a.numel() == 0 or b.numel() == 0:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t):
        start = t.storage_offset() * t.element_size()
        extent = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1
        return start, start + extent * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def check_feature_stats_update_args(features, shift, total, cross, *, grad: bool = True) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs
    (shapes, dtypes, devices and layouts only: the values are not scanned). With ``grad``, also
    refuse tensors that require grad while grad mode is on."""
    _check_tensor("features", features, 2, "a (B, D) tensor of B feature vectors")
    b, d = features.shape
    if features.dtype not in FEATURE_DTYPES:
        raise ValueError(f"features must be float32 or float64, got dtype {features.dtype}"
                         + ("; cast it with .float()" if features.is_floating_point() else ""))
    if d < 1:
        raise ValueError(f"features must have at least one feature (D >= 1), got shape {tuple(features.shape)}")
    _check_tensor("shift", shift, 1, f"a (D,) = ({d},) tensor")
    _check_tensor("total", total, 1, f"a (D,) = ({d},) float64 tensor")
    _check_tensor("cross", cross, 2, f"a (D, D) = ({d}, {d}) float64 tensor")
    for name, t, shape in (("shift", shift, (d,)), ("total", total, (d,)), ("cross", cross, (d, d))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for features of shape {tuple(features.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.device != features.device:
            raise ValueError(f"{name} is on {t.device} but features is on {features.device}; move them to one device")
    if shift.dtype != features.dtype:
        raise ValueError(f"shift must have features' dtype {features.dtype}, got {shift.dtype}")
    for name, t in (("total", total), ("cross", cross)):
        if t.dtype != torch.float64:
            raise ValueError(f"{name} must be float64 (the accumulators are float64 whatever the features' dtype), "
                             f"got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is updated in place), got strides {t.stride()}")
    check_copy_size("features", features)
    check_copy_size("shift", shift)
    if _overlaps(total, cross):
        raise ValueError("total shares memory with cross; the accumulators must be tensors of their own")
    for name, t in (("features", features), ("shift", shift)):
        if _overlaps(t, total) or _overlaps(t, cross):
            raise ValueError(f"{name} shares memory with an accumulator (total or cross); the accumulators must be "
                             "tensors of their own")
    if grad:
        _refuse_grad(features, shift, total, cross)


def feature_stats_update(features: torch.Tensor, shift: torch.Tensor, total: torch.Tensor,
                         cross: torch.Tensor) -> None:
    """In place, with d = features - shift: total += d.sum(0); cross[i, j] += (d^T d)[i, j] for i <= j.

    Args:
        features: (B, D) float32 or float64, B >= 0 (B = 0 changes nothing).
        shift: (D,) in features' dtype: a fixed vector near the mean (e.g. the first batch's mean,
            or zeros), subtracted so that the sums of products stay small.
        total: (D,) float64, contiguous: the running sum of d.
        cross: (D, D) float64, contiguous: the running sum of d^T d, upper triangle (with the
            diagonal) only. The strictly lower triangle is never read or written: symmetrise once
            at the end (see ``fastgen.reference.feature_stats.finish_covariance_reference``).

    For float32 features the products of each chunk of at most 1024 rows are summed in float32,
    then added into the float64 accumulators, so the float32 rounding does not grow with the
    number of rows. float64 features are computed in float64 throughout.
    """
    check_feature_stats_update_args(features, shift, total, cross)
    if reference_forced():
        feature_stats_update_reference(features, shift, total, cross)
        return
    _ops.feature_stats_update.default(features, shift, total, cross)

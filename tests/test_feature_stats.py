"""feature_stats_update: every implementation against fastgen.reference, streaming against numpy.cov,
the lower triangle untouched, opcheck, bad input."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import fastgen
from fastgen.reference.feature_stats import feature_stats_update_reference, finish_covariance_reference
from tests.conftest import HAS_CUDA, HAS_TRITON, compiled_cpu
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
DTYPES = [torch.float32, torch.float64]
# (B, D): B = 1, odd D, D not a multiple of any tile (8 x 48 C++ tiles, 16 x 16 interpreted Triton
# tiles), several C++ bands (64 rows) and panels (48 columns), B > 1024 (two chunks).
SIZES = [(1, 1), (1, 5), (3, 7), (40, 33), (1030, 5)]
CPU_SIZES = SIZES + [(17, 130), (600, 101), (1500, 70)]


def sample_inputs(b, d, dtype=torch.float32, device="cpu", seed=0):
    """Random features away from zero, a shift near their mean, random accumulators whose strictly
    lower triangle is NaN (it must stay so)."""
    g = torch.Generator().manual_seed(seed + 1000 * b + d)
    features = (torch.randn(b, d, generator=g, dtype=torch.float64) * 2 + 3).to(dtype)
    shift = (3 + 0.1 * torch.randn(d, generator=g, dtype=torch.float64)).to(dtype)
    total = torch.randn(d, generator=g, dtype=torch.float64)
    cross = torch.randn(d, d, generator=g, dtype=torch.float64)
    cross[_lower(d)] = float("nan")
    return features.to(device), shift.to(device), total.to(device), cross.to(device)


def _lower(d, device="cpu"):
    return torch.ones(d, d, dtype=torch.bool, device=device).tril(-1)


def _triton():
    return importlib.import_module("fastgen.kernels.feature_stats").feature_stats_update_triton


_NO_EXT = pytest.mark.skipif(not compiled_cpu("feature_stats_update"), reason="fastgen._C not built")
# (device, function, sizes, FASTGEN_FEATURE_STATS_KERNEL): the C++ kernel's float32 paths both
# run here (the AVX-512 tiles where the CPU has them, and ATen's GEMM by block rows).
IMPLS = [
    pytest.param(lambda: ("cpu", ops.feature_stats_update, CPU_SIZES, "auto"), id="cpp", marks=_NO_EXT),
    pytest.param(lambda: ("cpu", ops.feature_stats_update, CPU_SIZES, "gemm"), id="cpp-gemm", marks=_NO_EXT),
    pytest.param(lambda: ("cuda" if HAS_CUDA else "cpu", _triton(), SIZES, None), id="triton",
                 marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")),
    pytest.param(lambda: ("cpu", fastgen.ops.feature_stats_update, CPU_SIZES, None), id="op"),
    pytest.param(lambda: ("cuda", fastgen.ops.feature_stats_update, CPU_SIZES, None), id="cuda",
                 marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU")),
]


@pytest.fixture
def impl(request, monkeypatch):
    device, update, sizes, path = request.param()
    if path is not None:
        monkeypatch.setenv("FASTGEN_FEATURE_STATS_KERNEL", path)
    return device, update, sizes


def _tolerance(dtype, rows):
    # float32: products summed in float32 over chunks of up to 1024 rows, in another order than the
    # reference's; the sums grow with the rows, so does the absolute error.
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10 * rows, equal_nan=True)
    return dict(rtol=1e-5, atol=1e-5 * rows, equal_nan=True)


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_successive_updates_match_reference(impl, dtype):
    device, update, sizes = impl
    for b, d in sizes:
        features, shift, total, cross = sample_inputs(b, d, dtype, device)
        want_total, want_cross = total.clone(), cross.clone()
        for step in range(3):  # three batches into the same accumulators, the last of another size
            batch = features if step < 2 else features[: max(1, b // 2)] * 0.5 + 1
            update(batch, shift, total, cross)
            feature_stats_update_reference(batch, shift, want_total, want_cross)
        tol = _tolerance(dtype, 3 * b)
        torch.testing.assert_close(total, want_total, **tol)
        torch.testing.assert_close(cross, want_cross, **tol)
        assert torch.isnan(cross[_lower(d, device)]).all(), f"lower triangle written at (B, D) = {(b, d)}"


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
def test_empty_batch_changes_nothing(impl):
    device, update, _ = impl
    _, shift, total, cross = sample_inputs(4, 9, device=device)
    before = total.clone(), cross.clone()
    update(torch.empty(0, 9, device=device), shift, total, cross)
    assert torch.equal(total, before[0]) and torch.equal(cross.nan_to_num(7.0), before[1].nan_to_num(7.0))


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
def test_strided_features_and_shift(impl):
    """Features that are a transposed or sliced view (an output's columns) are read as they lie."""
    device, update, _ = impl
    features, shift, total, cross = sample_inputs(21, 13, device=device)
    views = (features.T.contiguous().T, torch.stack([features, features], -1)[..., 0])
    for view in views:
        assert not view.is_contiguous()
        t, c = total.clone(), cross.clone()
        update(view, torch.stack([shift, shift], 1)[:, 0], t, c)
        want_t, want_c = total.clone(), cross.clone()
        feature_stats_update_reference(features, shift, want_t, want_c)
        torch.testing.assert_close(c, want_c, **_tolerance(torch.float32, 21))
        torch.testing.assert_close(t, want_t, **_tolerance(torch.float32, 21))


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
def test_float32_error_does_not_grow_with_rows(impl):
    """Chunks of at most 1024 rows are summed in float32: the relative error of 3000 rows against an
    exact float64 sum stays at the level of one chunk's."""
    device, update, sizes = impl
    b, d = (2100, 3) if sizes is SIZES else (3000, 50)  # the interpreter is slow
    g = torch.Generator().manual_seed(3)
    features = (torch.randn(b, d, generator=g, dtype=torch.float64) + 0.5).float()
    total = torch.zeros(d, dtype=torch.float64, device=device)
    cross = torch.zeros(d, d, dtype=torch.float64, device=device)
    update(features.to(device), torch.zeros(d, device=device), total, cross)
    cross = cross.cpu()
    exact = features.double().T @ features.double()
    upper = ~_lower(d)
    relative = ((cross - exact).abs()[upper] / exact.abs()[upper].clamp(min=1)).max().item()
    assert relative < 2e-6, relative


def test_streaming_then_symmetrising_equals_numpy_cov():
    """Float64 batches of odd sizes streamed through the op, finished once, against numpy.cov of all
    rows: 1e-9 relative."""
    g = torch.Generator().manual_seed(11)
    d = 37
    batches = [torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d, dtype=torch.float64)
               + 5 for n in (1, 500, 77, 1100, 3)]
    shift = batches[1].mean(0)
    total, cross = torch.zeros(d, dtype=torch.float64), torch.full((d, d), float("nan"), dtype=torch.float64)
    cross[~_lower(d)] = 0.0
    for batch in batches:
        fastgen.ops.feature_stats_update(batch, shift, total, cross)
    n = sum(len(b) for b in batches)
    mean, cov = finish_covariance_reference(total, cross, shift, n)
    everything = torch.cat(batches).numpy()
    np.testing.assert_allclose(mean.numpy(), everything.mean(0), rtol=1e-9)
    want = np.cov(everything.T)
    np.testing.assert_allclose(cov.numpy(), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_float32_stream_is_close_to_float64_covariance():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2500, 60, generator=g, dtype=torch.float64) * 2 + 4
    features = x.float()
    shift = features[:500].mean(0)
    total, cross = torch.zeros(60, dtype=torch.float64), torch.zeros(60, 60, dtype=torch.float64)
    for batch in features.split(500):
        fastgen.ops.feature_stats_update(batch, shift, total, cross)
    _, cov = finish_covariance_reference(total, cross, shift, len(features))
    want = torch.from_numpy(np.cov(features.double().numpy().T))
    torch.testing.assert_close(cov, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b,d", [(3, 7), (40, 33), (1, 1)], ids=str)
def test_opcheck(b, d, dtype):
    features, shift, total, cross = sample_inputs(b, d, dtype)
    torch.library.opcheck(ops.feature_stats_update.default, (features, shift, total, cross.nan_to_num(0.5)))


def test_meta_tensors_are_checked_not_computed():
    meta = dict(device="meta", dtype=torch.float64)
    fastgen.ops.feature_stats_update(torch.empty(4, 3, device="meta"), torch.empty(3, device="meta"),
                                     torch.empty(3, **meta), torch.empty(3, 3, **meta))
    with pytest.raises(ValueError, match=r"cross must have shape \(3, 3\)"):
        ops.feature_stats_update(torch.empty(4, 3, device="meta"), torch.empty(3, device="meta"),
                                 torch.empty(3, **meta), torch.empty(3, 4, **meta))


def test_gradients_are_refused_while_grad_mode_is_on():
    features, shift, total, cross = sample_inputs(5, 4)
    features.requires_grad_(True)
    for fn in (fastgen.ops.feature_stats_update, ops.feature_stats_update):
        with pytest.raises(ValueError, match=r"no gradient, but features requires grad; pass features.detach\(\)"):
            fn(features, shift, total, cross)
    with torch.no_grad():
        fastgen.ops.feature_stats_update(features, shift, total, cross)
        ops.feature_stats_update(features, shift, total, cross)
    assert not total.requires_grad and not cross.requires_grad


def _r(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype).to(device)


def _acc(*shape):
    return torch.zeros(*shape, dtype=torch.float64)


# Calls both the public function and torch.ops.fastgen.feature_stats_update must refuse, with
# the argument named (ValueError/TypeError from Python; the C++ kernel's TORCH_CHECK raises
# RuntimeError with the same words).
BAD = [
    (lambda: ("features", _r(4), _acc(4), _acc(4, 4)), TypeError, "features must be a torch.Tensor"),
    (lambda: (_r(4), _r(4), _acc(4), _acc(4, 4)), ValueError, r"features must be a \(B, D\) tensor"),
    (lambda: (_r(3, 4).half(), _r(4).half(), _acc(4), _acc(4, 4)), ValueError, "features must be float32 or float64"),
    (lambda: (_r(3, 4).bfloat16(), _r(4).bfloat16(), _acc(4), _acc(4, 4)), ValueError, "cast it with .float()"),
    (lambda: (_r(3, 4).int(), _r(4).int(), _acc(4), _acc(4, 4)), ValueError, "features must be float32 or float64"),
    (lambda: (_r(3, 0), _r(0), _acc(0), _acc(0, 0)), ValueError, r"at least one feature \(D >= 1\)"),
    (lambda: (_r(3, 4), _r(5), _acc(4), _acc(4, 4)), ValueError, r"shift must have shape \(4,\)"),
    (lambda: (_r(3, 4), _r(4, dtype=torch.float64), _acc(4), _acc(4, 4)), ValueError,
     "shift must have features' dtype"),
    (lambda: (_r(3, 4), _r(4), _acc(5), _acc(4, 4)), ValueError, r"total must have shape \(4,\)"),
    (lambda: (_r(3, 4), _r(4), _acc(4), _acc(4, 5)), ValueError, r"cross must have shape \(4, 4\)"),
    (lambda: (_r(3, 4), _r(4), _acc(4).float(), _acc(4, 4)), ValueError, "total must be float64"),
    (lambda: (_r(3, 4), _r(4), _acc(4), _acc(4, 4).float()), ValueError, "cross must be float64"),
    (lambda: (_r(3, 4), _r(4), _acc(4), _acc(4, 4).T), ValueError, "cross must be contiguous"),
    (lambda: (_r(3, 4), _r(4), _acc(8)[::2], _acc(4, 4)), ValueError, "total must be contiguous"),
    (lambda: (_r(3, 4), _r(4, device="meta"), _acc(4), _acc(4, 4)), ValueError,
     "shift is on meta but features is on cpu"),
    (lambda: _aliased_accumulators(), ValueError, "total shares memory with cross"),
    (lambda: _features_alias_cross(), ValueError, "shares memory with"),
]


def _aliased_accumulators():
    cross = _acc(4, 4)
    return _r(3, 4), _r(4), cross.view(-1)[12:], cross


def _features_alias_cross():
    cross = _acc(4, 4)
    return cross[:3], _r(4, dtype=torch.float64), _acc(4), cross


@pytest.mark.parametrize("entry", ["fastgen.ops", "torch.ops"])
@pytest.mark.parametrize("make,error,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_refused_with_the_argument_named(entry, make, error, match):
    args = make()
    fn = fastgen.ops.feature_stats_update if entry == "fastgen.ops" else ops.feature_stats_update
    if entry == "torch.ops":
        if isinstance(args[0], str):
            error = (TypeError, RuntimeError)  # the dispatcher refuses a non-tensor itself
            match = "Expected a value of type 'Tensor'|expected Tensor"
        elif not compiled_cpu("feature_stats_update") or any(t.device.type == "meta" for t in args):
            error = ValueError  # the reference's or the fake registration's checks
        else:
            error = (RuntimeError, ValueError)
    with pytest.raises(error, match=match):
        fn(*args)


# Calls every kernel entry (C++, Triton launcher) must refuse, whatever the Python wrapper checked.
KERNEL_BAD = [
    ("feature_stats_update", lambda: (_r(3, 4), _r(5), _acc(4), _acc(4, 4)), r"shift must have shape \(4,\)"),
    ("feature_stats_update", lambda: (_r(3, 4), _r(4).double(), _acc(4), _acc(4, 4)),
     "shift must have features' dtype"),
    ("feature_stats_update", lambda: (_r(3, 4).half(), _r(4).half(), _acc(4), _acc(4, 4)),
     "features must be float32 or float64"),
    ("feature_stats_update", lambda: (_r(3, 4), _r(4), _acc(4).float(), _acc(4, 4)), "total must be float64"),
    ("feature_stats_update", lambda: (_r(3, 4), _r(4), _acc(4), _acc(4, 4).float()), "cross must be float64"),
    ("feature_stats_update", lambda: (_r(3, 4), _r(4), _acc(4), _acc(4, 4).T), "cross must be contiguous"),
    ("feature_stats_update", lambda: (_r(3, 4), _r(4), _acc(4), _acc(4, 3)), r"cross must have shape \(4, 4\)"),
    ("feature_stats_update", lambda: (_r(3, 4), _r(4), _acc(3), _acc(4, 4)), r"total must have shape \(4,\)"),
    ("feature_stats_update", lambda: (_r(3, 0), _r(0), _acc(0), _acc(0, 0)), "at least one feature"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("feature_stats", KERNEL_BAD)


@pytest.mark.skipif(not compiled_cpu("feature_stats_update"), reason="fastgen._C not built")
def test_kernel_override_is_checked(monkeypatch):
    monkeypatch.setenv("FASTGEN_FEATURE_STATS_KERNEL", "fastest")
    with pytest.raises(ValueError, match="FASTGEN_FEATURE_STATS_KERNEL must be auto, tiles or gemm, got 'fastest'"):
        ops.feature_stats_update(*sample_inputs(3, 4))


def test_in_place_updates_bump_the_version_counters():
    """As ATen's in-place ops: autograd can tell that a saved total or cross was modified."""
    features, shift, total, cross = sample_inputs(3, 4)
    versions = total._version, cross._version
    fastgen.ops.feature_stats_update(features, shift, total, cross)
    assert (total._version, cross._version) == (versions[0] + 1, versions[1] + 1)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_the_triton_launcher_refuses_accumulators_that_share_memory():
    from fastgen.kernels.feature_stats import feature_stats_update_triton

    features = torch.randn(5, 3)
    storage = torch.zeros(3 + 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="total and cross share memory"):
        feature_stats_update_triton(features, features.mean(0), storage[:3], storage[3:].view(3, 3))

"""categorical_nll: every implementation against fastgen.reference, layouts, numerics, bad input."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.categorical_nll import (
    categorical_logsumexp_reference,
    categorical_nll_backward_reference,
    categorical_nll_reference,
)
from tests.conftest import DEVICES, DTYPES, assert_matches_reference, compiled_cpu, op_implementations, tolerances
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen

# (N, L, C, H, W, layout): odd sizes, one level, N = 1, more pixels than one block, and the
# strided "head" layout a model produces ((N, C*L, H, W) viewed as (N, L, C, H, W)).
SAMPLES = [
    (2, 5, 3, 4, 7, "contiguous"),
    (1, 2, 1, 1, 1, "contiguous"),
    (3, 1, 1, 3, 2, "contiguous"),
    (2, 17, 1, 9, 11, "head"),
    (2, 7, 3, 13, 11, "head"),  # 143 pixels: more than one block in every implementation
    (1, 3, 2, 5, 3, "sliced"),
]
SAMPLE_IDS = [f"n{s[0]}l{s[1]}c{s[2]}_{s[3]}x{s[4]}_{s[5]}" for s in SAMPLES]


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    n, levels, c, h, w, layout = sample
    if layout == "head":
        logits = 3 * torch.randn(n, c * levels, h, w, device=device, dtype=dtype)
        logits = logits.view(n, c, levels, h, w).transpose(1, 2)
    elif layout == "sliced":
        logits = 3 * torch.randn(n, levels, c, h, 2 * w, device=device, dtype=dtype)[..., ::2]
    else:
        logits = 3 * torch.randn(n, levels, c, h, w, device=device, dtype=dtype)
    target = torch.randint(0, levels, (n, c, h, w), device=device)
    return logits.requires_grad_(requires_grad), target


IMPLS = op_implementations("categorical_nll")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward = make_impl()
    logits, target = sample_inputs(sample, device, dtype)
    tol = tolerances(dtype)
    nll, lse = forward(logits, target)
    torch.testing.assert_close(nll, categorical_nll_reference(logits, target), **tol)
    torch.testing.assert_close(lse, categorical_logsumexp_reference(logits), **tol)
    grad = torch.randn(logits.shape[0], device=device, dtype=dtype)
    got = backward(grad, logits, target, lse)
    torch.testing.assert_close(got, categorical_nll_backward_reference(grad, logits, target, lse), **tol)
    if sample[-1] != "sliced":
        assert got.stride() == logits.stride(), "grad_logits must take the logits' layout"


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_backward_reference_matches_autograd(sample):
    logits, target = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    nll = categorical_nll_reference(logits, target)
    grad = torch.randn_like(nll)
    (want,) = torch.autograd.grad(nll, logits, grad)
    got = categorical_nll_backward_reference(grad, logits, target, categorical_logsumexp_reference(logits))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    logits, target = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.categorical_nll(logits, target),
                             lambda: categorical_nll_reference(logits, target), [logits])


def test_saves_no_softmax():
    """The fused path keeps the inputs and the (N, C, H, W) logsumexp, nothing of the logits' size."""
    logits, target = sample_inputs(SAMPLES[0], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fastgen.ops.categorical_nll(logits, target)
    assert saved[0] is logits and saved[1] is target
    assert [tuple(t.shape) for t in saved[2:]] == [tuple(target.shape)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    logits, target = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.categorical_nll.default, (logits, target))
    lse = categorical_logsumexp_reference(logits.detach())
    grad = torch.randn(logits.shape[0], device=device)
    torch.library.opcheck(ops.categorical_nll_backward.default, (grad, logits.detach(), target, lse))


@pytest.mark.parametrize("sample", SAMPLES[:4], ids=SAMPLE_IDS[:4])
def test_gradcheck_float64(sample):
    logits, target = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: fastgen.ops.categorical_nll(z, target), (logits,))


@pytest.mark.parametrize("make_impl", IMPLS)
def test_extreme_logits_stay_finite(make_impl):
    device, forward, backward = make_impl()
    logits, target = sample_inputs((2, 6, 1, 3, 4, "contiguous"), device)
    logits[0, 0] = 1e4
    logits[0, 1] = -1e4
    logits[1, :, :, 0] = 80.0  # all levels equal and large
    nll, lse = forward(logits, target)
    assert torch.isfinite(nll).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(nll, categorical_nll_reference(logits, target), rtol=1e-5, atol=1e-3)
    got = backward(torch.ones(2, device=device), logits, target, lse)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, categorical_nll_backward_reference(torch.ones(2, device=device), logits, target,
                                                                       lse), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_error_at_most_twice_reference(device):
    logits, target = sample_inputs((2, 9, 3, 5, 6, "head"), device)
    exact = categorical_nll_reference(logits.double(), target)
    ours = fastgen.ops.categorical_nll(logits.bfloat16(), target).double()
    ref = categorical_nll_reference(logits.bfloat16(), target).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-3


def test_compiles_to_one_graph():
    logits, target = sample_inputs(SAMPLES[3], requires_grad=True)
    compiled = torch.compile(fastgen.ops.categorical_nll, fullgraph=True, backend="aot_eager")
    assert_matches_reference(lambda: compiled(logits, target), lambda: categorical_nll_reference(logits, target),
                             [logits])


def test_use_reference_routes_to_reference():
    logits, target = sample_inputs(SAMPLES[0], requires_grad=True)
    with fastgen.use_reference():
        nll = fastgen.ops.categorical_nll(logits, target)
    assert "fastgen" not in type(nll.grad_fn).__name__


class TestBadInput:
    @pytest.mark.parametrize("logits,target,error,match", [
        (torch.randn(2, 5, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), ValueError, r"logits must be \(N, L, C"),
        (torch.randn(2, 5, 1, 4, 4), torch.zeros(2, 1, 4, 4), ValueError, "target must be an int64"),
        (torch.randn(2, 5, 1, 4, 4), torch.zeros(2, 1, 4, 5, dtype=torch.long), ValueError,
         r"target must be \(N, C, H, W\) = \(2, 1, 4, 4\)"),
        (torch.randn(2, 5, 1, 4, 4), torch.full((2, 1, 4, 4), 5), ValueError, r"target values must lie in \[0, 5\)"),
        (torch.randn(2, 5, 1, 4, 4), torch.full((2, 1, 4, 4), -1), ValueError, r"target values must lie in \[0, 5\)"),
        (torch.randn(2, 5, 1, 4, 4), [[0]], TypeError, "target must be a torch.Tensor"),
    ])
    def test_errors_name_the_argument(self, logits, target, error, match):
        with pytest.raises(error, match=match):
            fastgen.ops.categorical_nll(logits, target)

    @pytest.mark.skipif(not compiled_cpu("categorical_nll"), reason="fastgen._C not built")
    def test_kernel_checks_target_range(self):
        with pytest.raises(RuntimeError, match=r"target values must lie in \[0, 5\)"):
            ops.categorical_nll(torch.randn(2, 5, 1, 4, 4), torch.full((2, 1, 4, 4), 7))


def _z(*shape, **kw):
    return torch.randn(*shape, **kw)


def _t(high, *shape):
    return torch.randint(0, high, shape)


# Calls every categorical_nll kernel entry must refuse, whatever the Python wrapper checked (an
# out-of-range target would index out of bounds).
KERNEL_BAD = [
    ("categorical_nll", lambda: (_z(2, 5, 4, 4), _t(5, 2, 4, 4)), "logits must"),
    ("categorical_nll", lambda: (_z(2, 5, 1, 4, 4), _t(5, 2, 1, 4, 4).int()), "target must be an int64"),
    ("categorical_nll", lambda: (_z(2, 5, 1, 4, 4), _t(5, 2, 1, 4, 5)), "target must be"),
    ("categorical_nll", lambda: (_z(2, 5, 1, 4, 4), torch.full((2, 1, 4, 4), 5)), r"target values must lie in \[0, 5\)"),
    ("categorical_nll", lambda: (_z(2, 5, 1, 4, 4), torch.full((2, 1, 4, 4), -1)), r"target values must lie in \[0, 5\)"),
    ("categorical_nll", lambda: (_z(2, 0, 1, 4, 4), _t(1, 2, 1, 4, 4)), "at least one level"),
    ("categorical_nll", lambda: (_z(2, 5, 1, 4, 4).long(), _t(5, 2, 1, 4, 4)), "logits must be a float"),
    ("categorical_nll_backward", lambda: (_z(3), _z(2, 5, 1, 4, 4), _t(5, 2, 1, 4, 4), _z(2, 1, 4, 4)),
     r"grad must be \(N,\) = \(2,\)"),
    ("categorical_nll_backward", lambda: (_z(2), _z(2, 5, 1, 4, 4), _t(5, 2, 1, 4, 4), _z(2, 1, 4, 3)), "lse must be"),
    ("categorical_nll_backward", lambda: (_z(2), _z(2, 5, 1, 4, 4), _t(5, 2, 1, 4, 4), _z(2, 1, 4, 4).double()),
     "lse must be"),
    ("categorical_nll_backward", lambda: (_z(2), _z(2, 5, 1, 4, 4), torch.full((2, 1, 4, 4), 9), _z(2, 1, 4, 4)),
     r"target values must lie in \[0, 5\)"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("categorical_nll", KERNEL_BAD)

"""reparameterize: every implementation against fastgen.reference, gradients, bad input."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.reparameterize import reparameterize_backward_reference, reparameterize_reference
from tests.conftest import DEVICES, DTYPES, assert_matches_reference, op_implementations, tolerances
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
SHAPES = [(3, 7), (1, 1), (5, 2, 3), (4, 40000)]  # odd sizes, N = 1, more than one block


def sample_inputs(shape, device="cpu", dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(sum(shape))
    mu, logvar, eps = (torch.randn(shape, generator=g, dtype=dtype).to(device) for _ in range(3))
    return mu.requires_grad_(requires_grad), logvar.requires_grad_(requires_grad), eps


IMPLS = op_implementations("reparameterize")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_reference(make_impl, dtype, shape, poison):
    device, forward, backward = make_impl()
    mu, logvar, eps = sample_inputs(shape, device, dtype)
    tol = tolerances(dtype)
    torch.testing.assert_close(forward(mu, logvar, eps), reparameterize_reference(mu, logvar, eps), **tol)
    grad = torch.randn_like(mu)
    want = reparameterize_backward_reference(grad, logvar, eps)
    for got, expected in zip(backward(grad, logvar, eps, [True, True]), want):
        torch.testing.assert_close(got, expected, **tol)
    only_logvar = backward(grad, logvar, eps, [True, False])
    assert only_logvar[1].numel() == 0
    torch.testing.assert_close(only_logvar[0], want[0], **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_autograd_matches_reference(device, shape):
    mu, logvar, eps = sample_inputs(shape, device, requires_grad=True)
    eps.requires_grad_(True)
    assert_matches_reference(lambda: fastgen.ops.reparameterize(mu, logvar, eps),
                             lambda: reparameterize_reference(mu, logvar, eps), [mu, logvar, eps])


@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_gradcheck_float64(shape):
    mu, logvar, eps = sample_inputs(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v, e: fastgen.ops.reparameterize(m, v, e),
                                    (mu, logvar, eps.requires_grad_(True)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_opcheck(device, shape):
    mu, logvar, eps = sample_inputs(shape, device, requires_grad=True)
    torch.library.opcheck(ops.reparameterize.default, (mu, logvar, eps))
    torch.library.opcheck(ops.reparameterize_backward.default,
                          (torch.randn_like(mu), logvar.detach(), eps, [True, True]))


def test_draws_eps_from_generator():
    mu, logvar, _ = sample_inputs((4, 3))
    a = fastgen.ops.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(5))
    b = fastgen.ops.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, mu)


class TestBadInput:
    @pytest.mark.parametrize("mu,logvar,eps,match", [
        (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 3), r"logvar must have mu's shape \(2, 3\)"),
        (torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3), r"eps must have mu's shape \(2, 3\)"),
        (torch.randn(2, 3), torch.randn(2, 3, 1), None, r"logvar must be \(2, 3\) like mu"),
        (torch.randn(2, 3), torch.randn(2, 3).double(), None, "logvar has dtype torch.float64"),
    ])
    def test_errors_name_the_argument(self, mu, logvar, eps, match):
        with pytest.raises(ValueError, match=match):
            fastgen.ops.reparameterize(mu, logvar, eps)


def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


# Calls every reparameterize kernel entry must refuse, whatever the Python wrapper checked.
KERNEL_BAD = [
    ("reparameterize", lambda: (_r(2, 3), _r(2, 4), _r(2, 3)), "logvar must have mu's shape"),
    ("reparameterize", lambda: (_r(2, 3), _r(2, 3), _r(6)), "eps must have mu's shape"),
    ("reparameterize", lambda: (_r(2, 3), _r(2, 3).double(), _r(2, 3)), "logvar must have mu's dtype"),
    ("reparameterize", lambda: (_r(2, 3).int(), _r(2, 3).int(), _r(2, 3).int()), "mu must be a float"),
    ("reparameterize", lambda: (_r(2, 3), _r(2, 3), _r(2, 3).to(torch.complex64)), "eps must be a float"),
    ("reparameterize_backward", lambda: (_r(2, 4), _r(2, 3), _r(2, 3), [True, True]), "grad must have logvar's shape"),
    ("reparameterize_backward", lambda: (_r(2, 3).half(), _r(2, 3), _r(2, 3), [True, True]),
     "grad must have logvar's dtype"),
    ("reparameterize_backward", lambda: (_r(2, 3), _r(2, 3), _r(3, 2), [True, True]), "eps must have logvar's shape"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("reparameterize", KERNEL_BAD)


@pytest.mark.parametrize("make_impl", IMPLS)
def test_exp_overflow_matches_reference(make_impl):
    """logvar = 200: exp(100) overflows float32. The kernel returned 2.2e38 (a saturated exp) where
    the reference returns inf (issue 15); now inf, and inf * 0 = NaN, as the reference."""
    device, forward, backward = make_impl()
    mu = torch.zeros(4, device=device)
    logvar = torch.tensor([200.0, 177.6, 300.0, -200.0], device=device)
    eps = torch.tensor([1.0, -1.0, 0.0, 1.0], device=device)
    got, want = forward(mu, logvar, eps), reparameterize_reference(mu, logvar, eps)
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and torch.equal(torch.isnan(got), torch.isnan(want))
    assert got[0] == float("inf") and got[1] == float("-inf") and torch.isnan(got[2])
    torch.testing.assert_close(got[3], want[3])
    for g, w in zip(backward(torch.ones(4, device=device), logvar, eps, [True, True]),
                    reparameterize_backward_reference(torch.ones(4, device=device), logvar, eps)):
        torch.testing.assert_close(g, w, equal_nan=True)

"""reparameterize: every implementation against fastgen.reference, gradients, bad input."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.reparameterize import reparameterize_backward_reference, reparameterize_reference
from tests.conftest import DEVICES, DTYPES, assert_matches_reference, op_implementations, tolerances

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

"""gradient_penalty: every implementation against fastgen.reference, double backward, WGAN-GP end to end."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.gradient_penalty import gradient_penalty_reference, sample_norms
from tests.conftest import DEVICES, DTYPES, op_implementations, tolerances
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
SHAPES = [(3, 7), (1, 1), (5, 3, 4, 4), (2, 1, 33, 35)]  # odd sizes, N = 1, more than one block


def sample_grad(shape, device="cpu", dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(sum(shape))
    grad = torch.randn(shape, generator=g, dtype=dtype) / max(1.0, (torch.tensor(shape[1:]).prod().item()) ** 0.5)
    return grad.to(device).requires_grad_(requires_grad)


IMPLS = op_implementations("gradient_penalty")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_reference(make_impl, dtype, shape, poison):
    device, forward, backward = make_impl()
    grad = sample_grad(shape, device, dtype)
    tol = tolerances(dtype)
    penalty, norms = forward(grad, 3.5)
    torch.testing.assert_close(penalty, gradient_penalty_reference(grad, 3.5), **tol)
    torch.testing.assert_close(norms, sample_norms(grad), **tol)
    grad_out = torch.tensor(0.7, device=device, dtype=dtype)
    x = grad.detach().requires_grad_(True)
    (want,) = torch.autograd.grad(gradient_penalty_reference(x, 3.5), x, grad_out)
    torch.testing.assert_close(backward(grad_out, grad, norms, 3.5), want, **tol)


@pytest.mark.parametrize("make_impl", IMPLS)
def test_zero_gradient_row_gets_zero_gradient(make_impl):
    device, forward, backward = make_impl()
    grad = sample_grad((3, 6), device)
    grad[1] = 0.0
    penalty, norms = forward(grad, 10.0)
    out = backward(torch.tensor(1.0, device=device), grad, norms, 10.0)
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    torch.testing.assert_close(penalty, gradient_penalty_reference(grad, 10.0))


@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_gradcheck_and_gradgradcheck_float64(shape):
    grad = sample_grad(shape, dtype=torch.float64, requires_grad=True)
    fn = lambda g: fastgen.ops.gradient_penalty(g, weight=2.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (grad,))
    assert torch.autograd.gradgradcheck(fn, (grad,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_opcheck(device, shape):
    grad = sample_grad(shape, device, requires_grad=True)
    torch.library.opcheck(ops.gradient_penalty.default, (grad, 10.0))
    norms = sample_norms(grad.detach())
    torch.library.opcheck(ops.gradient_penalty_backward.default,
                          (torch.tensor(1.0, device=device), grad.detach(), norms, 10.0))


@pytest.mark.parametrize("device", DEVICES)
def test_wgan_gp_parameter_gradients_match_autograd(device):
    """The whole WGAN-GP term, differentiated into the critic's parameters (a double backward),
    equals torch.autograd.grad(..., create_graph=True) with the reference penalty."""
    torch.manual_seed(3)
    critic = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 5 * 5, 1)).to(device).double()
    real, fake = torch.randn(6, 1, 7, 7, device=device).double(), torch.randn(6, 1, 7, 7, device=device).double()
    alpha = torch.rand(6, 1, 1, 1, device=device).double()

    def penalty_grads(penalty_fn):
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
        # The last bias does not change the input gradient: its gradient is None for both.
        return torch.autograd.grad(penalty_fn(grad), list(critic.parameters()), allow_unused=True)

    got = penalty_grads(lambda g: fastgen.ops.gradient_penalty(g, weight=10.0))
    want = penalty_grads(lambda g: gradient_penalty_reference(g, 10.0))
    assert sum(g is not None for g in got) == 3
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_use_reference_routes_to_reference():
    grad = sample_grad(SHAPES[0], requires_grad=True)
    with fastgen.use_reference():
        out = fastgen.ops.gradient_penalty(grad)
    assert "fastgen" not in type(out.grad_fn).__name__


class TestBadInput:
    @pytest.mark.parametrize("grad,error,match", [
        (torch.zeros(()), ValueError, r"grad must be the critic's input gradient \(N, \.\.\.\)"),
        (torch.zeros(0, 3), ValueError, "grad must hold at least one sample"),
        (torch.ones(2, 3, dtype=torch.long), ValueError, "grad must be a floating-point tensor"),
        ([1.0], TypeError, "grad must be a torch.Tensor"),
    ])
    def test_errors_name_the_argument(self, grad, error, match):
        with pytest.raises(error, match=match):
            fastgen.ops.gradient_penalty(grad)


def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


# Calls every gradient_penalty kernel entry must refuse, whatever the Python wrapper checked.
KERNEL_BAD = [
    ("gradient_penalty", lambda: (_r(0, 3), 10.0), "N >= 1"),
    ("gradient_penalty", lambda: (_r(()), 10.0), "N >= 1"),
    ("gradient_penalty", lambda: (_r(2, 3).int(), 10.0), "grad must be a float"),
    ("gradient_penalty", lambda: (_r(2, 3), float("nan")), "weight must be a finite number"),
    ("gradient_penalty", lambda: (_r(2, 3), 1e300), "weight must be a finite number"),
    ("gradient_penalty_backward", lambda: (_r(()), _r(2, 3), _r(3), 10.0), r"norms must be \(N,\) = \(2,\)"),
    ("gradient_penalty_backward", lambda: (_r(2), _r(2, 3), _r(2), 10.0), "grad_out must be a scalar"),
    ("gradient_penalty_backward", lambda: (_r(()), _r(2, 3), _r(2).long(), 10.0), "norms must be a float"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("gradient_penalty", KERNEL_BAD)

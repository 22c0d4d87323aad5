"""gan_loss: every implementation against fastgen.reference, each kind and target, numerics, bad input."""
from __future__ import annotations

import itertools

import pytest
import torch

import fastgen
from fastgen.reference.gan_loss import KINDS, gan_loss_backward_reference, gan_loss_reference
from tests.conftest import DEVICES, DTYPES, assert_matches_reference, compiled_cpu, op_implementations, tolerances
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
CASES = list(itertools.product(KINDS, [False, True]))
CASE_IDS = [f"{k}-{'generator' if g else 'discriminator'}" for k, g in CASES]
# (shape of d_real, shape of d_fake): odd sizes, one logit, more than one block, (N, 1) heads.
SHAPES = [((7,), (5,)), ((1,), (1,)), ((37, 1), (29, 1)), ((3, 2, 5), (2000,))]


def sample_inputs(shapes, device="cpu", dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(sum(map(len, shapes)))
    real = 2 * torch.randn(shapes[0], generator=g, dtype=dtype)
    fake = 2 * torch.randn(shapes[1], generator=g, dtype=dtype)
    real.view(-1)[0], fake.view(-1)[0] = 1.0, -1.0  # the hinge kinks, where the gradient is taken as 0
    return real.to(device).requires_grad_(requires_grad), fake.to(device).requires_grad_(requires_grad)


def _target(generator: bool) -> str:
    return "generator" if generator else "discriminator"


IMPLS = op_implementations("gan_loss")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_forward_and_backward_match_reference(make_impl, dtype, case, shapes, poison):
    device, forward, backward = make_impl()
    kind, generator = case
    real, fake = sample_inputs(shapes, device, dtype)
    tol = tolerances(dtype)
    d_real = None if generator else real
    torch.testing.assert_close(forward(d_real, fake, kind, generator),
                               gan_loss_reference(d_real, fake, kind=kind, target=_target(generator)), **tol)
    grad = torch.tensor(1.7, device=device, dtype=dtype)
    grad_real, grad_fake = backward(grad, d_real, fake, kind, generator)
    inputs = [t.detach().requires_grad_(True) for t in (real, fake)]
    loss = gan_loss_reference(None if generator else inputs[0], inputs[1], kind=kind, target=_target(generator))
    want = torch.autograd.grad(loss, inputs[1:] if generator else inputs, grad)
    torch.testing.assert_close(grad_fake, want[-1], **tol)
    if generator:
        assert grad_real.numel() == 0
    else:
        torch.testing.assert_close(grad_real, want[0], **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_autograd_matches_reference(device, case):
    kind, generator = case
    real, fake = sample_inputs(SHAPES[2], device, requires_grad=True)
    target = _target(generator)
    y = fastgen.ops.gan_loss(real, fake, kind=kind, target=target)
    y_ref = gan_loss_reference(None if generator else real, fake, kind=kind, target=target)
    torch.testing.assert_close(y, y_ref, **tolerances(torch.float32))
    inputs = [fake] if generator else [real, fake]
    for got, want in zip(torch.autograd.grad(y, inputs), torch.autograd.grad(y_ref, inputs)):
        torch.testing.assert_close(got, want, **tolerances(torch.float32))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradcheck_float64(case):
    kind, generator = case
    real, fake = sample_inputs(SHAPES[0], dtype=torch.float64, requires_grad=True)
    with torch.no_grad():  # finite differences must not straddle a hinge kink
        real.view(-1)[0], fake.view(-1)[0] = 1.5, -1.5
    if generator:
        assert torch.autograd.gradcheck(lambda f: fastgen.ops.gan_loss(None, f, kind=kind, target="generator"),
                                        (fake,))
    else:
        assert torch.autograd.gradcheck(lambda r, f: fastgen.ops.gan_loss(r, f, kind=kind), (real, fake))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_opcheck(device, case):
    kind, generator = case
    real, fake = sample_inputs(SHAPES[2], device, requires_grad=True)
    d_real = None if generator else real
    torch.library.opcheck(ops.gan_loss.default, (d_real, fake, kind, generator))
    grad = torch.tensor(0.5, device=device)
    torch.library.opcheck(ops.gan_loss_backward.default,
                          (grad, None if generator else real.detach(), fake.detach(), kind, generator))


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_extreme_logits_stay_finite(make_impl, case):
    device, forward, backward = make_impl()
    kind, generator = case
    real = torch.tensor([1e4, -1e4, 0.0, 3.0], device=device)
    fake = torch.tensor([-1e4, 1e4, 5.0], device=device)
    d_real = None if generator else real
    loss = forward(d_real, fake, kind, generator)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, gan_loss_reference(d_real, fake, kind=kind, target=_target(generator)),
                               rtol=1e-5, atol=1e-3)
    assert all(torch.isfinite(g).all() for g in backward(torch.tensor(1.0, device=device), d_real, fake, kind, generator))


def test_generator_loss_ignores_d_real():
    real, fake = sample_inputs(SHAPES[0], requires_grad=True)
    loss = fastgen.ops.gan_loss(real, fake, kind="hinge", target="generator")
    torch.testing.assert_close(loss, -fake.mean())
    loss.backward()
    assert real.grad is None


def test_autograd_node_is_compiled_when_built():
    """With fastgen._C the backward node is C++ (no Python autograd.Function per call)."""
    real, fake = sample_inputs(SHAPES[0], requires_grad=True)
    node = type(fastgen.ops.gan_loss(real, fake, kind="lsgan").grad_fn).__name__
    assert (node == "CppFunction") == compiled_cpu("gan_loss")


def test_compiles_to_one_graph():
    real, fake = sample_inputs(SHAPES[2], requires_grad=True)
    compiled = torch.compile(lambda r, f: fastgen.ops.gan_loss(r, f, kind="non_saturating"), fullgraph=True,
                             backend="aot_eager")
    assert_matches_reference(lambda: compiled(real, fake),
                             lambda: gan_loss_reference(real, fake, kind="non_saturating"), [real, fake])


def test_use_reference_routes_to_reference():
    real, fake = sample_inputs(SHAPES[0], requires_grad=True)
    with fastgen.use_reference():
        loss = fastgen.ops.gan_loss(real, fake, kind="hinge")
    assert type(loss.grad_fn).__name__ == "AddBackward0"


class TestBadInput:
    @pytest.mark.parametrize("kwargs,error,match", [
        (dict(kind="relativistic"), ValueError, "kind must be one of"),
        (dict(kind="hinge", target="critic"), ValueError, "target must be one of"),
        (dict(kind="hinge", d_real=None), ValueError, "d_real is required for the discriminator loss"),
        (dict(kind="hinge", d_fake=torch.zeros(0)), ValueError, "d_fake must hold at least one"),
        (dict(kind="hinge", d_fake=torch.ones(3, dtype=torch.long)), ValueError, "d_fake must be a floating-point"),
        (dict(kind="hinge", d_real=torch.randn(3, dtype=torch.float64)), ValueError, "d_real has dtype torch.float64"),
        (dict(kind="hinge", d_real=[1.0]), TypeError, "d_real must be a torch.Tensor"),
    ])
    def test_errors_name_the_argument(self, kwargs, error, match):
        args = dict(d_real=torch.randn(3), d_fake=torch.randn(3))
        args.update(kwargs)
        with pytest.raises(error, match=match):
            fastgen.ops.gan_loss(args.pop("d_real"), args.pop("d_fake"), **args)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_reference_matches_autograd(case):
    kind, generator = case
    real, fake = sample_inputs(SHAPES[2], dtype=torch.float64, requires_grad=True)
    target = _target(generator)
    loss = gan_loss_reference(None if generator else real, fake, kind=kind, target=target)
    grad = torch.tensor(0.7, dtype=torch.float64)
    want = torch.autograd.grad(loss, [fake] if generator else [real, fake], grad)
    got_real, got_fake = gan_loss_backward_reference(grad, real.detach(), fake.detach(), kind=kind, target=target)
    torch.testing.assert_close(got_fake, want[-1])
    if generator:
        assert got_real is None
    else:
        torch.testing.assert_close(got_real, want[0])


def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


# Calls every gan_loss kernel entry must refuse, whatever the Python wrapper checked.
KERNEL_BAD = [
    ("gan_loss", lambda: (_r(4), _r(4), "wgan", False), "kind must be"),
    ("gan_loss", lambda: (_r(4), _r(0), "hinge", False), "d_fake must hold at least one"),
    ("gan_loss", lambda: (_r(0), _r(4), "hinge", False), "d_real must hold at least one"),
    ("gan_loss", lambda: (None, _r(4), "hinge", False), "needs d_real"),
    ("gan_loss", lambda: (_r(4).double(), _r(4), "lsgan", False), "d_real must have d_fake's dtype"),
    ("gan_loss", lambda: (_r(4), _r(4).int(), "lsgan", True), "d_fake must be a float"),
    ("gan_loss", lambda: (_r(4).bool(), _r(4), "minimax", False), "d_real must be a float"),
    ("gan_loss_backward", lambda: (_r(2), _r(4), _r(4), "hinge", False), "grad must be a scalar"),
    ("gan_loss_backward", lambda: (_r(1).to(torch.complex64), _r(4), _r(4), "hinge", False), "grad must be a float"),
    ("gan_loss_backward", lambda: (_r(()), _r(4), _r(4), "Hinge", False), "kind must be"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("gan_loss", KERNEL_BAD)

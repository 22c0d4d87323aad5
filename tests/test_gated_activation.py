"""gated_activation: every implementation against fastgen.reference, numerics, bad input."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.gated_activation import gated_activation_backward_reference, gated_activation_reference
from tests.conftest import DEVICES, DTYPES, assert_matches_reference, compiled_cpu, op_implementations, tolerances
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen

# (N, C, H, W, cond kind): C odd and not a multiple of 8, H != W, N = 1, 1x1 images.
SAMPLES = [
    (2, 5, 7, 9, None),
    (1, 3, 5, 4, "global"),
    (3, 7, 6, 5, "spatial"),
    (1, 1, 1, 1, "global"),
    (2, 9, 33, 35, "spatial"),  # more pixels than one block
    (2, 6, 37, 41, "global"),
]
SAMPLE_IDS = [f"n{s[0]}c{s[1]}_{s[2]}x{s[3]}_{s[4]}" for s in SAMPLES]


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    n, c, h, w, kind = sample
    x = (2 * torch.randn(n, 2 * c, h, w, device=device, dtype=dtype)).requires_grad_(requires_grad)
    if kind is None:
        return x, None
    shape = (n, 2 * c) if kind == "global" else (n, 2 * c, h, w)
    return x, torch.randn(shape, device=device, dtype=dtype).requires_grad_(requires_grad)


IMPLS = op_implementations("gated_activation")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward = make_impl()
    x, cond = sample_inputs(sample, device, dtype)
    tol = tolerances(dtype)
    torch.testing.assert_close(forward(x, cond), gated_activation_reference(x, cond), **tol)
    grad_out = torch.randn(x.shape[0], x.shape[1] // 2, *x.shape[2:], device=device, dtype=dtype)
    for got, want in zip(backward(grad_out, x, cond), gated_activation_backward_reference(grad_out, x, cond)):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_backward_reference_matches_autograd(sample):
    x, cond = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    y = gated_activation_reference(x, cond)
    grad_out = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, (x,), grad_out, retain_graph=True)
    ref_gx, ref_sum = gated_activation_backward_reference(grad_out, x, cond)
    torch.testing.assert_close(ref_gx, gx)
    if cond is not None:
        (gc,) = torch.autograd.grad(y, (cond,), grad_out)
        torch.testing.assert_close(ref_sum if cond.dim() == 2 else ref_gx, gc)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    x, cond = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.gated_activation(x, cond), lambda: gated_activation_reference(x, cond),
                             [t for t in (x, cond) if t is not None])


def test_cond_gradient_alone():
    x, cond = sample_inputs(SAMPLES[1])
    cond.requires_grad_(True)
    y = fastgen.ops.gated_activation(x, cond)
    (gc,) = torch.autograd.grad(y.sum(), (cond,))
    (want,) = torch.autograd.grad(gated_activation_reference(x, cond).sum(), (cond,))
    torch.testing.assert_close(gc, want)


def test_saves_nothing_beyond_inputs():
    x, cond = sample_inputs(SAMPLES[2], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fastgen.ops.gated_activation(x, cond)
    assert len(saved) == 2 and saved[0] is x and saved[1] is cond


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    x, cond = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.gated_activation.default, (x, cond))
    grad_out = torch.randn(x.shape[0], x.shape[1] // 2, *x.shape[2:], device=device)
    torch.library.opcheck(ops.gated_activation_backward.default,
                          (grad_out, x.detach(), None if cond is None else cond.detach()))


@pytest.mark.parametrize("sample", SAMPLES[:4], ids=SAMPLE_IDS[:4])
def test_gradcheck_float64(sample):
    x, cond = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    inputs = tuple(t for t in (x, cond) if t is not None)
    assert torch.autograd.gradcheck(lambda *t: fastgen.ops.gated_activation(*t), inputs)


@pytest.mark.parametrize("make_impl", IMPLS)
def test_extreme_inputs_stay_finite(make_impl):
    device, forward, backward = make_impl()
    values = torch.tensor([-1e30, -1e4, -100.0, -20.0, -1e-7, 0.0, 1e-7, 20.0, 100.0, 1e4, 1e30], device=device)
    a, b = torch.meshgrid(values, values, indexing="ij")
    x = torch.stack([a, b]).reshape(1, 2, len(values), len(values))
    y = forward(x, None)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, gated_activation_reference(x), rtol=1e-5, atol=1e-6)
    gx, gsum = backward(torch.ones_like(y), x, None)
    assert torch.isfinite(gx).all() and torch.isfinite(gsum).all()
    torch.testing.assert_close(gx, gated_activation_backward_reference(torch.ones_like(y), x)[0], rtol=1e-5, atol=1e-6)


def test_opcheck_channels_last():
    x, cond = sample_inputs((2, 4, 5, 6, "spatial"))
    x, cond = x.contiguous(memory_format=torch.channels_last), cond.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(ops.gated_activation.default, (x.requires_grad_(), cond))
    torch.library.opcheck(ops.gated_activation_backward.default, (torch.randn(2, 4, 5, 6), x.detach(), cond))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_non_contiguous_inputs(layout):
    x, cond = sample_inputs((2, 4, 5, 6, "spatial"))
    if layout == "channels_last":
        x, cond = x.contiguous(memory_format=torch.channels_last), cond.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(2, 8, 5, 12)[..., ::2]
    torch.testing.assert_close(fastgen.ops.gated_activation(x, cond), gated_activation_reference(x, cond))


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_error_at_most_twice_reference(device):
    x, cond = sample_inputs((2, 16, 9, 8, "global"), device)
    exact = gated_activation_reference(x.double(), cond.double())
    ours = fastgen.ops.gated_activation(x.bfloat16(), cond.bfloat16()).double()
    ref = gated_activation_reference(x.bfloat16(), cond.bfloat16()).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-6


def test_use_reference_routes_to_reference():
    x, cond = sample_inputs(SAMPLES[1], requires_grad=True)
    with fastgen.use_reference():
        y = fastgen.ops.gated_activation(x, cond)
    assert "fastgen" not in type(y.grad_fn).__name__
    assert "fastgen_gated_activation" in type(fastgen.ops.gated_activation(x, cond).grad_fn).__name__


class TestBadInput:
    @pytest.mark.parametrize("x,cond,match", [
        (torch.randn(4, 5, 5), None, r"x must be \(N, 2C, H, W\)"),
        (torch.randn(2, 5, 4, 4), None, "even channel count"),
        (torch.randn(2, 6, 4, 4), torch.randn(2, 3), r"cond must be \(N, 2C\) = \(2, 6\)"),
        (torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 5), r"cond must be \(N, 2C\)"),
        (torch.randn(2, 6, 4, 4), torch.randn(6), r"cond must be \(N, 2C\) or \(N, 2C, H, W\)"),
        (torch.randn(2, 6, 4, 4), torch.randn(2, 6, dtype=torch.float64), "cond has dtype torch.float64"),
        (torch.randn(2, 6, 4, 4), torch.randn(2, 6, device="meta"), "cond is on meta but x is on cpu"),
        (torch.randint(0, 3, (2, 6, 4, 4)), None, "x must be a floating-point tensor"),
    ])
    def test_errors_name_the_argument(self, x, cond, match):
        with pytest.raises(ValueError, match=match):
            fastgen.ops.gated_activation(x, cond)

    @pytest.mark.skipif(not compiled_cpu("gated_activation"), reason="fastgen._C not built")
    def test_kernel_checks_its_own_arguments(self):
        with pytest.raises(RuntimeError, match="cond must be"):
            ops.gated_activation(torch.randn(2, 6, 4, 4), torch.randn(2, 3))


def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


# Calls every gated_activation kernel entry must refuse, whatever the Python wrapper checked.
KERNEL_BAD = [
    ("gated_activation", lambda: (_r(2, 5, 4, 4), None), "even channel count"),
    ("gated_activation", lambda: (_r(2, 6, 4), None), "x must"),
    ("gated_activation", lambda: (_r(2, 6, 4, 4).int(), None), "x must be a float"),
    ("gated_activation", lambda: (_r(2, 6, 4, 4), _r(2, 3)), "cond must be"),
    ("gated_activation", lambda: (_r(2, 6, 4, 4), _r(2, 6).double()), "cond must have x's dtype"),
    ("gated_activation", lambda: (_r(2, 6, 4, 4).to(torch.complex64), None), "x must be a float"),
    ("gated_activation_backward", lambda: (_r(2, 3, 4, 5), _r(2, 6, 4, 4), None),
     r"grad_out must be \(N, C, H, W\) = \(2, 3, 4, 4\)"),
    ("gated_activation_backward", lambda: (_r(2, 3, 4, 4).half(), _r(2, 6, 4, 4), None), "grad_out must have x's dtype"),
    ("gated_activation_backward", lambda: (_r(2, 3, 4, 4), _r(2, 6, 4, 4), _r(2, 6, 4, 3)), "cond must be"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("gated_activation", KERNEL_BAD)

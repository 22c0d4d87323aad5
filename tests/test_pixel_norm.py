"""pixel_norm: every implementation against fastgen.reference, the reference against the paper's
formula, numerics, autograd (twice), bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastgen
from fastgen.reference.pixel_norm import (
    pixel_norm_backward_reference,
    pixel_norm_forward_reference,
    pixel_norm_reference,
    pixel_norm_rstd_reference,
)
from tests.conftest import (DEVICES, DTYPES, HAS_TRITON, FastgenOpLog, assert_matches_reference,
                            compiled_cpu, op_implementations, tolerances)
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
SLOPE, EPS = 0.2, 1e-8

# ((N, C, *spatial), negative_slope): each activation (None: none; 0.0: ReLU) at one odd size;
# then N = 1, 1x1 maps (the generator's first layer, z as (N, C, 1, 1)), (N, C) input, a single
# channel, one row, more positions than the C++ kernel's largest tile (4096), more positions than
# a tile of the Triton kernel (64) with more channels than one Triton block, a 3-D map, a sample of
# more than 1 MB (the C++ kernel's tiles then split it: two forward, three backward, the last
# ones partial).
SAMPLES = [((2, 5, 7, 9), slope) for slope in (None, SLOPE, 0.0)] + [
    ((1, 3, 5, 7), SLOPE),
    ((3, 4, 1, 1), None),
    ((5, 7), SLOPE),
    ((3, 300), None),
    ((4, 1, 2, 3), SLOPE),
    ((2, 3, 1, 6), 0.0),
    ((1, 2, 65, 65), SLOPE),
    ((1, 70, 5, 13), None),
    ((2, 3, 4, 5, 3), SLOPE),
    ((1, 520, 24, 24), SLOPE),
]
SAMPLE_IDS = [f"{'x'.join(map(str, s))}-{slope}" for s, slope in SAMPLES]


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    """(x, negative_slope); x of both signs with a non-zero mean, never exactly zero."""
    shape, slope = sample
    x = 2 * torch.randn(shape, dtype=torch.float64) + 0.3
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x)
    return x.to(device, dtype).requires_grad_(requires_grad), slope


def paper_pixel_norm(x, negative_slope, eps=EPS):
    """The paper's formula written out: b = a / sqrt(1/C sum_c a_c^2 + eps), a the leaky ReLU of x."""
    a = x if negative_slope is None else torch.where(x > 0, x, negative_slope * x)
    return a / torch.sqrt(torch.mean(a ** 2, dim=1, keepdim=True) + eps)


IMPLS = op_implementations("pixel_norm")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward = make_impl()
    x, slope = sample_inputs(sample, device, dtype)
    tol = tolerances(dtype)
    y, rstd = forward(x, slope, EPS)
    want_y, want_rstd = pixel_norm_forward_reference(x, slope, EPS)
    torch.testing.assert_close(y, want_y, **tol)
    torch.testing.assert_close(rstd, want_rstd, **tol)
    assert y.is_contiguous() and rstd.dtype == dtype and rstd.shape == (x.shape[0], *x.shape[2:])
    grad_out = torch.randn(x.shape, dtype=torch.float64).to(device, dtype)
    torch.testing.assert_close(backward(grad_out, x, rstd, slope),
                               pixel_norm_backward_reference(grad_out, x, want_rstd, slope), **tol)


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_matches_reference(make_impl, dtype):
    """float32 statistics and sums for bfloat16 and float16 x, as the reference: the two differ by
    the rounding of the output."""
    device, forward, backward = make_impl()
    x, slope = sample_inputs(((2, 12, 5, 6), SLOPE), device, dtype)
    y, rstd = forward(x, slope, EPS)
    want_y, want_rstd = pixel_norm_forward_reference(x, slope, EPS)
    assert y.dtype == dtype and rstd.dtype == torch.float32
    torch.testing.assert_close(rstd, want_rstd)
    torch.testing.assert_close(y, want_y, rtol=1e-2, atol=1e-2)
    grad_out = torch.randn_like(x)
    got = backward(grad_out, x, rstd, slope)
    assert got.dtype == dtype
    torch.testing.assert_close(got, pixel_norm_backward_reference(grad_out, x, want_rstd, slope), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_reference_is_the_papers_formula(sample):
    x, slope = sample_inputs(sample, dtype=torch.float64)
    torch.testing.assert_close(pixel_norm_reference(x, negative_slope=slope, eps=EPS), paper_pixel_norm(x, slope))
    # and each position's channel vector has unit root mean square (but where a ReLU zeroed it)
    y = pixel_norm_reference(x, negative_slope=slope, eps=1e-30)
    alive = (y != 0).any(1)
    torch.testing.assert_close(y.square().mean(1)[alive], torch.ones_like(y[:, 0])[alive])


def test_relu_and_no_activation_are_the_special_cases():
    x, _ = sample_inputs(((2, 5, 3, 4), None), dtype=torch.float64)
    torch.testing.assert_close(pixel_norm_reference(x, negative_slope=0.0), paper_pixel_norm(F.relu(x), None))
    torch.testing.assert_close(pixel_norm_reference(x, negative_slope=1.0), pixel_norm_reference(x))


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_backward_reference_matches_autograd(sample):
    x, slope = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    y = paper_pixel_norm(x, slope)
    grad_out = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, grad_out)
    got = pixel_norm_backward_reference(grad_out, x.detach(), pixel_norm_rstd_reference(x.detach(), slope, EPS), slope)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    x, slope = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.pixel_norm(x, negative_slope=slope),
                             lambda: pixel_norm_reference(x, negative_slope=slope), [x])


@pytest.mark.parametrize("device", DEVICES)
def test_public_function_is_the_papers_formula(device):
    x, _ = sample_inputs(((3, 6, 8, 5), SLOPE), device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.pixel_norm(x, negative_slope=SLOPE, eps=1e-3),
                             lambda: paper_pixel_norm(x, SLOPE, eps=1e-3), [x])



def test_one_op_each_way_and_no_backward_without_gradients():
    x, slope = sample_inputs(SAMPLES[1])
    with FastgenOpLog() as log:
        y = fastgen.ops.pixel_norm(x, negative_slope=slope)
    assert y.grad_fn is None and log.names == ["pixel_norm"]
    x.requires_grad_(True)
    y = fastgen.ops.pixel_norm(x, negative_slope=slope)
    with FastgenOpLog() as log:
        y.backward(torch.randn_like(y))
    assert log.names == ["pixel_norm_backward"]


def test_saves_x_and_rstd_only():
    """x and the per-position rstd: not y, not the activation."""
    x, slope = sample_inputs(SAMPLES[1], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fastgen.ops.pixel_norm(x, negative_slope=slope)
    assert len(saved) == 2 and saved[0] is x and tuple(saved[1].shape) == (x.shape[0], *x.shape[2:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    x, slope = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.pixel_norm.default, (x, slope, EPS))
    x = x.detach()
    _, rstd = ops.pixel_norm(x, slope, EPS)
    torch.library.opcheck(ops.pixel_norm_backward.default, (torch.randn_like(x), x, rstd, slope))


@pytest.mark.parametrize("slope", [None, SLOPE, 0.0], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (3, 4), (1, 1, 1, 2)], ids=str)
def test_gradcheck_float64(shape, slope):
    x, _ = sample_inputs((shape, slope), dtype=torch.float64, requires_grad=True)
    fn = lambda t: fastgen.ops.pixel_norm(t, negative_slope=slope, eps=1e-3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    # The backward under create_graph is differentiable too (a regulariser's double backward).
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "stride0"])
def test_non_contiguous_inputs(make_impl, layout):
    device, forward, backward = make_impl()
    x, slope = sample_inputs(((2, 4, 5, 6), SLOPE), device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(2, 4, 5, 12, device=device)[..., ::2]
    else:
        x = x[:, :1].expand(x.shape)  # every channel the same plane
    y, rstd = forward(x, slope, EPS)
    want_y, want_rstd = pixel_norm_forward_reference(x, slope, EPS)
    assert y.is_contiguous()
    torch.testing.assert_close(y, want_y)
    grad_out = torch.randn(x.shape, device=device).contiguous(memory_format=torch.channels_last)
    got = backward(grad_out, x, rstd, slope)
    assert got.is_contiguous()
    torch.testing.assert_close(got, pixel_norm_backward_reference(grad_out, x, want_rstd, slope))


@pytest.mark.parametrize("make_impl", IMPLS)
def test_position_zeroed_by_the_relu(make_impl):
    """Where the ReLU zeroes every channel of a position, a = 0: y = 0, rstd = 1 / sqrt(eps), and the
    gradient is finite (0, the ReLU's derivative there)."""
    device, forward, backward = make_impl()
    x = torch.rand(2, 3, 2, 2, device=device) + 0.1
    x[1, :, 0, 1] = -torch.rand(3, device=device) - 0.1
    y, rstd = forward(x, 0.0, EPS)
    assert torch.equal(y[1, :, 0, 1], torch.zeros(3, device=device))
    torch.testing.assert_close(rstd[1, 0, 1], torch.tensor(EPS ** -0.5, device=device))
    grad = backward(torch.randn_like(x), x, rstd, 0.0)
    assert torch.isfinite(grad).all() and torch.equal(grad[1, :, 0, 1], torch.zeros(3, device=device))


@pytest.mark.parametrize("make_impl", IMPLS)
def test_nan_stays_at_its_position(make_impl):
    device, forward, _ = make_impl()
    x, slope = sample_inputs(((2, 3, 4, 5), SLOPE), device)
    x[1, 2, 3, 1] = float("nan")
    y, rstd = forward(x, slope, EPS)
    assert torch.isnan(y[1, :, 3, 1]).all() and torch.isnan(rstd[1, 3, 1])
    keep = torch.ones(2, 4, 5, dtype=torch.bool)
    keep[1, 3, 1] = False
    want = pixel_norm_reference(x, negative_slope=slope)
    torch.testing.assert_close(y.movedim(1, -1)[keep], want.movedim(1, -1)[keep])


@pytest.mark.parametrize("make_impl", IMPLS)
def test_empty_batch_or_positions(make_impl):
    device, forward, backward = make_impl()
    for shape in ((0, 3, 4, 4), (2, 3, 0, 4), (0, 5)):
        x = torch.randn(shape, device=device)
        y, rstd = forward(x, SLOPE, EPS)
        assert y.shape == shape and rstd.shape == (shape[0], *shape[2:])
        assert backward(torch.randn(shape, device=device), x, rstd, SLOPE).shape == shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, SLOPE])
def test_bfloat16_error_at_most_twice_reference(device, slope):
    """Against float64, our bfloat16 error is at most twice that of the paper's formula run in bfloat16."""
    x, _ = sample_inputs(((2, 16, 9, 8), slope), device)
    exact = paper_pixel_norm(x.double(), slope)
    ours = fastgen.ops.pixel_norm(x.bfloat16(), negative_slope=slope).double()
    ref = paper_pixel_norm(x.bfloat16(), slope).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-6


def test_autocast_runs_in_bfloat16():
    x, slope = sample_inputs(SAMPLES[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fastgen.ops.pixel_norm(x, negative_slope=slope)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, pixel_norm_reference(x.bfloat16(), negative_slope=slope))


def test_use_reference_routes_to_reference():
    x, slope = sample_inputs(SAMPLES[1], requires_grad=True)
    with fastgen.use_reference():
        y = fastgen.ops.pixel_norm(x, negative_slope=slope)
    assert "fastgen" not in type(y.grad_fn).__name__
    assert "fastgen_pixel_norm" in type(fastgen.ops.pixel_norm(x, negative_slope=slope).grad_fn).__name__


def test_compiles_to_one_graph():
    """The op traces through torch.compile without graph breaks, forward and backward."""
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    compiled = torch.compile(lambda x: fastgen.ops.pixel_norm(conv(x), negative_slope=SLOPE), fullgraph=True)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    y = compiled(x)
    expected = paper_pixel_norm(conv(x), SLOPE)
    torch.testing.assert_close(y, expected)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    (want,) = torch.autograd.grad(expected.sum(), (x,))
    torch.testing.assert_close(gx, want)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_float64_scalars_are_exact():
    """eps and the slope reach the float64 kernel unrounded (a float argument would be float32)."""
    from fastgen.kernels.pixel_norm import pixel_norm_backward_triton, pixel_norm_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(2, 3, 4, dtype=torch.float64, device=device) * 0.1
    y, rstd = pixel_norm_triton(x, 0.1, 0.3)
    want_y, want_rstd = pixel_norm_forward_reference(x, 0.1, 0.3)
    torch.testing.assert_close(rstd, want_rstd, rtol=1e-14, atol=0)
    torch.testing.assert_close(y, want_y, rtol=1e-14, atol=1e-15)
    g = torch.randn_like(x)
    torch.testing.assert_close(pixel_norm_backward_triton(g, x, rstd, 0.1),
                               pixel_norm_backward_reference(g, x, want_rstd, 0.1), rtol=1e-13, atol=1e-14)


# -- bad input ---------------------------------------------------------------------------------------

def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


class TestBadInput:
    @pytest.mark.parametrize("args,kwargs,error,match", [
        ((_r(4),), {}, ValueError, r"x must be \(N, C\) or \(N, C, \*spatial\)"),
        ((_r(()),), {}, ValueError, r"x must be \(N, C\) or \(N, C, \*spatial\)"),
        ((_r(2, 0, 4, 4),), {}, ValueError, r"x must have at least one channel \(C >= 1\)"),
        ((torch.randint(0, 3, (2, 3, 4, 4)),), {}, ValueError, "x must be a floating-point tensor"),
        ((torch.ones(2, 3, dtype=torch.bool),), {}, ValueError, "x must be a floating-point tensor"),
        (([[1.0]],), {}, TypeError, "x must be a torch.Tensor"),
        ((_r(2, 3, 4, 4),), dict(eps=0.0), ValueError, "eps must be positive"),
        ((_r(2, 3, 4, 4),), dict(eps=-1e-8), ValueError, "eps must be positive"),
        ((_r(2, 3, 4, 4),), dict(eps=float("nan")), ValueError, "eps must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(eps=float("inf")), ValueError, "eps must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(eps="1e-8"), TypeError, "eps must be a number"),
        ((_r(2, 3, 4, 4),), dict(negative_slope=float("inf")), ValueError, "negative_slope must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(negative_slope=float("nan")), ValueError, "negative_slope must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(negative_slope=True), TypeError, "negative_slope must be a number"),
        ((_r(2, 3, 4, 4),), dict(negative_slope="0.2"), TypeError, "negative_slope must be a number"),
    ])
    def test_errors_name_the_argument(self, args, kwargs, error, match):
        with pytest.raises(error, match=match):
            fastgen.ops.pixel_norm(*args, **kwargs)

    @pytest.mark.parametrize("change,match", [
        (dict(grad_out=_r(2, 3, 4, 5)), r"grad_out must have x's shape \(2, 3, 4, 4\)"),
        (dict(grad_out=_r(2, 3, 4, 4, dtype=torch.float64)), "grad_out has dtype torch.float64"),
        (dict(rstd=_r(2, 4, 4, dtype=torch.float64)), "rstd must have dtype torch.float32"),
        (dict(rstd=_r(2, 4)), r"rstd must be \(N, \*spatial\) = \(2, 4, 4\)"),
        (dict(rstd=_r(2, 4, 5)), r"rstd must be \(N, \*spatial\) = \(2, 4, 4\)"),
        (dict(rstd=_r(2, 4, 4, device="meta")), "rstd is on meta but x is on cpu"),
        (dict(negative_slope=float("nan")), "negative_slope must be a finite number"),
    ])
    def test_backward_reference_checks_its_arguments(self, change, match):
        from fastgen.ops.pixel_norm import _reference_backward

        args = dict(grad_out=_r(2, 3, 4, 4), x=_r(2, 3, 4, 4), rstd=_r(2, 4, 4), negative_slope=SLOPE) | change
        with pytest.raises(ValueError, match=match):
            _reference_backward(*args.values())

    @pytest.mark.skipif(not compiled_cpu("pixel_norm"), reason="fastgen._C not built")
    def test_kernel_checks_its_own_arguments(self):
        with pytest.raises(RuntimeError, match=r"eps must be a positive finite number"):
            ops.pixel_norm(_r(2, 6, 4, 4), None, -1.0)


def _rstd(x, slope=None):
    return pixel_norm_rstd_reference(x, slope, EPS).float()


# Calls every pixel_norm kernel entry must refuse, whatever the Python wrapper checked.
_X = lambda: _r(2, 3, 4, 4)  # noqa: E731
KERNEL_BAD = [
    ("pixel_norm", lambda: (_r(5), None, EPS), "x must"),
    ("pixel_norm", lambda: (_r(2, 0, 3), None, EPS), "at least one channel"),
    ("pixel_norm", lambda: (_X().int(), None, EPS), "x must be a float"),
    ("pixel_norm", lambda: (_X().to(torch.complex64), SLOPE, EPS), "x must be a float"),
    ("pixel_norm", lambda: (_X(), None, 0.0), "eps must be"),
    ("pixel_norm", lambda: (_X(), None, -1.0), "eps must be"),
    ("pixel_norm", lambda: (_X(), None, float("nan")), "eps must be"),
    ("pixel_norm", lambda: (_X(), None, float("inf")), "eps must be"),
    ("pixel_norm", lambda: (_X(), None, 1e300), "eps must be"),
    ("pixel_norm", lambda: (_X(), float("nan"), EPS), "negative_slope must be a finite"),
    ("pixel_norm", lambda: (_X(), float("-inf"), EPS), "negative_slope must be a finite"),
    ("pixel_norm_backward", lambda: (_r(2, 3, 4, 5), _X(), _rstd(_X()), None), "grad_out must have x's shape"),
    ("pixel_norm_backward", lambda: (_X().half(), _X(), _rstd(_X()), None), "grad_out must have x's dtype"),
    ("pixel_norm_backward", lambda: (_X(), _X(), _rstd(_X()).double(), None), "rstd must have dtype"),
    ("pixel_norm_backward", lambda: (_X(), _X(), _r(2, 4), None), r"rstd must be \(N, \*spatial\)"),
    ("pixel_norm_backward", lambda: (_X(), _X(), _r(2, 4, 5), None), r"rstd must be \(N, \*spatial\)"),
    ("pixel_norm_backward", lambda: (_X(), _X().int(), _rstd(_X()), None), "x must be a float"),
    ("pixel_norm_backward", lambda: (_X(), _X(), _rstd(_X()), float("inf")), "negative_slope must be a finite"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("pixel_norm", KERNEL_BAD)

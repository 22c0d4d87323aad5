"""minibatch_stddev: every implementation against fastgen.reference, the reference against the
paper's code, the grouping, autograd (twice: WGAN-GP's critic), bad input."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.minibatch_stddev import (
    group_count,
    minibatch_stddev_backward_reference,
    minibatch_stddev_reference,
)
from tests.conftest import (DEVICES, DTYPES, HAS_TRITON, FastgenOpLog, assert_matches_reference,
                            compiled_cpu, op_implementations, tolerances)
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
EPS = 1e-8

# ((N, C, H, W), group_size): G = 3 of N = 6 (the largest divisor <= 4), N = 1, 1x1 maps, G = 4,
# a prime N (G = 1), group_size 1, group_size > N, a single channel and pixel, one row, more
# (c, h, w) elements than a block of the C++ (256) and the Triton (1024) kernels.
SAMPLES = [
    ((6, 3, 5, 5), 4),
    ((1, 3, 5, 7), 4),
    ((3, 4, 1, 1), 4),
    ((8, 2, 3, 3), 4),
    ((7, 2, 3, 1), 4),
    ((12, 1, 2, 2), 1),
    ((2, 2, 3, 2), 8),
    ((5, 1, 1, 1), 5),
    ((4, 5, 1, 7), 2),
    ((4, 3, 20, 21), 4),
]
SAMPLE_IDS = [f"{'x'.join(map(str, s))}-g{g}" for s, g in SAMPLES]


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    """(x, group_size); x with a non-zero mean, no two samples alike."""
    shape, group_size = sample
    x = 2 * torch.randn(shape, dtype=torch.float64) + 0.5
    return x.to(device, dtype).requires_grad_(requires_grad), group_size


def paper_minibatch_stddev(x, group_size, eps=EPS):
    """The paper's code written out (its group size capped at N and, here, lowered to a divisor of N)."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)              # [GMCHW]
    y = y - y.mean(dim=0, keepdim=True)        # [GMCHW]
    y = y.square().mean(dim=0)                 # [MCHW]
    y = torch.sqrt(y + eps)                    # [MCHW]
    y = y.mean(dim=(1, 2, 3), keepdim=True)    # [M111]
    y = y.repeat(g, 1, h, w)                   # [N1HW]
    return torch.cat([x, y], dim=1)


IMPLS = op_implementations("minibatch_stddev")


@pytest.mark.parametrize("n,group_size,g", [(6, 4, 3), (8, 4, 4), (7, 4, 1), (1, 4, 1), (12, 5, 4), (9, 4, 3),
                                            (4, 1, 1), (3, 100, 3), (2**20, 4, 4)])
def test_group_count_is_the_largest_divisor_at_most_group_size(n, group_size, g):
    assert group_count(n, group_size) == g


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward = make_impl()
    x, group_size = sample_inputs(sample, device, dtype)
    tol = tolerances(dtype)
    y = forward(x, group_size, EPS)
    torch.testing.assert_close(y, minibatch_stddev_reference(x, group_size, eps=EPS), **tol)
    assert y.is_contiguous() and torch.equal(y[:, :-1], x)
    n, c, h, w = x.shape
    grad_out = torch.randn(n, c + 1, h, w, dtype=torch.float64).to(device, dtype)
    torch.testing.assert_close(backward(grad_out, x, group_size, EPS),
                               minibatch_stddev_backward_reference(grad_out, x, group_size, EPS), **tol)


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_matches_reference(make_impl, dtype):
    """float32 statistics for bfloat16 and float16 x, as the reference: the copy is exact and the
    extra channel differs by its rounding."""
    device, forward, backward = make_impl()
    x, group_size = sample_inputs(((6, 4, 5, 3), 4), device, dtype)
    y = forward(x, group_size, EPS)
    assert y.dtype == dtype and torch.equal(y[:, :-1], x)
    torch.testing.assert_close(y, minibatch_stddev_reference(x, group_size, eps=EPS), rtol=1e-2, atol=1e-2)
    grad_out = torch.randn(6, 5, 5, 3, device=device).to(dtype)
    got = backward(grad_out, x, group_size, EPS)
    assert got.dtype == dtype
    torch.testing.assert_close(got, minibatch_stddev_backward_reference(grad_out, x, group_size, EPS), rtol=2e-2,
                               atol=2e-2)


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_reference_is_the_papers_code(sample):
    x, group_size = sample_inputs(sample, dtype=torch.float64)
    torch.testing.assert_close(minibatch_stddev_reference(x, group_size, eps=EPS),
                               paper_minibatch_stddev(x, group_size))


def test_reference_groups_samples_m_apart():
    """N = 6, group_size 4: G = 3 groups... of the samples {0, 2, 4} and {1, 3, 5} (the reshape to
    (G, N / G, ...)), each with its population standard deviation (torch.std(unbiased=False))."""
    x, _ = sample_inputs(((6, 3, 2, 4), 4), dtype=torch.float64)
    y = minibatch_stddev_reference(x, 4, eps=1e-300)
    for members in ([0, 2, 4], [1, 3, 5]):
        s = torch.std(x[members], dim=0, unbiased=False).mean()
        for n in members:
            torch.testing.assert_close(y[n, 3], s.expand(2, 4))


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_backward_reference_matches_autograd(sample):
    x, group_size = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    y = paper_minibatch_stddev(x, group_size)
    grad_out = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, grad_out)
    torch.testing.assert_close(minibatch_stddev_backward_reference(grad_out, x.detach(), group_size, EPS), want)


@pytest.mark.parametrize("make_impl", IMPLS)
def test_x_part_passes_the_gradient_through(make_impl):
    """With no gradient on the extra channel, grad_x is grad_y's x part, exactly; with G = 1 the
    channel (sqrt(eps) everywhere) has no gradient at all."""
    device, _, backward = make_impl()
    x, _ = sample_inputs(((6, 3, 4, 5), 4), device)
    grad_out = torch.randn(6, 4, 4, 5, device=device)
    grad_out[:, 3] = 0
    assert torch.equal(backward(grad_out, x, 4, EPS), grad_out[:, :3])
    grad_out = torch.randn(5, 4, 4, 5, device=device)
    assert torch.equal(backward(grad_out, torch.randn(5, 3, 4, 5, device=device), 4, EPS), grad_out[:, :3])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    x, group_size = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.minibatch_stddev(x, group_size),
                             lambda: minibatch_stddev_reference(x, group_size), [x])


@pytest.mark.parametrize("device", DEVICES)
def test_public_function_is_the_papers_code(device):
    x, _ = sample_inputs(((6, 5, 4, 4), 4), device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.minibatch_stddev(x, 4, eps=1e-3),
                             lambda: paper_minibatch_stddev(x, 4, eps=1e-3), [x])



def test_one_op_each_way_saving_only_x():
    x, group_size = sample_inputs(SAMPLES[0])
    with FastgenOpLog() as log:
        y = fastgen.ops.minibatch_stddev(x, group_size)
    assert y.grad_fn is None and log.names == ["minibatch_stddev"]
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fastgen.ops.minibatch_stddev(x, group_size)
    assert len(saved) == 1 and saved[0] is x
    with FastgenOpLog() as log:
        y.backward(torch.randn_like(y))
    assert log.names == ["minibatch_stddev_backward"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    x, group_size = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.minibatch_stddev.default, (x, group_size, EPS))
    x = x.detach()
    n, c, h, w = x.shape
    torch.library.opcheck(ops.minibatch_stddev_backward.default,
                          (torch.randn(n, c + 1, h, w, device=device), x, group_size, EPS))


@pytest.mark.parametrize("shape,group_size", [((4, 2, 2, 3), 2), ((3, 2, 1, 1), 4), ((1, 2, 2, 1), 4),
                                              ((6, 1, 2, 2), 4)], ids=str)
def test_gradcheck_float64(shape, group_size):
    x, _ = sample_inputs((shape, group_size), dtype=torch.float64, requires_grad=True)
    fn = lambda t: fastgen.ops.minibatch_stddev(t, group_size, eps=1e-3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    # WGAN-GP differentiates the critic's input gradient: the backward is differentiable too.
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_wgan_gp_parameter_gradients_match_the_reference():
    """A critic with the stddev channel, its gradient penalty differentiated into its parameters (a
    double backward through the op), as with the reference."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 2, 3).double()
    head = torch.nn.Linear(3 * 3 * 3, 1).double()
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64, requires_grad=True)

    def penalty_grads(stddev):
        out = head(stddev(torch.tanh(conv(torch.cat([x, x[:, :1]], 1))), 4).flatten(1))
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return torch.autograd.grad(grad.square().sum(), [conv.weight, head.weight])

    for got, want in zip(penalty_grads(fastgen.ops.minibatch_stddev), penalty_grads(minibatch_stddev_reference)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "stride0"])
def test_non_contiguous_inputs(make_impl, layout):
    device, forward, backward = make_impl()
    x, group_size = sample_inputs(((6, 4, 5, 6), 4), device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(6, 4, 5, 12, device=device)[..., ::2]
    else:
        x = x[:, :1].expand(x.shape)  # every channel the same plane
    y = forward(x, group_size, EPS)
    assert y.is_contiguous()
    torch.testing.assert_close(y, minibatch_stddev_reference(x, group_size, eps=EPS))
    grad_out = torch.randn(6, 5, 5, 6, device=device).contiguous(memory_format=torch.channels_last)
    got = backward(grad_out, x, group_size, EPS)
    assert got.is_contiguous()
    torch.testing.assert_close(got, minibatch_stddev_backward_reference(grad_out, x, group_size, EPS))


@pytest.mark.parametrize("make_impl", IMPLS)
def test_identical_members_give_sqrt_eps(make_impl):
    """Samples alike within each group: var = 0, the channel is sqrt(eps), and a finite gradient."""
    device, forward, backward = make_impl()
    x = torch.randn(2, 3, 4, 5, device=device).repeat(2, 1, 1, 1)  # groups {0, 2}, {1, 3}
    y = forward(x, 2, 1e-4)
    torch.testing.assert_close(y[:, 3], torch.full((4, 4, 5), 1e-2, device=device))
    grad = backward(torch.randn(4, 4, 4, 5, device=device), x, 2, 1e-4)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("make_impl", IMPLS)
def test_nan_stays_in_its_group(make_impl):
    device, forward, _ = make_impl()
    x, _ = sample_inputs(((6, 3, 4, 5), 4), device)
    x[1, 2, 3, 1] = float("nan")  # group {1, 3, 5}
    y = forward(x, 4, EPS)
    assert torch.isnan(y[[1, 3, 5], 3]).all() and not torch.isnan(y[[0, 2, 4], 3]).any()
    torch.testing.assert_close(y[[0, 2, 4]], minibatch_stddev_reference(x, 4)[[0, 2, 4]])


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_error_at_most_twice_reference(device):
    """Against float64, our bfloat16 error is at most twice that of the paper's code run in bfloat16."""
    x, _ = sample_inputs(((8, 16, 4, 4), 4), device)
    exact = paper_minibatch_stddev(x.double(), 4)
    ours = fastgen.ops.minibatch_stddev(x.bfloat16(), 4).double()
    ref = paper_minibatch_stddev(x.bfloat16(), 4).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-6


def test_autocast_runs_in_bfloat16():
    x, group_size = sample_inputs(SAMPLES[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fastgen.ops.minibatch_stddev(x, group_size)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, minibatch_stddev_reference(x.bfloat16(), group_size))


def test_use_reference_routes_to_reference():
    x, group_size = sample_inputs(SAMPLES[0], requires_grad=True)
    with fastgen.use_reference():
        y = fastgen.ops.minibatch_stddev(x, group_size)
    assert "fastgen" not in type(y.grad_fn).__name__
    assert "fastgen_minibatch_stddev" in type(fastgen.ops.minibatch_stddev(x, group_size).grad_fn).__name__


def test_compiles_to_one_graph():
    """The op traces through torch.compile without graph breaks, forward and backward."""
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    compiled = torch.compile(lambda x: fastgen.ops.minibatch_stddev(conv(x), 4), fullgraph=True)
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    y = compiled(x)
    expected = paper_minibatch_stddev(conv(x), 4)
    torch.testing.assert_close(y, expected)
    (gx,) = torch.autograd.grad(y.square().sum(), (x,))
    (want,) = torch.autograd.grad(expected.square().sum(), (x,))
    torch.testing.assert_close(gx, want)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_float64_eps_is_exact():
    """eps reaches the float64 kernels unrounded (a float argument would be float32)."""
    from fastgen.kernels.minibatch_stddev import minibatch_stddev_backward_triton, minibatch_stddev_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, device=device) * 0.1
    torch.testing.assert_close(minibatch_stddev_triton(x, 4, 0.3), minibatch_stddev_reference(x, 4, eps=0.3),
                               rtol=1e-14, atol=0)
    g = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    torch.testing.assert_close(minibatch_stddev_backward_triton(g, x, 4, 0.3),
                               minibatch_stddev_backward_reference(g, x, 4, 0.3), rtol=1e-13, atol=1e-14)


# -- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("group_size", [2**62, 2**63 - 1])
def test_the_largest_int64_group_sizes_mean_one_group(make_impl, group_size):
    device, forward, backward = make_impl()
    x = torch.randn(6, 3, 2, 5, device=device, dtype=torch.float64) + 0.5
    torch.testing.assert_close(forward(x, group_size, EPS), minibatch_stddev_reference(x, 6, eps=EPS))
    grad = torch.randn(6, 4, 2, 5, device=device, dtype=torch.float64)
    torch.testing.assert_close(backward(grad, x, group_size, EPS),
                               minibatch_stddev_backward_reference(grad, x, 6, EPS))


def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


class TestBadInput:
    @pytest.mark.parametrize("args,kwargs,error,match", [
        ((_r(4, 5, 5),), {}, ValueError, r"x must be \(N, C, H, W\)"),
        ((_r(4, 5, 5, 1, 1),), {}, ValueError, r"x must be \(N, C, H, W\)"),
        ((_r(0, 3, 4, 4),), {}, ValueError, r"x must have at least one sample, channel and pixel"),
        ((_r(2, 0, 4, 4),), {}, ValueError, r"x must have at least one sample, channel and pixel"),
        ((_r(2, 3, 4, 0),), {}, ValueError, r"x must have at least one sample, channel and pixel"),
        ((torch.randint(0, 3, (2, 3, 4, 4)),), {}, ValueError, "x must be a floating-point tensor"),
        (([[1.0]],), {}, TypeError, "x must be a torch.Tensor"),
        ((_r(2, 3, 4, 4), 0), {}, ValueError, "group_size must be >= 1"),
        ((_r(2, 3, 4, 4), -4), {}, ValueError, "group_size must be >= 1"),
        ((_r(2, 3, 4, 4), 2**63), {}, ValueError, r"group_size must be >= 1 and < 2\*\*63"),
        ((_r(2, 3, 4, 4), 2.0), {}, TypeError, "group_size must be an int"),
        ((_r(2, 3, 4, 4), True), {}, TypeError, "group_size must be an int"),
        ((_r(2, 3, 4, 4),), dict(eps=0.0), ValueError, "eps must be positive"),
        ((_r(2, 3, 4, 4),), dict(eps=-1e-8), ValueError, "eps must be positive"),
        ((_r(2, 3, 4, 4),), dict(eps=float("nan")), ValueError, "eps must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(eps=float("inf")), ValueError, "eps must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(eps="1e-8"), TypeError, "eps must be a number"),
    ])
    def test_errors_name_the_argument(self, args, kwargs, error, match):
        with pytest.raises(error, match=match):
            fastgen.ops.minibatch_stddev(*args, **kwargs)

    @pytest.mark.parametrize("change,match", [
        (dict(grad_out=_r(2, 3, 4, 4)), r"grad_out must be \(N, C \+ 1, H, W\) = \(2, 4, 4, 4\)"),
        (dict(grad_out=_r(2, 4, 4)), r"grad_out must be \(N, C \+ 1, H, W\)"),
        (dict(grad_out=_r(2, 4, 4, 4, dtype=torch.float64)), "grad_out has dtype torch.float64"),
        (dict(grad_out=_r(2, 4, 4, 4, device="meta")), "grad_out is on meta but x is on cpu"),
        (dict(group_size=0), "group_size must be >= 1"),
        (dict(eps=0.0), "eps must be positive"),
    ])
    def test_backward_reference_checks_its_arguments(self, change, match):
        from fastgen.ops.minibatch_stddev import _reference_backward

        args = dict(grad_out=_r(2, 4, 4, 4), x=_r(2, 3, 4, 4), group_size=4, eps=EPS) | change
        with pytest.raises(ValueError, match=match):
            _reference_backward(*args.values())

    @pytest.mark.skipif(not compiled_cpu("minibatch_stddev"), reason="fastgen._C not built")
    def test_kernel_checks_its_own_arguments(self):
        with pytest.raises(RuntimeError, match="group_size must be >= 1"):
            ops.minibatch_stddev(_r(2, 6, 4, 4), 0, EPS)


# Calls every minibatch_stddev kernel entry must refuse, whatever the Python wrapper checked.
_X = lambda: _r(2, 3, 4, 4)  # noqa: E731
_G = lambda: _r(2, 4, 4, 4)  # noqa: E731
KERNEL_BAD = [
    ("minibatch_stddev", lambda: (_r(2, 3, 4), 4, EPS), "x must"),
    ("minibatch_stddev", lambda: (_r(2, 3, 4, 4, 1), 4, EPS), "x must"),
    ("minibatch_stddev", lambda: (_r(0, 3, 4, 4), 4, EPS), "at least one sample"),
    ("minibatch_stddev", lambda: (_r(2, 3, 0, 4), 4, EPS), "at least one sample"),
    ("minibatch_stddev", lambda: (_X().int(), 4, EPS), "x must be a float"),
    ("minibatch_stddev", lambda: (_X().to(torch.complex64), 4, EPS), "x must be a float"),
    ("minibatch_stddev", lambda: (_X(), 0, EPS), "group_size must be"),
    ("minibatch_stddev", lambda: (_X(), -2**63, EPS), "group_size must be"),
    ("minibatch_stddev", lambda: (_X(), 4, 0.0), "eps must be"),
    ("minibatch_stddev", lambda: (_X(), 4, -1.0), "eps must be"),
    ("minibatch_stddev", lambda: (_X(), 4, float("nan")), "eps must be"),
    ("minibatch_stddev", lambda: (_X(), 4, float("inf")), "eps must be"),
    ("minibatch_stddev", lambda: (_X(), 4, 1e300), "eps must be"),
    ("minibatch_stddev_backward", lambda: (_r(2, 3, 4, 4), _X(), 4, EPS), r"grad_out must be \(N, C \+ 1, H, W\)"),
    ("minibatch_stddev_backward", lambda: (_r(2, 4, 4, 5), _X(), 4, EPS), r"grad_out must be \(N, C \+ 1, H, W\)"),
    ("minibatch_stddev_backward", lambda: (_r(2, 4, 4), _X(), 4, EPS), r"grad_out must"),
    ("minibatch_stddev_backward", lambda: (_G().half(), _X(), 4, EPS), "grad_out must have x's dtype"),
    ("minibatch_stddev_backward", lambda: (_G().int(), _X(), 4, EPS), "grad_out must be a float"),
    ("minibatch_stddev_backward", lambda: (_G(), _X().int(), 4, EPS), "x must be a float"),
    ("minibatch_stddev_backward", lambda: (_G(), _X(), 0, EPS), "group_size must be"),
    ("minibatch_stddev_backward", lambda: (_G(), _X(), 4, -1.0), "eps must be"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("minibatch_stddev", KERNEL_BAD)

"""instance_norm_act: every implementation against fastgen.reference, torch's instance_norm, numerics,
autograd, the nn.Module, bad input."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import fastgen
from fastgen.nn import InstanceNormAct
from fastgen.reference.instance_norm_act import (
    instance_norm_act_backward_reference,
    instance_norm_act_forward_reference,
    instance_norm_act_reference,
    instance_norm_stats_reference,
)
from tests.conftest import (DEVICES, DTYPES, HAS_TRITON, FastgenOpLog, assert_matches_reference,
                            compiled_cpu, op_implementations, tolerances)
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen
ACTS = ("relu", "leaky_relu", "none")
AFFINE = ("both", "weight", "bias", "neither")

# ((N, C, H, W), affine, act): every activation with every weight/bias combination at one odd
# size; then N = 1, planes of one pixel (H * W = 1, where the variance is 0), one row, more pixels
# than one block of the Triton kernel (1024), a single channel.
SAMPLES = [((2, 5, 7, 9), affine, act) for act in ACTS for affine in AFFINE] + [
    ((1, 3, 5, 7), "both", "leaky_relu"),
    ((3, 4, 1, 1), "both", "relu"),
    ((2, 3, 1, 1), "weight", "leaky_relu"),
    ((2, 3, 1, 6), "bias", "leaky_relu"),
    ((2, 6, 33, 35), "both", "relu"),
    ((1, 2, 40, 37), "weight", "leaky_relu"),
    ((1, 1, 2, 2), "neither", "none"),
]
SAMPLE_IDS = [f"{'x'.join(map(str, s))}-{affine}-{act}" for s, affine, act in SAMPLES]
SLOPE, EPS = 0.2, 1e-5


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    """(x, weight, bias, act); x with a non-zero mean, weight of both signs."""
    shape, affine, act = sample
    c = shape[1]
    x = (2 * torch.randn(shape, dtype=torch.float64) + 0.5).to(device, dtype).requires_grad_(requires_grad)
    weight = torch.randn(c, dtype=torch.float64).to(device, dtype).requires_grad_(requires_grad) \
        if affine in ("both", "weight") else None
    bias = torch.randn(c, dtype=torch.float64).to(device, dtype).requires_grad_(requires_grad) \
        if affine in ("both", "bias") else None
    return x, weight, bias, act


def _activation(y, act):
    return {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, SLOPE), "none": lambda t: t}[act](y)


def torch_instance_norm_act(x, weight, bias, act, eps=EPS):
    """torch's own instance_norm followed by the activation (planes of more than one pixel only)."""
    return _activation(F.instance_norm(x, weight=weight, bias=bias, eps=eps), act)


def _tensors(*ts):
    return [t for t in ts if t is not None]


IMPLS = op_implementations("instance_norm_act")
MASKS = [list(m) for m in itertools.product((True, False), repeat=3)]


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward = make_impl()
    x, weight, bias, act = sample_inputs(sample, device, dtype)
    tol = tolerances(dtype)
    y, mean, rstd = forward(x, weight, bias, act, SLOPE, EPS)
    want_y, want_mean, want_rstd = instance_norm_act_forward_reference(x, weight, bias, act, SLOPE, EPS)
    torch.testing.assert_close(y, want_y, **tol)
    torch.testing.assert_close(mean, want_mean, **tol)
    torch.testing.assert_close(rstd, want_rstd, **tol)
    assert y.is_contiguous() and mean.dtype == rstd.dtype == dtype
    grad_out = torch.randn(x.shape, dtype=torch.float64).to(device, dtype)
    got = backward(grad_out, x, weight, bias, mean, rstd, act, SLOPE, [True, True, True])
    want = instance_norm_act_backward_reference(grad_out, x, weight, bias, want_mean, want_rstd, act, SLOPE)
    for name, g, w in zip(("grad_x", "grad_weight", "grad_bias"), got, want):
        torch.testing.assert_close(g, w, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("output_mask", MASKS, ids=lambda m: "".join("1" if b else "0" for b in m))
def test_backward_output_mask(make_impl, output_mask, poison):
    """Entries not asked for are empty; the others are what the full call gives."""
    device, forward, backward = make_impl()
    x, weight, bias, act = sample_inputs(((2, 5, 7, 9), "both", "leaky_relu"), device)
    _, mean, rstd = forward(x, weight, bias, act, SLOPE, EPS)
    grad_out = torch.randn_like(x)
    full = backward(grad_out, x, weight, bias, mean, rstd, act, SLOPE, [True, True, True])
    part = backward(grad_out, x, weight, bias, mean, rstd, act, SLOPE, output_mask)
    for got, want, wanted in zip(part, full, output_mask):
        if wanted:
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        else:
            assert got.numel() == 0


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_matches_reference(make_impl, dtype):
    """float32 statistics and sums for bfloat16 and float16 x, as the reference: the two differ by
    the rounding of the output."""
    device, forward, backward = make_impl()
    x, weight, bias, act = sample_inputs(((2, 4, 9, 10), "both", "leaky_relu"), device, dtype)
    y, mean, rstd = forward(x, weight, bias, act, SLOPE, EPS)
    want_y, want_mean, want_rstd = instance_norm_act_forward_reference(x, weight, bias, act, SLOPE, EPS)
    assert y.dtype == dtype and mean.dtype == rstd.dtype == torch.float32
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(rstd, want_rstd)
    torch.testing.assert_close(y, want_y, rtol=1e-2, atol=1e-2)
    grad_out = torch.randn_like(x)
    got = backward(grad_out, x, weight, bias, mean, rstd, act, SLOPE, [True, True, True])
    want = instance_norm_act_backward_reference(grad_out, x, weight, bias, want_mean, want_rstd, act, SLOPE)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s[0][2] * s[0][3] > 1],
                         ids=[i for s, i in zip(SAMPLES, SAMPLE_IDS) if s[0][2] * s[0][3] > 1])
def test_reference_is_torch_instance_norm_then_activation(sample):
    x, weight, bias, act = sample_inputs(sample, dtype=torch.float64)
    torch.testing.assert_close(instance_norm_act_reference(x, weight, bias, act=act, negative_slope=SLOPE),
                               torch_instance_norm_act(x, weight, bias, act))


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_backward_reference_matches_autograd(sample):
    """Also grad_weight and grad_bias without a weight or bias: the gradients at 1 and 0."""
    x, weight, bias, act = sample_inputs(sample, dtype=torch.float64)
    c = x.shape[1]
    inputs = tuple(t.clone().requires_grad_(True) for t in (x, torch.ones(c, dtype=torch.float64) if weight is None
                                                            else weight, torch.zeros(c, dtype=torch.float64)
                                                            if bias is None else bias))
    y = instance_norm_act_reference(*inputs, act=act, negative_slope=SLOPE, eps=EPS)
    grad_out = torch.randn_like(y)
    want = torch.autograd.grad(y, inputs, grad_out)
    mean, rstd = instance_norm_stats_reference(x, EPS)
    got = instance_norm_act_backward_reference(grad_out, x, weight, bias, mean, rstd, act, SLOPE)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    x, weight, bias, act = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(
        lambda: fastgen.ops.instance_norm_act(x, weight, bias, act=act, negative_slope=SLOPE),
        lambda: instance_norm_act_reference(x, weight, bias, act=act, negative_slope=SLOPE),
        _tensors(x, weight, bias))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act", ACTS)
def test_public_function_is_torch_instance_norm_then_activation(device, act):
    x, weight, bias, _ = sample_inputs(((3, 6, 8, 5), "both", act), device, requires_grad=True)
    assert_matches_reference(
        lambda: fastgen.ops.instance_norm_act(x, weight, bias, act=act, negative_slope=SLOPE, eps=1e-3),
        lambda: torch_instance_norm_act(x, weight, bias, act, eps=1e-3), [x, weight, bias])


@pytest.mark.parametrize("wanted", [("x",), ("weight",), ("bias",), ("weight", "bias"), ("x", "bias")])
def test_backward_computes_only_the_gradients_needed(wanted):
    x, weight, bias, act = sample_inputs(((2, 5, 7, 9), "both", "leaky_relu"))
    names = ("x", "weight", "bias")
    inputs = {n: t.requires_grad_(n in wanted) for n, t in zip(names, (x, weight, bias))}
    y = fastgen.ops.instance_norm_act(*inputs.values(), act=act)
    grad_out = torch.randn_like(y)
    with FastgenOpLog() as log:
        grads = torch.autograd.grad(y, [inputs[n] for n in wanted], grad_out)
    (backward_args,) = [args for name, args in log.calls if name == "instance_norm_act_backward"]
    assert backward_args[-1] == [n in wanted for n in names]
    want = torch.autograd.grad(instance_norm_act_reference(*inputs.values(), act=act), [inputs[n] for n in wanted],
                               grad_out)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w)


def test_no_backward_without_gradients():
    x, weight, bias, act = sample_inputs(SAMPLES[0])
    with FastgenOpLog() as log:
        y = fastgen.ops.instance_norm_act(x, weight, bias, act=act)
    assert y.grad_fn is None and log.names == ["instance_norm_act"]


def test_saves_inputs_and_statistics_only():
    """x, weight, bias and the (N, C) statistics: not y, not xhat."""
    x, weight, bias, act = sample_inputs(SAMPLES[0], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fastgen.ops.instance_norm_act(x, weight, bias, act=act)
    assert len(saved) == 5 and saved[0] is x and saved[1] is weight and saved[2] is bias
    assert [tuple(t.shape) for t in saved[3:]] == [tuple(x.shape[:2])] * 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    x, weight, bias, act = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.instance_norm_act.default, (x, weight, bias, act, SLOPE, EPS))
    x, weight, bias = (t.detach() if t is not None else None for t in (x, weight, bias))
    _, mean, rstd = ops.instance_norm_act(x, weight, bias, act, SLOPE, EPS)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        torch.library.opcheck(ops.instance_norm_act_backward.default,
                              (torch.randn_like(x), x, weight, bias, mean, rstd, act, SLOPE, mask))


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 2, 1, 1), (2, 1, 1, 5)], ids=str)
def test_gradcheck_float64(shape, act):
    x, weight, bias, _ = sample_inputs((shape, "both", act), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: fastgen.ops.instance_norm_act(*t, act=act, negative_slope=SLOPE), (x, weight, bias))


def test_gradcheck_float64_without_affine():
    x, _, _, _ = sample_inputs(((2, 3, 3, 4), "neither", "leaky_relu"), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fastgen.ops.instance_norm_act(t, act="leaky_relu"), (x,))


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "stride0"])
def test_non_contiguous_inputs(make_impl, layout):
    device, forward, backward = make_impl()
    x, weight, bias, act = sample_inputs(((2, 4, 5, 6), "both", "leaky_relu"), device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x, weight = torch.randn(2, 4, 5, 12, device=device)[..., ::2], torch.randn(8, device=device)[::2]
    else:
        x = x[:, :1].expand(x.shape)  # every channel the same plane
    y, mean, rstd = forward(x, weight, bias, act, SLOPE, EPS)
    want_y, want_mean, want_rstd = instance_norm_act_forward_reference(x, weight, bias, act, SLOPE, EPS)
    assert y.is_contiguous()
    torch.testing.assert_close(y, want_y)
    grad_out = torch.randn(x.shape, device=device).contiguous(memory_format=torch.channels_last)
    got = backward(grad_out, x, weight, bias, mean, rstd, act, SLOPE, [True, True, True])
    for g, w in zip(got, instance_norm_act_backward_reference(grad_out, x, weight, bias, want_mean, want_rstd, act,
                                                              SLOPE)):
        assert g.is_contiguous()
        torch.testing.assert_close(g, w)


def test_opcheck_channels_last():
    x, weight, bias, act = sample_inputs(((2, 4, 5, 6), "both", "relu"))
    x = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(ops.instance_norm_act.default, (x.requires_grad_(), weight, bias, act, SLOPE, EPS))
    _, mean, rstd = ops.instance_norm_act(x.detach(), weight, bias, act, SLOPE, EPS)
    torch.library.opcheck(ops.instance_norm_act_backward.default,
                          (torch.randn(2, 4, 5, 6), x.detach(), weight, bias, mean, rstd, act, SLOPE,
                           [True, True, True]))


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 1, 1)], ids=str)
def test_constant_planes_give_the_bias(make_impl, shape):
    """var = 0 (a constant plane, or one pixel): xhat = 0, y = act(bias); with one pixel grad_x = 0."""
    device, forward, backward = make_impl()
    x = torch.arange(6.0, device=device).view(2, 3, 1, 1).expand(shape)
    bias = torch.tensor([-1.0, 0.5, 2.0], device=device)
    y, mean, rstd = forward(x, None, bias, "leaky_relu", SLOPE, EPS)
    torch.testing.assert_close(y, F.leaky_relu(bias, SLOPE).view(1, 3, 1, 1).expand(shape))
    torch.testing.assert_close(rstd, torch.full((2, 3), EPS ** -0.5, device=device))
    grad_out = torch.randn(shape, device=device)
    got = backward(grad_out, x, None, bias, mean, rstd, "leaky_relu", SLOPE, [True, True, True])
    for g, w in zip(got, instance_norm_act_backward_reference(grad_out, x, None, bias, mean, rstd, "leaky_relu",
                                                              SLOPE)):
        torch.testing.assert_close(g, w)
    assert torch.equal(got[1], torch.zeros(3, device=device))
    if shape[2] * shape[3] == 1:
        assert torch.equal(got[0], torch.zeros(shape, device=device))


@pytest.mark.parametrize("make_impl", IMPLS)
def test_nan_stays_in_its_plane(make_impl):
    device, forward, _ = make_impl()
    x, weight, bias, act = sample_inputs(((2, 3, 4, 5), "both", "relu"), device)
    x[1, 2, 3, 1] = float("nan")
    y, mean, rstd = forward(x, weight, bias, act, SLOPE, EPS)
    assert torch.isnan(y[1, 2]).all() and torch.isnan(mean[1, 2]) and torch.isnan(rstd[1, 2])
    want = instance_norm_act_reference(x, weight, bias, act=act)
    keep = torch.ones(2, 3, dtype=torch.bool)
    keep[1, 2] = False
    torch.testing.assert_close(y[keep], want[keep])


@pytest.mark.parametrize("make_impl", IMPLS)
def test_empty_batch_or_channels(make_impl):
    device, forward, backward = make_impl()
    for shape in ((0, 3, 4, 4), (2, 0, 4, 4)):
        x = torch.randn(shape, device=device)
        y, mean, rstd = forward(x, None, None, "relu", SLOPE, EPS)
        assert y.shape == shape and mean.shape == rstd.shape == shape[:2]
        grad_x, grad_w, grad_b = backward(torch.randn(shape, device=device), x, None, None, mean, rstd, "relu", SLOPE,
                                          [True, True, True])
        assert grad_x.shape == shape and grad_w.shape == grad_b.shape == (shape[1],)
        assert not grad_w.abs().sum() and not grad_b.abs().sum()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_bfloat16_error_at_most_twice_reference(device, act):
    """Against float64, our bfloat16 error is at most twice that of torch's own bfloat16
    instance_norm + activation."""
    x, weight, bias, _ = sample_inputs(((2, 16, 9, 8), "both", act), device)
    exact = torch_instance_norm_act(x.double(), weight.double(), bias.double(), act)
    low = [t.bfloat16() for t in (x, weight, bias)]
    ours = fastgen.ops.instance_norm_act(*low, act=act, negative_slope=SLOPE).double()
    ref = torch_instance_norm_act(*low, act).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-6


def test_autocast_runs_in_bfloat16():
    x, weight, bias, act = sample_inputs(SAMPLES[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fastgen.ops.instance_norm_act(x.bfloat16(), weight, bias, act=act)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, instance_norm_act_reference(x.bfloat16(), weight.bfloat16(), bias.bfloat16(),
                                                              act=act))


def test_use_reference_routes_to_reference():
    x, weight, bias, act = sample_inputs(SAMPLES[0], requires_grad=True)
    with fastgen.use_reference():
        y = fastgen.ops.instance_norm_act(x, weight, bias, act=act)
    assert "fastgen" not in type(y.grad_fn).__name__
    assert "fastgen_instance_norm_act" in type(fastgen.ops.instance_norm_act(x, weight, bias, act=act).grad_fn).__name__


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_float64_scalars_are_exact():
    """eps and the slope reach the float64 kernel unrounded (a float argument would be float32)."""
    from fastgen.kernels.instance_norm_act import instance_norm_act_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, device=device)
    y, _, rstd = instance_norm_act_triton(x, None, None, "leaky_relu", 0.1, 0.3)
    want_y, _, want_rstd = instance_norm_act_forward_reference(x, None, None, "leaky_relu", 0.1, 0.3)
    torch.testing.assert_close(rstd, want_rstd, rtol=1e-14, atol=0)
    torch.testing.assert_close(y, want_y, rtol=1e-14, atol=1e-15)


# -- the nn.Module ----------------------------------------------------------------------------------

def test_module_initialises_like_instance_norm2d_and_matches_it():
    layer = InstanceNormAct(6, act="leaky_relu", negative_slope=0.1)
    torch_layer = torch.nn.InstanceNorm2d(6, affine=True)
    assert torch.equal(layer.weight, torch.ones(6)) and torch.equal(layer.bias, torch.zeros(6))
    assert set(layer.state_dict()) == set(torch_layer.state_dict()) == {"weight", "bias"}
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    torch_layer.load_state_dict(layer.state_dict())
    x = torch.randn(3, 6, 7, 5)
    torch.testing.assert_close(layer(x), F.leaky_relu(torch_layer(x), 0.1))
    layer(x).square().mean().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
    assert "act='leaky_relu'" in repr(layer) and "negative_slope=0.1" in repr(layer)


def test_module_without_affine():
    layer = InstanceNormAct(4, act="relu", affine=False)
    assert layer.weight is None and layer.bias is None and not list(layer.parameters())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(layer(x), F.relu(F.instance_norm(x)))
    assert "affine=False" in repr(layer)


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=0), "channels must be a positive int"),
    (dict(act="gelu"), "act must be one of"),
    (dict(eps=0.0), "eps must be positive"),
])
def test_module_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InstanceNormAct(**(dict(channels=4) | kwargs))


def test_module_compiles_to_one_graph():
    """The op traces through torch.compile without graph breaks, forward and backward."""
    layer = InstanceNormAct(5, act="leaky_relu")
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    compiled = torch.compile(lambda x: layer(conv(x)), fullgraph=True)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    y = compiled(x)
    expected = F.leaky_relu(F.instance_norm(conv(x), weight=layer.weight, bias=layer.bias), 0.2)
    torch.testing.assert_close(y, expected)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    (want,) = torch.autograd.grad(expected.sum(), (x,))
    torch.testing.assert_close(gx, want)


# -- bad input ---------------------------------------------------------------------------------------

def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


class TestBadInput:
    @pytest.mark.parametrize("args,kwargs,error,match", [
        ((_r(4, 5, 5),), {}, ValueError, r"x must be \(N, C, H, W\)"),
        ((_r(2, 3, 0, 4),), {}, ValueError, r"x must have at least one pixel per plane \(H, W >= 1\)"),
        ((torch.randint(0, 3, (2, 3, 4, 4)),), {}, ValueError, "x must be a floating-point tensor"),
        (([[1.0]],), {}, TypeError, "x must be a torch.Tensor"),
        ((_r(2, 3, 4, 4), _r(4)), {}, ValueError, r"weight must be \(C,\) = \(3,\)"),
        ((_r(2, 3, 4, 4), _r(3, 1)), {}, ValueError, r"weight must be \(C,\) = \(3,\)"),
        ((_r(2, 3, 4, 4), None, _r(2)), {}, ValueError, r"bias must be \(C,\) = \(3,\)"),
        ((_r(2, 3, 4, 4), _r(3, dtype=torch.float64)), {}, ValueError, "weight has dtype torch.float64"),
        ((_r(2, 3, 4, 4), None, _r(3, device="meta")), {}, ValueError, "bias is on meta but x is on cpu"),
        ((_r(2, 3, 4, 4),), dict(act="gelu"), ValueError, "act must be one of"),
        ((_r(2, 3, 4, 4),), dict(act=None), ValueError, "act must be one of"),
        ((_r(2, 3, 4, 4),), dict(eps=0.0), ValueError, "eps must be positive"),
        ((_r(2, 3, 4, 4),), dict(eps=-1e-5), ValueError, "eps must be positive"),
        ((_r(2, 3, 4, 4),), dict(eps=float("nan")), ValueError, "eps must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(eps="1e-5"), TypeError, "eps must be a number"),
        ((_r(2, 3, 4, 4),), dict(negative_slope=float("inf")), ValueError, "negative_slope must be a finite number"),
        ((_r(2, 3, 4, 4),), dict(negative_slope=True), TypeError, "negative_slope must be a number"),
    ])
    def test_errors_name_the_argument(self, args, kwargs, error, match):
        with pytest.raises(error, match=match):
            fastgen.ops.instance_norm_act(*args, **kwargs)

    @pytest.mark.parametrize("change,match", [
        (dict(grad_out=_r(2, 3, 4, 5)), r"grad_out must have x's shape \(2, 3, 4, 4\)"),
        (dict(mean=_r(2, 3, dtype=torch.float64)), "mean must have dtype torch.float32"),
        (dict(rstd=_r(3, 2)), r"rstd must be \(N, C\) = \(2, 3\)"),
        (dict(rstd=_r(2, 3, device="meta")), "rstd is on meta but x is on cpu"),
        (dict(output_mask=[True, True]), "output_mask must be a list of 3 bools"),
    ])
    def test_backward_reference_checks_its_arguments(self, change, match):
        from fastgen.ops.instance_norm_act import _reference_backward

        args = dict(grad_out=_r(2, 3, 4, 4), x=_r(2, 3, 4, 4), weight=None, bias=None, mean=_r(2, 3), rstd=_r(2, 3),
                    act="relu", negative_slope=SLOPE, output_mask=[True, True, True]) | change
        with pytest.raises(ValueError, match=match):
            _reference_backward(*args.values())

    @pytest.mark.skipif(not compiled_cpu("instance_norm_act"), reason="fastgen._C not built")
    def test_kernel_checks_its_own_arguments(self):
        with pytest.raises(RuntimeError, match=r"weight must be \(C,\)"):
            ops.instance_norm_act(_r(2, 6, 4, 4), _r(3), None, "relu", SLOPE, EPS)


def _stats(x):
    return tuple(t.float() for t in instance_norm_stats_reference(x, EPS))


# Calls every instance_norm_act kernel entry must refuse, whatever the Python wrapper checked.
_X = lambda: _r(2, 3, 4, 4)  # noqa: E731
KERNEL_BAD = [
    ("instance_norm_act", lambda: (_r(2, 3, 4), None, None, "relu", SLOPE, EPS), "x must"),
    ("instance_norm_act", lambda: (_r(2, 3, 4, 4, 1), None, None, "relu", SLOPE, EPS), "x must"),
    ("instance_norm_act", lambda: (_r(2, 3, 0, 4), None, None, "relu", SLOPE, EPS), "at least one pixel per plane"),
    ("instance_norm_act", lambda: (_X().int(), None, None, "relu", SLOPE, EPS), "x must be a float"),
    ("instance_norm_act", lambda: (_X().to(torch.complex64), None, None, "relu", SLOPE, EPS), "x must be a float"),
    ("instance_norm_act", lambda: (_X(), _r(4), None, "relu", SLOPE, EPS), r"weight must be \(C,\) = \(3,\)"),
    ("instance_norm_act", lambda: (_X(), None, _r(3, 1), "relu", SLOPE, EPS), r"bias must be \(C,\) = \(3,\)"),
    ("instance_norm_act", lambda: (_X(), None, _r(3).double(), "relu", SLOPE, EPS), "bias must have x's dtype"),
    ("instance_norm_act", lambda: (_X(), _r(3).int(), None, "relu", SLOPE, EPS), "weight must be a float"),
    ("instance_norm_act", lambda: (_X(), None, None, "gelu", SLOPE, EPS), "act must be"),
    ("instance_norm_act", lambda: (_X(), None, None, "relu", SLOPE, 0.0), "eps must be"),
    ("instance_norm_act", lambda: (_X(), None, None, "relu", SLOPE, -1.0), "eps must be"),
    ("instance_norm_act", lambda: (_X(), None, None, "relu", SLOPE, float("inf")), "eps must be"),
    ("instance_norm_act", lambda: (_X(), None, None, "relu", SLOPE, 1e300), "eps must be"),
    ("instance_norm_act", lambda: (_X(), None, None, "leaky_relu", float("nan"), EPS),
     "negative_slope must be a finite"),
    ("instance_norm_act_backward", lambda: (_r(2, 3, 4, 5), _X(), None, None, *_stats(_X()), "relu", SLOPE,
                                            [True] * 3), "grad_out must have x's shape"),
    ("instance_norm_act_backward", lambda: (_X().half(), _X(), None, None, *_stats(_X()), "relu", SLOPE, [True] * 3),
     "grad_out must have x's dtype"),
    ("instance_norm_act_backward", lambda: (_X(), _X(), None, None, _r(2, 3).double(), _r(2, 3), "relu", SLOPE,
                                            [True] * 3), "mean must have dtype"),
    ("instance_norm_act_backward", lambda: (_X(), _X(), None, None, _r(2, 3), _r(3, 2), "relu", SLOPE, [True] * 3),
     r"rstd must be \(N, C\) = \(2, 3\)"),
    ("instance_norm_act_backward", lambda: (_X(), _X(), None, None, _r(2, 3), _r(2, 3, 1), "relu", SLOPE, [True] * 3),
     r"rstd must"),
    ("instance_norm_act_backward", lambda: (_X(), _X(), _r(2), None, *_stats(_X()), "relu", SLOPE, [True] * 3),
     r"weight must be \(C,\) = \(3,\)"),
    ("instance_norm_act_backward", lambda: (_X(), _X(), None, None, *_stats(_X()), "elu", SLOPE, [True] * 3),
     "act must be"),
    ("instance_norm_act_backward", lambda: (_X(), _X(), None, None, *_stats(_X()), "relu", float("inf"), [True] * 3),
     "negative_slope must be a finite"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("instance_norm_act", KERNEL_BAD)

"""masked_conv2d: every implementation against fastgen.reference, causality, bad input."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgen
from fastgen.reference.masked_conv2d import (
    causal_mask,
    masked_conv2d_backward_reference,
    masked_conv2d_grad_input_reference,
    masked_conv2d_grad_weight_reference,
    masked_conv2d_reference,
)
from tests.conftest import (
    DEVICES,
    DTYPES,
    HAS_CUDA,
    HAS_TRITON,
    assert_matches_reference,
    compiled_cpu,
    tolerances,
)
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen

# (N, C_in, C_out, H, W, k, mask_type, color_groups, bias): odd channel counts, H != W, N = 1,
# 1x1 images, kernels larger than the image.
SAMPLES = [
    (1, 3, 6, 5, 7, 3, "A", 3, True),
    (2, 6, 9, 4, 6, 5, "B", 3, False),
    (2, 5, 7, 6, 5, 7, "A", 1, True),
    (1, 4, 5, 3, 3, 1, "B", 1, True),
    (1, 6, 3, 4, 5, 1, "A", 3, True),
    (3, 7, 11, 5, 4, 3, "B", 1, True),
    (1, 3, 3, 1, 1, 3, "A", 3, False),
    (1, 4, 6, 3, 4, 7, "B", 1, True),
    (1, 2, 3, 2, 3, 1, "A", 1, True),
    (2, 5, 9, 17, 19, 3, "B", 1, True),  # many pixel vectors, partial tiles
    (1, 6, 6, 11, 13, 5, "B", 3, False),
    (3, 8, 13, 5, 7, 1, "B", 1, True),  # 1x1 'B', one group: the matrix-product path, several images
    (2, 13, 4, 1, 9, 1, "B", 1, False),
]
SAMPLE_IDS = [f"n{s[0]}c{s[1]}-{s[2]}_{s[3]}x{s[4]}_k{s[5]}{s[6]}g{s[7]}{'b' if s[8] else ''}" for s in SAMPLES]


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    n, cin, cout, h, w, k, mask_type, groups, has_bias = sample
    x = torch.randn(n, cin, h, w, device=device, dtype=dtype, requires_grad=requires_grad)
    weight = torch.randn(cout, cin, k, k, device=device, dtype=dtype, requires_grad=requires_grad)
    bias = torch.randn(cout, device=device, dtype=dtype, requires_grad=requires_grad) if has_bias else None
    return x, weight, bias, mask_type, groups


class Impl:
    """One implementation: the device its tensors live on, its forward and its backward."""

    def __init__(self, name, device, forward, backward):
        self.name, self.device, self.forward, self.backward = name, device, forward, backward


def _dispatcher(device):
    return Impl(f"dispatcher-{device}", device, ops.masked_conv2d, ops.masked_conv2d_backward)


def _triton():
    from fastgen.kernels import masked_conv2d as k

    return Impl("triton", "cuda" if HAS_CUDA else "cpu", k.masked_conv2d_triton, k.masked_conv2d_backward_triton)


IMPLS = [
    pytest.param(lambda: _dispatcher("cpu"), id="cpp",
                 marks=pytest.mark.skipif(not compiled_cpu("masked_conv2d"), reason="fastgen._C not built")),
    pytest.param(_triton, id="triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")),
    pytest.param(lambda: _dispatcher("cuda"), id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU")),
]


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_matches_reference(make_impl, dtype, sample, poison):
    impl = make_impl()
    x, w, b, mt, g = sample_inputs(sample, impl.device, dtype)
    out = impl.forward(x, w, b, mt, g)
    torch.testing.assert_close(out, masked_conv2d_reference(x, w, b, mask_type=mt, color_groups=g), **tolerances(dtype))


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
@pytest.mark.parametrize("output_mask", [(True, True, True), (True, False, False), (False, True, True)],
                         ids=["all", "x", "weight+bias"])
def test_backward_op_matches_reference(make_impl, dtype, sample, output_mask, poison):
    impl = make_impl()
    x, w, _, mt, g = sample_inputs(sample, impl.device, dtype)
    grad_out = torch.randn(x.shape[0], w.shape[0], x.shape[2], x.shape[3], device=impl.device, dtype=dtype)
    got = impl.backward(grad_out, x, w, mt, g, list(output_mask))
    want = masked_conv2d_backward_reference(grad_out, x, w, mask_type=mt, color_groups=g, output_mask=output_mask)
    for name, asked, a, b in zip(("grad_x", "grad_weight", "grad_bias"), output_mask, got, want):
        assert a.shape == b.shape, name
        if asked:
            torch.testing.assert_close(a, b, **tolerances(dtype), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_backward_references_match_autograd(sample):
    x, w, b, mt, g = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    y = masked_conv2d_reference(x, w, b, mask_type=mt, color_groups=g)
    grad_out = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), grad_out)
    torch.testing.assert_close(masked_conv2d_grad_input_reference(grad_out, w, mask_type=mt, color_groups=g), gx)
    torch.testing.assert_close(
        masked_conv2d_grad_weight_reference(grad_out, x, w.shape[-1], mask_type=mt, color_groups=g), gw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    x, w, b, mt, g = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g),
                             lambda: masked_conv2d_reference(x, w, b, mask_type=mt, color_groups=g),
                             [t for t in (x, w, b) if t is not None])


def test_only_needed_gradients_are_computed():
    x, w, b, mt, g = sample_inputs(SAMPLES[0])
    w.requires_grad_(True)
    y = fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g)
    (gw,) = torch.autograd.grad(y.sum(), (w,))
    assert gw.shape == w.shape and x.grad is None


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_masked_weights_never_matter_and_get_zero_grad(sample):
    x, w, b, mt, g = sample_inputs(sample)
    mask = causal_mask(w.shape[0], w.shape[1], w.shape[-1], mt, g)
    w_scrambled = torch.where(mask.bool(), w, torch.randn_like(w) * 100)
    y1 = fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g)
    y2 = fastgen.ops.masked_conv2d(x, w_scrambled, b, mask_type=mt, color_groups=g)
    assert torch.equal(y1, y2)
    w.requires_grad_(True)
    y = fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g)
    (gw,) = torch.autograd.grad(y, (w,), torch.randn_like(y))
    assert torch.count_nonzero(gw[~mask.bool()]) == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    x, w, b, mt, g = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.masked_conv2d.default, (x, w, b, mt, g))
    grad_out = torch.randn(x.shape[0], w.shape[0], x.shape[2], x.shape[3], device=device)
    for output_mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(ops.masked_conv2d_backward.default, (grad_out, x.detach(), w.detach(), mt, g, output_mask))


@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[1], SAMPLES[3], SAMPLES[7]], ids=lambda s: f"k{s[5]}{s[6]}g{s[7]}")
def test_gradcheck_float64(sample):
    x, w, b, mt, g = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    if b is None:
        b = torch.randn(w.shape[0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g), (x, w, b))


def _allowed(mask_type, groups, h, w, group_out):
    """(groups_in, H, W) bool: which input (group, position) output (h, w, group_out) may see."""
    H, W = _CAUSAL_HW
    rows = torch.arange(H)[:, None].expand(H, W)
    cols = torch.arange(W)[None, :].expand(H, W)
    before = (rows < h) | ((rows == h) & (cols < w))
    at = (rows == h) & (cols == w)
    allowed = before.expand(groups, H, W).clone()
    for gi in range(groups):
        centre_ok = gi < group_out if mask_type == "A" else gi <= group_out
        allowed[gi] |= at & centre_ok
    return allowed


_CAUSAL_HW = (5, 6)


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("mask_type,groups,k", [("A", 1, 3), ("B", 1, 3), ("A", 3, 5), ("B", 3, 3), ("A", 3, 1)])
def test_causality(make_impl, mask_type, groups, k):
    """Perturb one (input group, position) per batch element; an output may change iff it may see it.

    A dependence moves the output by O(1) (unit perturbations, unit weights); kernels may round
    differently across batch sizes, so "changed" means more than 1e-3."""
    impl = make_impl()
    H, W = _CAUSAL_HW
    cin, cout, p = 2 * groups, 3 * groups, k // 2
    weight = torch.randn(cout, cin, k, k, device=impl.device)
    x = torch.randn(1, cin, H, W, device=impl.device)
    perturbations = list(itertools.product(range(groups), range(H), range(W)))
    xs = x.repeat(len(perturbations), 1, 1, 1)
    for i, (gi, hh, ww) in enumerate(perturbations):
        ch = slice(gi * cin // groups, (gi + 1) * cin // groups)
        xs[i, ch, hh, ww] += 1.0 + torch.rand(cin // groups, device=impl.device)
    y0 = impl.forward(x, weight, None, mask_type, groups)
    ys = impl.forward(xs, weight, None, mask_type, groups)
    for go, h, w in itertools.product(range(groups), range(H), range(W)):
        out_ch = slice(go * cout // groups, (go + 1) * cout // groups)
        changed = ((ys[:, out_ch, h, w] - y0[:, out_ch, h, w]).abs() > 1e-3).any(dim=1).cpu()
        allowed = _allowed(mask_type, groups, h, w, go)
        for i, (gi, hh, ww) in enumerate(perturbations):
            in_window = abs(hh - h) <= p and abs(ww - w) <= p
            expected = bool(allowed[gi, hh, ww]) and in_window
            assert bool(changed[i]) == expected, (
                f"output (group {go}, {h}, {w}) {'ignored' if expected else 'saw'} input (group {gi}, {hh}, {ww})")


def test_opcheck_channels_last():
    x, w, b, mt, g = sample_inputs((2, 6, 9, 7, 8, 3, "B", 3, True), requires_grad=True)
    x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(ops.masked_conv2d.default, (x, w, b, mt, g))
    grad_out = torch.randn(2, 9, 7, 8)
    torch.library.opcheck(ops.masked_conv2d_backward.default, (grad_out, x.detach(), w.detach(), mt, g, [True] * 3))


@pytest.mark.parametrize("sample", [(2, 6, 9, 7, 8, 3, "B", 3, True), (2, 6, 9, 7, 8, 1, "B", 1, True)],
                         ids=["k3B", "k1B"])
@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_non_contiguous_inputs(layout, sample):
    x, w, b, mt, g = sample_inputs(sample)
    if layout == "channels_last":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(2, 12, 7, 16)[:, ::2, :, ::2]
    y = fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g)
    torch.testing.assert_close(y, masked_conv2d_reference(x, w, b, mask_type=mt, color_groups=g), **tolerances(torch.float32))


def test_pointwise_path_with_strided_weight_bias_and_grad_out():
    """The 1x1 'B' one-group path takes a contiguous x with any weight and bias strides, and its
    backward falls back to the general kernels for a grad_out that is not contiguous."""
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    w = torch.randn(9, 12, 1, 1, dtype=torch.float64)[:, ::2]
    b = torch.randn(18, dtype=torch.float64)[::2]
    assert not w.is_contiguous() and not b.is_contiguous()
    torch.testing.assert_close(ops.masked_conv2d(x, w, b, "B", 1), masked_conv2d_reference(x, w, b, mask_type="B"))
    for grad_out in (torch.randn(3, 9, 5, 7, dtype=torch.float64),
                     torch.randn(3, 9, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last),
                     torch.randn(3, 9, 5, 14, dtype=torch.float64)[..., ::2]):
        got = ops.masked_conv2d_backward(grad_out, x, w, "B", 1, [True] * 3)
        want = masked_conv2d_backward_reference(grad_out, x, w, mask_type="B", color_groups=1,
                                                output_mask=(True, True, True))
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("sample", [(2, 24, 24, 9, 8, 5, "B", 3, True), (6, 24, 16, 9, 8, 1, "B", 1, True)],
                         ids=["k5B", "k1B"])
@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_error_at_most_twice_reference(device, sample):
    x, w, b, mt, g = sample_inputs(sample, device)
    exact = masked_conv2d_reference(x.double(), w.double(), b.double(), mask_type=mt, color_groups=g)
    low = [t.bfloat16() for t in (x, w, b)]
    ours = fastgen.ops.masked_conv2d(*low, mask_type=mt, color_groups=g).double()
    ref = masked_conv2d_reference(*low, mask_type=mt, color_groups=g).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-6
    # The weight gradient sums over images: in float32, not bfloat16.
    grad_out = torch.randn(x.shape[0], w.shape[0], *x.shape[2:], device=device)
    want = masked_conv2d_backward_reference(grad_out.double(), x.double(), w.double(), mask_type=mt,
                                            color_groups=g, output_mask=(True, True, True))
    got = ops.masked_conv2d_backward(grad_out.bfloat16(), *low[:2], mt, g, [True] * 3)
    low_ref = masked_conv2d_backward_reference(grad_out.bfloat16(), *low[:2], mask_type=mt, color_groups=g,
                                               output_mask=(True, True, True))
    for name, a, r, e in zip(("grad_x", "grad_weight", "grad_bias"), got, low_ref, want):
        assert (a.double() - e).abs().max() <= 2 * (r.double() - e).abs().max() + 1e-6, name


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), groups=st.sampled_from([1, 3]), cin_per=st.integers(1, 4), cout_per=st.integers(1, 4),
       h=st.integers(1, 9), w=st.integers(1, 9), k=st.sampled_from([1, 3, 5, 7]), mask_type=st.sampled_from("AB"),
       bias=st.booleans())
def test_random_shapes_match_reference(n, groups, cin_per, cout_per, h, w, k, mask_type, bias):
    sample = (n, cin_per * groups, cout_per * groups, h, w, k, mask_type, groups, bias)
    x, wt, b, mt, g = sample_inputs(sample, requires_grad=True)
    assert_matches_reference(lambda: fastgen.ops.masked_conv2d(x, wt, b, mask_type=mt, color_groups=g),
                             lambda: masked_conv2d_reference(x, wt, b, mask_type=mt, color_groups=g),
                             [t for t in (x, wt, b) if t is not None])


def test_use_reference_routes_to_reference():
    x, w, b, mt, g = sample_inputs(SAMPLES[0], requires_grad=True)
    with fastgen.use_reference():
        y = fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g)
    assert "fastgen" not in type(y.grad_fn).__name__
    y = fastgen.ops.masked_conv2d(x, w, b, mask_type=mt, color_groups=g)
    assert "fastgen_masked_conv2d" in type(y.grad_fn).__name__


class TestBadInput:
    def setup_method(self):
        self.x = torch.randn(2, 6, 5, 5)
        self.w = torch.randn(9, 6, 3, 3)

    def call(self, x=None, w=None, b=None, mask_type="A", color_groups=1):
        return fastgen.ops.masked_conv2d(self.x if x is None else x, self.w if w is None else w, b,
                                         mask_type=mask_type, color_groups=color_groups)

    @pytest.mark.parametrize("kwargs,match", [
        (dict(x=torch.randn(6, 5, 5)), r"x must be \(N, C_in, H, W\)"),
        (dict(w=torch.randn(9, 6, 3)), r"weight must be \(C_out, C_in, k, k\)"),
        (dict(w=torch.randn(9, 6, 4, 4)), "odd square kernel"),
        (dict(w=torch.randn(9, 6, 3, 5)), "odd square kernel"),
        (dict(w=torch.randn(9, 4, 3, 3)), "x has 6 channels but weight expects C_in = 4"),
        (dict(b=torch.randn(5)), "bias must have C_out = 9"),
        (dict(b=torch.randn(9, 1)), r"bias must be \(C_out,\)"),
        (dict(mask_type="C"), "mask_type must be 'A' or 'B'"),
        (dict(mask_type="a"), "mask_type must be 'A' or 'B'"),
        (dict(color_groups=4), "color_groups=4 must divide"),
        (dict(color_groups=0), "color_groups must be a positive int"),
        (dict(w=torch.randn(9, 6, 3, 3, dtype=torch.float64)), "weight has dtype torch.float64 but x has torch.float32"),
        (dict(w=torch.randn(9, 6, 3, 3, device="meta")), "weight is on meta but x is on cpu"),
        (dict(x=torch.randint(0, 5, (2, 6, 5, 5))), "x must be a floating-point tensor"),
    ])
    def test_errors_name_the_argument(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            self.call(**kwargs)

    def test_non_tensor(self):
        with pytest.raises(TypeError, match="x must be a torch.Tensor"):
            fastgen.ops.masked_conv2d([[1.0]], self.w, mask_type="A")

    @pytest.mark.skipif(not compiled_cpu("masked_conv2d"), reason="fastgen._C not built")
    def test_kernel_checks_its_own_arguments(self):
        with pytest.raises(RuntimeError, match="mask_type must be 'A' or 'B'"):
            ops.masked_conv2d(self.x, self.w, None, "Z", 1)


def _x(*shape, **kw):
    return torch.randn(*shape, **kw)


# Calls every masked_conv2d kernel entry must refuse (issue 15): the kernels check their own
# arguments, whatever the Python wrapper checked. (op, arguments, what the error says).
_W, _X = (6, 3, 3, 3), (1, 3, 4, 4)
KERNEL_BAD = [
    ("masked_conv2d", lambda: (_x(*_X), _x(*_W), torch.ones(2), "B", 1), "bias must have C_out = 6 elements"),
    ("masked_conv2d", lambda: (_x(*_X), _x(*_W), torch.ones(6, 1), "B", 1), "bias must"),
    ("masked_conv2d", lambda: (_x(3, 4, 4), _x(*_W), None, "B", 1), "x must"),
    ("masked_conv2d", lambda: (_x(*_X), _x(6, 3, 3), None, "B", 1), "weight must"),
    ("masked_conv2d", lambda: (_x(*_X), _x(6, 3, 2, 2), None, "B", 1), "odd square kernel"),
    ("masked_conv2d", lambda: (_x(*_X), _x(6, 4, 3, 3), None, "B", 1), "x has 3 channels but weight expects C_in = 4"),
    ("masked_conv2d", lambda: (_x(*_X), _x(*_W).double(), None, "B", 1), "weight must have x's dtype"),
    ("masked_conv2d", lambda: (_x(*_X).int(), _x(*_W).int(), None, "B", 1), "x must be a float"),
    ("masked_conv2d", lambda: (_x(*_X), _x(*_W), None, "C", 1), "mask_type must be 'A' or 'B'"),
    ("masked_conv2d", lambda: (_x(*_X), _x(*_W), None, "B", 0), "color_groups"),
    ("masked_conv2d", lambda: (_x(*_X), _x(*_W), None, "B", 2), "color_groups"),
    ("masked_conv2d", lambda: (_x(1, 3, 0, 4), _x(*_W), None, "B", 1), "at least one row and one column"),
    ("masked_conv2d", lambda: (_x(1, 0, 4, 4), _x(6, 0, 3, 3), None, "B", 1), "at least one channel"),
    ("masked_conv2d", lambda: (_x(*_X), _x(0, 3, 3, 3), None, "B", 1), "at least one channel"),
    ("masked_conv2d_backward", lambda: (_x(1, 6, 2, 2), _x(*_X), _x(*_W), "B", 1, [True] * 3),
     r"grad_out must be \(N, C_out, H, W\) = \(1, 6, 4, 4\)"),
    ("masked_conv2d_backward", lambda: (_x(1, 5, 4, 4), _x(*_X), _x(*_W), "B", 1, [True] * 3), "grad_out must be"),
    ("masked_conv2d_backward", lambda: (_x(1, 6, 4, 4).double(), _x(*_X), _x(*_W), "B", 1, [True] * 3),
     "grad_out must have x's dtype"),
    ("masked_conv2d_backward", lambda: (_x(1, 6, 4, 4), _x(*_X), _x(*_W), "Z", 1, [True] * 3), "mask_type"),
]


test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("masked_conv2d", KERNEL_BAD)


def test_zero_channels_and_empty_images_refused_by_every_implementation():
    """0 channels or an empty image: one clear error from the function, the reference route and
    the kernels alike (the reference's convolution cannot build the empty case). N = 0 works."""
    for x, w, match in [(_x(1, 0, 4, 4), _x(6, 0, 3, 3), "at least one channel"),
                        (_x(1, 3, 4, 4), _x(0, 3, 3, 3), "at least one channel"),
                        (_x(1, 3, 4, 0), _x(6, 3, 3, 3), "at least one row and one column")]:
        for reference in (False, True):
            with fastgen.use_reference(reference), pytest.raises(ValueError, match=match):
                fastgen.ops.masked_conv2d(x, w, mask_type="B")
    y = fastgen.ops.masked_conv2d(_x(0, 3, 4, 4), _x(6, 3, 3, 3), mask_type="B")
    assert y.shape == (0, 6, 4, 4)


def test_non_finite_masked_weights_never_matter():
    """A masked weight entry is ignored whatever it holds, NaN included (the reference masks with
    where, not with a product, which would turn NaN * 0 into NaN)."""
    x, w, b, mt, g = sample_inputs((1, 6, 6, 5, 5, 3, "A", 3, True))
    mask = causal_mask(w.shape[0], w.shape[1], w.shape[-1], mt, g).bool()
    w_nan = torch.where(mask, w, torch.tensor(float("nan")))
    for dtype in (torch.float32, torch.float64):  # the tap kernel and oneDNN's convolution
        want = masked_conv2d_reference(x.to(dtype), w.to(dtype), b.to(dtype), mask_type=mt, color_groups=g)
        args = [t.to(dtype) for t in (x, w_nan, b)]
        torch.testing.assert_close(fastgen.ops.masked_conv2d(*args, mask_type=mt, color_groups=g), want,
                                   **tolerances(dtype))
        torch.testing.assert_close(masked_conv2d_reference(*args, mask_type=mt, color_groups=g), want,
                                   **tolerances(dtype))


def test_masked_weight_gradient_is_exactly_zero_with_non_finite_input():
    x, w, _, mt, g = sample_inputs((1, 6, 6, 5, 5, 3, "B", 3, False))
    x[0, :, 2, 2] = float("inf")
    mask = causal_mask(w.shape[0], w.shape[1], w.shape[-1], mt, g).bool()
    for dtype in (torch.float32, torch.float64):
        _, gw, _ = ops.masked_conv2d_backward(torch.randn(1, 6, 5, 5, dtype=dtype), x.to(dtype), w.to(dtype), mt, g,
                                              [False, True, False])
        assert torch.equal(gw[~mask], torch.zeros_like(gw[~mask]))
        ref = masked_conv2d_grad_weight_reference(torch.randn(1, 6, 5, 5, dtype=dtype), x.to(dtype), 3,
                                                  mask_type=mt, color_groups=g)
        assert torch.equal(ref[~mask], torch.zeros_like(ref[~mask]))

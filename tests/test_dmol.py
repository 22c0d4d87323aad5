"""dmol_nll and dmol_sample: every implementation against fastgen.reference, numerics, bad input."""
from __future__ import annotations

import itertools

import pytest
import torch

import fastgen
from fastgen._core import EDGE, SMALL_BIN, dmol_channels
from fastgen.reference.dmol import (
    dmol_nll_reference,
    dmol_pixel_log_prob_reference,
    dmol_sample_reference,
    split_params,
)
from tests.conftest import DEVICES, DTYPES, compiled_cpu, op_implementations
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen

# (N, C, nr_mix, H, W, levels): odd sizes, one component, one pixel, two levels, more pixels than
# one block of every implementation (153 > 128 > 64).
SAMPLES = [
    (2, 3, 10, 5, 7, 256),
    (1, 1, 5, 4, 3, 256),
    (3, 3, 1, 1, 1, 2),
    (2, 3, 3, 9, 17, 17),
    (2, 1, 2, 13, 11, 256),
]
SAMPLE_IDS = [f"n{s[0]}c{s[1]}m{s[2]}_{s[3]}x{s[4]}_l{s[5]}" for s in SAMPLES]


def grid_images(n, c, h, w, levels, device="cpu", dtype=torch.float32):
    """Random images on the grid of ``levels`` values, both edge values included."""
    x = torch.randint(0, levels, (n, c, h, w), device=device) * (2.0 / (levels - 1)) - 1
    x.view(-1)[:2] = torch.tensor([-1.0, 1.0])[: x.numel()]
    return x.to(dtype)


def grid_index(values, levels):
    """Values on the grid of ``levels`` values in [-1, 1] as integer levels."""
    return torch.round((values.double() + 1) * (levels - 1) / 2).long()


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    n, c, m, h, w, levels = sample
    x = grid_images(n, c, h, w, levels, device, dtype)
    params = 2 * torch.randn(n, dmol_channels(c, m), h, w, device=device, dtype=dtype)
    return x, params.requires_grad_(requires_grad), m, levels


IMPLS = op_implementations("dmol_nll", also=("dmol_sample",), module="dmol")
# float32 against the float64 reference: the reference itself loses ~1e-4 to cancellation in
# sigmoid(p) - sigmoid(q), which the kernels avoid.
TOL = {torch.float64: dict(rtol=1e-7, atol=1e-7), torch.float32: dict(rtol=2e-4, atol=2e-3)}


def reference_values(x, params, m, levels, grad):
    """(nll, pixel log-likelihood, d(grad . nll)/d params), all from the float64 reference."""
    p = params.detach().double().requires_grad_(True)
    pixel = dmol_pixel_log_prob_reference(x.double(), p, m, levels)
    nll = -pixel.flatten(1).sum(1)
    (g,) = torch.autograd.grad(nll, p, grad.double())
    return nll, pixel.detach(), g


def bin_cases(x, params, m, levels):
    """Which formula each (colour, component, pixel) takes: counts of bottom, top, inner, small."""
    c = x.shape[1]
    _, means, log_scales, coeffs = split_params(params.double(), c, m)
    xk = x.double().unsqueeze(2)
    mu = means.clone()
    if c == 3:
        mu[:, 1] += coeffs[:, 0] * xk[:, 0]
        mu[:, 2] += coeffs[:, 1] * xk[:, 0] + coeffs[:, 2] * xk[:, 1]
    inv, half = torch.exp(-log_scales), 1.0 / (levels - 1)
    delta = torch.sigmoid(inv * (xk - mu + half)) - torch.sigmoid(inv * (xk - mu - half))
    bottom, top = (xk < -EDGE).expand_as(mu), (xk > EDGE).expand_as(mu)
    inner = ~bottom & ~top & (delta > SMALL_BIN)
    return [int(t.sum()) for t in (bottom, top, inner, ~bottom & ~top & ~inner)]


def test_samples_cover_every_bin_formula():
    counts = [0, 0, 0, 0]
    for sample in SAMPLES:
        x, params, m, levels = sample_inputs(sample)
        counts = [a + b for a, b in zip(counts, bin_cases(x, params, m, levels))]
    assert min(counts) > 0, f"bottom/top/inner/small-bin counts {counts}: some formula is never exercised"


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward, _ = make_impl()
    x, params, m, levels = sample_inputs(sample, device, dtype)
    grad = torch.randn(x.shape[0], device=device, dtype=dtype)
    nll_want, pixel_want, grad_want = reference_values(x, params, m, levels, grad)
    nll, pixel = forward(x, params, m, levels)
    torch.testing.assert_close(nll.double(), nll_want, **TOL[dtype])
    torch.testing.assert_close(pixel.double(), pixel_want, **TOL[dtype])
    got = backward(grad, x, params, pixel, m, levels)
    assert got.dtype == dtype and got.shape == params.shape
    torch.testing.assert_close(got.double(), grad_want, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    x, params, m, levels = sample_inputs(sample, device, requires_grad=True)
    grad = torch.randn(x.shape[0], device=device)
    nll = fastgen.ops.dmol_nll(x, params, nr_mix=m, levels=levels)
    (got,) = torch.autograd.grad(nll, params, grad)
    nll_want, _, grad_want = reference_values(x, params, m, levels, grad)
    torch.testing.assert_close(nll.double(), nll_want, **TOL[torch.float32])
    torch.testing.assert_close(got.double(), grad_want, **TOL[torch.float32])


def test_saves_only_the_pixel_log_likelihood():
    """Besides its inputs the fused path keeps one (N, H, W) tensor, nothing of the params' size."""
    x, params, m, levels = sample_inputs(SAMPLES[0], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fastgen.ops.dmol_nll(x, params, nr_mix=m, levels=levels)
    assert saved[0] is x and saved[1] is params
    assert [tuple(t.shape) for t in saved[2:]] == [(x.shape[0], *x.shape[2:])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    x, params, m, levels = sample_inputs(sample, device, requires_grad=True)
    torch.library.opcheck(ops.dmol_nll.default, (x, params, m, levels))
    _, pixel = ops.dmol_nll(x, params.detach(), m, levels)
    grad = torch.randn(x.shape[0], device=device)
    torch.library.opcheck(ops.dmol_nll_backward.default, (grad, x, params.detach(), pixel, m, levels))
    noise = torch.rand(x.shape[0], m + x.shape[1], *x.shape[2:], device=device)
    torch.library.opcheck(ops.dmol_sample.default, (params.detach(), noise, m, levels))


@pytest.mark.parametrize("sample", [(2, 3, 2, 2, 3, 256), (1, 1, 3, 3, 2, 5)], ids=["rgb", "grey"])
def test_gradcheck_float64(sample):
    x, params, m, levels = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: fastgen.ops.dmol_nll(x, p, nr_mix=m, levels=levels), (params,))


def extreme_params(n=2, c=3, m=4, h=3, w=4, device="cpu"):
    """Extreme logits (+-1e4), log-scales of +-100, means far outside [-1, 1]."""
    params = torch.randn(n, dmol_channels(c, m), h, w, device=device)
    params[:, :m] = torch.randn(n, m, h, w, device=device) * 1e4
    per = 3 if c == 3 else 2
    blocks = params[:, m:].view(n, c, per, m, h, w)
    blocks[:, :, 0] = torch.randn(n, c, m, h, w, device=device) * 1e3
    blocks[:, :, 1] = torch.where(torch.rand(n, c, m, h, w, device=device) < 0.5, -100.0, 100.0)
    return params, m


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("channels", [1, 3])
def test_extreme_parameters_stay_finite(make_impl, channels):
    device, forward, backward, sample = make_impl()
    params, m = extreme_params(c=channels, device=device)
    x = grid_images(2, channels, 3, 4, 256, device)
    nll, pixel = forward(x, params, m, 256)
    grad = backward(torch.ones(2, device=device), x, params, pixel, m, 256)
    assert torch.isfinite(nll).all() and torch.isfinite(pixel).all() and torch.isfinite(grad).all()
    nll_want, _, _ = reference_values(x, params, m, 256, torch.ones(2, device=device))
    torch.testing.assert_close(nll.double(), nll_want, rtol=1e-5, atol=1e-2)
    drawn = sample(params, torch.rand(2, m + channels, 3, 4, device=device), m, 256)
    assert torch.isfinite(drawn).all() and drawn.abs().max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_error_at_most_twice_reference(device):
    x, params, m, levels = sample_inputs(SAMPLES[0], device)
    exact = dmol_nll_reference(x.double(), params.double(), m, levels)
    ours = fastgen.ops.dmol_nll(x.bfloat16(), params.bfloat16(), nr_mix=m, levels=levels).double()
    ref = dmol_nll_reference(x.bfloat16(), params.bfloat16(), m, levels).double()
    assert (ours - exact).abs().max() <= 2 * (ref - exact).abs().max() + 1e-2


def test_compiles_to_one_graph():
    x, params, m, levels = sample_inputs(SAMPLES[3], requires_grad=True)
    compiled = torch.compile(lambda p: fastgen.ops.dmol_nll(x, p, nr_mix=m, levels=levels), fullgraph=True,
                             backend="aot_eager")
    nll = compiled(params)
    (got,) = torch.autograd.grad(nll.sum(), params)
    nll_want, _, grad_want = reference_values(x, params, m, levels, torch.ones_like(nll))
    torch.testing.assert_close(nll.double(), nll_want, **TOL[torch.float32])
    torch.testing.assert_close(got.double(), grad_want, **TOL[torch.float32])


def test_use_reference_routes_to_reference():
    x, params, m, levels = sample_inputs(SAMPLES[0], requires_grad=True)
    with fastgen.use_reference():
        nll = fastgen.ops.dmol_nll(x, params, nr_mix=m, levels=levels)
    assert "fastgen" not in type(nll.grad_fn).__name__


# -- sampling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_sample_matches_reference(make_impl, sample, poison):
    device, _, _, draw = make_impl()
    n, c, m, h, w, levels = sample
    _, params, _, _ = sample_inputs(sample, device, torch.float64)
    noise = torch.rand(n, m + c, h, w, device=device, dtype=torch.float64)
    got, want = draw(params, noise, m, levels), dmol_sample_reference(params, m, noise, levels)
    assert torch.equal(grid_index(got, levels), grid_index(want, levels))  # the same draws
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)  # the grid values, to rounding
    # float32: the same draws but where a value lies within rounding of a bin boundary.
    got32 = grid_index(draw(params.float(), noise, m, levels), levels)
    want32 = grid_index(dmol_sample_reference(params.float(), m, noise, levels), levels)
    assert (got32 - want32).abs().max() <= 1
    assert (got32 != want32).double().mean() <= 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_sample_values_on_grid_and_reproducible(device):
    _, params, m, levels = sample_inputs((3, 3, 4, 6, 5, 11), device)
    noise = torch.rand(3, m + 3, 6, 5, device=device)
    a = fastgen.ops.dmol_sample(params, nr_mix=m, noise=noise, levels=levels)
    b = fastgen.ops.dmol_sample(params, nr_mix=m, noise=noise, levels=levels)
    assert torch.equal(a, b) and a.shape == (3, 3, 6, 5)
    k = (a.double() + 1) * (levels - 1) / 2
    assert torch.allclose(k, k.round(), atol=1e-5) and a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize("channels,levels", [(1, 6), (3, 3)])
def test_sample_frequencies_match_the_likelihood(channels, levels):
    """Drawing many times from one pixel's mixture gives every image value with the probability
    dmol_nll assigns to it (the coupling conditions on the rounded colours, as the loss does)."""
    m, draws = 3, 40000
    params = torch.randn(1, dmol_channels(channels, m), 1, 1, dtype=torch.float64)
    params[:, m:].view(channels, -1, m)[:, 1] = torch.rand(channels, m, dtype=torch.float64) - 1.5  # log-scales
    noise = torch.rand(draws, m + channels, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    drawn = fastgen.ops.dmol_sample(params.expand(draws, -1, -1, -1), nr_mix=m, noise=noise, levels=levels)
    values = [2.0 * k / (levels - 1) - 1 for k in range(levels)]
    outcomes = torch.tensor(list(itertools.product(values, repeat=channels)), dtype=torch.float64)
    x = outcomes.view(-1, channels, 1, 1)
    prob = torch.exp(-fastgen.ops.dmol_nll(x, params.expand(len(x), -1, -1, -1), nr_mix=m, levels=levels))
    assert abs(prob.sum().item() - 1) < 1e-6
    drawn, outcomes = grid_index(drawn, levels), grid_index(outcomes, levels)
    freq = (drawn.view(draws, 1, channels) == outcomes.view(1, -1, channels)).all(-1).double().mean(0)
    assert (freq - prob).abs().max() < 4 * (prob * (1 - prob) / draws).sqrt().max() + 1e-3


class TestBadInput:
    def test_x_outside_range(self):
        x, params, m, levels = sample_inputs(SAMPLES[0])
        with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\]"):
            fastgen.ops.dmol_nll(x * 2, params, nr_mix=m)

    @pytest.mark.skipif(not compiled_cpu("dmol_nll"), reason="fastgen._C not built")
    def test_kernel_checks_x_range(self):
        x, params, m, levels = sample_inputs(SAMPLES[0])
        with pytest.raises(RuntimeError, match=r"x must lie in \[-1, 1\]"):
            ops.dmol_nll(x * 2, params, m, levels)

    @pytest.mark.parametrize("channels,nr_mix,k", [(3, 10, 99), (3, 2, 6), (1, 2, 20)])
    def test_param_channels_must_match(self, channels, nr_mix, k):
        with pytest.raises(ValueError, match=r"params must be \(N, K, H, W\) = "):
            fastgen.ops.dmol_nll(torch.zeros(2, channels, 4, 4), torch.randn(2, k, 4, 4), nr_mix=nr_mix)

    def test_levels_and_nr_mix(self):
        x, params, m, _ = sample_inputs(SAMPLES[0])
        with pytest.raises(ValueError, match="levels must be an integer >= 2"):
            fastgen.ops.dmol_nll(x, params, nr_mix=m, levels=1)
        with pytest.raises(ValueError, match="nr_mix must be a positive integer"):
            fastgen.ops.dmol_nll(x, params, nr_mix=0)

    def test_two_channels_rejected(self):
        with pytest.raises(ValueError, match="1 or 3 colour channels"):
            fastgen.ops.dmol_nll(torch.zeros(1, 2, 3, 3), torch.randn(1, 20, 3, 3), nr_mix=2)

    def test_x_is_data(self):
        x, params, m, _ = sample_inputs(SAMPLES[0])
        with pytest.raises(ValueError, match="treats x as data"):
            fastgen.ops.dmol_nll(x.requires_grad_(), params, nr_mix=m)

    def test_sample_noise_shape(self):
        _, params, m, _ = sample_inputs(SAMPLES[0])
        with pytest.raises(ValueError, match=r"noise must have nr_mix \+ 1 or nr_mix \+ 3 channels"):
            fastgen.ops.dmol_sample(params, nr_mix=m, noise=torch.rand(2, m + 2, 5, 7))
        with pytest.raises(ValueError, match=r"params must be \(N, K, H, W\)"):
            fastgen.ops.dmol_sample(params, nr_mix=m, noise=torch.rand(2, m + 1, 5, 7))


def _grid(*shape, levels=256):
    return 2 * torch.randint(0, levels, shape).float() / (levels - 1) - 1


def _p(*shape, **kw):
    return torch.randn(*shape, **kw)


# Calls every dmol kernel entry must refuse, whatever the Python wrapper checked.
KERNEL_BAD = [
    ("dmol_nll", lambda: (_grid(1, 2, 3, 3), _p(1, 20, 3, 3), 2, 256), "C = 1 or 3"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3), _p(1, 19, 3, 3), 2, 256), r"params must be \(N, K, H, W\)"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3), _p(1, 20, 3, 4), 2, 256), r"params must be \(N, K, H, W\)"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3), _p(1, 20, 3, 3), 0, 256), "nr_mix must be"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3), _p(1, 20, 3, 3), 2**62, 256), "nr_mix|params must be"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3), _p(1, 20, 3, 3), 2, 1), "levels must be"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3) * 2, _p(1, 20, 3, 3), 2, 256), r"x must lie in \[-1, 1\]"),
    ("dmol_nll", lambda: (torch.full((1, 1, 2, 2), float("nan")), _p(1, 3, 2, 2), 1, 256), r"x must lie in \[-1, 1\]"),
    ("dmol_nll", lambda: (_grid(1, 3, 3, 3).double(), _p(1, 20, 3, 3), 2, 256), "params must have x's dtype"),
    ("dmol_nll_backward", lambda: (_p(2), _grid(1, 1, 3, 3), _p(1, 3, 3, 3), _p(1, 3, 3), 1, 256),
     r"grad must be \(N,\) = \(1,\)"),
    ("dmol_nll_backward", lambda: (_p(1), _grid(1, 1, 3, 3), _p(1, 3, 3, 3), _p(1, 9), 1, 256),
     "pixel_log_prob must"),
    ("dmol_nll_backward", lambda: (_p(1), _grid(1, 1, 3, 3) * 3, _p(1, 3, 3, 3), _p(1, 3, 3), 1, 256),
     r"x must lie in \[-1, 1\]"),
    ("dmol_sample", lambda: (_p(1, 3, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long), 1, 256),
     "noise must be a float"),
    ("dmol_sample", lambda: (_p(1, 3, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.complex64), 1, 256),
     "noise must be a float"),
    ("dmol_sample", lambda: (_p(1, 3, 2, 2), torch.rand(1, 3, 2, 2), 1, 256), r"noise must be \(N, nr_mix \+ C, H, W\)"),
    ("dmol_sample", lambda: (_p(1, 3, 2, 2), torch.rand(1, 2, 2, 3), 1, 256), r"params must be \(N, K, H, W\)"),
    ("dmol_sample", lambda: (_p(1, 3, 2, 2), torch.rand(1, 2, 2, 2), 2**63 - 1, 256), "noise must be|nr_mix"),
    ("dmol_sample", lambda: (_p(1, 3, 2, 2), torch.rand(1, 2, 2, 2), 1, 0), "levels must be"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("dmol", KERNEL_BAD)


@pytest.mark.parametrize("impl", IMPLS)
def test_sample_kernel_agrees_with_reference_on_nan(impl):
    """NaN noise or logits: the kernel drew numbers where the reference drew NaN (its argmax picks a
    NaN score, and log of NaN is NaN; the kernel's fast log turned NaN into a number) (issue 15)."""
    device, _, _, sample = impl()
    params = torch.randn(2, 20, 3, 4, device=device)
    noise = torch.rand(2, 5, 3, 4, device=device)
    noise[0, 0, 0, 0] = float("nan")  # a component's Gumbel noise
    noise[0, 3, 1, 1] = float("nan")  # a colour's logistic noise
    params[1, 1, 2, 3] = float("nan")  # a logit
    got, want = sample(params, noise, 2, 256), dmol_sample_reference(params, 2, noise, 256)
    assert torch.isnan(want).any()
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("noise,match", [
    (torch.full((2, 5, 3, 4), float("nan")), r"finite numbers in \[0, 1\)"),
    (torch.full((2, 5, 3, 4), -0.1), r"finite numbers in \[0, 1\)"),
    (torch.full((2, 5, 3, 4), 2.0), r"finite numbers in \[0, 1\)"),
    (torch.full((2, 5, 3, 4), 1.0), r"finite numbers in \[0, 1\)"),
    (torch.full((2, 5, 3, 4), float("inf")), r"finite numbers in \[0, 1\)"),
    (torch.zeros(2, 5, 3, 4, dtype=torch.long), "floating tensor"),
    (torch.zeros(2, 5, 3, 4, dtype=torch.complex64), "floating tensor"),
    (torch.zeros(2, 5, 3, 4, dtype=torch.bool), "floating tensor"),
])
@pytest.mark.parametrize("reference", [False, True], ids=["kernel", "reference"])
def test_sample_noise_is_validated(noise, match, reference):
    """dmol_sample checks its noise through fastgen._core.check_uniform_noise, the one check of
    sampling noise; before, all of these were accepted (issue 15)."""
    with fastgen.use_reference(reference), pytest.raises(ValueError, match=match):
        fastgen.ops.dmol_sample(torch.randn(2, 20, 3, 4), nr_mix=2, noise=noise)

"""vae_nelbo: every implementation against fastgen.reference, each likelihood, numerics, bad input."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.reference.vae_nelbo import (
    gaussian_kl_grad_reference,
    gaussian_kl_reference,
    recon_nll_grad_reference,
    recon_nll_reference,
    vae_nelbo_reference,
)
from tests.conftest import DEVICES, DTYPES, assert_matches_reference, op_implementations, tolerances
from tests.fuzz_ops import kernel_refusal_tests

ops = torch.ops.fastgen

# (likelihood, N, params (levels for categorical), data shape S, latent Z, levels): odd sizes,
# N = 1, image-shaped data, more sub-pixels than one block of every implementation.
SAMPLES = [
    ("bernoulli", 3, None, (7,), 5, 256),
    ("bernoulli", 2, None, (1, 9, 31), 3, 256),
    ("categorical", 2, 5, (13,), 4, 256),
    ("categorical", 1, 3, (1, 3, 101), 2, 256),
    ("gaussian", 3, 2, (11,), 6, 256),
    ("gaussian", 2, 2, (3, 5, 23), 1, 256),
    ("logistic", 3, 2, (9,), 5, 5),
    ("logistic", 2, 2, (1, 7, 41), 3, 256),
    ("logistic", 2, 2, (17,), 2, 2),
]
SAMPLE_IDS = [f"{s[0]}_n{s[1]}_{'x'.join(map(str, s[3]))}_z{s[4]}_lv{s[5]}" for s in SAMPLES]


def sample_inputs(sample, device="cpu", dtype=torch.float32, requires_grad=False):
    likelihood, n, params, shape, z, levels = sample
    g = torch.Generator().manual_seed(len(shape) * 100 + n)
    if likelihood == "bernoulli":
        recon = 3 * torch.randn(n, *shape, generator=g, dtype=dtype)
        x = torch.rand(n, *shape, generator=g, dtype=dtype)
        x[0] = x[0].round()  # binary data and probabilities both occur
    else:
        recon = 2 * torch.randn(n, params, *shape, generator=g, dtype=dtype)
        if likelihood == "gaussian":
            x = torch.randn(n, *shape, generator=g, dtype=dtype)
        else:
            high = params if likelihood == "categorical" else levels
            x = torch.randint(0, high, (n, *shape), generator=g)
            x.view(-1)[:2] = torch.tensor([0, high - 1])  # both end bins of the logistic
    if likelihood in ("gaussian", "logistic"):
        recon[:, 1] = recon[:, 1] * 4  # log-scales on both sides of the [-7, 7] clamp
    mu = torch.randn(n, z, generator=g, dtype=dtype)
    logvar = torch.randn(n, z, generator=g, dtype=dtype)
    tensors = [t.to(device).requires_grad_(requires_grad) for t in (recon, mu, logvar)]
    return tensors[0], x.to(device), tensors[1], tensors[2], likelihood, levels


def _reference_grads(grad, recon, x, mu, logvar, likelihood, beta, levels):
    inputs = [t.detach().requires_grad_(True) for t in (recon, mu, logvar)]
    nelbo = vae_nelbo_reference(inputs[0], x, inputs[1], inputs[2], likelihood=likelihood, beta=beta, levels=levels)
    return torch.autograd.grad(nelbo, inputs, grad)


IMPLS = op_implementations("vae_nelbo")


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_forward_and_backward_match_reference(make_impl, dtype, sample, poison):
    device, forward, backward = make_impl()
    recon, x, mu, logvar, likelihood, levels = sample_inputs(sample, device, dtype)
    tol = tolerances(dtype)
    want_nll = recon_nll_reference(recon, x, likelihood, levels)
    want_kl = gaussian_kl_reference(mu, logvar)
    grad = torch.randn(recon.shape[0], device=device, dtype=dtype)
    want = _reference_grads(grad, recon, x, mu, logvar, likelihood, 0.7, levels)
    for keep_grad in (False, True):
        nelbo, nll, kl, recon_grad = forward(recon, x, mu, logvar, likelihood, 0.7, levels, keep_grad)
        torch.testing.assert_close(nll, want_nll, **tol)
        torch.testing.assert_close(kl, want_kl, **tol)
        torch.testing.assert_close(nelbo, want_nll + 0.7 * want_kl, **tol)
        assert recon_grad.numel() == (recon.numel() if keep_grad else 0)
        # The backward from the kept gradient and the one that computes it agree with autograd.
        got = backward(grad, recon, x, mu, logvar, recon_grad if keep_grad else None, likelihood, 0.7, levels,
                       [True, True, True])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)
    partial = backward(grad, recon, x, mu, logvar, None, likelihood, 0.7, levels, [False, True, False])
    assert partial[0].numel() == 0 and partial[2].numel() == 0
    torch.testing.assert_close(partial[1], want[1], **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_autograd_matches_reference(device, sample):
    recon, x, mu, logvar, likelihood, levels = sample_inputs(sample, device, requires_grad=True)
    assert_matches_reference(
        lambda: fastgen.ops.vae_nelbo(recon, x, mu, logvar, likelihood=likelihood, beta=1.3, levels=levels),
        lambda: vae_nelbo_reference(recon, x, mu, logvar, likelihood=likelihood, beta=1.3, levels=levels),
        [recon, mu, logvar])


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_gradcheck_float64(sample):
    recon, x, mu, logvar, likelihood, levels = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():  # moderate log-scales: finite differences of e^-2s terms at s = -7 are too coarse
        if likelihood in ("gaussian", "logistic"):
            recon[:, 1].clamp_(-1, 1)
    assert torch.autograd.gradcheck(
        lambda r, m, v: fastgen.ops.vae_nelbo(r, x, m, v, likelihood=likelihood, beta=0.5, levels=levels),
        (recon, mu, logvar))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_opcheck(device, sample):
    recon, x, mu, logvar, likelihood, levels = sample_inputs(sample, device, requires_grad=True)
    for keep_grad in (False, True):
        torch.library.opcheck(ops.vae_nelbo.default, (recon, x, mu, logvar, likelihood, 0.7, levels, keep_grad))
    grad = torch.randn(recon.shape[0], device=device)
    recon_grad = ops.vae_nelbo(recon.detach(), x, mu.detach(), logvar.detach(), likelihood, 0.7, levels, True)[3]
    for kept in (None, recon_grad):
        args = (grad, recon.detach(), x, mu.detach(), logvar.detach(), kept, likelihood, 0.7, levels)
        torch.library.opcheck(ops.vae_nelbo_backward.default, (*args, [True, True, True]))
        torch.library.opcheck(ops.vae_nelbo_backward.default, (*args, [True, False, True]))


def test_keeps_the_gradient_only_when_a_backward_needs_it():
    recon, x, mu, logvar, likelihood, levels = sample_inputs(SAMPLES[0])
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fastgen.ops.vae_nelbo(recon.requires_grad_(True), x, mu, logvar, likelihood=likelihood)
    assert [tuple(t.shape) for t in saved][-1] == tuple(recon.shape)
    with torch.no_grad():
        fastgen.ops.vae_nelbo(recon, x, mu, logvar, likelihood=likelihood)  # no kept gradient: nothing to check
    out = torch.ops.fastgen.vae_nelbo(recon.detach(), x, mu, logvar, likelihood, 1.0, levels, False)
    assert out[3].numel() == 0


def test_parts_and_beta():
    recon, x, mu, logvar, likelihood, levels = sample_inputs(SAMPLES[0])
    nelbo, nll, kl = fastgen.ops.vae_nelbo(recon, x, mu, logvar, likelihood=likelihood, beta=0.25, return_parts=True)
    torch.testing.assert_close(nelbo, nll + 0.25 * kl)
    assert (kl > 0).all()


@pytest.mark.parametrize("make_impl", IMPLS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical", "gaussian", "logistic"])
def test_extreme_inputs_stay_finite(make_impl, likelihood):
    """Logits of +-1e4, log-scales of +-100 and means far outside [-1, 1] give finite values and gradients."""
    device, forward, backward = make_impl()
    sample = next(s for s in SAMPLES if s[0] == likelihood)
    recon, x, mu, logvar, _, levels = sample_inputs(sample, device)
    flat = recon.view(recon.shape[0], -1)
    flat[:, 0::3] = 1e4
    flat[:, 1::3] = -1e4
    if likelihood in ("gaussian", "logistic"):
        recon[:, 1, ..., 0::2] = 100.0
        recon[:, 1, ..., 1::2] = -100.0
        recon[:, 0] = recon[:, 0].clamp(-50, 50)
    nelbo, nll, _, recon_grad = forward(recon, x, mu, logvar, likelihood, 1.0, levels, True)
    assert torch.isfinite(nelbo).all() and torch.isfinite(nll).all() and torch.isfinite(recon_grad).all()
    torch.testing.assert_close(nll, recon_nll_reference(recon, x, likelihood, levels), rtol=1e-5, atol=1e-2)
    grads = backward(torch.ones(recon.shape[0], device=device), recon, x, mu, logvar, None, likelihood, 1.0, levels,
                     [True, True, True])
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(grads[0], recon_grad, rtol=1e-5, atol=1e-5)


def test_use_reference_routes_to_reference():
    recon, x, mu, logvar, likelihood, levels = sample_inputs(SAMPLES[0], requires_grad=True)
    with fastgen.use_reference():
        out = fastgen.ops.vae_nelbo(recon, x, mu, logvar, likelihood=likelihood)
    assert "fastgen" not in type(out.grad_fn).__name__


def test_compiles_to_one_graph():
    recon, x, mu, logvar, likelihood, levels = sample_inputs(SAMPLES[2], requires_grad=True)
    compiled = torch.compile(lambda r, m, v: fastgen.ops.vae_nelbo(r, x, m, v, likelihood=likelihood),
                             fullgraph=True, backend="aot_eager")
    assert_matches_reference(lambda: compiled(recon, mu, logvar),
                             lambda: vae_nelbo_reference(recon, x, mu, logvar, likelihood=likelihood),
                             [recon, mu, logvar])


class TestBadInput:
    def _args(self, **changes):
        args = dict(recon=torch.randn(2, 6), x=torch.rand(2, 6), mu=torch.randn(2, 3), logvar=torch.randn(2, 3),
                    likelihood="bernoulli")
        args.update(changes)
        return args

    @pytest.mark.parametrize("changes,error,match", [
        (dict(likelihood="poisson"), ValueError, "likelihood must be one of"),
        (dict(x=torch.rand(2, 7)), ValueError, r"x must be \(2, 6\) \(recon's shape\)"),
        (dict(logvar=torch.randn(2, 4)), ValueError, r"logvar must have mu's shape \(2, 3\)"),
        (dict(mu=torch.randn(3, 3), logvar=torch.randn(3, 3)), ValueError, "mu must have recon's batch size 2"),
        (dict(x=torch.full((2, 6), 1.5)), ValueError, r"x must hold values in \[0, 1\]"),
        (dict(x=torch.ones(2, 6, dtype=torch.long)), ValueError, "x must be a floating-point tensor"),
        (dict(recon=torch.randn(2, 4, 6), x=torch.rand(2, 6), likelihood="categorical"), ValueError,
         "x must be an int64 tensor of levels in"),
        (dict(recon=torch.randn(2, 4, 6), x=torch.full((2, 6), 4), likelihood="categorical"), ValueError,
         r"x must hold integers in \[0, 3\]"),
        (dict(recon=torch.randn(2, 3, 6), x=torch.zeros(2, 6, dtype=torch.long), likelihood="logistic"), ValueError,
         r"recon must be \(N, 2, \.\.\.\)"),
        (dict(recon=torch.randn(2, 2, 6), x=torch.full((2, 6), 300), likelihood="logistic"), ValueError,
         r"x must hold integers in \[0, 255\]"),
        (dict(recon=torch.randn(2, 2, 6), x=torch.randn(2, 5), likelihood="gaussian"), ValueError,
         r"x must be \(2, 6\)"),
        (dict(mu=torch.randn(2, 3, dtype=torch.float64)), ValueError, "mu has dtype torch.float64"),
        (dict(recon=[1.0]), TypeError, "recon must be a torch.Tensor"),
    ])
    @pytest.mark.parametrize("reference", [False, True], ids=["kernel", "reference"])
    def test_errors_name_the_argument(self, changes, error, match, reference):
        with fastgen.use_reference(reference), pytest.raises(error, match=match):
            fastgen.ops.vae_nelbo(**self._args(**changes))

    def test_logistic_levels(self):
        with pytest.raises(ValueError, match="levels must be at least 2"):
            fastgen.ops.vae_nelbo(**self._args(recon=torch.randn(2, 2, 6), x=torch.zeros(2, 6, dtype=torch.long),
                                               likelihood="logistic"), levels=1)


@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_gradient_reference_matches_autograd(sample):
    """The written-out gradients of the reference (what the kernels implement) are autograd's."""
    recon, x, mu, logvar, likelihood, levels = sample_inputs(sample, dtype=torch.float64, requires_grad=True)
    (want,) = torch.autograd.grad(recon_nll_reference(recon, x, likelihood, levels).sum(), recon)
    torch.testing.assert_close(recon_nll_grad_reference(recon.detach(), x, likelihood, levels), want)
    want_mu, want_logvar = torch.autograd.grad(gaussian_kl_reference(mu, logvar).sum(), [mu, logvar])
    got_mu, got_logvar = gaussian_kl_grad_reference(mu.detach(), logvar.detach())
    torch.testing.assert_close(got_mu, want_mu)
    torch.testing.assert_close(got_logvar, want_logvar)


def _r(*shape, **kw):
    return torch.randn(*shape, **kw)


def _vae(likelihood="bernoulli", recon=(2, 6), x=None, mu=(2, 3), logvar=None, beta=1.0, levels=256, keep=False):
    x = torch.rand(recon) if x is None else x
    return _r(*recon), x, _r(*mu), _r(*(logvar or mu)), likelihood, beta, levels, keep


def _vae_back(grad=(2,), recon_grad=None, mask=(True, True, True), **kw):
    recon, x, mu, logvar, likelihood, beta, levels, _ = _vae(**kw)
    return _r(*grad), recon, x, mu, logvar, recon_grad, likelihood, beta, levels, list(mask)


# Calls every vae_nelbo kernel entry must refuse, whatever the Python wrapper checked (a
# categorical x out of range would index out of bounds).
KERNEL_BAD = [
    ("vae_nelbo", lambda: _vae(likelihood="poisson"), "likelihood must be"),
    ("vae_nelbo", lambda: _vae(x=torch.rand(2, 7)), "x must be"),
    ("vae_nelbo", lambda: _vae(x=torch.rand(2, 3, 2)), "x must be"),
    ("vae_nelbo", lambda: _vae(logvar=(2, 4)), "logvar must"),
    ("vae_nelbo", lambda: _vae(mu=(3, 3)), "recon's N = 2"),
    ("vae_nelbo", lambda: _vae(recon=(2, 4, 6), x=torch.full((2, 6), 4), likelihood="categorical"),
     r"x must hold integers in \[0, 3\]"),
    ("vae_nelbo", lambda: _vae(recon=(2, 4, 6), x=torch.rand(2, 6), likelihood="categorical"), "x must be an int64"),
    ("vae_nelbo", lambda: _vae(recon=(2, 0, 6), x=torch.zeros(2, 6, dtype=torch.long), likelihood="categorical"),
     "at least one level"),
    ("vae_nelbo", lambda: _vae(recon=(2, 3, 6), x=torch.zeros(2, 6, dtype=torch.long), likelihood="logistic"),
     r"recon must be \(N, 2, \.\.\.\)"),
    ("vae_nelbo", lambda: _vae(recon=(2, 2, 6), x=torch.zeros(2, 6, dtype=torch.long), likelihood="logistic",
                               levels=1), "levels must be"),
    ("vae_nelbo", lambda: _vae(x=torch.full((2, 6), float("nan"))), r"x must hold values in \[0, 1\]"),
    ("vae_nelbo", lambda: _vae(beta=float("inf")), "beta must be a finite number"),
    ("vae_nelbo", lambda: _vae(beta=float("nan")), "beta must be a finite number"),
    ("vae_nelbo", lambda: _vae(x=torch.rand(2, 6).double()), "x must have recon's dtype"),
    ("vae_nelbo_backward", lambda: _vae_back(grad=(3,)), r"grad must be \(N,\) = \(2,\)"),
    ("vae_nelbo_backward", lambda: _vae_back(recon_grad=_r(2, 5)), "recon_grad must have recon's shape"),
    ("vae_nelbo_backward", lambda: _vae_back(recon=(2, 4, 6), x=torch.full((2, 6), 9), likelihood="categorical"),
     r"x must hold integers in \[0, 3\]"),
    ("vae_nelbo_backward", lambda: _vae_back(likelihood="gauss"), "likelihood must be"),
]
test_cpp_kernel_checks_its_own_arguments, test_triton_launcher_checks_its_own_arguments = \
    kernel_refusal_tests("vae_nelbo", KERNEL_BAD)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_float_data_gets_the_reference_gradient(likelihood, dtype):
    """x is float data for these two likelihoods; with x.requires_grad the kernel gave it no gradient
    while the reference did (issue 15). Now both give d nelbo / d x: -r (bernoulli), (x - m) e^-2s
    (gaussian)."""
    recon = torch.randn(3, 2, 5, dtype=dtype) if likelihood == "gaussian" else torch.randn(3, 5, dtype=dtype)
    x = (torch.randn(3, 5, dtype=dtype) if likelihood == "gaussian" else torch.rand(3, 5, dtype=dtype))
    mu, logvar = torch.randn(3, 4, dtype=dtype), torch.randn(3, 4, dtype=dtype)
    upstream = torch.randn(3, dtype=dtype)
    for with_recon in (False, True):  # x alone, and x with recon (the kernel then keeps recon's gradient)
        grads = []
        for reference in (False, True):
            leaves = [x.clone().requires_grad_()] + ([recon.clone().requires_grad_()] if with_recon else [])
            r = leaves[1] if with_recon else recon
            with fastgen.use_reference(reference):
                nelbo = fastgen.ops.vae_nelbo(r, leaves[0], mu, logvar, likelihood=likelihood)
            grads.append(torch.autograd.grad(nelbo, leaves, upstream))
        for got, want in zip(*grads):
            torch.testing.assert_close(got, want, **tolerances(dtype))


def test_float_data_gradcheck():
    recon, mu, logvar = torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64), \
        torch.randn(2, 3, dtype=torch.float64)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fastgen.ops.vae_nelbo(recon, x, mu, logvar, likelihood="gaussian"), (x,))
    logits = torch.randn(2, 4, dtype=torch.float64)
    p = torch.rand(2, 4, dtype=torch.float64).clamp(0.05, 0.95).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: fastgen.ops.vae_nelbo(logits, p, mu, logvar, likelihood="bernoulli"),
                                    (p,))

"""Kernels against their references where inputs are extreme (issue 15): NaN, inf and huge values,
which inputs get gradients, meta tensors, stride-0 inputs.

"Agree" is the fuzzer's comparison (tests/fuzz_ops.py): NaN where NaN, the same infinity where
inf, close elsewhere (relative to each example's scale).
"""
from __future__ import annotations

import itertools

import pytest
import torch

import fastgen
from tests.conftest import compiled_cpu
from tests.fuzz_ops import _close, _compare

ops = torch.ops.fastgen
SPECIAL = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 3e38, 200.0, -200.0]


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, scale=1.0, dtype=torch.float32, seed=0):
    return (torch.randn(shape, generator=_g(seed), dtype=torch.float64) * scale).to(dtype)


def _grid(*shape, levels=256, seed=0):
    return 2 * torch.randint(0, levels, shape, generator=_g(seed)).float() / (levels - 1) - 1


# Valid calls of every public op: (name, function of the tensors, tensors (float, differentiable
# unless listed in `data`), data).
def _vae(likelihood):
    shapes = {"bernoulli": (3, 6), "categorical": (3, 4, 6), "gaussian": (3, 2, 6), "logistic": (3, 2, 6)}
    x = {"bernoulli": torch.rand(3, 6, generator=_g(1)), "gaussian": _randn(3, 6, seed=1),
         "categorical": torch.randint(0, 4, (3, 6), generator=_g(1)),
         "logistic": torch.randint(0, 256, (3, 6), generator=_g(1))}[likelihood]
    tensors = dict(recon=_randn(*shapes[likelihood], scale=2), mu=_randn(3, 4, seed=2), logvar=_randn(3, 4, seed=3))
    if x.is_floating_point():
        tensors["x"] = x
    fixed = {} if x.is_floating_point() else {"x": x}

    def call(recon, mu, logvar, x=None):
        return fastgen.ops.vae_nelbo(recon, fixed.get("x", x), mu, logvar, likelihood=likelihood, beta=0.5,
                                     return_parts=True)
    return call, tensors


def _feature_stats(features, shift):
    """The in-place op as a function: fixed accumulators (on features' device), updated and returned."""
    total = _randn(5, dtype=torch.float64, seed=2).to(features.device)
    cross = _randn(5, 5, dtype=torch.float64, seed=3).to(features.device)
    fastgen.ops.feature_stats_update(features, shift, total, cross)
    return total, cross


def _cases():
    cases = {
        "masked_conv2d": (lambda x, weight, bias: fastgen.ops.masked_conv2d(x, weight, bias, mask_type="B",
                                                                           color_groups=3),
                          dict(x=_randn(2, 6, 5, 4), weight=_randn(9, 6, 3, 3, seed=1), bias=_randn(9, seed=2))),
        "gated_activation": (lambda x, cond: fastgen.ops.gated_activation(x, cond),
                             dict(x=_randn(2, 6, 3, 4, scale=2), cond=_randn(2, 6, seed=1))),
        "categorical_nll": (lambda logits: fastgen.ops.categorical_nll(logits, torch.randint(0, 5, (2, 3, 2, 3),
                                                                                             generator=_g(5))),
                            dict(logits=_randn(2, 5, 3, 2, 3, scale=3))),
        "reparameterize": (lambda mu, logvar, eps: fastgen.ops.reparameterize(mu, logvar, eps),
                           dict(mu=_randn(3, 5), logvar=_randn(3, 5, scale=2, seed=1), eps=_randn(3, 5, seed=2))),
        "gradient_penalty": (lambda grad: fastgen.ops.gradient_penalty(grad), dict(grad=_randn(3, 2, 4))),
        "dmol_nll": (lambda params: fastgen.ops.dmol_nll(_grid(2, 3, 2, 3), params, nr_mix=2),
                     dict(params=_randn(2, 20, 2, 3))),
        "dmol_sample": (lambda params: fastgen.ops.dmol_sample(params, nr_mix=2, noise=torch.rand(2, 5, 2, 3,
                                                                                                  generator=_g(3))),
                        dict(params=_randn(2, 20, 2, 3))),
        "feature_stats_update": (_feature_stats, dict(features=_randn(6, 5, scale=2), shift=_randn(5, seed=1))),
    }
    for act in ("relu", "leaky_relu", "none"):
        cases[f"instance_norm_act-{act}"] = (
            lambda x, weight, bias, act=act: fastgen.ops.instance_norm_act(x, weight, bias, act=act),
            dict(x=_randn(2, 3, 4, 5, scale=2), weight=_randn(3, seed=1), bias=_randn(3, seed=2)))
    for slope in (None, 0.2):
        cases[f"pixel_norm-{slope}"] = (lambda x, slope=slope: fastgen.ops.pixel_norm(x, negative_slope=slope),
                                        dict(x=_randn(2, 5, 3, 4, scale=2)))
    cases["minibatch_stddev"] = (lambda x: fastgen.ops.minibatch_stddev(x, 2), dict(x=_randn(4, 3, 2, 3, scale=2)))
    for likelihood in ("bernoulli", "categorical", "gaussian", "logistic"):
        cases[f"vae_nelbo-{likelihood}"] = _vae(likelihood)
    for kind in ("minimax", "non_saturating", "lsgan", "hinge", "wasserstein"):
        for target in ("discriminator", "generator"):
            cases[f"gan_loss-{kind}-{target}"] = (
                lambda d_real, d_fake, kind=kind, target=target: fastgen.ops.gan_loss(d_real, d_fake, kind=kind,
                                                                                       target=target),
                dict(d_real=_randn(7, scale=3), d_fake=_randn(5, scale=3, seed=1)))
    return cases


CASES = _cases()


def _run(fn, tensors, requires_grad, reference, seed=0):
    """(outputs, {name: gradient or None}) of fn on copies of tensors, those in requires_grad
    requiring it, with a random upstream gradient of the first output."""
    args = {k: v.clone().requires_grad_(k in requires_grad) for k, v in tensors.items()}
    with fastgen.use_reference(reference):
        out = fn(**args)
        first = out[0] if isinstance(out, tuple) else out
        if first.requires_grad:
            first.backward(torch.randn(first.shape, generator=_g(seed), dtype=torch.float64).to(first.dtype))
    return out, {k: args[k].grad for k in requires_grad}


def _agree(fn, tensors, requires_grad=()):
    """Kernel and reference agree: both raise the same kind of error (an input the contract
    refuses, such as bernoulli data outside [0, 1]), or both return the same values and gradients."""
    try:
        out, grads = _run(fn, tensors, requires_grad, reference=False)
    except (ValueError, TypeError) as e:
        with pytest.raises(type(e)):
            _run(fn, tensors, requires_grad, reference=True)
        return
    ref, ref_grads = _run(fn, tensors, requires_grad, reference=True)
    why = _compare(out, ref)
    assert why is None, why
    for k in requires_grad:
        assert (grads[k] is None) == (ref_grads[k] is None), \
            f"{k} has a gradient in {'the reference' if grads[k] is None else 'the kernel'} only"
        if grads[k] is not None:
            why = _close(grads[k], ref_grads[k])
            assert why is None, f"gradient of {k}: {why}"


def _with_special(tensors, name, value, where):
    t = tensors[name].clone()
    flat = t.view(-1)
    flat[where % flat.numel()] = value
    return dict(tensors, **{name: t})


# masked_conv2d's contract leaves NaN and inf unspecified (which products a convolution forms
# decides where they end up: oneDNN multiplies the masked taps and the padding, the tap kernel does
# not), and a huge input may overflow a sum in one order and not another; its finite cases are
# covered with the rest.
_FINITE_ONLY = {"masked_conv2d"}


def _unspecified(op: str, name: str, v: float) -> bool:
    if op in _FINITE_ONLY:
        return v != v or abs(v) > 1e18
    # instance_norm_act's contract leaves huge finite values and an infinite weight unspecified: a float32
    # variance overflows to inf or not with the order of a sum, and its fused backward forms
    # inf * 0 and inf - inf where the reference's autograd does not. NaN anywhere and an infinite x
    # or bias (NaN in their plane, or inf in their channel, both ways) are checked.
    if op.startswith("instance_norm_act"):
        return v == v and abs(v) > 1e18 and (name == "weight" or abs(v) != float("inf"))
    # pixel_norm's too leave a finite x whose double overflows float32 (3e38): its rstd is 0 and
    # the fused backward gives 0 there, while autograd of the reference forms d(x^2)/dx = 2x = inf
    # and multiplies it by 0 (NaN). NaN, inf and 1e30 (whose square alone overflows) are checked.
    if op.startswith("pixel_norm"):
        return v == v and abs(v) != float("inf") and 2 * abs(v) > 3.4028234663852886e38
    return False


_VALUE_CASES = [(op, name, v) for op, (_, tensors) in CASES.items() for name in tensors for v in SPECIAL
                if not _unspecified(op, name, v)]


@pytest.mark.skipif(not compiled_cpu("masked_conv2d"), reason="fastgen._C not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op,name,value", _VALUE_CASES, ids=[f"{o}-{n}-{v}" for o, n, v in _VALUE_CASES])
def test_kernel_agrees_with_reference_on_extreme_values(op, name, value, dtype):
    fn, tensors = CASES[op]
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    for where in (0, 7):
        case = _with_special(tensors, name, value, where)
        grads = () if op == "dmol_sample" else tuple(case)
        _agree(fn, case, grads)


_GRAD_CASES = [(op, subset) for op, (_, tensors) in CASES.items() if op != "dmol_sample"
               for r in range(len(tensors) + 1) for subset in itertools.combinations(tensors, r)]


@pytest.mark.skipif(not compiled_cpu("masked_conv2d"), reason="fastgen._C not built")
@pytest.mark.parametrize("op,requires_grad", _GRAD_CASES, ids=[f"{o}-{'+'.join(s) or 'none'}" for o, s in _GRAD_CASES])
def test_same_inputs_get_gradients_as_in_the_reference(op, requires_grad):
    """Every combination of inputs that require grad: the kernel gives exactly those the
    reference's autograd gives a gradient, with the same values (vae_nelbo's x among them)."""
    fn, tensors = CASES[op]
    _agree(fn, tensors, requires_grad)


# -- meta tensors: the fake registrations give shapes, or a clear error ----------------------------

@pytest.mark.parametrize("op", [op for op in CASES if not op.startswith("gan_loss-") or op.endswith("hinge-generator")])
def test_public_functions_work_on_meta_tensors(op):
    fn, tensors = CASES[op]
    meta = {k: v.to("meta") for k, v in tensors.items()}
    if op.startswith(("categorical_nll", "dmol", "vae_nelbo-categorical", "vae_nelbo-logistic")):
        pytest.skip("the call takes CPU data tensors (targets, images, noise) besides the meta ones")
    out, want = fn(**meta), fn(**tensors)
    for got, expected in zip(out if isinstance(out, tuple) else (out,), want if isinstance(want, tuple) else (want,)):
        assert got.device.type == "meta" and got.shape == expected.shape and got.dtype == expected.dtype


META = dict(device="meta")
META_CALLS = [
    ("masked_conv2d", lambda: fastgen.ops.masked_conv2d(torch.empty(1, 3, 4, 4, **META),
                                                        torch.empty(6, 3, 3, 3, **META), mask_type="B"), (1, 6, 4, 4)),
    ("categorical_nll", lambda: fastgen.ops.categorical_nll(torch.empty(2, 5, 1, 3, 3, **META),
                                                            torch.empty(2, 1, 3, 3, dtype=torch.long, **META)), (2,)),
    ("vae_nelbo", lambda: fastgen.ops.vae_nelbo(torch.empty(2, 4, 6, **META),
                                                torch.empty(2, 6, dtype=torch.long, **META),
                                                torch.empty(2, 3, **META), torch.empty(2, 3, **META),
                                                likelihood="categorical"), (2,)),
    ("dmol_nll", lambda: fastgen.ops.dmol_nll(torch.empty(2, 3, 4, 4, **META), torch.empty(2, 20, 4, 4, **META),
                                              nr_mix=2), (2,)),
    ("dmol_sample", lambda: fastgen.ops.dmol_sample(torch.empty(2, 20, 4, 4, **META), nr_mix=2,
                                                    noise=torch.empty(2, 5, 4, 4, **META)), (2, 3, 4, 4)),
    ("reparameterize", lambda: fastgen.ops.reparameterize(torch.empty(2, 3, **META), torch.empty(2, 3, **META)),
     (2, 3)),
    ("instance_norm_act", lambda: fastgen.ops.instance_norm_act(torch.empty(2, 3, 4, 5, **META),
                                                                torch.empty(3, **META)), (2, 3, 4, 5)),
    ("pixel_norm", lambda: fastgen.ops.pixel_norm(torch.empty(2, 3, 4, 5, **META), negative_slope=0.2), (2, 3, 4, 5)),
    ("minibatch_stddev", lambda: fastgen.ops.minibatch_stddev(torch.empty(6, 3, 4, 5, **META)), (6, 4, 4, 5)),
]


@pytest.mark.parametrize("op,call,shape", META_CALLS, ids=[c[0] for c in META_CALLS])
def test_all_meta_calls_give_shapes(op, call, shape):
    """Value checks (target range, x in [-1, 1], noise in [0, 1)) skip meta tensors, which have no
    values; before, they raised "Tensor.item() cannot be called on meta tensors"."""
    out = call()
    assert out.device.type == "meta" and tuple(out.shape) == shape


BAD_META = [
    ("masked_conv2d", lambda: ops.masked_conv2d(torch.empty(1, 3, 4, 4, **META), torch.empty(6, 4, 3, 3, **META),
                                                None, "B", 1), "x has 3 channels but weight expects C_in = 4"),
    ("masked_conv2d-mixed", lambda: ops.masked_conv2d(torch.empty(1, 3, 4, 4), torch.empty(6, 3, 3, 3, **META),
                                                      None, "B", 1), "weight is on meta but x is on cpu"),
    ("gated_activation", lambda: ops.gated_activation(torch.empty(1, 3, 4, 4, **META), None), "even channel count"),
    ("gated_activation_backward", lambda: ops.gated_activation_backward(torch.empty(1, 2, 4, 4, **META),
                                                                        torch.empty(1, 6, 4, 4, **META), None),
     r"grad_out must be \(N, C, H, W\)"),
    ("reparameterize", lambda: ops.reparameterize(torch.empty(2, 3, **META), torch.empty(2, 4, **META),
                                                  torch.empty(2, 3, **META)), "logvar must have mu's shape"),
    ("reparameterize-public", lambda: fastgen.ops.reparameterize(torch.empty(2, 3, **META), torch.empty(2, 3, **META),
                                                                 torch.empty(2, 3, dtype=torch.float64, **META)),
     "eps has dtype torch.float64"),
    ("categorical_nll", lambda: ops.categorical_nll(torch.empty(2, 5, 1, 3, 3, **META),
                                                    torch.empty(2, 1, 3, 4, dtype=torch.long, **META)),
     r"target must be \(N, C, H, W\)"),
    ("vae_nelbo", lambda: fastgen.ops.vae_nelbo(torch.empty(2, 6, **META), torch.empty(2, 6, **META),
                                                torch.empty(2, 3, **META), torch.empty(2, 4, **META),
                                                likelihood="bernoulli"), "logvar must have mu's shape"),
    ("gan_loss", lambda: ops.gan_loss(torch.empty(4, **META), torch.empty(0, **META), "hinge", False),
     "d_fake must hold at least one"),
    ("gan_loss-mixed", lambda: ops.gan_loss(torch.empty(4, **META), torch.empty(3), "hinge", True),
     "d_real is on meta but d_fake is on cpu"),
    ("gradient_penalty", lambda: ops.gradient_penalty(torch.empty(0, 3, **META), 10.0), r"at least one sample"),
    ("dmol_nll", lambda: ops.dmol_nll(torch.empty(1, 3, 4, 4, **META), torch.empty(1, 19, 4, 4, **META), 2, 256),
     r"params must be \(N, K, H, W\)"),
    ("dmol_sample", lambda: ops.dmol_sample(torch.empty(1, 20, 4, 4, **META),
                                            torch.empty(1, 5, 4, 4, dtype=torch.long, **META), 2, 256),
     "noise must be a floating tensor"),
    ("instance_norm_act", lambda: ops.instance_norm_act(torch.empty(2, 3, 4, 5, **META), torch.empty(4, **META), None,
                                                        "relu", 0.2, 1e-5), r"weight must be \(C,\) = \(3,\)"),
    ("instance_norm_act-mixed", lambda: ops.instance_norm_act(torch.empty(2, 3, 4, 5), None, torch.empty(3, **META),
                                                              "relu", 0.2, 1e-5), "bias is on meta but x is on cpu"),
    ("instance_norm_act_backward", lambda: ops.instance_norm_act_backward(
        torch.empty(2, 3, 4, 5, **META), torch.empty(2, 3, 4, 5, **META), None, None, torch.empty(2, 3, **META),
        torch.empty(2, 3, dtype=torch.float64, **META), "relu", 0.2, [True, True, True]), "rstd must have dtype"),
    ("feature_stats_update", lambda: ops.feature_stats_update(torch.empty(4, 3, **META), torch.empty(3, **META),
                                                              torch.empty(3, dtype=torch.float64, **META),
                                                              torch.empty(3, 4, dtype=torch.float64, **META)),
     r"cross must have shape \(3, 3\)"),
    ("pixel_norm_backward", lambda: ops.pixel_norm_backward(
        torch.empty(2, 3, 4, 5, **META), torch.empty(2, 3, 4, 5, **META),
        torch.empty(2, 4, 5, dtype=torch.float64, **META), 0.2), "rstd must have dtype"),
    ("minibatch_stddev", lambda: ops.minibatch_stddev(torch.empty(2, 3, 4, 5, **META), 0, 1e-8),
     "group_size must be >= 1"),
    ("minibatch_stddev_backward", lambda: ops.minibatch_stddev_backward(
        torch.empty(2, 3, 4, 5, **META), torch.empty(2, 3, 4, 5, **META), 4, 1e-8), r"grad_out must be \(N, C \+ 1"),
]


@pytest.mark.parametrize("op,call,match", BAD_META, ids=[c[0] for c in BAD_META])
def test_bad_meta_calls_raise_a_clear_error(op, call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- stride-0 inputs: small ones are read as they are, huge ones refused before any copy -----------

def _expanded(*shape, dtype=torch.float32, value=0.0):
    return torch.full((1,) * len(shape), value, dtype=dtype).expand(shape)


BIG = 2**27  # elements: 512 MiB dense in float32, twice the 256 MiB limit on such copies
BOMBS = [
    # The hostile tester's: (1, 1).expand(1, 2**27), 4 bytes of storage, 512 MiB dense.
    ("gradient_penalty-op", lambda: ops.gradient_penalty(_expanded(1, BIG, value=1.0), 1.0)),
    ("gradient_penalty", lambda: fastgen.ops.gradient_penalty(_expanded(1, BIG, value=1.0))),
    ("gan_loss-op", lambda: ops.gan_loss(None, _expanded(BIG), "hinge", True)),
    ("gan_loss", lambda: fastgen.ops.gan_loss(torch.randn(3), _expanded(BIG), kind="hinge")),
    ("reparameterize-op", lambda: ops.reparameterize(*(_expanded(1, BIG) for _ in range(3)))),
    ("reparameterize", lambda: fastgen.ops.reparameterize(*(_expanded(1, BIG) for _ in range(3)))),
    ("gated_activation-op", lambda: ops.gated_activation(_expanded(1, 2, 2**13, 2**13), None)),
    ("gated_activation", lambda: fastgen.ops.gated_activation(_expanded(1, 2, 2**13, 2**13))),
    ("masked_conv2d-op", lambda: ops.masked_conv2d(_expanded(1, 1, 2**13, 2**14), torch.randn(1, 1, 3, 3), None, "B",
                                                   1)),
    ("masked_conv2d", lambda: fastgen.ops.masked_conv2d(_expanded(1, 1, 2**13, 2**14), torch.randn(1, 1, 3, 3),
                                                        mask_type="B")),
    ("categorical_nll-op", lambda: ops.categorical_nll(_expanded(1, 2, 1, 2**13, 2**13),
                                                       _expanded(1, 1, 2**13, 2**13, dtype=torch.long))),
    ("vae_nelbo-op", lambda: ops.vae_nelbo(_expanded(1, BIG), _expanded(1, BIG), torch.zeros(1, 3), torch.zeros(1, 3),
                                           "bernoulli", 1.0, 256, False)),
    ("dmol_nll-op", lambda: ops.dmol_nll(_expanded(1, 1, 2**13, 2**14), _expanded(1, 3, 2**13, 2**14), 1, 256)),
    ("dmol_sample-op", lambda: ops.dmol_sample(_expanded(1, 3, 2**13, 2**14), _expanded(1, 2, 2**13, 2**14, value=0.5),
                                               1, 256)),
    ("instance_norm_act-op", lambda: ops.instance_norm_act(_expanded(1, 2, 2**13, 2**13), None, None, "relu", 0.2,
                                                           1e-5)),
    ("instance_norm_act", lambda: fastgen.ops.instance_norm_act(_expanded(1, 2, 2**13, 2**13))),
    ("pixel_norm-op", lambda: ops.pixel_norm(_expanded(1, 2, 2**13, 2**13), 0.2, 1e-8)),
    ("pixel_norm", lambda: fastgen.ops.pixel_norm(_expanded(1, 2, 2**13, 2**13))),
    ("minibatch_stddev-op", lambda: ops.minibatch_stddev(_expanded(2, 1, 2**13, 2**13), 4, 1e-8)),
    ("minibatch_stddev", lambda: fastgen.ops.minibatch_stddev(_expanded(2, 1, 2**13, 2**13))),
    ("feature_stats_update-op", lambda: ops.feature_stats_update(_expanded(BIG, 1), torch.zeros(1),
                                                                 torch.zeros(1, dtype=torch.float64),
                                                                 torch.zeros(1, 1, dtype=torch.float64))),
    ("feature_stats_update", lambda: fastgen.ops.feature_stats_update(_expanded(BIG, 1), torch.zeros(1),
                                                                      torch.zeros(1, dtype=torch.float64),
                                                                      torch.zeros(1, 1, dtype=torch.float64))),
]


@pytest.mark.skipif(not compiled_cpu("masked_conv2d"), reason="fastgen._C not built")
@pytest.mark.parametrize("name,call", BOMBS, ids=[b[0] for b in BOMBS])
def test_huge_stride0_inputs_refused_before_a_copy(name, call):
    with pytest.raises((RuntimeError, ValueError), match=r"repeats its memory.*256 MiB"):
        call()


STRIDE0 = [
    ("reparameterize", lambda e: fastgen.ops.reparameterize(e(torch.randn(3, 5)), torch.randn(3, 5), torch.randn(3, 5))),
    ("gated_activation", lambda e: fastgen.ops.gated_activation(e(torch.randn(2, 6, 3, 4)), e(torch.randn(2, 6)))),
    ("masked_conv2d", lambda e: fastgen.ops.masked_conv2d(e(torch.randn(2, 3, 4, 5)), torch.randn(6, 3, 3, 3),
                                                          mask_type="B")),
    ("gan_loss", lambda e: fastgen.ops.gan_loss(e(torch.randn(6)), e(torch.randn(4)), kind="lsgan")),
    ("gradient_penalty", lambda e: fastgen.ops.gradient_penalty(e(torch.randn(3, 8)))),
    ("categorical_nll", lambda e: fastgen.ops.categorical_nll(e(torch.randn(2, 4, 1, 3, 3)),
                                                              e(torch.randint(0, 4, (2, 1, 3, 3))))),
    ("vae_nelbo", lambda e: fastgen.ops.vae_nelbo(e(torch.randn(2, 6)), e(torch.rand(2, 6)), e(torch.randn(2, 3)),
                                                  torch.randn(2, 3), likelihood="bernoulli")),
    ("dmol_nll", lambda e: fastgen.ops.dmol_nll(e(_grid(2, 1, 3, 3)), e(torch.randn(2, 6, 3, 3)), nr_mix=2)),
    ("feature_stats_update", lambda e: _feature_stats(e(torch.randn(4, 5)), e(torch.randn(2, 5))[0])),
    ("instance_norm_act", lambda e: fastgen.ops.instance_norm_act(e(torch.randn(3, 4, 5, 6)), e(torch.randn(4)),
                                                                  torch.randn(4), act="leaky_relu")),
    ("pixel_norm", lambda e: fastgen.ops.pixel_norm(e(torch.randn(3, 4, 5, 6)), negative_slope=0.2)),
    ("minibatch_stddev", lambda e: fastgen.ops.minibatch_stddev(e(torch.randn(4, 3, 5, 6)), 2)),
]


@pytest.mark.parametrize("name,call", STRIDE0, ids=[s[0] for s in STRIDE0])
def test_small_stride0_inputs_agree_with_reference(name, call):
    def expand_rows(t):  # the first row repeated: a stride-0 view
        return t[:1].expand(t.shape)

    torch.manual_seed(0)
    got = call(expand_rows)
    torch.manual_seed(0)  # the same inputs
    with fastgen.use_reference():
        want = call(expand_rows)
    assert _compare(got, want) is None

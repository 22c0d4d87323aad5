"""Op dispatch: which implementation serves each op, the reference fallback, fastgen.info()."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

import fastgen
from fastgen.ops import implementations

OPS = {"masked_conv2d", "masked_conv2d_backward", "gated_activation", "gated_activation_backward", "categorical_nll",
       "categorical_nll_backward", "sample_program", "sample_program_block", "sample_program_describe",
       "reparameterize", "reparameterize_backward", "vae_nelbo", "vae_nelbo_backward", "gan_loss", "gan_loss_backward",
       "gradient_penalty", "gradient_penalty_backward", "dmol_nll", "dmol_nll_backward", "dmol_sample",
       "feature_stats_update", "instance_norm_act", "instance_norm_act_backward", "pixel_norm", "pixel_norm_backward",
       "minibatch_stddev", "minibatch_stddev_backward"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_op_is_served_on_every_device():
    table = implementations()
    assert set(table) == OPS
    for op, served in table.items():
        assert set(served) == {"CPU", "CUDA"}
        for key in ("CPU", "CUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgen::{op}", key), (op, key)


@pytest.mark.skipif(os.environ.get("FASTGEN_REQUIRE_EXT") != "1", reason="only where the build is required")
def test_optional_dependencies_are_installed_when_required():
    # Data, training and demo tests skip where pillow, tqdm, scikit-learn, safetensors or
    # tensorboard are missing (a bare GPU machine); under `make test` they must run.
    for module in ("PIL", "tqdm", "sklearn", "safetensors", "tensorboard"):
        importlib.import_module(module)


@pytest.mark.skipif(os.environ.get("FASTGEN_REQUIRE_EXT") != "1", reason="only where the build is required")
def test_compiled_extension_is_loaded_when_required():
    # `make test` sets FASTGEN_REQUIRE_EXT=1: a build that silently fell back must not pass as green.
    from fastgen import _ext

    assert _ext.AVAILABLE, _ext.IMPORT_ERROR
    assert all(served["CPU"] == "C++ (fastgen._C)" for served in implementations().values())


def test_info_lists_every_op(capsys):
    fastgen.info()
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    for op in OPS:
        assert op in out


def test_cli_info():
    out = subprocess.run([sys.executable, "-m", "fastgen", "info"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert "masked_conv2d" in out and "gated_activation" in out


def test_without_extension_everything_runs_on_references():
    """With fastgen._C unavailable the package imports, warns once, and the ops still compute."""
    script = """
import warnings, torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastgen
    import fastgen.ops
from fastgen.reference import masked_conv2d_reference, gated_activation_reference
assert sum("fastgen._C is not available" in str(w.message) for w in caught) == 1, [str(w.message) for w in caught]
assert all(s["CPU"] == "reference" for s in fastgen.ops.implementations().values())
x = torch.randn(2, 6, 5, 4, requires_grad=True); w = torch.randn(6, 6, 3, 3, requires_grad=True)
y = fastgen.ops.masked_conv2d(x, w, mask_type="B", color_groups=3)
torch.testing.assert_close(y, masked_conv2d_reference(x, w, mask_type="B", color_groups=3))
y.sum().backward()
assert x.grad is not None and w.grad is not None
c = torch.randn(2, 6)
torch.testing.assert_close(fastgen.ops.gated_activation(x, c), gated_activation_reference(x, c))
torch.library.opcheck(torch.ops.fastgen.masked_conv2d.default, (x.detach(), w.detach(), None, "A", 1))
z = torch.randn(2, 5, 3, 4, 4, requires_grad=True); t = torch.randint(0, 5, (2, 3, 4, 4))
torch.testing.assert_close(fastgen.ops.categorical_nll(z, t), fastgen.reference.categorical_nll_reference(z, t))
torch.library.opcheck(torch.ops.fastgen.categorical_nll.default, (z, t))
model = fastgen.models.GatedPixelCNN(3, 4, 4, hidden_channels=6, n_layers=2, kernel_size=3)
model.loss(torch.randint(0, 4, (2, 3, 4, 4))).backward()
noise = torch.rand(2, 3, 4, 4, dtype=torch.float64)
assert torch.equal(model.sample(2, noise=noise), model.sample(2, noise=noise, cache=False))
print("ok")
"""
    env = dict(os.environ, FASTGEN_DISABLE_EXT="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_use_reference_is_scoped():
    with fastgen.use_reference():
        from fastgen.ops._dispatch import reference_forced

        assert reference_forced()
        with fastgen.use_reference(False):
            assert not reference_forced()
        assert reference_forced()
    assert not reference_forced()


def test_autocast_rules():
    """Under autocast the compute-heavy ops run in bfloat16 and the loss accumulates in float32,
    whatever mix of dtypes comes in."""
    x, w = torch.randn(2, 4, 5, 5), torch.randn(4, 4, 3, 3)
    z, t = torch.randn(2, 3, 1, 4, 4, dtype=torch.bfloat16), torch.randint(0, 3, (2, 1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fastgen.ops.masked_conv2d(x, w, mask_type="B").dtype == torch.bfloat16
        assert fastgen.ops.gated_activation(x.bfloat16(), torch.randn(2, 4)).dtype == torch.bfloat16
        assert fastgen.ops.instance_norm_act(x, torch.ones(4, dtype=torch.bfloat16)).dtype == torch.bfloat16
        assert fastgen.ops.pixel_norm(x, negative_slope=0.2).dtype == torch.bfloat16
        assert fastgen.ops.minibatch_stddev(x).dtype == torch.bfloat16
        nll = fastgen.ops.categorical_nll(z, t)
    assert nll.dtype == torch.float32
    torch.testing.assert_close(nll, fastgen.reference.categorical_nll_reference(z.float(), t))

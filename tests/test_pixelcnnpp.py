"""PixelCNN++: causality, likelihood, exact cached sampling (compiled and reference), training paths."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import fastgen
from fastgen.cli import main
from fastgen.models import PixelCNNpp
from fastgen.reference.dmol import dmol_nll_reference
from fastgen.reference.pixelcnnpp_sampling import PROGRAM_FIELDS
from fastgen.sampling.pixelcnnpp import _Plan
from tests.conftest import compiled_cpu

COMPILED = pytest.mark.skipif(not compiled_cpu("pixelcnnpp_sample_row"), reason="fastgen._C not built")


def make(channels=3, levels=256, size=8, n_classes=None, dtype=torch.float64, **kwargs) -> PixelCNNpp:
    """A tiny model whose weights are scaled up, so that its mixtures differ from pixel to pixel."""
    torch.manual_seed(0)
    kwargs = {"nr_resnet": 1, "nr_filters": 8, "nr_mix": 3, "dropout": 0.0, **kwargs}
    model = PixelCNNpp(channels, levels, size, n_classes=n_classes, **kwargs).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model


def labels_for(model, n):
    return torch.arange(n) % model.n_classes if model.n_classes else None


@pytest.mark.parametrize("channels,n_classes", [(3, None), (1, 4)])
def test_params_never_see_the_current_or_later_pixels(channels, n_classes):
    model = make(channels, n_classes=n_classes)
    x = torch.randint(0, 256, (2, channels, 8, 8))
    labels = labels_for(model, 2)
    params = model(x, labels)
    for i, j in [(0, 0), (0, 7), (3, 5), (4, 4), (5, 2), (7, 7)]:
        later = x.clone().view(2, channels, 64)
        later[:, :, i * 8 + j :] = torch.randint(0, 256, later[:, :, i * 8 + j :].shape)
        changed = model(later.view_as(x), labels)
        flat, flat_changed = params.flatten(2), changed.flatten(2)
        torch.testing.assert_close(flat_changed[:, :, : i * 8 + j + 1], flat[:, :, : i * 8 + j + 1], rtol=0, atol=0)
        if j < 7:  # and the next pixel of the row sees this one
            assert not torch.equal(flat_changed[:, :, i * 8 + j + 1], flat[:, :, i * 8 + j + 1])


def test_output_layout_and_log_prob():
    for channels, k in ((3, 30), (1, 9)):
        model = make(channels)
        x = torch.randint(0, 256, (3, channels, 8, 8))
        params = model(x)
        assert params.shape == (3, k, 8, 8)
        want = -dmol_nll_reference(model.encode(x), params, 3, 256)
        torch.testing.assert_close(model.log_prob(x), want)
        torch.testing.assert_close(model.loss(x), -want.mean() / (channels * 64))


def test_weight_norm_dropout_and_config_round_trip():
    model = PixelCNNpp(3, 256, 8, nr_resnet=1, nr_filters=8, nr_mix=2, dropout=0.5, weight_norm=True, n_classes=3)
    assert any("parametrizations" in name for name, _ in model.named_parameters())
    x, labels = torch.randint(0, 256, (2, 3, 8, 8)), torch.tensor([0, 2])
    model.train()
    assert not torch.equal(model(x, labels), model(x, labels))  # dropout is active in training
    model.eval()
    rebuilt = PixelCNNpp(**model.config())
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x, labels), model(x, labels))


# -- sampling ---------------------------------------------------------------------------------

def sample_both(model, n, partial=None, reference=False):
    noise = torch.rand(n, *model.noise_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    labels = labels_for(model, n)
    naive = model.sample(n, labels, noise=noise, partial=partial, cache=False)
    with fastgen.use_reference(reference):
        cached = model.sample(n, labels, noise=noise, partial=partial)
    return naive, cached, noise


@pytest.mark.parametrize("reference", [pytest.param(False, id="compiled", marks=COMPILED),
                                       pytest.param(True, id="reference")])
@pytest.mark.parametrize("channels,levels,n_classes", [(3, 256, None), (1, 17, 4), (3, 5, 2)])
def test_cached_sampling_draws_the_naive_samplers_images(reference, channels, levels, n_classes):
    model = make(channels, levels, n_classes=n_classes)
    naive, cached, _ = sample_both(model, 3, reference=reference)
    assert naive.float().std() > 0.1 * levels  # varied images, not a constant
    assert torch.equal(cached, naive)


@pytest.mark.parametrize("reference", [pytest.param(False, id="compiled", marks=COMPILED),
                                       pytest.param(True, id="reference")])
def test_partial_completion_keeps_known_pixels(reference):
    model = make(3, 256)
    start = torch.randint(0, 256, (2, 3, 8, 8))
    known = torch.zeros(8, 8, dtype=torch.bool)
    known[:3] = True
    known[5, 2:6] = True
    naive, cached, _ = sample_both(model, 2, partial=(start, known), reference=reference)
    assert torch.equal(cached, naive)
    assert torch.equal(cached[:, :, known], start[:, :, known])


@COMPILED
def test_float32_draws_follow_their_parameters():
    """In float32 the cached sampler's parameters differ from a forward pass by rounding, so a rare
    draw may land on the other side of a bin boundary; every draw must still be the draw of the
    forward pass's parameters at that pixel, given the image before it."""
    model = make(3, 256, size=16, dtype=torch.float32, nr_filters=16)
    noise = torch.rand(2, *model.noise_shape, generator=torch.Generator().manual_seed(5))
    image = model.sample(2, noise=noise)
    redrawn = model.draw(model(image), noise)
    assert (redrawn != image).double().mean() < 0.01


@COMPILED
def test_sample_row_op_matches_its_reference_on_one_row():
    model = make(3, 256, n_classes=3)
    x = torch.randint(0, 256, (2, 3, 8, 8))
    known = torch.zeros(2, 8, 8, dtype=torch.bool)
    noise = torch.rand(2, *model.noise_shape, dtype=torch.float64)
    results = []
    for reference in (False, True):
        plan = _Plan(model, x, torch.tensor([0, 2]))
        image = x.clone()
        for i in range(3):
            plan.rows_at(i)
            with fastgen.use_reference(reference):
                fastgen.ops.pixelcnnpp_sample_row([c.map for c in plan.caches], plan.weights, plan.program, image,
                                                  known, noise, i, model.nr_mix, model.levels)
        results.append((image, [c.map.clone() for c in plan.caches]))
    assert torch.equal(results[0][0], results[1][0])
    for got, want in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@COMPILED
def test_sample_row_op_schema_and_bad_program():
    model = make(1, 17, dtype=torch.float32)
    x = torch.randint(0, 17, (2, 1, 8, 8))
    plan = _Plan(model, x, None)
    args = ([c.map for c in plan.caches], plan.weights, plan.program, x, torch.zeros(2, 8, 8, dtype=torch.bool),
            torch.rand(2, *model.noise_shape), 0, model.nr_mix, model.levels)
    torch.library.opcheck(torch.ops.fastgen.pixelcnnpp_sample_row.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    for field, value, match in [(0, 9, "unknown kind"), (2, 99, "output cache index out of range"),
                                (1, 1, "does not have the size of its scale"),
                                (7, len(plan.weights), "weights index out of range")]:
        bad = list(plan.program)
        bad[field] = value  # of the first node
        with pytest.raises(RuntimeError, match=match):
            torch.ops.fastgen.pixelcnnpp_sample_row(args[0], args[1], bad, *args[3:])
    wrong = list(plan.weights)
    wrong[0] = wrong[0][:-1]
    with pytest.raises(RuntimeError, match="down-shifted weight has the wrong shape"):
        torch.ops.fastgen.pixelcnnpp_sample_row(args[0], wrong, *args[2:])
    with pytest.raises(RuntimeError, match="must end with the head"):
        torch.ops.fastgen.pixelcnnpp_sample_row(args[0], args[1], plan.program[:-PROGRAM_FIELDS], *args[3:])


def test_same_noise_or_seed_gives_same_images_and_training_mode_is_restored():
    model = make(1, 17, dtype=torch.float32).train()
    a = model.sample(2, generator=torch.Generator().manual_seed(1))
    b = model.sample(2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8) and model.training


class TestBadInput:
    @pytest.mark.parametrize("kwargs,match", [
        (dict(image_size=10), "divisible by 4"),
        (dict(nr_mix=0), "nr_mix must be a positive integer"),
        (dict(nr_filters=0), "nr_filters must be a positive integer"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(in_channels=2), "in_channels must be 1"),
    ])
    def test_constructor(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            PixelCNNpp(**{"in_channels": 3, "image_size": 8, "nr_resnet": 1, "nr_filters": 8, **kwargs})

    def test_sampling_arguments(self):
        model = make(3)
        with pytest.raises(ValueError, match=r"noise must have shape \(2, 6, 8, 8\)"):
            model.sample(2, noise=torch.rand(2, 3, 8, 8))
        with pytest.raises(ValueError, match="n must be a positive integer"):
            model.sample(0)
        with pytest.raises(ValueError, match=r"x must be \(N, 3, 8, 8\)"):
            model(torch.zeros(1, 3, 4, 4, dtype=torch.long))


# -- training paths -----------------------------------------------------------------------------

TINY = ["--hidden", "8", "--layers", "1", "--nr-mix", "2", "--quiet"]


def test_trains_on_the_digits_as_one_channel(tmp_path, capsys):
    run = str(tmp_path / "digits")
    assert main(["train", "pixelcnnpp", "--data", "digits", "--conditional", "--out", run, "--epochs", "2",
                 "--batch-size", "32", "--grid-samples", "2", *TINY]) == 0
    out = capsys.readouterr().out
    assert "(1, 8, 8) with 17 levels" in out
    history = json.loads(open(os.path.join(run, "last", "config.json")).read())["history"]
    assert history["val_bpd"][1] < history["val_bpd"][0] < 4.09  # learns; 4.09 bits/dim is uniform over 17 levels
    assert main(["sample", run, "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["eval", run, "--data", "digits"]) == 0
    assert "bits/dim" in capsys.readouterr().out


def test_trains_on_an_rgb_image_folder(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(folder / cls / f"{k}.png")
    run = str(tmp_path / "run")
    assert main(["train", "pixelcnnpp", "--data", f"folder:{folder}", "--conditional", "--out", run, "--epochs", "1",
                 "--batch-size", "8", "--grid-samples", "2", *TINY]) == 0
    assert "(3, 8, 12) with 256 levels" in capsys.readouterr().out
    model = fastgen.load(run)
    assert isinstance(model, PixelCNNpp) and model.n_classes == 2
    bpd = json.loads(open(os.path.join(run, "last", "config.json")).read())["history"]["train_bpd"][0]
    assert 6 < bpd < 10  # random pixels: about 8 bits/dim


def test_trains_on_cifar10_files(tmp_path, capsys):
    import pickle

    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    run = str(tmp_path / "run")
    assert main(["train", "pixelcnnpp", "--data", f"cifar10:{tmp_path}", "--out", run, "--epochs", "1",
                 "--batch-size", "8", "--grid-samples", "0", *TINY]) == 0
    assert "(3, 32, 32) with 256 levels" in capsys.readouterr().out
    assert main(["eval", run, "--data", f"cifar10:{tmp_path}"]) == 0
    assert "test, 2 images" in capsys.readouterr().out


def test_image_sizes_that_cannot_be_halved_twice_are_refused(tmp_path, capsys):
    from PIL import Image

    for k in range(4):
        Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    assert main(["train", "pixelcnnpp", "--data", f"folder:{tmp_path}", "--out", str(tmp_path / "run"), "--epochs",
                 "1", *TINY]) == 2  # a user error: one line and exit code 2
    err = capsys.readouterr().err
    assert err.startswith("fastgen: error: ") and "divisible by 4" in err

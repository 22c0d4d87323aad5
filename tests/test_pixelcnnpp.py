"""PixelCNN++: causality, likelihood, its argument checks and training paths (its cached sampler:
tests/test_sample_program.py)."""
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


# Cached sampling of PixelCNN++ is tested with the other models' in tests/test_sample_program.py.


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

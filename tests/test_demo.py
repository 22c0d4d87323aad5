"""The demo's model learns the digits: its likelihood beats the per-pixel baseline and its
class-conditional samples are recognisable to a classifier fitted on the real training digits."""
from __future__ import annotations

import pytest
import torch

from fastgen.data import digits
from fastgen.demo import digit_classifier, pixel_baseline_bpd, recognised_fraction, run_demo

# Optional dependencies of fastgen's data, training and demo (installed by `make test`).
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")
pytest.importorskip("PIL")


def test_pixel_baseline_matches_a_direct_count():
    train, test = digits("train"), digits("test")
    assert pixel_baseline_bpd(train, test) == pytest.approx(2.43, abs=0.01)


def test_class_conditional_samples_are_recognisable(tmp_path):
    result = run_demo(str(tmp_path), epochs=4, progress=False)  # measured: 1.82 bits/dim, 83% recognised
    assert result["test_bpd"] < result["baseline_bpd"] - 0.5
    classifier = digit_classifier()
    test = digits("test")
    assert classifier.score(test.images.flatten(1).numpy() / 16.0, test.labels.numpy()) > 0.9
    accuracy = recognised_fraction(classifier, result["samples"], result["labels"])
    assert accuracy >= 0.6, f"only {accuracy:.0%} of samples are labelled as their class"
    assert (tmp_path / "samples.png").stat().st_size > 0 and torch.equal(result["labels"][::10], torch.arange(10))


def test_demo_honours_epochs_and_replaces_only_an_earlier_demo(tmp_path, capsys, monkeypatch):
    """`fastgen demo --epochs 1` trains one epoch (it used to treat 0 as "the default 20"); running it
    again replaces the earlier demo, but a directory holding another run is refused. (A small
    model stands in for the demo's, to keep this quick.)"""
    import json

    import fastgen.demo
    from fastgen.cli import main

    monkeypatch.setattr(fastgen.demo, "DEMO_MODEL", fastgen.demo.DEMO_MODEL | {"hidden_channels": 8, "n_layers": 1})
    monkeypatch.setattr(fastgen.demo, "DEMO_TRAINING", fastgen.demo.DEMO_TRAINING | {"batch_size": 256})
    out = str(tmp_path / "demo")
    for _ in range(2):
        assert main(["demo", "--epochs", "1", "--out", out, "--quiet"]) == 0
        assert "best validation epoch 1" in capsys.readouterr().out
        assert json.loads((tmp_path / "demo" / "last" / "config.json").read_text())["epoch"] == 1
    other = str(tmp_path / "other")
    assert main(["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--hidden", "8", "--layers", "1",
                 "--grid-samples", "0", "--out", other, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["demo", "--epochs", "1", "--out", other, "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err

"""`fastgen train pix2pix|cyclegan` and `fastgen translate`, end to end on the bundled tasks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fastgen
from fastgen.cli import main
from tests.test_cli import fastgen_cli

TINY = ["--epochs", "1", "--batch-size", "128", "--hidden", "4", "--grid-samples", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation-runs")
    pix = fastgen_cli("train", "pix2pix", "--data", "edges-digits", *TINY, "--out", str(root / "pix2pix"))
    assert pix.returncode == 0, pix.stderr
    assert "validation error" in pix.stdout
    cycle = fastgen_cli("train", "cyclegan", "--data", "inverted-digits", "--layers", "1", *TINY,
                        "--out", str(root / "cyclegan"))
    assert cycle.returncode == 0, cycle.stderr
    return root


def _write_pngs(folder, n: int, size: int, mode: str = "L") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img{k}.png")


def test_runs_load_as_their_models(runs):
    assert isinstance(fastgen.load(str(runs / "pix2pix")), fastgen.models.Pix2Pix)
    model = fastgen.load(str(runs / "cyclegan"))
    assert isinstance(model, fastgen.models.CycleGAN) and model.config()["blocks"] == 1
    assert (runs / "pix2pix" / "samples" / "epoch_001.png").is_file()


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_translate_a_folder_and_one_image(runs, tmp_path, direction):
    _write_pngs(tmp_path / "in", 3, 20, "RGB")  # other size and channels: converted and resized
    out = fastgen_cli("translate", str(runs / "cyclegan"), "--input", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                      "--direction", direction)
    assert out.returncode == 0, out.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["img0.png", "img1.png", "img2.png"]
    with Image.open(tmp_path / "out" / "img0.png") as image:
        assert image.size == (32, 32) and image.mode == "L"
    one = fastgen_cli("translate", str(runs / "pix2pix"), "--input", str(tmp_path / "in" / "img1.png"),
                      "-o", str(tmp_path / "one"))
    assert one.returncode == 0 and "1 image translated" in one.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "pix2pix", "--data", "inverted-digits"], "pix2pix trains on 'pairs:DIR' or 'edges-digits' data"),
    (["train", "cyclegan", "--data", "digits"], "cyclegan trains on 'unpaired:DIR' or 'inverted-digits' data"),
    (["train", "pix2pix", "--data", "edges-digits", "--amp"], "--amp does not apply to pix2pix"),
    (["train", "cyclegan", "--data", "inverted-digits", "--conditional"], "--conditional does not apply"),
    (["train", "cyclegan", "--data", "inverted-digits", "--loss", "hinge"], "--loss does not apply to cyclegan"),
    (["train", "pixelcnn", "--data", "edges-digits"], "--data edges-digits holds image pairs, for pix2pix"),
    (["train", "vae", "--data", "inverted-digits"], "--data inverted-digits holds two domains of images"),
    (["train", "pix2pix", "--data", "edges-digits", "--layers", "3"], "--layers does not apply to pix2pix"),
    (["train", "pix2pix", "--data", "edges-digits", "--patch-layers", "4"], "patch_layers=4 leaves no patch"),
    (["train", "cyclegan", "--data", "inverted-digits", "--hidden", "4096", "--layers", "256"],
     "training it needs about"),
])
def test_train_refusals(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "run")]) == 2  # in process: the same one-line path, faster
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_translate_refusals(runs, tmp_path, capsys):
    _write_pngs(tmp_path / "in", 1, 32)
    _write_pngs(tmp_path / "clash", 1, 32)
    Image.open(tmp_path / "clash" / "img0.png").convert("RGB").save(tmp_path / "clash" / "img0.jpg")
    (tmp_path / "file").write_text("x")
    cases = [
        (["translate", str(runs / "pix2pix"), "--input", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
          "--direction", "backward"], "only a CycleGAN translates both ways"),
        (["translate", str(runs / "pix2pix"), "--input", str(tmp_path / "in"), "-o", str(tmp_path / "file")],
         "is a file"),
        (["translate", str(runs / "pix2pix"), "--input", str(tmp_path / "missing"), "-o", str(tmp_path / "o")],
         "no such file or directory"),
        (["translate", str(runs / "pix2pix"), "--input", str(tmp_path / "file"), "-o", str(tmp_path / "o")],
         "cannot be decoded"),
        (["translate", str(runs / "pix2pix"), "--input", str(tmp_path / "in"), "-o", str(tmp_path / "in")],
         "is the --input directory"),
        (["translate", str(runs / "pix2pix"), "--input", str(tmp_path / "clash"), "-o", str(tmp_path / "o")],
         "would all be written to the same PNG"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sample_and_eval_refuse_a_translator(runs, tmp_path, capsys, command):
    extra = ["-o", str(tmp_path / "grid.png")] if command == "sample" else ["--data", "digits"]
    assert main([command, str(runs / "pix2pix"), *extra]) == 2
    assert "use `fastgen translate" in capsys.readouterr().err

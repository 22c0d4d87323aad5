"""The command line as a user runs it: train, sample, eval, --resume after a kill, --help everywhere."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import fastgen
from fastgen.cli import main

pytest.importorskip("tqdm")
pytest.importorskip("PIL")
pytest.importorskip("safetensors")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--hidden", "8", "--layers", "2", "--kernel-size", "3", "--quiet"]


def fastgen_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgen", *args], capture_output=True, text=True, cwd=ROOT, **kw)


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_train_sample_eval(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "gated-pixelcnn", "--data", "digits", "--epochs", "2", "--conditional", "--grid-samples",
                 "2", "--ema", "0.9", "--out", run, *TINY]) == 0
    out = capsys.readouterr().out
    assert "1257 training images (1, 8, 8) with 17 levels" in out and "best validation" in out
    assert {"last", "best", "metrics.jsonl", "samples"} <= set(os.listdir(run))
    assert os.path.isfile(os.path.join(run, "last", "ema.safetensors"))

    grid = str(tmp_path / "grid.png")
    assert main(["sample", run, "-n", "20", "-o", grid]) == 0
    from PIL import Image

    assert Image.open(grid).size == (10 * (8 * 4 + 1) + 1, 2 * (8 * 4 + 1) + 1)  # one column per class

    assert main(["eval", run, "--data", "digits"]) == 0
    out = capsys.readouterr().out
    bpd = float(out.split("images): ")[1].split(" bits/dim")[0])
    best = json.loads(open(os.path.join(run, "best", "config.json")).read())["history"]["best_val_bpd"]
    assert 0 < bpd < 5 and abs(bpd - best) < 0.5


def test_vae_train_sample_eval(tmp_path, capsys):
    run = str(tmp_path / "vae")
    assert main(["train", "vae", "--data", "digits", "--epochs", "2", "--conditional", "--likelihood", "logistic",
                 "--latent-dim", "4", "--hidden", "16", "--grid-samples", "2", "--out", run, "--quiet"]) == 0
    assert "best validation" in capsys.readouterr().out
    assert main(["sample", run, "-n", "10", "-o", str(tmp_path / "vae.png")]) == 0
    assert main(["eval", run, "--data", "digits", "--k", "20"]) == 0
    out = capsys.readouterr().out
    elbo_bpd = float(out.split("images): ")[1].split(" bits/dim")[0])
    iw_bpd = float(out.split("k=20: ")[1].split(" bits/dim")[0])
    assert "negative ELBO, an upper bound" in out and 0 < iw_bpd <= elbo_bpd
    with pytest.raises(SystemExit, match="--partial and --naive are for autoregressive models"):
        main(["sample", run, "--naive", "-o", str(tmp_path / "x.png")])


def test_gan_train_sample(tmp_path, capsys):
    run = str(tmp_path / "gan")
    assert main(["train", "dcgan", "--data", "digits", "--epochs", "1", "--conditional", "--loss", "hinge",
                 "--latent-dim", "8", "--hidden", "16", "--grid-samples", "2", "--out", run, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "hinge loss" in out and "discriminator" in out
    assert {"last", "metrics.jsonl", "samples"} <= set(os.listdir(run))
    assert main(["sample", run, "-n", "6", "--class", "3", "-o", str(tmp_path / "gan.png")]) == 0
    with pytest.raises(SystemExit, match="a GAN has no likelihood"):
        main(["eval", run, "--data", "digits"])


def test_sample_a_class_and_complete_a_partial_image(tmp_path, capsys):
    run = str(tmp_path / "run")
    main(["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--conditional", "--grid-samples", "0",
          "--out", run, *TINY])
    from PIL import Image

    from fastgen.commands import _partial

    top = torch.randint(0, 256, (8, 8), dtype=torch.uint8)
    Image.fromarray(top.numpy()).save(tmp_path / "start.png")
    assert main(["sample", run, "-n", "4", "--class", "3", "--partial", str(tmp_path / "start.png"),
                 "--keep-rows", "5", "-o", str(tmp_path / "done.png")]) == 0
    model = fastgen.load(run)
    image, known = _partial(str(tmp_path / "start.png"), model, 4, 5)
    assert torch.equal(image[0, 0], torch.div(top.long() * 17, 256, rounding_mode="floor"))
    assert known[:5].all() and not known[5:].any()
    completed = model.sample(4, torch.full((4,), 3), partial=(image, known), generator=torch.Generator().manual_seed(0))
    assert torch.equal(completed[:, :, :5], image[:, :, :5])

    with pytest.raises(SystemExit, match=r"--class must be in \[0, 10\)"):
        main(["sample", run, "--class", "10", "-o", str(tmp_path / "x.png")])
    Image.fromarray(top[:4].numpy()).save(tmp_path / "small.png")
    with pytest.raises(SystemExit, match="is 8x4, the model samples 8x8"):
        main(["sample", run, "--partial", str(tmp_path / "small.png"), "-o", str(tmp_path / "x.png")])
    with pytest.raises(ValueError, match="no fastgen checkpoint there"):
        main(["sample", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.png")])


def test_a_killed_run_resumes_to_the_same_parameters(tmp_path):
    """Killed mid-epoch (SIGKILL) while checkpointing every step, then restarted with --resume: the
    run ends with the parameters of one that never stopped."""
    args = ["train", "gated-pixelcnn", "--data", "digits", "--epochs", "2", "--batch-size", "128", "--dropout", "0.2",
            "--checkpoint-every", "1", "--grid-samples", "0", *TINY]
    whole = tmp_path / "whole"
    assert fastgen_cli(*args, "--out", str(whole)).returncode == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "fastgen", *args, "--out", str(killed)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, step = time.time() + 120, 0
    while step < 13 and time.time() < deadline and process.poll() is None:  # epoch 2 starts at step 11
        time.sleep(0.02)
        try:
            step = json.loads((killed / "last" / "config.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < step < 20, f"the run was not caught mid-training (step {step})"
    resumed = fastgen_cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last", "best"):
        assert torch.equal(params(fastgen.load(str(whole / name))), params(fastgen.load(str(killed / name))))


@pytest.mark.parametrize("command", ["train", "sample", "eval", "bench", "info", "demo"])
def test_every_command_has_help(command):
    result = fastgen_cli(command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_two_processes_under_torchrun_match_one(tmp_path):
    """`torchrun --nproc_per_node=2` (gloo on CPU) trains to the parameters of a single process
    with the same global batch, and splits sampling between the processes without changing it."""
    args = ["train", "gated-pixelcnn", "--data", "digits", "--epochs", "1", "--batch-size", "64", "--grid-samples",
            "0", *TINY]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastgen"]
    one = fastgen_cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, cwd=ROOT)
    assert two.returncode == 0, two.stderr
    assert "2 processes" in two.stdout and two.stdout.count("done: epoch 1") == 1  # rank 0 speaks
    a, b = params(fastgen.load(str(tmp_path / "one" / "last"))), params(fastgen.load(str(tmp_path / "two" / "last")))
    # 20 Adam steps that differ only in the order of floating-point sums (measured: 4.5e-8).
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert not (tmp_path / "two" / "last.old").exists()

    single = fastgen_cli("sample", str(tmp_path / "two"), "-n", "5", "-o", str(tmp_path / "single.png"))
    split = subprocess.run([*torchrun, "sample", str(tmp_path / "two"), "-n", "5", "-o", str(tmp_path / "split.png")],
                           capture_output=True, text=True, cwd=ROOT)
    assert single.returncode == 0 and split.returncode == 0, split.stderr
    assert (tmp_path / "single.png").read_bytes() == (tmp_path / "split.png").read_bytes()

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


def refused(argv: list[str], capsys) -> str:
    """The one-line error of a command that must be refused as a user error (exit code 2)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgen: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


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
    assert "--partial and --naive are for autoregressive models" in refused(
        ["sample", run, "--naive", "-o", str(tmp_path / "x.png")], capsys)


def test_pixelvae_train_sample_eval(tmp_path, capsys):
    run = str(tmp_path / "pixelvae")
    assert main(["train", "pixelvae", "--data", "digits", "--epochs", "1", "--latent-dim", "4", "--hidden", "8",
                 "--layers", "2", "--free-bits", "0.1", "--grid-samples", "2", "--out", run, "--quiet"]) == 0
    assert main(["sample", run, "-n", "4", "-o", str(tmp_path / "pixelvae.png")]) == 0
    assert main(["eval", run, "--data", "digits", "--k", "4"]) == 0
    out = capsys.readouterr().out
    elbo_bpd = float(out.split("images): ")[1].split(" bits/dim")[0])
    iw_bpd = float(out.split("k=4: ")[1].split(" bits/dim")[0])
    assert "negative ELBO, an upper bound" in out and 0 < iw_bpd <= elbo_bpd + 0.01


def test_aae_train_sample_eval(tmp_path, capsys):
    run = str(tmp_path / "aae")
    assert main(["train", "aae", "--data", "digits", "--epochs", "1", "--conditional", "--prior", "mixture",
                 "--latent-dim", "2", "--hidden", "8", "--grid-samples", "2", "--out", run, "--quiet"]) == 0
    assert main(["sample", run, "-n", "10", "--class", "3", "-o", str(tmp_path / "aae.png")]) == 0
    assert main(["eval", run, "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "reconstruction -log p(x | encoder(x)), not a likelihood" in out and "importance" not in out
    tiny = ["--data", "digits", "--epochs", "1", "--out", str(tmp_path / "t"), "--quiet"]
    assert "add --conditional" in refused(["train", "aae", "--supervised", *tiny], capsys)
    assert "ties each class to a region of the prior" in refused(["train", "aae", "--conditional", *tiny], capsys)
    assert "--prior swiss_roll is 2-D" in refused(["train", "aae", "--prior", "swiss_roll", *tiny], capsys)


def test_gan_train_sample(tmp_path, capsys):
    run = str(tmp_path / "gan")
    assert main(["train", "dcgan", "--data", "digits", "--epochs", "1", "--conditional", "--loss", "hinge",
                 "--latent-dim", "8", "--hidden", "16", "--grid-samples", "2", "--out", run, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "hinge loss" in out and "discriminator" in out
    assert {"last", "metrics.jsonl", "samples"} <= set(os.listdir(run))
    assert main(["sample", run, "-n", "6", "--class", "3", "-o", str(tmp_path / "gan.png")]) == 0
    assert "a GAN has no likelihood" in refused(["eval", run, "--data", "digits"], capsys)
    capsys.readouterr()
    assert main(["eval", run, "--data", "digits", "--metrics", "fid,pr", "-n", "300", "--against", "val"]) == 0
    out = capsys.readouterr().out
    assert "300 samples against digits/val (180 images), features: digits-cnn-" in out, out
    assert "FID " in out and "precision " in out and "KID" not in out and "classifier agreement" in out


def test_progan_grows_samples_and_refuses_what_does_not_apply(tmp_path, capsys):
    run = str(tmp_path / "progan")
    assert main(["train", "progan", "--data", "digits", "--image-size", "8", "--conditional", "--hidden", "8",
                 "--fade-images", "64", "--stable-images", "64", "--stage-batch-sizes", "64,32", "--grid-samples",
                 "2", "--amp", "--out", run, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wasserstein loss" in out and "(1, 8, 8) with 256 levels" in out, out
    assert {"stage_1_4x4.png", "stage_2_8x8.png"} == set(os.listdir(os.path.join(run, "samples")))
    assert os.path.isfile(os.path.join(run, "last", "ema.safetensors"))  # progan keeps a generator EMA by default
    assert main(["sample", run, "-n", "4", "--class", "7", "-o", str(tmp_path / "p.png")]) == 0
    base = ["train", "progan", "--data", "digits", "--out", str(tmp_path / "x")]
    assert "power of two" in refused([*base, "--image-size", "12"], capsys)
    assert "applies to progan only" in refused(["train", "dcgan", "--data", "digits", "--fade-images", "5",
                                                "--out", str(tmp_path / "y")], capsys)
    assert "--norm spectral does not apply to progan" in refused([*base, "--image-size", "8", "--norm", "spectral"],
                                                            capsys)
    assert "grows in 2 stages" in refused([*base, "--image-size", "8", "--stages", "3"], capsys)
    assert "--epochs does not apply to progan" in refused([*base, "--image-size", "8", "--epochs", "3"], capsys)


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

    assert "--class must be in [0, 10)" in refused(["sample", run, "--class", "10", "-o", str(tmp_path / "x.png")],
                                                   capsys)
    Image.fromarray(top[:4].numpy()).save(tmp_path / "small.png")
    assert "is 8x4, the model samples 8x8" in refused(
        ["sample", run, "--partial", str(tmp_path / "small.png"), "-o", str(tmp_path / "x.png")], capsys)
    assert "no fastgen checkpoint there" in refused(["sample", str(tmp_path / "nothing"), "-o",
                                                     str(tmp_path / "x.png")], capsys)


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


def test_gan_under_torchrun_matches_one_process(tmp_path):
    """A WGAN-GP MLP GAN with a spectrally normalised critic and a generator EMA: 2 processes with
    the same global batch train to the parameters (and the average) of one process."""
    args = ["train", "mlp-gan", "--data", "digits", "--epochs", "1", "--batch-size", "64", "--grid-samples", "0",
            "--loss", "wasserstein", "--gp-weight", "10", "--n-critic", "2", "--norm", "spectral", "--ema", "0.9",
            "--hidden", "8", "--latent-dim", "8", "--conditional", "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastgen"]
    one = fastgen_cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, cwd=ROOT)
    assert two.returncode == 0, two.stderr
    assert "2 processes" in two.stdout and two.stdout.count("done: epoch 1") == 1  # rank 0 speaks
    for ema in (False, True):
        a = fastgen.load(str(tmp_path / "one" / "last"), ema=ema).state_dict()
        b = fastgen.load(str(tmp_path / "two" / "last"), ema=ema).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


# -- user errors: one line, exit code 2, no traceback ----------------------------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A trained tiny VAE run, a damaged copy of it, a plain directory and a file."""
    import shutil

    root = tmp_path_factory.mktemp("runs")
    vae = str(root / "vae")
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "8",
                 "--grid-samples", "0", "--out", vae, "--quiet"]) == 0
    shutil.copytree(os.path.join(vae, "last"), root / "cut")
    weights = root / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    (root / "dir").mkdir()
    (root / "file.txt").write_text("not a directory")
    return {"vae": vae, "cut": str(root / "cut"), "dir": str(root / "dir"), "file": str(root / "file.txt"),
            "root": str(root)}


USER_ERRORS = [
    (["sample", "{vae}", "-n", "0", "-o", "{root}/x.png"], "argument -n: must be a positive integer"),
    (["sample", "{vae}", "-o", "{dir}"], "is a directory; expected the path of a PNG file"),
    (["sample", "{vae}", "-o", "{file}/x.png"], "is a file, not a directory"),
    (["sample", "{vae}", "--device", "gpu", "-o", "{root}/x.png"], "device must be 'cpu', 'cuda' or 'cuda:N'"),
    (["sample", "{cut}", "-o", "{root}/x.png"], "model.safetensors: not readable safetensors weights"),
    (["sample", "{dir}", "-o", "{root}/x.png"], "no fastgen checkpoint there"),
    (["sample", "{vae}", "--seed", "-1", "-o", "{root}/x.png"], "argument --seed: must be a non-negative integer"),
    (["eval", "{vae}", "--data", "digits", "--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    (["eval", "{vae}", "--data", "npz:{file}"], "cannot be read as .npz"),
    (["eval", "{vae}", "--data", "digits", "--k", "-5"], "argument --k: must be a non-negative integer"),
    (["eval", "{vae}", "--data", "digits", "--metrics", "fid,bogus"], "argument --metrics: must be a comma-separated"),
    (["eval", "{vae}", "--data", "digits", "--metrics", "fid", "-n", "1"], "argument -n/--n: must be"),
    (["eval", "{vae}", "--data", "digits", "--metrics", "fid", "--inception-weights", "{root}/none.pth"],
     "none.pth: no such file"),
    (["train", "vae", "--data", "digits", "--eval-every", "0", "--out", "{root}/t"], "argument --eval-every"),
    (["train", "vae", "--data", "digits", "--eval-metrics", "fid,x", "--out", "{root}/t"],
     "argument --eval-metrics: must be a comma-separated"),
    (["train", "vae", "--data", "digits", "--val-fraction", "1.5", "--out", "{root}/t"],
     r"argument --val-fraction: must be a finite number in [0, 1)"),
    (["train", "vae", "--data", "digits", "--batch-size", "0", "--out", "{root}/t"],
     "argument --batch-size: must be a positive integer"),
    (["train", "vae", "--data", "imagenet:/x", "--out", "{root}/t"], "data spec must be one of"),
    (["train", "vae", "--data", "npz:{root}/missing.npz", "--out", "{root}/t"], "missing.npz: no such file"),
    (["train", "vae", "--data", "folder:{file}", "--out", "{root}/t"], "is not a directory"),
    (["train", "vae", "--data", "digits", "--lr", "inf", "--out", "{root}/t"], "argument --lr: must be positive"),
    (["train", "dcgan", "--data", "digits", "--lr", "inf", "--out", "{root}/t"], "argument --lr: must be positive"),
    (["train", "vae", "--data", "digits", "--lr", "nan", "--out", "{root}/t"], "argument --lr: must be positive"),
    (["train", "vae", "--data", "digits", "--lr-decay", "-1", "--out", "{root}/t"],
     r"argument --lr-decay: must be a finite number in (0, 1]"),
    (["train", "vae", "--data", "digits", "--grad-clip", "-1", "--out", "{root}/t"], "argument --grad-clip"),
    (["train", "vae", "--data", "digits", "--epochs", "0", "--out", "{root}/t"], "argument --epochs"),
    (["train", "vae", "--data", "digits", "--levels", "40", "--out", "{root}/t"], "--levels can only reduce them"),
    (["train", "vae", "--data", "digits", "--out", "{file}"], "not a directory"),
    (["train", "vae", "--data", "digits", "--out", "{vae}"], "already holds a run"),
    (["train", "vae", "--data", "digits", "--resume", "--out", "{dir}"], "nothing to resume"),
    (["train", "vae", "--data", "digits", "--resume", "--overwrite", "--out", "{dir}"], "not allowed with argument"),
    (["train", "gated-pixelcnn", "--data", "digits", "--hidden", "4096", "--layers", "256", "--out", "{root}/t"],
     "more than the"),
    (["train", "vae", "--data", "digits", "--bogus", "--out", "{root}/t"], "unrecognized arguments: --bogus"),
    (["demo", "--epochs", "0"], "argument --epochs: must be a positive integer"),
    (["demo", "--epochs", "-2"], "argument --epochs: must be a positive integer"),
    (["demo", "--out", "{vae}"], "already holds a run"),
    (["info", "--verbose"], "unrecognized arguments"),
    (["bench", "--device", "gpu"], "device must be 'cpu', 'cuda' or 'cuda:N'"),
    (["bench", "--repeats", "0"], "argument --repeats: must be a positive integer"),
    ([], "the following arguments are required: command"),
]
if not torch.cuda.is_available():
    USER_ERRORS.append((["sample", "{vae}", "--device", "cuda", "-o", "{root}/x.png"],
                        "no CUDA GPU is available here"))


@pytest.mark.parametrize("argv,message", USER_ERRORS, ids=[" ".join(a) or "nothing" for a, _ in USER_ERRORS])
def test_user_errors_are_one_line_with_exit_code_2(tiny_runs, capsys, argv, message):
    argv = [a.format(**tiny_runs) for a in argv]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits through its error()
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fastgen: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err


def test_the_installed_command_prints_one_line_and_debug_the_traceback(tmp_path):
    plain = fastgen_cli("sample", str(tmp_path / "nothing"))
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    for argv in (["--debug", "sample", str(tmp_path / "nothing")], ["sample", str(tmp_path / "nothing"), "--debug"]):
        debug = fastgen_cli(*argv)
        assert debug.returncode == 1 and "Traceback" in debug.stderr and "CheckpointError" in debug.stderr


def test_bench_outside_the_source_checkout_is_one_line(tmp_path):
    """Outside a checkout there is no bench package, and find_spec raised ModuleNotFoundError."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "fastgen", "bench", "--quick"], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2 and "the benchmark harness lives in the source checkout" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_finished_run_is_not_clobbered_and_overwrite_replaces_it(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--grid-samples", "0", "--out", out, *TINY]
    assert main(args) == 0
    best = (tmp_path / "run" / "best" / "model.safetensors").read_bytes()
    assert "already holds a run (best/, last/, metrics.jsonl)" in refused([*args, "--lr", "0.5"], capsys)
    assert (tmp_path / "run" / "best" / "model.safetensors").read_bytes() == best
    assert main([*args, "--overwrite", "--seed", "3"]) == 0
    assert json.loads((tmp_path / "run" / "last" / "config.json").read_text())["train_config"]["seed"] == 3


def test_a_diverging_run_stops_with_one_line_and_no_best_it_never_wrote(tmp_path, capsys):
    out = tmp_path / "vae"
    err = refused(["train", "vae", "--data", "digits", "--epochs", "2", "--lr", "1e6", "--latent-dim", "2",
                   "--hidden", "8", "--grid-samples", "2", "--out", str(out), "--quiet"], capsys)
    assert "training diverged at step" in err and "Lower the learning rate (lr=1e+06)" in err
    assert not (out / "best").exists() or torch.isfinite(params(fastgen.load(str(out / "best")))).all()
    if (out / "metrics.jsonl").exists():
        for line in (out / "metrics.jsonl").read_text().splitlines():
            json.loads(line, parse_constant=lambda token: pytest.fail(f"{token} in metrics.jsonl"))


def test_a_new_learning_rate_on_resume_applies_with_a_warning(tmp_path, capsys):
    args = ["train", "pixelcnn", "--data", "digits", "--grid-samples", "0", "--batch-size", "256",
            "--out", str(tmp_path / "run"), *TINY]
    assert main([*args, "--epochs", "1", "--lr", "2e-3"]) == 0
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--lr", "1e-4", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "fastgen: warning: resuming" in err and "lr changes from 0.002 to 0.0001" in err
    state = torch.load(tmp_path / "run" / "last" / "training.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)

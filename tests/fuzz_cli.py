"""Fuzzing the fastgen command line with bad command lines.

For every subcommand (train, sample, eval, convert, translate, demo, info, bench, and the bare
``fastgen``) the fuzzer starts from a valid, tiny command line and mutates it: bad numbers (negative,
zero, NaN, infinities, huge, not numbers), missing or wrong paths, directories where files belong,
damaged checkpoints, config.json and safetensors files, checkpoints of the wrong kind of model (a
pix2pix run for sample, a VAE for translate), bad data specs and data files (pix2pix pairs and
CycleGAN domain folders among them), images that cannot be translated, damaged PixelCNN++ weights
of the reference codes (a torch .pth, a TensorFlow checkpoint), bad ``train --config`` files (TOML
and run configs), unknown flags, empty strings. Each case runs
through ``fastgen.cli.main`` inside a worker process, with its stdout and stderr (file
descriptors 1 and 2, so a subprocess's output too) captured.

A case fails when its output holds a traceback, when it exits with a code other than 0 (success)
or 2 (a user error), when an exit code 2 comes without a ``fastgen: error:`` line (or the bench
harness's own argparse message), when it kills the worker with a signal, or when it runs past
the timeout. Cases are cheap: nearly all are refused before any training, and those that do train
use tiny models for one epoch. Demo and bench cases always carry a mutation that is refused before
any work, since a valid one would train the demo or run the benchmarks.

    python -m tests.fuzz_cli --cases 300 --seed 0 --out bench/results/fuzz-cli-<machine>.txt
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import os
import pickle
import platform
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("train", "sample", "eval", "convert", "translate", "demo", "info", "bench", "fastgen")
TRANSLATORS = ("pix2pix", "cyclegan")
FLOATS_BAD = ["-1", "-0.5", "nan", "inf", "-inf", "1e309", "x", "", "0x1p3"]  # for options that take floats >= 0
NUMBERS_BAD = ["0", "-1", "-7", "nan", "inf", "-inf", "1e309", "x", "", " ", "1.5", "0x10", "1e9", "--", "٣"]
HUGE = ["99999999999999999999", str(2**63), str(2**64 + 1)]
EVIL_MARK = "this must never run"  # printed by a pickle that was unpickled without weights_only


class Evil:
    """Pickles as a call of os.system: a file that holds it must be refused, never loaded."""

    def __reduce__(self):
        return (os.system, (f"echo {EVIL_MARK}",))


# -- results ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    group: str
    argv: list[str]
    code: int | None  # the exit code, None when the worker died
    output: str
    seconds: float
    signal: int | None = None
    timed_out: bool = False

    @property
    def failure(self) -> str | None:
        """Why this case fails, or None."""
        if self.timed_out:
            return "timeout"
        if self.signal is not None:
            return f"signal {signal.Signals(self.signal).name}"
        if "Traceback" in self.output:
            return "traceback"
        if EVIL_MARK in self.output:
            return "ran code from a pickle"
        if self.code not in (0, 2):
            return f"exit code {self.code}"
        if self.code == 2 and not any(line.startswith("fastgen: error: ") or "python -m bench: error:" in line
                                      for line in self.output.splitlines()):
            return "exit code 2 without a one-line error"
        return None


# -- the worker: runs cases in-process, one at a time ------------------------------------------------------
def _run_in_process(argv: list[str]) -> tuple[int, str]:
    """Run ``fastgen.cli.main(argv)`` with fds 1 and 2 captured; an exception that escapes it is
    reported with its traceback (as the interpreter would print it), exit code 1."""
    from fastgen.cli import main

    with tempfile.TemporaryFile() as capture:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            try:
                if argv[:1] == ["__crash__"]:  # test hooks: the fuzzer's own test checks it sees these
                    raise RuntimeError("a deliberate crash")
                if argv[:1] == ["__signal__"]:
                    os.kill(os.getpid(), signal.SIGSEGV)
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except BaseException:  # noqa: B902 - anything that escapes main is a crash to report
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        capture.seek(0)
        return code, capture.read().decode("utf-8", "replace")


def worker() -> int:
    """Read one JSON list of arguments per line on stdin; answer one JSON object per line on the
    original stdout (the cases write to a capture file instead)."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray writes between cases must not corrupt the answers
    import torch

    torch.set_num_threads(1)  # cases are tiny; one thread avoids oversubscribing a shared machine
    for line in sys.stdin:
        argv = json.loads(line)
        start = time.perf_counter()
        code, output = _run_in_process(argv)
        answers.write(json.dumps({"code": code, "output": output[-20000:],
                                  "seconds": time.perf_counter() - start}) + "\n")
    return 0


class Worker:
    """A worker process, restarted after a case kills it or runs past the timeout."""

    def __init__(self, cwd: str, timeout: float):
        self.cwd, self.timeout, self.process = cwd, timeout, None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.fuzz_cli", "--worker"], cwd=self.cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, bufsize=1)

    def run(self, group: str, argv: list[str]) -> Result:
        if self.process is None or self.process.poll() is not None:
            self._start()
        start = time.perf_counter()
        self.process.stdin.write(json.dumps(argv) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        line = self.process.stdout.readline() if ready else ""
        if line:
            answer = json.loads(line)
            return Result(group, argv, answer["code"], answer["output"], answer["seconds"])
        timed_out = not ready
        if timed_out:
            self.process.kill()
        code = self.process.wait()
        self.process = None
        return Result(group, argv, None, "", time.perf_counter() - start,
                      signal=-code if code < 0 and not timed_out else None, timed_out=timed_out)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


# -- the files the cases point at -----------------------------------------------------------------------------
class Workspace:
    """Tiny trained runs (of the generative models, and of pix2pix and CycleGAN), damaged copies of
    them, data files good and bad (pix2pix pairs and CycleGAN domains among them), images to
    translate, and paths of every kind, under one temporary directory."""

    def __init__(self, root: str, worker: Worker):
        self.root = root
        self.counter = 0
        self.paths: dict[str, str] = {}
        self._data()
        self._runs(worker)
        self._damaged_checkpoints()
        self._weights(worker)
        self._configs()

    def fresh(self, name: str = "out") -> str:
        """A path that does not exist yet."""
        self.counter += 1
        return os.path.join(self.root, "fresh", f"{name}-{self.counter}")

    def copy_of(self, path: str) -> str:
        """A copy of a run directory, so that a case that trains into it leaves the original intact."""
        target = self.fresh("copy")
        shutil.copytree(path, target)
        return target

    def _path(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.paths[name] = path
        return path

    # data ---------------------------------------------------------------------------------------------
    def _data(self) -> None:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), np.arange(20) % 10
        np.savez(self._path("npz/good.npz"), images=images, labels=labels)
        np.savez(self._path("npz/float.npz"), images=images.astype(np.float32) / 3)
        np.savez(self._path("npz/rgba.npz"), images=rng.integers(0, 256, (20, 8, 8, 4), dtype=np.uint8))
        np.savez(self._path("npz/float-labels.npz"), images=images, labels=labels + 0.5)
        np.savez(self._path("npz/label-255.npz"), images=images, labels=np.where(labels == 3, 255, labels))
        np.savez(self._path("npz/empty.npz"), images=np.zeros((0, 8, 8), np.uint8))
        np.savez(self._path("npz/one.npz"), images=images[:1])
        good = open(self.paths["npz/good.npz"], "rb").read()
        open(self._path("npz/truncated.npz"), "wb").write(good[: len(good) // 2])
        open(self._path("files/text.txt"), "w").write("not data\n")
        open(self._path("files/empty"), "wb").close()
        os.makedirs(self._path("dirs/empty"), exist_ok=True)
        self._path("folder/good")
        for cls in ("a", "b"):
            os.makedirs(self._path(f"folder/good/{cls}"), exist_ok=True)
            for k in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    os.path.join(self.paths[f"folder/good/{cls}"], f"{k}.png"))
        shutil.copytree(self.paths["folder/good"], self._path("folder/bad-image"))
        open(os.path.join(self.paths["folder/bad-image"], "a", "broken.png"), "wb").write(b"\x89PNG not really")
        os.makedirs(self._path("folder/sixteen-bit"), exist_ok=True)
        Image.fromarray((rng.integers(0, 65536, (8, 8))).astype(np.uint16)).save(
            os.path.join(self.paths["folder/sixteen-bit"], "g.png"))
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(self._path("files/partial.png"))
        Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8)).save(self._path("files/small.png"))
        self._mnist(rng)
        self._cifar(rng)
        self._translation_data(rng)

    def _mnist(self, rng) -> None:
        import numpy as np

        def idx(path: str, array, *, gz: bool = False, shape: tuple | None = None) -> None:
            shape = array.shape if shape is None else shape
            data = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + array.tobytes()
            with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
                f.write(data)

        images, labels = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), (np.arange(12) % 10).astype(np.uint8)
        for name, gz, label_values in (("good", False, labels), ("gz", True, labels),
                                       ("label-255", False, np.where(labels == 4, 255, labels).astype(np.uint8))):
            directory = self._path(f"mnist/{name}")
            os.makedirs(directory, exist_ok=True)
            suffix = ".gz" if gz else ""
            for prefix in ("train", "t10k"):
                idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), images, gz=gz)
                idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), label_values, gz=gz)
        bomb = self._path("mnist/bomb")
        os.makedirs(bomb, exist_ok=True)
        with gzip.open(os.path.join(bomb, "train-images-idx3-ubyte.gz"), "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 12, 8, 8))
            for _ in range(20):
                f.write(bytes(1 << 20))  # 20 MB of zeros behind a header declaring 768 bytes
        idx(os.path.join(bomb, "train-labels-idx1-ubyte"), labels)
        lying = self._path("mnist/lying")
        os.makedirs(lying, exist_ok=True)
        idx(os.path.join(lying, "train-images-idx3-ubyte"), images[:1], shape=(60000, 4096, 4096))
        idx(os.path.join(lying, "train-labels-idx1-ubyte"), labels)
        for directory in (bomb, lying):  # the same files for the test split
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                for name in os.listdir(directory):
                    if name.startswith(f"train-{kind}"):
                        shutil.copy(os.path.join(directory, name), os.path.join(directory, "t10k" + name[5:]))

    def _cifar(self, rng) -> None:
        import numpy as np

        for name, data in (("good", rng.integers(0, 256, (3, 3072), dtype=np.uint8)),
                           ("float", rng.random((3, 3072)) * 300),
                           ("evil", None)):
            directory = self._path(f"cifar/{name}")
            os.makedirs(directory, exist_ok=True)
            for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
                content = {b"data": Evil()} if data is None else {b"data": data, b"labels": [0, 1, 2]}
                open(os.path.join(directory, batch), "wb").write(pickle.dumps(content, protocol=2))

    def _translation_data(self, rng) -> None:
        """pix2pix pair folders (pairs/*) and CycleGAN domain folders (unpaired/*), good (tiny: 8x8
        images, one training step) and bad, and the images ``translate`` reads (inputs/*, files/*)."""
        import numpy as np
        from PIL import Image

        def folder(name: str, files: dict[str, tuple | bytes]) -> None:
            """A folder of images of these (H, W) or (H, W, C) shapes, or of these raw bytes; a name
            ending in / is an empty directory."""
            root = self._path(name)
            os.makedirs(root, exist_ok=True)
            for relative, content in files.items():
                path = os.path.join(root, relative)
                os.makedirs(path if relative.endswith("/") else os.path.dirname(path), exist_ok=True)
                if relative.endswith("/"):
                    continue
                if isinstance(content, bytes):
                    open(path, "wb").write(content)
                else:
                    image = Image.fromarray(rng.integers(0, 256, content, dtype=np.uint8))
                    image.save(path, format="JPEG" if relative.lower().endswith(".jpg") else "PNG")

        rgb, grey, junk = (8, 8, 3), (8, 8), b"\x89PNG not really"
        good = {  # the only ones valid cases train on: a step or two on 8x8 (or 12x12) images
            "pairs/side-by-side": {"train/0.png": (8, 16, 3), "train/1.png": (8, 16), "val/0.png": (8, 16, 3)},
            "pairs/a-b": {"A/train/0.png": grey, "A/train/1.png": rgb, "B/train/0.png": rgb, "B/train/1.png": grey},
            "unpaired/good": {"trainA/0.png": rgb, "trainA/1.png": grey, "trainA/2.png": rgb, "trainB/0.png": rgb},
            "unpaired/size-12": {"trainA/0.png": (12, 12), "trainB/0.png": (12, 12, 3)},
        }
        bad = {
            "pairs/odd-width": {"train/0.png": (8, 15, 3)},
            "pairs/both-layouts": {"train/0.png": (8, 16), "A/train/0.png": grey, "B/train/0.png": grey},
            "pairs/names-differ": {"A/train/0.png": grey, "B/train/1.png": grey},
            "pairs/only-a": {"A/train/0.png": grey},
            "pairs/sizes": {"train/0.png": (8, 16), "train/1.png": (16, 32)},
            "pairs/a-b-sizes": {"A/train/0.png": grey, "B/train/0.png": (16, 16)},
            "pairs/not-square": {"train/0.png": (8, 32)},
            "pairs/size-12": {"train/0.png": (12, 24)},  # the U-Net halves the size down to 1x1: powers of two
            "pairs/size-4": {"train/0.png": (4, 8)},
            "pairs/empty-train": {"train/": b""},
            "pairs/empty-val": {"train/0.png": (8, 16), "val/": b""},
            "pairs/bad-val": {"train/0.png": (8, 16), "val/0.png": (8, 15)},
            "pairs/broken": {"train/0.png": junk},
            "pairs/test-only": {"test/0.png": (8, 16)},
            "unpaired/empty-b": {"trainA/0.png": rgb, "trainB/": b""},
            "unpaired/no-b": {"trainA/0.png": rgb},
            "unpaired/sizes": {"trainA/0.png": rgb, "trainB/0.png": (12, 12, 3)},
            "unpaired/mixed-sizes": {"trainA/0.png": rgb, "trainA/1.png": (12, 12, 3), "trainB/0.png": rgb},
            "unpaired/not-square": {"trainA/0.png": (8, 12), "trainB/0.png": (8, 12)},
            "unpaired/size-10": {"trainA/0.png": (10, 10), "trainB/0.png": (10, 10)},  # the generators halve it twice
            "unpaired/broken": {"trainA/0.png": rgb, "trainB/0.png": junk},
            "unpaired/flat": {"0.png": rgb},  # images, but not in trainA/ and trainB/
            # images translate reads: a folder of good ones of every kind (sizes, modes, JPEG, upper-case suffix;
            # a directory and a text file that are not images beside them), and folders it must refuse
            "inputs/good": {"a.png": (32, 32), "b.png": (20, 12, 3), "c.jpg": rgb, "D.PNG": (16, 16, 4),
                            "e.png": (1, 300), "sub.png/": b"", "notes.txt": b"not an image\n"},
            "inputs/broken": {"a.png": grey, "b.png": junk},
            "inputs/zero-bytes": {"a.png": b""},
            "inputs/only-dirs": {"x.png/": b""},
            "outputs/clash": {"a.png/": b"", "e.png/": b""},  # directories where translations of inputs/good go
        }
        for name, files in {**good, **bad}.items():
            folder(name, files)
        self.translation_folders = {"good": sorted(good), "bad": sorted(bad)}
        # single files that decode, but not as 8-bit images: a float and a 32-bit integer image (TIFF named .png)
        Image.fromarray(rng.random((8, 8), dtype=np.float32)).save(self._path("files/float.png"), format="TIFF")
        Image.fromarray(rng.integers(0, 2**31, (8, 8), dtype=np.int32)).save(self._path("files/int32.png"),
                                                                             format="TIFF")

    # runs ---------------------------------------------------------------------------------------------
    RUNS = {
        "pixelcnn": ["train", "pixelcnn", "--data", "digits", "--conditional", "--hidden", "8", "--layers", "1",
                     "--kernel-size", "3"],
        "pixelcnnpp": ["train", "pixelcnnpp", "--data", "digits", "--hidden", "8", "--layers", "1", "--nr-mix", "2"],
        "vae": ["train", "vae", "--data", "digits", "--conditional", "--hidden", "8", "--latent-dim", "2", "--ema",
                "0.9"],
        "dcgan": ["train", "dcgan", "--data", "digits", "--conditional", "--hidden", "8", "--latent-dim", "2"],
    }
    # The image-to-image runs, apart: only translate takes them (sample and eval must refuse them). A grey 32x32
    # pix2pix (edges-digits: 5 steps, about 3 s) and an RGB 8x8 CycleGAN ("@unpaired/good", the workspace's folder of
    # 8x8 images: one step, well under a second; inverted-digits would take about 5 s).
    TRANSLATOR_RUNS = {
        "pix2pix": ["train", "pix2pix", "--data", "edges-digits", "--hidden", "4", "--dropout", "0.1"],
        "cyclegan": ["train", "cyclegan", "--data", "@unpaired/good", "--hidden", "4", "--layers", "1",
                     "--pool-size", "4"],
    }

    def _runs(self, worker: Worker) -> None:
        for name, argv in {**self.RUNS, **self.TRANSLATOR_RUNS}.items():
            argv = [f"unpaired:{self.paths[a[1:]]}" if a.startswith("@") else a for a in argv]
            out = self._path(f"runs/{name}")
            result = worker.run("setup", [*argv, "--epochs", "1", "--batch-size", "256", "--grid-samples", "0",
                                          "--quiet", "--out", out])
            if result.code != 0:
                raise RuntimeError(f"could not train the fuzzer's {name} run: {result.output}")

    def _damaged_checkpoints(self) -> None:
        """Copies of the tiny runs' last checkpoints with one file damaged each, both as checkpoint
        directories and as run directories (damaged/<name>/last)."""
        import torch
        from safetensors.torch import load_file, save_file

        edits = {
            "config-empty": ("config.json", b""),
            "config-half": ("config.json", b'{"format": "fastgen-che'),
            "config-list": ("config.json", b"[1, 2]"),
            "config-null": ("config.json", b"null"),
            "config-format-only": ("config.json", b'{"format": "fastgen-checkpoint"}'),
            "weights-empty": ("model.safetensors", b""),
            "weights-junk": ("model.safetensors", os.urandom(300)),
            "weights-lying-header": ("model.safetensors", struct.pack("<Q", 64) +
                                     json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6],
                                                       "data_offsets": [0, 4]}}).encode().ljust(64) + bytes(4)),
            "training-junk": ("training.pt", b"not a pickle"),
            "ema-junk": ("ema.safetensors", b"\x00" * 20),
        }
        config_edits = {
            "version-string": lambda c: c.update(version="2"),
            "version-future": lambda c: c.update(version=99),
            "type-list": lambda c: c.update(model_type=["VAE"]),
            "type-unknown": lambda c: c.update(model_type="ResNet"),
            "model-config-list": lambda c: c.update(model_config=[1]),
            "hidden-huge": lambda c: c["model_config"].update(hidden=10**9),
            "latent-huge": lambda c: c["model_config"].update(latent_dim=10**9),
            "levels-zero": lambda c: c["model_config"].update(levels=0),
            "size-negative": lambda c: c["model_config"].update(image_size=[-8, 8]),
            "size-string": lambda c: c["model_config"].update(image_size="8"),
            "unknown-argument": lambda c: c["model_config"].update(bogus=1),
            "no-model-config": lambda c: c.pop("model_config"),
            "step-string": lambda c: c.update(step="7"),
            "history-junk": lambda c: c.update(history=[1]),
            "nan-token": None,
        }
        base = os.path.join(self.paths["runs/vae"], "last")
        for name, (file, content) in edits.items():
            path = self._damaged(name, base)
            open(os.path.join(path, file), "wb").write(content)
        for name, edit in config_edits.items():
            path = self._damaged(name, base)
            config_file = os.path.join(path, "config.json")
            if edit is None:
                text = open(config_file).read().replace('"latent_dim": 2', '"latent_dim": NaN')
            else:
                config = json.load(open(config_file))
                edit(config)
                text = json.dumps(config)
            open(config_file, "w").write(text)
        path = self._damaged("config-is-a-directory", base)
        os.remove(os.path.join(path, "config.json"))
        os.makedirs(os.path.join(path, "config.json"))
        path = self._damaged("no-weights", base)
        os.remove(os.path.join(path, "model.safetensors"))
        path = self._damaged("nan-weights", os.path.join(self.paths["runs/dcgan"], "last"))
        weights = load_file(os.path.join(path, "model.safetensors"))
        first = next(k for k, v in weights.items() if v.is_floating_point())
        weights[first] = torch.full_like(weights[first], float("nan"))
        save_file(weights, os.path.join(path, "model.safetensors"))
        path = self._damaged("truncated-weights", os.path.join(self.paths["runs/pixelcnn"], "last"))
        data = open(os.path.join(path, "model.safetensors"), "rb").read()
        open(os.path.join(path, "model.safetensors"), "wb").write(data[:-100])
        self._damaged_translators()

    def _damaged_translators(self) -> None:
        """Damaged copies of the pix2pix and CycleGAN checkpoints (damaged/pix2pix-*, damaged/cyclegan-*:
        configs that do not fit the weights, or no model at all), and a valid variant
        (variants/pix2pix-levels-2: the same weights read as 2-level images)."""
        edits = {
            "pix2pix": {
                "size-12": lambda c: c["model_config"].update(image_size=12),  # not a power of two
                "size-16": lambda c: c["model_config"].update(image_size=16),  # a shallower U-Net
                "size-huge": lambda c: c["model_config"].update(image_size=2**20),
                "patch-layers-8": lambda c: c["model_config"].update(patch_layers=8),
                "patch-layers-zero": lambda c: c["model_config"].update(patch_layers=0),
                "channels-3": lambda c: c["model_config"].update(source_channels=3),
                "channels-2": lambda c: c["model_config"].update(target_channels=2),
                "width-huge": lambda c: c["model_config"].update(width=10**9),
                "loss-wasserstein": lambda c: c["model_config"].update(loss="wasserstein"),
                "dropout-one": lambda c: c["model_config"].update(dropout=1.0),
                "l1-negative": lambda c: c["model_config"].update(l1_weight=-1),
                "as-cyclegan": lambda c: c.update(model_type="CycleGAN"),
                "blocks": lambda c: c["model_config"].update(blocks=2),
            },
            "cyclegan": {
                "blocks-huge": lambda c: c["model_config"].update(blocks=10**6),
                "blocks-zero": lambda c: c["model_config"].update(blocks=0),
                "identity-negative": lambda c: c["model_config"].update(identity_weight=-1),
                "identity-channels": lambda c: c["model_config"].update(target_channels=1),
                "size-10": lambda c: c["model_config"].update(image_size=10),
                "levels-one": lambda c: c["model_config"].update(levels=1),
                "as-pix2pix": lambda c: c.update(model_type="Pix2Pix"),
                "config-null": lambda c: c.update(model_config=None),
            },
        }
        for run, run_edits in edits.items():
            base = os.path.join(self.paths[f"runs/{run}"], "last")
            for name, edit in run_edits.items():
                config_file = os.path.join(self._damaged(f"{run}-{name}", base), "config.json")
                config = json.load(open(config_file))
                edit(config)
                open(config_file, "w").write(json.dumps(config))
        config_file = os.path.join(self._path("variants/pix2pix-levels-2/last"), "config.json")
        shutil.copytree(os.path.join(self.paths["runs/pix2pix"], "last"), os.path.dirname(config_file))
        config = json.load(open(config_file))
        config["model_config"]["levels"] = 2
        open(config_file, "w").write(json.dumps(config))

    def _damaged(self, name: str, source: str) -> str:
        """damaged/<name>/last: a copy of the checkpoint ``source``, to be damaged."""
        path = self._path(f"damaged/{name}/last")
        shutil.copytree(source, path)
        return path

    # reference-code weights (fastgen convert) ------------------------------------------------------------
    def _weights(self, worker: Worker) -> None:
        """A tiny pclucas14 state dict (.pth) and openai checkpoint (PREFIX.index + shard), damaged
        copies of both, and a checkpoint converted from the first (converted/pclucas14)."""
        import torch

        from tests.pixelcnnpp_sources import openai_variables, pclucas14_state_dict
        from tests.test_tf_checkpoint import Spec, write_bundle

        state = pclucas14_state_dict(1, 4, 2, seed=0)
        torch.save(state, self._path("weights/pclucas14.pth"))
        good = open(self.paths["weights/pclucas14.pth"], "rb").read()
        open(self._path("weights/truncated.pth"), "wb").write(good[: len(good) // 2])
        open(self._path("weights/garbage.pth"), "wb").write(random.Random(0).randbytes(300))
        open(self._path("weights/empty.pth"), "wb").close()
        first = "u_init.conv.weight_v"
        damaged = {
            "list": list(state.values()),
            "missing-tensor": {k: v for k, v in state.items() if k != "nin_out.lin_a.bias"},
            "missing-first": {k: v for k, v in state.items() if k != first},
            "extra-tensor": {**state, "up_layers.0.u_stream.7.conv_input.conv.bias": torch.zeros(4)},
            "reshaped": {**state, "down_layers.1.ul_stream.0.conv_out.conv.weight_v":
                         state["down_layers.1.ul_stream.0.conv_out.conv.weight_v"].flatten()},
            "first-reshaped": {**state, first: state[first].flatten()},
            "nan": {**state, "nin_out.lin_a.weight_g": torch.full_like(state["nin_out.lin_a.weight_g"], float("nan"))},
            "int-tensor": {**state, "nin_out.lin_a.bias": state["nin_out.lin_a.bias"].long()},
            "not-a-tensor": {**state, first: [1.0, 2.0]},
            "number-keys": {k: v for k, v in enumerate(state.values())},
            "data-parallel": {f"module.{k}": v for k, v in state.items()},  # valid: nn.DataParallel's names
            "class": {**state, "args": argparse.Namespace(lr=1e-3)},  # a class weights_only must refuse
            "evil": {**state, "x": Evil()},
            "empty-dict": {},
        }
        for name, content in damaged.items():
            torch.save(content, self._path(f"weights/{name}.pth"))
        open(self._path("weights/evil-pickle.pth"), "wb").write(pickle.dumps({first: Evil()}, protocol=2))

        variables = openai_variables(1, 4, 2, seed=0, ema=True)
        ema = "/ExponentialMovingAverage"
        bundles = {
            "openai": [Spec(n, t) for n, t in variables.items()],
            "openai-no-ema": [Spec(n, t) for n, t in openai_variables(1, 4, 2, seed=0).items()],  # valid
            "openai-partial-ema": [Spec(n, t) for n, t in variables.items() if n != "model/conv2d_3/V" + ema],
            "openai-missing": [Spec(n, t) for n, t in variables.items() if not n.startswith("model/conv2d_3/V")],
            "openai-nan": [Spec(n, torch.full_like(t, float("nan")) if n == "model/dense_0/b" + ema else t)
                           for n, t in variables.items()],
            "openai-reshaped": [Spec(n, t.flatten() if n.startswith("model/deconv2d_0/V") else t)
                                for n, t in variables.items()],
            "openai-lying-shape": [Spec(n, t, shape=(10**6, 10**6) if n == "model/conv2d_0/V" + ema else None)
                                   for n, t in variables.items()],
            "openai-lying-offset": [Spec(n, t, offset=10**12 if n == "model/conv2d_0/b" + ema else None)
                                    for n, t in variables.items()],
            "openai-not-pixelcnn": [Spec("model/dense/W", torch.ones(3, 2)), Spec("global_step", torch.tensor(1))],
        }
        for name, specs in bundles.items():
            write_bundle(self._path(f"weights/{name}.ckpt"), specs)
        prefix = self.paths["weights/openai.ckpt"]
        index, data = open(prefix + ".index", "rb").read(), open(prefix + ".data-00000-of-00001", "rb").read()
        for name, (index_bytes, data_bytes) in {
                "openai-half-index": (index[: len(index) // 2], data),
                "openai-random-index": (random.Random(1).randbytes(len(index)), data),
                "openai-empty-index": (b"", data),
                "openai-no-data": (index, None),
                "openai-truncated-data": (index, data[: len(data) // 2])}.items():
            path = self._path(f"weights/{name}.ckpt")
            open(path + ".index", "wb").write(index_bytes)
            if data_bytes is not None:
                open(path + ".data-00000-of-00001", "wb").write(data_bytes)
        out = self._path("converted/pclucas14")
        result = worker.run("setup", ["convert", self.paths["weights/pclucas14.pth"], "-o", out, "--source",
                                      "pclucas14", "--image-size", "8"])
        if result.code != 0:
            raise RuntimeError(f"could not convert the fuzzer's pclucas14 weights: {result.output}")

    # train --config files -----------------------------------------------------------------------------
    FULL_TOML = ('model = "pixelcnn"\ndata = "digits"\nepochs = 1\nhidden = 8\nlayers = 1\nkernel-size = 3\n'
                 'batch_size = 256\ngrid-samples = 0\nquiet = true\n')

    def _configs(self) -> None:
        """TOML and JSON files for ``train --config``: valid ones (configs/good-*: tiny, or setting options
        that the fuzzer's command lines override), and bad ones (configs/bad-*)."""
        good = {
            "empty.toml": "",
            "full.toml": self.FULL_TOML,  # a whole tiny run: the command line may leave out model and --data
            # large options that every train command line of the fuzzer sets again, tiny
            "overridden.toml": ('model = "vae"\ndata = "digits-binary"\nepochs = 50\nhidden = 512\nlayers = 12\n'
                                '"nr-mix" = 10\nlatent_dim = 64\nkernel_size = 7\nbatch-size = 1\n'
                                f'grid-samples = 100\nquiet = false\nout = {json.dumps(self.paths["runs/vae"])}\n'),
            "underscores.toml": "batch_size = 256\ngrid_samples = 0\nval_fraction = 0.1\nlr_decay = 0.9\nseed = 3\n",
            "nulls.json": json.dumps({"levels": None, "ema": None, "lr": None}),
            "flat.json": json.dumps({"lr": 0.002, "grad-clip": 0.5, "dropout": 0.1}),
        }
        bad = {
            "invalid.toml": "epochs = \n",
            "brackets.toml": "[[[\n",
            "duplicate.toml": "epochs = 1\nepochs = 2\n",
            "unknown-key.toml": "bogus = 1\n",
            "near-key.toml": "batch-sizes = 256\n",
            "config-key.toml": 'config = "other.toml"\n',
            "help-key.toml": "help = true\n",
            "empty-key.toml": '"" = 1\n',
            "string-number.toml": 'batch-size = "x"\n',
            "zero.toml": "batch-size = 0\n",
            "negative-epochs.toml": "epochs = -1\n",
            "float-epochs.toml": "epochs = 1.5\n",
            "huge-epochs.toml": "epochs = 99999999999999999999\n",
            "nan-lr.toml": "lr = nan\n",
            "inf-lr.toml": "lr = inf\n",
            "bool-number.toml": "hidden = true\n",
            "number-bool.toml": "conditional = 1\n",
            "string-bool.toml": 'amp = "true"\n',
            "model-unknown.toml": 'model = "resnet"\n',
            "model-number.toml": "model = 3\n",
            "choice.toml": 'likelihood = "gauss"\n',
            "levels.toml": "levels = 1\n",
            "list.toml": "hidden = [8]\n",
            "date.toml": "seed = 1979-05-27\n",
            "nested.toml": "[train]\nepochs = 1\n",
            "dotted.toml": "epochs.value = 1\n",
            "inline-table.toml": 'data = {spec = "digits"}\n',
            "out-empty.toml": 'out = ""\n',
            "out-nul.toml": 'out = "a\\u0000b"\n',
            "data-empty.toml": 'data = ""\n',
            "device.toml": 'device = "tpu"\n',
            "resume-overwrite.toml": "resume = true\noverwrite = true\n",
            "resume.toml": "resume = true\n",
            "deep.toml": "a = " + "[" * 50000 + "\n",
            "bom.toml": "\ufeffepochs = 1\n",
            "wrong-extension.yaml": "epochs: 1\n",
            "no-extension": "epochs = 1\n",
            "array.json": "[1, 2]",
            "null.json": "null",
            "string.json": '"epochs"',
            "empty.json": "",
            "half.json": '{"format": "fastgen-run',
            "nan.json": '{"lr": NaN}',
            "deep.json": "[" * 100000,
            "unknown.json": '{"bogus": 1}',
            "nested.json": '{"epochs": {"n": 1}}',
            "bool-epochs.json": '{"epochs": true}',
            "big-number.json": '{"lr": 1e999}',
        }
        for name, text in good.items():
            open(self._path(f"configs/good-{name}"), "w").write(text)
        for name, text in bad.items():
            open(self._path(f"configs/bad-{name}"), "w", encoding="utf-8").write(text)
        open(self._path("configs/bad-non-utf8.toml"), "wb").write(b"epochs = 1\n# \xff\xfe\n")
        open(self._path("configs/bad-nul.toml"), "wb").write(b"epochs = 1\x00\n")
        open(self._path("configs/bad-latin1.json"), "wb").write(b'{"data": "d\xe9j\xe0"}')
        with open(self._path("configs/bad-huge.toml"), "wb") as f:
            f.write(b"epochs = 1\n" + b"#" * (1 << 20) + b"\n")
        os.makedirs(self._path("configs/bad-directory.toml"), exist_ok=True)
        run_config = json.load(open(os.path.join(self.paths["runs/vae"], "config.json")))
        run_edits = {
            "future": lambda c: c.update(version=99),
            "version-string": lambda c: c.update(version="1"),
            "version-bool": lambda c: c.update(version=True),
            "version-zero": lambda c: c.update(version=0),
            "no-version": lambda c: c.pop("version"),
            "options-list": lambda c: c.update(options=[1]),
            "no-options": lambda c: c.pop("options"),
            "options-unknown": lambda c: c["options"].update(bogus=1),
            "options-config": lambda c: c["options"].update(config="x.toml"),
            "options-zero-epochs": lambda c: c["options"].update(epochs=0),
            "options-string-batch": lambda c: c["options"].update({"batch-size": "256"}),
            "options-model": lambda c: c["options"].update(model="VAE"),
            "other-format": lambda c: c.update(format="fastgen-run-config-2"),
        }
        for name, edit in run_edits.items():
            config = json.loads(json.dumps(run_config))
            edit(config)
            open(self._path(f"configs/bad-run-{name}.json"), "w").write(json.dumps(config))

    # pools --------------------------------------------------------------------------------------------
    def runs(self) -> list[str]:
        """The generative models' runs (not the translators')."""
        return [self.paths[f"runs/{name}"] for name in self.RUNS]

    def translator_runs(self) -> list[str]:
        return [self.paths[f"runs/{name}"] for name in self.TRANSLATOR_RUNS]

    def translator_checkpoints(self) -> list[str]:
        """What translate takes: the pix2pix and CycleGAN runs, their last/ checkpoints, a valid variant."""
        runs = self.translator_runs()
        return runs + [os.path.join(r, "last") for r in runs] + [self.paths["variants/pix2pix-levels-2/last"]]

    def translation_data(self, model: str | None = None) -> list[str]:
        """--data that ``model`` (pix2pix or cyclegan; None: both) trains on."""
        p, folders = self.paths, self.translation_folders["good"]
        specs = {"pix2pix": ["edges-digits"] + [f"pairs:{p[k]}" for k in folders if k.startswith("pairs/")],
                 "cyclegan": ["inverted-digits"] + [f"unpaired:{p[k]}" for k in folders if k.startswith("unpaired/")]}
        return specs[model] if model else specs["pix2pix"] + specs["cyclegan"]

    def bad_translation_data(self) -> list[str]:
        """--data that neither translator trains on: bad pair and domain folders, paths that are no such folders,
        and, for each model, the other's data (given to every translator case, so it may be the other's)."""
        p = self.paths
        folders = [f"{k.split('/')[0]}:{p[k]}" for k in self.translation_folders["bad"]
                   if k.startswith(("pairs/", "unpaired/"))]
        return folders + [
            f"pairs:{p['dirs/empty']}", f"pairs:{p['files/text.txt']}", f"pairs:{os.path.join(self.root, 'missing')}",
            f"unpaired:{p['dirs/empty']}", f"unpaired:{p['files/text.txt']}", f"unpaired:{p['folder/good']}",
            f"pairs:{p['unpaired/good']}", f"unpaired:{p['pairs/a-b']}", f"pairs:{p['folder/good']}",
            "pairs:", "unpaired:", "edges-digits:x", "inverted-digits:", "EDGES-DIGITS", "edges_digits", "pairs",
            f"folder:{p['inputs/good']}"]

    def good_inputs(self) -> list[str]:
        """What translate reads: folders of images of any size and mode, single images (PNG, JPEG, tiny, 16-bit)."""
        p = self.paths
        return [p["inputs/good"], p["folder/good/a"], p["folder/sixteen-bit"], p["files/partial.png"],
                p["files/small.png"], os.path.join(p["inputs/good"], "c.jpg"), os.path.join(p["inputs/good"], "D.PNG"),
                os.path.join(p["inputs/good"], "e.png")]

    def bad_inputs(self) -> list[str]:
        p = self.paths
        return [p["inputs/broken"], p["inputs/zero-bytes"], p["inputs/only-dirs"], p["files/float.png"],
                p["files/int32.png"], p["files/text.txt"], p["files/empty"], p["dirs/empty"], p["folder/good"],
                os.path.join(p["folder/bad-image"], "a"), p["npz/good.npz"], p["runs/vae"], os.path.join(p["runs/pix2pix"], "last"),
                os.path.join(self.root, "missing.png"), os.path.join(self.root, "missing"), "",
                os.path.join(p["files/text.txt"], "x.png"), os.path.join(p["inputs/zero-bytes"], "a.png"),
                os.path.join(p["inputs/broken"], "b.png"), os.path.join(p["inputs/only-dirs"], "x.png")]

    def translate_outputs(self) -> list[str]:
        """Where translate must refuse to write (a file, a path under a file), or may (directories: the cases
        get copies of those, see ``translate_writable_outputs``)."""
        p = self.paths
        return [p["files/text.txt"], os.path.join(p["files/text.txt"], "out"), p["files/partial.png"],
                os.path.join(p["files/text.txt"], "deeper", "out"), "", os.path.join(p["files/empty"], "x.png"),
                *self.translate_writable_outputs()]

    def translate_writable_outputs(self) -> list[str]:
        """Existing directories translate may write into (an empty one, images to be replaced, a run), or not
        (outputs/clash: directories named like the translated images): cases get copies."""
        p = self.paths
        return [p["dirs/empty"], p["inputs/good"], p["runs/pix2pix"], p["folder/good"], p["outputs/clash"]]

    def damaged_runs(self) -> list[str]:
        """Run directories whose last/ checkpoint is damaged (pix2pix and CycleGAN ones among them)."""
        return sorted(os.path.dirname(p) for k, p in self.paths.items() if k.startswith("damaged/"))

    def bad_checkpoints(self) -> list[str]:
        damaged = self.damaged_runs()
        return damaged + [os.path.join(d, "last") for d in damaged] + [
            self.paths["dirs/empty"], self.paths["files/text.txt"], os.path.join(self.root, "missing"), "",
            self.paths["npz/good.npz"], os.path.join(self.paths["runs/vae"], "last", "model.safetensors")]

    def good_data(self) -> list[str]:
        p = self.paths
        return ["digits", "digits-binary", f"npz:{p['npz/good.npz']}", f"folder:{p['folder/good']}",
                f"mnist:{p['mnist/good']}", f"mnist:{p['mnist/gz']}", f"cifar10:{p['cifar/good']}"]

    def bad_data(self) -> list[str]:
        p = self.paths
        return ([f"npz:{p[k]}" for k in p if k.startswith("npz/") and k != "npz/good.npz"] +
                [f"folder:{p['folder/bad-image']}", f"folder:{p['dirs/empty']}", f"folder:{p['files/text.txt']}",
                 f"mnist:{p['mnist/bomb']}", f"mnist:{p['mnist/lying']}", f"mnist:{p['mnist/label-255']}",
                 f"mnist:{p['dirs/empty']}", f"cifar10:{p['cifar/evil']}", f"cifar10:{p['cifar/float']}",
                 f"cifar10:{p['files/text.txt']}", f"npz:{p['dirs/empty']}", f"npz:{p['files/text.txt']}",
                 f"npz:{os.path.join(self.root, 'missing.npz')}", "imagenet:/x", "digits:x", "mnist:", "npz:", "",
                 ":", "DIGITS", "digits ", "folder:" + "a" * 5000])

    def good_weights(self, source: str) -> list[str]:
        p = self.paths
        if source == "pclucas14":
            return [p["weights/pclucas14.pth"], p["weights/data-parallel.pth"]]
        prefix = p["weights/openai.ckpt"]
        return [prefix, prefix + ".index", prefix + ".data-00000-of-00001", p["weights/openai-no-ema.ckpt"]]

    def bad_weights(self) -> list[str]:
        p = self.paths
        good = {"weights/pclucas14.pth", "weights/data-parallel.pth", "weights/openai.ckpt",
                "weights/openai-no-ema.ckpt"}
        return sorted(p[k] for k in p if k.startswith("weights/") and k not in good) + [
            p["dirs/empty"], os.path.dirname(p["weights/pclucas14.pth"]), p["files/text.txt"], p["npz/good.npz"],
            os.path.join(self.root, "missing.pth"), os.path.join(p["files/text.txt"], "x.pth"),
            p["converted/pclucas14"], os.path.join(p["converted/pclucas14"], "model.safetensors"),
            os.path.join(p["runs/pixelcnnpp"], "last", "training.pt")]

    def convert_outputs(self) -> list[str]:
        """Where convert must refuse to write (a file, a path under a file, a directory that holds no
        checkpoint, a checkpoint without --overwrite), or may (an empty directory, a checkpoint with
        --overwrite: the cases get copies of those, see ``writable_outputs``)."""
        p = self.paths
        return [p["files/text.txt"], os.path.join(p["files/text.txt"], "ckpt"), "", self.root, p["runs/vae"],
                p["folder/good"], p["mnist/good"], *self.writable_outputs()]

    def writable_outputs(self) -> list[str]:
        """Directories that convert writes into (given --overwrite for the checkpoints): cases get copies."""
        p = self.paths
        return [p["dirs/empty"], p["converted/pclucas14"], os.path.join(p["runs/vae"], "last"),
                p["damaged/config-empty/last"]]

    def good_configs(self) -> list[str]:
        """--config files that a train command line of the fuzzer may add (it overrides what they set):
        tiny TOML files and the runs' own config.json."""
        return sorted(p for k, p in self.paths.items() if k.startswith("configs/good-")) + self.run_configs()

    def run_configs(self) -> list[str]:
        return [os.path.join(run, "config.json") for run in self.runs() + self.translator_runs()]

    def bad_configs(self) -> list[str]:
        p = self.paths
        return sorted(p[k] for k in p if k.startswith("configs/bad-")) + [
            os.path.join(self.root, "missing.toml"), os.path.join(self.root, "missing.json"), "", p["dirs/empty"],
            p["runs/vae"], p["files/text.txt"], p["npz/good.npz"], os.path.join(p["runs/vae"], "last", "config.json"),
            os.path.join(p["damaged/config-list/last"], "config.json"),
            os.path.join(p["damaged/config-half/last"], "config.json"),
            os.path.join(p["damaged/config-is-a-directory/last"], "config.json"),
            os.path.join(p["files/text.txt"], "x.toml")]

    def bad_outputs(self) -> list[str]:
        p = self.paths
        return [p["dirs/empty"], os.path.join(p["files/text.txt"], "x.png"), "", self.root,
                os.path.join(p["files/text.txt"], "deeper", "x.png")]


# -- the cases ------------------------------------------------------------------------------------------------
class Cases:
    """Random command lines; each is a valid tiny base with mutations, most of them bad."""

    def __init__(self, workspace: Workspace, seed: int):
        self.ws, self.rng = workspace, random.Random(seed)
        import torch

        self.no_gpu = not torch.cuda.is_available()

    def pick(self, values: list):
        return self.rng.choice(values)

    def bad_number(self, extra: list[str] = ()) -> str:
        return self.pick(NUMBERS_BAD + HUGE + list(extra))

    def devices(self) -> list[str]:
        return ["gpu", "cuda:99", "", "meta", "tpu", "cpu:x", "xla"] + (["cuda", "cuda:0"] if self.no_gpu else [])

    def structural(self, argv: list[str]) -> list[str]:
        """An unknown flag, a stray positional, an empty argument, a dropped or repeated token."""
        kind = self.rng.randrange(5)
        position = self.rng.randrange(1, len(argv) + 1) if len(argv) > 1 else len(argv)
        if kind == 0:
            return argv[:position] + [self.pick(["--bogus", "-x", "--lr=", "--=", "---", "--data=", "-", "--help=1"])] \
                + argv[position:]
        if kind == 1:
            return argv + [self.pick(["junk", "", "-1", "nan", "é", "--"])]
        if kind == 2 and len(argv) > 2:
            drop = self.rng.randrange(1, len(argv))
            return argv[:drop] + argv[drop + 1:]
        if kind == 3:
            return argv[:position] + [""] + argv[position:]
        return argv + argv[-2:]

    @staticmethod
    def positional(argv: list[str], name: str) -> list[str]:
        """Move the value of ``name``, a positional's stand-in option, into the positional's place."""
        if name not in argv:
            return argv
        i = argv.index(name)
        return [argv[0], argv[i + 1], *argv[2:i], *argv[i + 2:]] if i + 1 < len(argv) else argv[:i]

    # option tables: name -> (bad values, tiny valid values)
    def train_options(self, configs: list[str] | None = None,
                      model: str | None = None) -> dict[str, tuple[list[str], list[str]]]:
        """``configs``: the valid --config files (default: those the base command line overrides);
        ``model``: the model of the command line (None: it comes from a --config file), for its --data."""
        ws = self.ws
        if model is None:  # any data may fit the config's model
            data = (ws.bad_data() + ws.bad_translation_data(), ws.good_data() + ws.translation_data())
        elif model in TRANSLATORS:  # the other translator's data, and the generative models', are bad here
            other = TRANSLATORS[1 - TRANSLATORS.index(model)]
            data = (ws.bad_translation_data() + ws.translation_data(other)[:2] + ws.good_data()[:4],
                    ws.translation_data(model))
        else:  # pairs and domains are no data for a generative model
            data = (ws.bad_data() + ws.translation_data(), ws.good_data())
        options = {
            "--config": (ws.bad_configs(), ws.good_configs() if configs is None else configs),
            "--data": data,
            "--levels": (["1", "0", "-2", "70000", "2.5", "nan", "x", "", "40"], ["2", "4"]),
            "--val-fraction": (["1", "1.5", "-0.1", "nan", "inf", "x", "", "0.99999"], ["0", "0.2"]),
            "--hidden": (["0", "-1", "5000", "1e9", "x", "nan", ""] + HUGE, ["4", "8"]),
            "--layers": (["0", "-1", "300", "x", "1.0"] + HUGE, ["1", "2"]),
            "--kernel-size": (["0", "-1", "32", "2", "4", "x"], ["1", "3"]),
            "--dropout": (["1", "1.5", "-0.1", "nan", "inf", "x"], ["0", "0.1"]),
            "--nr-mix": (["0", "-1", "101", "x"], ["1", "2"]),
            "--latent-dim": (["0", "-3", "5000", "x", "nan"], ["1", "2"]),
            "--likelihood": (["gauss", "", "Bernoulli"], ["bernoulli", "categorical", "gaussian", "logistic"]),
            "--arch": (["cnn", ""], ["mlp", "conv"]),
            "--beta": (["-1", "nan", "inf", "x"], ["0", "1"]),
            "--free-bits": (["-1", "nan", "inf", "x"], ["0", "0.5"]),
            "--prior": (["uniform", "", "Mixture"], ["gaussian", "mixture", "swiss_roll"]),
            "--encoder": (["flow", ""], ["deterministic", "gaussian"]),
            "--loss": (["hing", "", "wgan"], ["hinge", "lsgan", "wasserstein", "minimax", "non_saturating"]),
            "--n-critic": (["0", "-1", "x", "nan"], ["1", "2"]),
            "--gp-weight": (["0", "-1", "inf", "nan", "x"], ["1"]),
            "--norm": (["group", ""], ["batch", "layer", "none", "spectral", "instance"]),
            "--image-size": (["0", "3", "-1", "x", "1.5", "2000", ""] + HUGE, ["8", "16"]),
            "--stages": (["0", "-1", "17", "x", "1.5"], ["1", "2"]),
            "--fade-images": (["0", "-1", "x", "1.5", "nan"] + HUGE, ["64"]),
            "--stable-images": (["0", "-1", "x", "1.5", "nan"] + HUGE, ["64"]),
            "--stage-batch-sizes": (["0", "32,0", ",", "x", "", "1.5,2", "-3"] + HUGE, ["64", "64,32"]),
            "--l1-weight": (FLOATS_BAD, ["0", "100", "2.5"]),
            "--cycle-weight": (FLOATS_BAD, ["0", "10"]),
            "--identity-weight": (FLOATS_BAD, ["0", "0.5", "3"]),
            "--patch-layers": (["0", "-1", "9", "x", "1.5", "nan", ""] + HUGE, ["1", "2", "3", "4", "8"]),
            "--pool-size": (["-1", "x", "1.5", "nan", "", "inf"] + HUGE, ["0", "1", "50"]),
            "--decay-from": (["-0.1", "1.5", "1.0001", "nan", "inf", "x", ""], ["0", "0.5", "1"]),
            "--epochs": (["0", "-1", "x", "1.5", "nan", "", "1e9"] + HUGE, ["1"]),
            "--batch-size": (["0", "-5", "x", "inf"] + HUGE, ["256", "128"]),
            "--lr": (["0", "-1", "inf", "-inf", "nan", "x", "1e309", ""], ["1e-3", "1e6"]),  # 1e6 diverges
            "--lr-decay": (["0", "-1", "1.5", "nan", "inf"], ["0.9", "1"]),
            "--grad-clip": (["0", "-1", "inf", "nan"], ["1", "0.5"]),
            "--ema": (["0", "1", "-0.5", "nan", "2"], ["0.9"]),
            "--checkpoint-every": (["0", "-1", "x", "1.5"], ["1", "3"]),
            "--grid-samples": (["-1", "101", "1e6", "x"] + HUGE, ["0", "1", "2"]),
            "--seed": (["-1", str(2**32), str(2**70), "x", "1.5"], ["0", "7"]),
            "--device": (self.devices(), ["cpu"]),
            "--out": (ws.bad_outputs() + ws.runs() + ws.translator_runs(), [ws.fresh("train")]),
        }
        if model in TRANSLATORS:  # only the options a translator reads, or refuses (--levels, --ema, --eval-every)
            options["--eval-every"] = (["0", "-1", "x", "1.5"], ["1"])  # too slow to score for the others
            return {n: v for n, v in options.items() if n in self.TRANSLATOR_OPTIONS}
        return options

    # what pix2pix and cyclegan read: their own knobs, then the common options and those they refuse; the
    # generative models' own options (--nr-mix, --beta, --prior, ...) are left to the other cases
    TRANSLATOR_KNOBS = ("--l1-weight", "--cycle-weight", "--identity-weight", "--patch-layers", "--pool-size",
                        "--decay-from", "--dropout", "--loss", "--hidden", "--layers", "--batch-size", "--grid-samples",
                        "--checkpoint-every", "--seed")
    TRANSLATOR_OPTIONS = TRANSLATOR_KNOBS + ("--config", "--data", "--epochs", "--lr", "--device", "--out", "--levels",
                                             "--ema", "--eval-every", "--val-fraction", "--kernel-size")

    DEEP = ("--data", "--out", "checkpoint", "weights", "-o", "--partial", "--device", "--lr",
            "--config", "--input", "--direction")  # refused past the parser

    def apply(self, argv: list[str], options: dict, *, bad: bool) -> list[str]:
        """Set one option (replacing it when present) to a bad or a valid value. Options that are
        checked past the parser (paths, data, checkpoints, devices) are picked more often, since a
        bad number stops a case at the parser, before anything deeper is tried."""
        names = sorted(n for n in options if options[n][0 if bad else 1])
        name = self.rng.choices(names, weights=[6 if n in self.DEEP else 1 for n in names])[0]
        value = self.pick(options[name][0] if bad else options[name][1])
        if name in argv:
            i = argv.index(name)
            return argv[:i + 1] + [value] + argv[i + 2:]
        return argv + [name, value]

    def mutate(self, argv: list[str], options: dict, flags: list[str], *, bad_needed: bool) -> list[str]:
        """Up to two valid changes and flags, then one bad option value (none in about one case in
        eight, unless ``bad_needed``: those cases run) or, now and then, structural damage."""
        for _ in range(self.rng.randrange(3)):
            argv = argv + [self.pick(flags)] if flags and self.rng.random() < 0.3 else \
                self.apply(argv, options, bad=False)
        roll = self.rng.random()
        if roll < 0.1:
            return self.structural(argv)
        if roll < 0.22 and not bad_needed:
            return argv
        return self.apply(argv, options, bad=True)

    def train(self) -> list[str]:
        if self.rng.random() < 0.2:
            # The run's options from --config alone: a tiny run in TOML, or a run's config.json (which repeats
            # that run) with a fresh --out; only these tiny files may replace it.
            configs = [self.ws.paths["configs/good-full.toml"], *self.ws.run_configs()]
            argv = ["train", "--config", self.pick(configs), "--quiet", "--out", self.ws.fresh("train")]
            options = self.train_options(configs)
        else:
            # pix2pix and CycleGAN (3 cases in 10) train on 32x32 bundled pairs at --hidden 4 (a few steps) or
            # on the workspace's folders of 8x8 images (one step); the others on the data of good_data()
            model = self.pick(list(TRANSLATORS)) if self.rng.random() < 0.3 else self.pick(
                ["pixelcnn", "gated-pixelcnn", "pixelcnnpp", "vae", "pixelvae", "aae", "dcgan", "mlp-gan", "progan"])
            translator = model in TRANSLATORS
            data = self.ws.translation_data(model) if translator else self.ws.good_data()
            argv = ["train", model, "--data", self.pick(data), "--epochs", "1", "--hidden", "4" if translator else "8",
                    "--layers", "1", "--kernel-size", "3", "--nr-mix", "2", "--latent-dim", "2", "--batch-size",
                    "256", "--grid-samples", "0", "--quiet", "--out", self.ws.fresh("train")]
            if model == "progan":  # one short stage (the default shows 20000 images per phase); no --epochs
                argv[argv.index("--epochs"):argv.index("--epochs") + 2] = ["--stages", "1"]
                argv += ["--fade-images", "256", "--stable-images", "256"]
            if self.rng.random() < 0.1:
                argv[1] = self.pick(["resnet", "", "PixelCNN", "gan", "Pix2Pix", "cycle-gan"])
            options = self.train_options(model=model)
            if translator and argv[1] == model and self.rng.random() < 0.3:
                # valid settings of the translators' own options only, so that they train (a second or so), and
                # the combinations that only fail while training (e.g. --patch-layers deeper than the image) run
                knobs = {n: options[n] for n in self.TRANSLATOR_KNOBS}
                for _ in range(self.rng.randrange(1, 4)):
                    argv = self.apply(argv, knobs, bad=False)
                return argv
        flags = ["--resume", "--overwrite", "--conditional", "--amp", "--weight-norm", "--supervised",
                 "--resume --overwrite"]
        argv = self.mutate(argv, options, [f for f in flags if " " not in f], bad_needed=False)
        if "--resume" in argv or "--overwrite" in argv:
            # Point the run at a copy of a trained (or damaged) run, so that the originals stay as they are.
            i = len(argv) - 1 - argv[::-1].index("--out") if "--out" in argv else None
            target = self.pick(self.ws.runs() + self.ws.translator_runs() + self.ws.damaged_runs())
            if i is not None and i + 1 < len(argv) and os.path.isdir(target):
                argv[i + 1] = self.ws.copy_of(target)
        elif "--out" in argv:
            # A directory that holds no run is trained into: the empty one and the workspace's root become
            # copies (of an empty and of a small non-empty directory), which later cases do not read.
            i = len(argv) - 1 - argv[::-1].index("--out")
            stand_in = {self.ws.paths["dirs/empty"]: self.ws.paths["dirs/empty"],
                        self.ws.root: self.ws.paths["folder/good"]}
            if i + 1 < len(argv) and argv[i + 1] in stand_in:
                argv[i + 1] = self.ws.copy_of(stand_in[argv[i + 1]])
        return argv

    def sample(self) -> list[str]:
        ws = self.ws
        argv = ["sample", self.pick(ws.runs()), "-n", "4", "-o", os.path.join(ws.fresh("sample"), "grid.png")]
        options = {
            "checkpoint": (ws.bad_checkpoints() + ws.translator_checkpoints(), ws.runs()),
            "-n": (["0", "-1", "10001", "x", "nan", "1.5", ""] + HUGE, ["1", "3", "16"]),
            "-o": (ws.bad_outputs(), [os.path.join(ws.fresh("sample"), "g.png")]),
            "--class": (["-1", "10", "999", "x", "nan", ""] + HUGE, ["0", "3"]),
            "--partial": ([ws.paths["files/text.txt"], ws.paths["dirs/empty"], ws.paths["files/small.png"],
                           os.path.join(ws.root, "missing.png"), "", ws.paths["npz/good.npz"],
                           os.path.join(ws.paths["folder/sixteen-bit"], "g.png")], [ws.paths["files/partial.png"]]),
            "--keep-rows": (["-1", "9", "x", "nan"] + HUGE, ["0", "4", "8"]),
            "--seed": (["-1", str(2**32), "x"], ["0", "5"]),
            "--device": (self.devices(), ["cpu"]),
        }
        argv = self.mutate(argv, options, ["--no-ema", "--naive"], bad_needed=False)
        return self.positional(argv, "checkpoint")

    def eval(self) -> list[str]:
        ws = self.ws
        runs = [r for r in ws.runs() if "dcgan" not in r]
        argv = ["eval", self.pick(runs), "--data", "digits", "--k", "2"]
        options = {
            "checkpoint": (ws.bad_checkpoints() + [ws.paths["runs/dcgan"]] + ws.translator_checkpoints(), runs),
            "--data": (ws.bad_data() + ws.good_data()[2:] + ws.translation_data(), ["digits", "digits-binary"]),
            "--split": (["validation", "", "TEST", "val"], ["train", "test"]),
            "--batch-size": (["0", "-1", "x", "nan"] + HUGE, ["1", "64"]),
            "--k": (["-1", "100001", "x", "nan", "1.5"] + HUGE, ["0", "1", "3"]),
            "--device": (self.devices(), ["cpu"]),
        }
        argv = self.mutate(argv, options, ["--no-ema"], bad_needed=False)
        return self.positional(argv, "checkpoint")

    def convert(self) -> list[str]:
        ws = self.ws
        source = self.pick(["pclucas14", "openai"])
        other = "openai" if source == "pclucas14" else "pclucas14"
        argv = ["convert", self.pick(ws.good_weights(source)), "-o", ws.fresh("convert"), "--source", source,
                "--image-size", "8"]
        options = {
            "weights": (ws.bad_weights() + ws.good_weights(other), ws.good_weights(source)),
            "-o": (ws.convert_outputs(), [ws.fresh("convert")]),
            "--source": ([other, "", "tf", "OpenAI", "pytorch"], [source]),
            "--levels": (NUMBERS_BAD + HUGE + ["1", "65537"], ["2", "17", "256"]),
            "--image-size": (NUMBERS_BAD + HUGE + ["0", "2", "6", "10", "4097", "4100"], ["4", "8", "16"]),
        }
        if self.rng.random() < 0.15:  # a required argument left out, or --no-ema for a state dict
            left_out = self.pick(["weights", "-o", "--source", "--no-ema"])
            if left_out == "weights":
                argv = [argv[0], *argv[2:]]
            elif left_out == "--no-ema":
                argv = argv + ["--no-ema"]
            else:
                i = argv.index(left_out)
                argv = argv[:i] + argv[i + 2:]
        else:
            flags = ["--overwrite"] + (["--no-ema"] if source == "openai" else [])
            argv = self.positional(self.mutate(argv, options, flags, bad_needed=False), "weights")
        if "-o" in argv:  # an empty directory or a checkpoint may be written: point the case at a copy
            i = len(argv) - 1 - argv[::-1].index("-o")
            if i + 1 < len(argv) and argv[i + 1] in ws.writable_outputs():
                argv[i + 1] = ws.copy_of(argv[i + 1])
        return argv

    def translate(self) -> list[str]:
        ws = self.ws
        argv = ["translate", self.pick(ws.translator_runs()), "--input", self.pick(ws.good_inputs()), "-o",
                ws.fresh("translate")]
        options = {  # --direction backward is valid for CycleGAN only: a pix2pix refuses it
            "checkpoint": (ws.bad_checkpoints() + ws.runs() + [ws.paths["converted/pclucas14"], os.path.join(
                ws.paths["runs/pix2pix"], "last", "model.safetensors")], ws.translator_checkpoints()),
            "--input": (ws.bad_inputs(), ws.good_inputs()),
            "-o": (ws.translate_outputs(), [ws.fresh("translate"), os.path.join(ws.fresh("translate"), "a", "b")]),
            "--direction": (["", "both", "Forward", "back", "-1"], ["forward", "backward"]),
            "--batch-size": (["0", "-1", "x", "nan", "1.5", "", "inf"] + HUGE, ["1", "3", "64"]),
            "--device": (self.devices(), ["cpu"]),
        }
        if self.rng.random() < 0.1:  # a required argument left out
            left_out = self.pick(["checkpoint", "--input", "-o"])
            if left_out == "checkpoint":
                argv = [argv[0], *argv[2:]]
            else:
                i = argv.index(left_out)
                argv = argv[:i] + argv[i + 2:]
        elif self.rng.random() < 0.25:  # valid changes only (cases are cheap: a translation of a few images)
            for _ in range(self.rng.randrange(1, 4)):
                argv = self.apply(argv, options, bad=False)
            argv = self.positional(argv, "checkpoint")
        else:
            argv = self.positional(self.mutate(argv, options, [], bad_needed=False), "checkpoint")
        if "-o" in argv:
            i = len(argv) - 1 - argv[::-1].index("-o")
            if i + 1 < len(argv) and argv[i + 1] in ws.translate_writable_outputs():
                argv[i + 1] = ws.copy_of(argv[i + 1])  # an existing directory is written into: a copy
            elif i + 1 < len(argv) and "--input" in argv and self.rng.random() < 0.1:
                # the images of a folder translated into the folder itself (a copy), replacing them
                j = argv.index("--input")
                if j + 1 < len(argv) and os.path.isdir(argv[j + 1]) and argv[j + 1] in ws.good_inputs():
                    argv[j + 1] = argv[i + 1] = ws.copy_of(argv[j + 1])
        return argv

    def demo(self) -> list[str]:
        """Always refused before training: a valid demo trains the real demo model for 20 epochs."""
        ws = self.ws
        options = {"--epochs": (["0", "-1", "-20", "x", "nan", "1.5", ""] + HUGE, ["1"]),
                   "--seed": (["-1", str(2**32), "x", "nan"], ["0"]),
                   "--out": ([""], [])}
        argv = ["demo", "--quiet"]
        if self.rng.random() < 0.3:  # an --out that is refused at the start: a file, or another model's run
            argv += ["--out", self.pick([ws.paths["files/text.txt"], *ws.runs(), *ws.translator_runs(), os.path.join(
                ws.paths["files/text.txt"], "demo")])]
            if self.rng.random() < 0.5:
                argv = self.apply(argv, options, bad=self.rng.random() < 0.5)
        else:
            argv = self.apply(argv, options, bad=True)
            for _ in range(self.rng.randrange(3)):
                argv = self.structural(argv) if self.rng.random() < 0.3 else self.apply(argv, options, bad=True)
        return argv

    def info(self) -> list[str]:
        if self.rng.random() < 0.15:
            return ["info"]
        return self.structural(["info"]) if self.rng.random() < 0.5 else ["info", self.pick(
            ["--bogus", "x", "", "--help=2", "-v", "--device", "cpu"])]

    def bench(self) -> list[str]:
        """Always refused before any benchmark runs."""
        bad = {"--op": ["bogus", "", "masked_conv", "MASKED_CONV2D"],
               "--repeats": ["0", "-1", "x", "nan", "1.5"] + HUGE,
               "--device": self.devices(),
               "--out": [self.ws.paths["dirs/empty"], os.path.join(self.ws.paths["files/text.txt"], "x.csv"), ""],
               "--providers": ["", ",", "bogus", "reference,,bogus"],
               "--modes": ["", ",,", "bwd", "fwd,bogus"],
               "--bogus": ["1"], "--quick": ["--bogus"]}
        name = self.pick(sorted(bad))
        argv = ["bench", name, self.pick(bad[name])]
        if self.rng.random() < 0.4:  # valid options besides, never a second value of the bad one (the last wins)
            argv = self.pick([[*argv, "--quick"]] + [["bench", *extra, *argv[1:]] for extra in (
                ["--op", "gan_loss"], ["--modes", "fwd"], ["--repeats", "1"]) if extra[0] != name])
        return argv

    def fastgen(self) -> list[str]:
        return self.pick([[], ["--bogus"], ["trian"], [""], ["--debug"], ["-x", "train"], ["train"], ["sample"],
                          ["eval"], ["train", "--help=x"], ["--debug", "--debug"], ["help"], ["-"], ["--"],
                          [self.pick(NUMBERS_BAD)], ["sample", "--debug"], ["--help"], ["train", "--help"],
                          ["convert"], ["convert", "--help"], ["train", "--config"], ["convert", "--debug"],
                          ["translate"], ["translate", "--help"], ["translate", "--debug"], ["translate", "-o"],
                          ["trans"], ["train", "pix2pix"], ["train", "cyclegan", "--help"]])

    def make(self, group: str) -> list[str]:
        return getattr(self, group)()


# -- running ----------------------------------------------------------------------------------------------------
@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    def by_group(self) -> dict[str, list[Result]]:
        groups: dict[str, list[Result]] = {}
        for r in self.results:
            groups.setdefault(r.group, []).append(r)
        return groups

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.failure]

    def table(self) -> str:
        lines = ["| command | cases | exit 0 | exit 2 | tracebacks | signals | timeouts | other failures | "
                 "median s | max s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        rows = list(self.by_group().items()) + [("all", self.results)]
        for group, results in rows:
            def count(test) -> int:
                return sum(1 for r in results if test(r))

            seconds = sorted(r.seconds for r in results)
            lines.append(
                f"| {group} | {len(results)} | {count(lambda r: r.code == 0)} | {count(lambda r: r.code == 2)} | "
                f"{count(lambda r: r.failure == 'traceback')} | {count(lambda r: r.signal is not None)} | "
                f"{count(lambda r: r.timed_out)} | "
                f"{count(lambda r: r.failure not in (None, 'traceback', 'timeout') and r.signal is None)} | "
                f"{seconds[len(seconds) // 2]:.2f} | {seconds[-1]:.2f} |")
        return "\n".join(lines)

    def failure_report(self, limit: int = 20) -> str:
        parts = []
        for r in self.failures[:limit]:
            parts.append(f"[{r.failure}] fastgen {' '.join(repr(a) if not a or ' ' in a else a for a in r.argv)}\n"
                         + "\n".join("    " + line for line in r.output.splitlines()[-15:]))
        return "\n".join(parts)


def run_cases(cases: list[tuple[str, list[str]]], *, cwd: str, timeout: float = 120.0,
              worker: Worker | None = None, progress=None) -> Summary:
    """Run (group, argv) cases on one worker; returns their results."""
    own = worker is None
    worker = worker or Worker(cwd, timeout)
    summary, start = Summary(), time.perf_counter()
    try:
        for k, (group, argv) in enumerate(cases):
            summary.results.append(worker.run(group, argv))
            if progress and (k + 1) % 50 == 0:
                progress(f"{k + 1}/{len(cases)} cases, {len(summary.failures)} failures, "
                         f"{time.perf_counter() - start:.0f} s")
    finally:
        if own:
            worker.close()
    summary.seconds = time.perf_counter() - start
    return summary


def fuzz(cases_per_group: int, seed: int = 0, *, timeout: float = 120.0, progress=None,
         groups: tuple[str, ...] = GROUPS) -> Summary:
    """Build a workspace, generate ``cases_per_group`` cases for each group, run them all."""
    with tempfile.TemporaryDirectory(prefix="fastgen-fuzz-") as root:
        scratch = os.path.join(root, "cwd")
        os.makedirs(scratch)
        worker = Worker(scratch, timeout)
        try:
            workspace = Workspace(os.path.join(root, "files"), worker)
            maker = Cases(workspace, seed)
            cases = [(group, maker.make(group)) for _ in range(cases_per_group) for group in groups]
            return run_cases(cases, cwd=scratch, timeout=timeout, worker=worker, progress=progress)
        finally:
            worker.close()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(summary: Summary, args: argparse.Namespace) -> str:
    import torch

    failures = summary.failures
    return "\n".join([
        f"# fastgen CLI fuzz: {len(summary.results)} command lines",
        "",
        f"command: python -m tests.fuzz_cli --cases {args.cases} --seed {args.seed}"
        + (f" --timeout {args.timeout:g}" if args.timeout != 120 else ""),
        f"machine: {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"commit {_commit()}, {datetime.date.today().isoformat()}; {summary.seconds:.0f} s in all",
        "",
        "A failure is a traceback in the output, a signal, a timeout, an exit code other than 0 or 2, or an",
        "exit code 2 without a `fastgen: error:` line.",
        "",
        summary.table(),
        "",
        f"failures: {len(failures)}",
        summary.failure_report() if failures else "",
    ]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=int(os.environ.get("FASTGEN_FUZZ_CASES", "20")),
                        help="cases per subcommand (default: $FASTGEN_FUZZ_CASES or 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--out", default=None, help="write the report here too")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker()
    summary = fuzz(args.cases, args.seed, timeout=args.timeout, progress=lambda m: print(m, flush=True))
    text = report(summary, args)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if summary.failures else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

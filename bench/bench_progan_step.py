"""Time of one training step of the class-conditional ProgressiveGAN of ``bench.progan_digits`` at
each stage (``GANTrainer.train_step``: WGAN-GP critic update with the drift term, then the
generator's update and its EMA), mid-fade-in (alpha 0.5), with fastgen's kernels against the same
step with every fastgen op replaced by its eager PyTorch reference (``fastgen.use_reference()``:
pixel norm, minibatch stddev, the loss and the gradient penalty written as plain PyTorch, what a
peer library runs).

Both providers train copies of the same initial weights; their first-step losses are checked to
agree. Providers are interleaved in every repetition after two warm-up steps; medians. Rows go to
bench/results/train/progan-<device>.csv, with the share of the fastgen step spent in the two
fused ops (profiler self time).

    python -m bench.bench_progan_step [--repeats 10] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import sys
import tempfile
import time

import torch

import fastgen
from bench.harness import append_rows, device_name, device_slug, git_commit, timing_ms
from bench.progan_digits import PROGAN, PROGAN_TRAINING
from fastgen.data import digits
from fastgen.models import ProgressiveGAN
from fastgen.train import ProgressiveTrainConfig, ProgressiveTrainer

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train")
COLUMNS = ("model", "stage", "provider", "batch", "config", "median_ms", "p20_ms", "p80_ms", "ops_share", "device",
           "torch", "commit", "date")
WARMUP = 2
LOSS_RTOL = 1e-3  # float32 sums in another order, through a WGAN-GP critic


def fused_ops_share(trainer: ProgressiveTrainer, index: torch.Tensor) -> float:
    """The share of one step's profiler self time spent in fastgen::pixel_norm and minibatch_stddev."""
    from torch.profiler import profile

    with profile() as prof:
        trainer.train_step(index)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ours = sum(e.self_cpu_time_total for e in events
               if e.key.startswith(("fastgen::pixel_norm", "fastgen::minibatch_stddev")))
    return ours / total if total else 0.0


def measure(stage: int, repeats: int, quick: bool) -> list[dict]:
    size = 16 if quick else 32
    model_options = {**PROGAN, "max_channels": 8} if quick else PROGAN
    torch.manual_seed(0)
    model = ProgressiveGAN(1, 256, size, n_classes=10, **model_options)
    data = digits("val", size=size)
    batch = (PROGAN_TRAINING["stage_batch_sizes"] + (PROGAN_TRAINING["batch_size"],) * 8)[stage]
    contexts = {"plain": fastgen.use_reference, "fastgen": contextlib.nullcontext}
    trainers = {}
    for key in contexts:
        copy_ = copy.deepcopy(model)
        copy_.set_growth(stage, 0.5 if stage else 1.0)
        trainers[key] = ProgressiveTrainer(copy_, data, tempfile.mkdtemp(),
                                           ProgressiveTrainConfig(batch_size=batch, progress=False, grid_samples=0))
    index = torch.arange(batch) % len(data)
    first = {}
    for key, trainer in trainers.items():
        torch.manual_seed(0)
        with contexts[key]():
            first[key] = trainer.train_step(index)
            for _ in range(WARMUP - 1):
                trainer.train_step(index)
    for loss in ("d", "g"):
        if abs(first["fastgen"][loss] - first["plain"][loss]) > LOSS_RTOL * abs(first["plain"][loss]) + 1e-4:
            raise SystemExit(f"stage {stage}: fastgen's first {loss} loss {first['fastgen'][loss]} differs from "
                             f"plain's {first['plain'][loss]}")
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(repeats):
        for key, trainer in trainers.items():
            with contexts[key]():
                start = time.perf_counter()
                trainer.train_step(index)
                times[key].append(time.perf_counter() - start)
    share = fused_ops_share(trainers["fastgen"], index)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    r = 4 * 2 ** stage
    rows = []
    for key, values in times.items():
        rows.append(dict(model="ProgressiveGAN", stage=f"{stage} ({r}x{r})", provider=key, batch=batch,
                         config=f"{size}x{size} {model_options} alpha {0.5 if stage else 1.0}",
                         **timing_ms([v * 1e3 for v in values], 2),
                         ops_share=round(share, 3) if key == "fastgen" else "",
                         device=device_name(torch.device("cpu")), torch=torch.__version__, commit=git_commit(),
                         date=now))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a 16x16 model of 8 channels, 2 repeats (a smoke test)")
    parser.add_argument("--out", default=None, help="CSV file (default bench/results/train/progan-<device>.csv)")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    rows = []
    for stage in range(3 if args.quick else 4):
        rows += measure(stage, repeats, args.quick)
        plain, ours = rows[-2], rows[-1]
        print(f"stage {ours['stage']}, batch {ours['batch']}: plain {plain['median_ms']:.1f} ms, fastgen "
              f"{ours['median_ms']:.1f} ms ({plain['median_ms'] / ours['median_ms']:.2f}x); the fused ops are "
              f"{ours['ops_share']:.1%} of the step", flush=True)
    out = args.out or os.path.join(RESULTS_DIR, f"progan-{device_slug(torch.device('cpu'))}.csv")
    if not args.quick or args.out:
        append_rows(out, rows, COLUMNS)
        print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

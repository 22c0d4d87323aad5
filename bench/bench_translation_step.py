"""Time of one training step of Pix2Pix and CycleGAN (``TranslationTrainer.train_step``: the
translations, the generators' update, the pool, the discriminators' update), with fastgen's fused
``instance_norm_act`` against the same networks normalised in eager PyTorch.

Providers, each with its own copy of the same initial weights, trainer and optimisers:

- ``plain``: every ``fastgen.nn.InstanceNormAct`` replaced by ``F.instance_norm`` followed by the
  activation (the same weight and bias tensors' values), as a peer library writes the layer;
- ``compiled``: ``plain`` with each generator and discriminator ``torch.compile``d (its first
  step, compile included, is reported separately);
- ``fastgen``: the model as shipped.

The step is the trainer's, input checks, loss ``.item()`` and finite checks included (the same for
every provider). Providers are interleaved in every repetition after two warm-up steps; medians.
Rows go to bench/results/train/translation-<device>.csv.

    python -m bench.bench_translation_step [--repeats 10] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import tempfile
import time

import torch
from torch import nn

from bench.bench_instance_norm_act import eager_instance_norm_act
from bench.harness import append_rows, device_name, device_slug, git_commit, timing_ms
from fastgen.data import edges_to_digits, inverted_digits
from fastgen.models import CycleGAN, Pix2Pix
from fastgen.nn import InstanceNormAct
from fastgen.train import TranslationTrainConfig, TranslationTrainer

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train")
COLUMNS = ("model", "provider", "batch", "config", "median_ms", "p20_ms", "p80_ms", "compile_s", "norm_share",
           "device", "torch", "commit", "date")
WARMUP = 2
PROVIDERS = ("plain", "compiled", "fastgen")
LOSS_RTOL = 1e-4


class EagerInstanceNormAct(nn.Module):
    """``InstanceNormAct`` as separate eager ops: ``F.instance_norm`` then the activation."""

    def __init__(self, fused: InstanceNormAct):
        super().__init__()
        self.act, self.eps, self.negative_slope = fused.act, fused.eps, fused.negative_slope
        self.weight = None if fused.weight is None else nn.Parameter(fused.weight.detach().clone())
        self.bias = None if fused.bias is None else nn.Parameter(fused.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return eager_instance_norm_act(x, self.weight, self.bias, act=self.act, eps=self.eps,
                                       negative_slope=self.negative_slope)


def eager_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose InstanceNormAct modules are EagerInstanceNormAct (same values)."""
    plain = copy.deepcopy(model)
    for parent in list(plain.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, InstanceNormAct):
                setattr(parent, name, EagerInstanceNormAct(child))
    return plain


def subjects(quick: bool):
    """(name, model, data, batch size, config text) of the two benchmarked models."""
    size = 16 if quick else 32
    pix = dict(width=4 if quick else 32, dropout=0.5)
    cyc = dict(width=4 if quick else 16, blocks=1 if quick else 3)
    return [("Pix2Pix", Pix2Pix(1, 1, 256, size, **pix), edges_to_digits("val", size=size), 16,
             f"{size}x{size} {pix}"),
            ("CycleGAN", CycleGAN(1, 1, 256, size, **cyc), inverted_digits("val", size=size), 8,
             f"{size}x{size} {cyc}")]


def measure(name: str, model: nn.Module, data, batch: int, config: str, repeats: int,
            names: tuple[str, ...] = PROVIDERS) -> list[dict]:
    models = {k: model if k == "fastgen" else eager_copy(model) for k in names}
    if "compiled" in models:
        for net in models["compiled"].generators + models["compiled"].discriminators:
            net.compile()
    cfg = TranslationTrainConfig(batch_size=batch, progress=False, grid_samples=0)
    trainers = {k: TranslationTrainer(m, data, tempfile.mkdtemp(), cfg) for k, m in models.items()}
    for trainer in trainers.values():
        trainer.model.train()
    indices = trainers[names[0]].batch_indices(0, 0)
    compile_s, first = {}, {}
    for key, trainer in trainers.items():
        torch.manual_seed(0)  # the same dropout masks and pool draws in every provider's first step
        start = time.perf_counter()
        first[key] = trainer.train_step(indices)
        for _ in range(WARMUP - 1):
            trainer.train_step(indices)
        compile_s[key] = time.perf_counter() - start
    for key in first:  # the same networks: the same first-step losses, to float32 rounding
        for loss in ("g", "d"):
            if abs(first[key][loss] - first[names[0]][loss]) > LOSS_RTOL * abs(first[names[0]][loss]):
                raise SystemExit(f"{name}: the {key} provider's first {loss} loss {first[key][loss]} differs from "
                                 f"{names[0]}'s {first[names[0]][loss]}")
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(repeats):
        for key, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step(indices)
            times[key].append(time.perf_counter() - start)
    share = norm_share(trainers["fastgen"], indices) if "fastgen" in trainers else 0.0
    now = datetime.datetime.now().isoformat(timespec="seconds")
    rows = []
    for key, values in times.items():
        rows.append(dict(model=name, provider=key, batch=batch, config=config,
                         **timing_ms([v * 1e3 for v in values], 2),
                         compile_s=round(compile_s[key], 2) if key == "compiled" else "",
                         norm_share=round(share, 3) if key == "fastgen" else "",
                         device=device_name(torch.device("cpu")),
                         torch=torch.__version__, commit=git_commit(), date=now))
    return rows


def norm_share(trainer: TranslationTrainer, indices) -> float:
    """The share of a fastgen step's self CPU time spent in instance_norm_act (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step(indices)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ours = sum(e.self_cpu_time_total for e in events if "instance_norm_act" in e.key)
    return ours / total if total else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny models: checks the script, not the speed")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list from {PROVIDERS}")
    parser.add_argument("--out", default=None,
                        help="CSV to append to (default bench/results/train/translation-<device>.csv)")
    args = parser.parse_args(argv)
    names = tuple(p for p in args.providers.split(",") if p)
    if not names or not set(names) <= set(PROVIDERS):
        parser.error(f"--providers must be a comma list from {PROVIDERS}, got {args.providers!r}")
    rows = []
    for name, model, data, batch, config in subjects(args.quick):
        rows += measure(name, model, data, batch, config, args.repeats, names)
    out = args.out or os.path.join(RESULTS_DIR, f"translation-{device_slug(torch.device('cpu'))}.csv")
    append_rows(out, rows, COLUMNS)
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}; median ms of {args.repeats} "
          "interleaved steps")
    print("| model | config | batch | plain | torch.compile | fastgen | vs plain | vs compile | "
          "instance_norm_act share |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in dict.fromkeys(r["model"] for r in rows):
        by = {r["provider"]: r for r in rows if r["model"] == name}
        if set(by) != set(PROVIDERS):
            continue  # the table compares all three
        f = by["fastgen"]["median_ms"]
        print(f"| {name} | {by['fastgen']['config']} | {by['fastgen']['batch']} | {by['plain']['median_ms']:.1f} | "
              f"{by['compiled']['median_ms']:.1f} | {f:.1f} | {by['plain']['median_ms'] / f:.2f}x | "
              f"{by['compiled']['median_ms'] / f:.2f}x | {by['fastgen']['norm_share']:.0%} |")
    print(f"rows appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of a finished digits demo (`make demo`): test bits/dim of its best checkpoint, the
independent per-pixel baseline, and the fraction of class-conditional samples (10 per class,
two seeds) that a logistic regression fitted on the real training digits labels as their class.

    python -m bench.demo_figures [--run runs/demo] [--out bench/results/demo-<device>.txt]
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import re

import torch

from bench.harness import device_name, git_commit
from fastgen.data import digits
from fastgen.demo import digit_classifier, pixel_baseline_bpd, recognised_fraction
from fastgen.train import model_from_checkpoint

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="the demo's output directory (default: runs/demo)")
    parser.add_argument("--out", default=None, help="text file to append to")
    args = parser.parse_args(argv)
    device = device_name(torch.device("cpu"))
    out = args.out or os.path.join(RESULTS_DIR, "demo-" + re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") + ".txt")

    model = model_from_checkpoint(os.path.join(args.run, "best")).eval()
    train, test = digits("train"), digits("test")
    with torch.no_grad():
        nll = -model.log_prob(test.images.long(), test.labels).mean().item()
    classifier = digit_classifier()
    labels = torch.arange(10).repeat_interleave(10)
    recognised = {seed: recognised_fraction(classifier, model.sample(100, labels, generator=torch.Generator()
                                                                     .manual_seed(seed)), labels) for seed in (0, 1)}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# {stamp}, commit {git_commit()}, {device}, torch {torch.__version__}, run {args.run}",
        f"test NLL: {nll / model.dims / math.log(2.0):.4f} bits/dim",
        f"independent per-pixel baseline: {pixel_baseline_bpd(train, test):.4f} bits/dim",
        *(f"samples labelled as their class (seed {seed}): {frac:.0%}" for seed, frac in recognised.items()),
    ]
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

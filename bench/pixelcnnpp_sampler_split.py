"""Where PixelCNN++'s cached sampling time goes: the row stream (PyTorch convolutions, once per row)
against the pixel stream (``pixelcnnpp_sample_row``), for the benchmark model of
``bench.bench_sampling`` (nr_filters=64, nr_resnet=2, nr_mix=10, 3x32x32, batch 4).

    python -m bench.pixelcnnpp_sampler_split          # appends to bench/results/sampling/pixelcnnpp-split-<device>.txt
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch

from bench.bench_sampling import RESULTS_DIR, build
from bench.harness import device_name, device_slug, git_commit
from fastgen.ops import pixelcnnpp_sample_row
from fastgen.sampling.pixelcnnpp import _Plan


def split_once(model, n: int) -> tuple[float, float]:
    """(row stream ms, pixel stream ms) of one cached sample of n images."""
    image = torch.zeros(n, model.in_channels, *model.image_size, dtype=torch.long)
    known = torch.zeros(n, *model.image_size, dtype=torch.bool)
    noise = torch.rand(n, *model.noise_shape, generator=torch.Generator().manual_seed(0))
    plan = _Plan(model, image, None)
    maps = [c.map for c in plan.caches]
    rows = pixels = 0.0
    for i in range(model.image_size[0]):
        start = time.perf_counter()
        plan.rows_at(i)
        middle = time.perf_counter()
        pixelcnnpp_sample_row(maps, plan.weights, plan.program, image, known, noise, i, model.nr_mix, model.levels)
        rows, pixels = rows + middle - start, pixels + time.perf_counter() - middle
    return rows * 1e3, pixels * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pixelcnnpp_sampler_split", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a tiny model: checks the script, not the speed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    model = build("PixelCNNpp", args.quick, device)
    with torch.inference_mode():  # as the sampler runs
        split_once(model, args.batch)  # warm-up
        runs = [split_once(model, args.batch) for _ in range(args.repeats)]
    rows, pixels = statistics.median(r for r, _ in runs), statistics.median(p for _, p in runs)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = (f"{stamp} commit {git_commit()}, {device_name(device)}, torch {torch.__version__}: PixelCNNpp batch "
            f"{args.batch}, median of {args.repeats}: row stream {rows:.1f} ms, pixel stream {pixels:.1f} ms")
    out = args.out or os.path.join(RESULTS_DIR, f"pixelcnnpp-split-{device_slug(device)}.txt")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "a") as f:
        f.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

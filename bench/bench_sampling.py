"""Sampling speed of PixelCNN, Gated PixelCNN and PixelCNN++: cached sampling (each model's sampling
program run by the compiled interpreter), the same program run by the eager reference interpreter,
and naive sampling, each against the
time of one forward pass of the same model on the same batch. Rows go to
bench/results/sampling/<device>.csv.

    python -m bench.bench_sampling                    # PixelCNN and Gated PixelCNN at batch 1 and 16
                                                      # (28x28, levels=2), PixelCNN++ at batch 4 (3x32x32)
    python -m bench.bench_sampling --batch 1 16 256 --device cuda
    python -m bench.bench_sampling --markdown         # the latest run as a README table

Naive sampling is one full forward pass per sub-pixel, so it is timed over its first rows
(--naive-rows) and scaled by the number of rows; the output marks it as scaled.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Callable

import torch

import fastgen
from bench.harness import append_rows, device_name, device_slug, git_commit, timing_ms
from bench.table import print_latest_table
from fastgen.models import GatedPixelCNN, PixelCNN, PixelCNNpp
from fastgen.sampling import draw_noise, naive_sample

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sampling")
COLUMNS = ("model", "batch", "provider", "median_ms", "p20_ms", "p80_ms", "note", "device", "torch", "commit", "date")
PROVIDERS = ("forward", "cached", "cached-eager", "naive")
SIZE = 28
MODELS = ("GatedPixelCNN", "PixelCNN", "PixelCNNpp")
DEFAULT_BATCHES = {"GatedPixelCNN": [1, 16], "PixelCNN": [1, 16], "PixelCNNpp": [4]}
# The op that runs every model's cached sampler.
SAMPLER_OP = "sample_program"


def build(name: str, quick: bool, device: torch.device) -> torch.nn.Module:
    """The benchmark models: 10 gated layers or 12 mask-B blocks of 128 channels, 28x28, levels=2;
    PixelCNN++ with nr_filters=64, nr_resnet=2, nr_mix=10 on 3x32x32, levels=256."""
    torch.manual_seed(0)
    width, size = (16, 8) if quick else (128, SIZE)
    if name == "PixelCNNpp":
        model = PixelCNNpp(3, 256, 8 if quick else 32, nr_resnet=1 if quick else 2, nr_filters=8 if quick else 64,
                           nr_mix=3 if quick else 10)
    elif name == "GatedPixelCNN":
        model = GatedPixelCNN(1, 2, size, hidden_channels=width, n_layers=2 if quick else 10)
    else:
        model = PixelCNN(1, 2, size, hidden_channels=width, n_layers=2 if quick else 12)
    return model.to(device).eval()


def providers(model, n: int, naive_rows: int, device: torch.device) -> dict[str, Callable[[], object]]:
    """Each provider as a no-argument call on the same batch and noise."""
    height, width = model.image_size
    noise = draw_noise(n, model.noise_shape, generator=torch.Generator().manual_seed(0), device=device)
    x = torch.randint(0, model.levels, (n, model.in_channels, height, width), device=device)
    # Naive sampling over the first rows only: the later rows are marked known, so it skips them.
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, :, naive_rows:] = True

    def naive():
        return naive_sample(model, model.prepare_cond(None, n), x, known, noise)

    def cached_eager():
        with fastgen.use_reference():
            return model.sample(n, noise=noise)

    return {
        "forward": lambda: model(x),
        "cached": lambda: model.sample(n, noise=noise),
        "cached-eager": cached_eager,
        "naive": naive,
    }


def measure(model_name: str, n: int, repeats: int, naive_rows: int, quick: bool, device: torch.device) -> list[dict]:
    model = build(model_name, quick, device)
    calls = providers(model, n, naive_rows, device)
    height = model.image_size[0]
    times: dict[str, list[float]] = {p: [] for p in calls}
    with torch.no_grad():
        for call in calls.values():  # warm-up
            call()
        for _ in range(repeats):  # interleaved, so drift of the machine hits every provider alike
            for name, call in calls.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                call()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                ms = (time.perf_counter() - start) * 1e3
                times[name].append(ms * height / naive_rows if name == "naive" else ms)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"device": device_name(device), "torch": torch.__version__, "commit": git_commit(), "date": stamp}
    implementation = fastgen.ops.implementations()[SAMPLER_OP][device.type.upper()]
    notes = {"naive": f"timed over {naive_rows} of {height} rows, scaled by {height / naive_rows:g}",
             "cached": implementation, "cached-eager": "reference", "forward": ""}
    rows = []
    for name, ts in times.items():
        rows.append({"model": model_name, "batch": n, "provider": name, **timing_ms(ts, 3), "note": notes[name],
                     **common})
    return rows


def table(rows: list[dict]) -> str:
    """Medians and the ratios that matter: cached vs forward, and the speedups of cached sampling."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], int(r["batch"])), {})[r["provider"]] = r
    lines = ["| model | batch | forward ms | cached ms | cached / forward | eager caching ms | fused vs eager "
             "| naive ms (scaled) | cached vs naive |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (model, batch), by in groups.items():
        ms = {p: float(by[p]["median_ms"]) for p in PROVIDERS if p in by}
        lines.append(f"| {model} | {batch} | {ms['forward']:.1f} | {ms['cached']:.1f} | "
                     f"{ms['cached'] / ms['forward']:.2f}x | {ms['cached-eager']:.0f} | "
                     f"{ms['cached-eager'] / ms['cached']:.1f}x | {ms['naive']:.0f} | {ms['naive'] / ms['cached']:.0f}x |")
    first = rows[0]
    naive_note = next(r["note"] for r in rows if r["provider"] == "naive")
    header = (f"{first['device']}, torch {first['torch']}, commit {first['commit']}, {first['date'][:10]}; "
              f"median of interleaved runs; naive: {naive_note}")
    return header + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sampling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 and 16; PixelCNN++: 4)")
    parser.add_argument("--model", choices=MODELS, action="append")
    # Fewer than about 10 repeats let one slow stretch of a noisy machine move a median by 30%.
    parser.add_argument("--repeats", type=int, default=11, help="timed repetitions per provider (default 11)")
    parser.add_argument("--naive-rows", type=int, default=1, help="rows naive sampling is timed over (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny models: checks the script, not the speed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="CSV to append to (default: bench/results/sampling/<device>.csv)")
    parser.add_argument("--markdown", action="store_true", help="print the latest run in --out as a table and exit")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    out = args.out or os.path.join(RESULTS_DIR, f"{device_slug(device)}.csv")
    if args.markdown:
        return print_latest_table(parser, out, "sampling", table)
    if min(args.batch or [1]) < 1 or args.naive_rows < 1 or args.repeats < 1:
        parser.error("--batch, --naive-rows and --repeats must be positive")

    rows = []
    for model_name in args.model or MODELS:
        for n in args.batch or DEFAULT_BATCHES[model_name]:
            new = measure(model_name, n, args.repeats, args.naive_rows, args.quick, device)
            append_rows(out, new, COLUMNS)
            rows += new
            print(f"  {model_name} batch {n}: " + ", ".join(f"{r['provider']} {r['median_ms']:.1f} ms" for r in new),
                  flush=True)
    print()
    print(table(rows))
    print(f"\nrows appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

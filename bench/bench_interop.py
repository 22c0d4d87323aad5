"""A PixelCNN++ in the layout of pclucas14/pixel-cnn-pp, converted by ``fastgen.interop``: how closely
the converted model reproduces the source network, and how much faster fastgen samples it than the
source's own loop. Rows go to bench/results/interop/<device>.csv.

    python -m bench.bench_interop               # the paper's size (nr_resnet 5, nr_filters 160, nr_mix 10),
                                                # random weights, 3x32x32, batch 16
    python -m bench.bench_interop --quick       # tiny: checks the script, not the speed

The source network is ``tests/pixelcnnpp_sources.py``'s re-implementation of pclucas14's forward
(plain ``F.conv2d`` on its weight-normalised tensors, written independently of fastgen's model).
The source samples with one full forward pass per pixel (all colours of a pixel drawn from that
pass's mixture); that loop is timed over its first ``--source-pixels`` pixels and scaled to the
image's pixels. fastgen's cached sampler (``model.sample``) is timed whole. The two alternate, so a
slow stretch of the machine hits both alike.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch

import fastgen
from bench.harness import append_rows, device_name, device_slug, git_commit
from fastgen.interop import load_pixelcnnpp
from fastgen.sampling import draw_noise
from tests.pixelcnnpp_sources import naive_sample_step, pclucas14_forward, pclucas14_state_dict

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "interop")
COLUMNS = ("measure", "value", "unit", "note", "nr_resnet", "nr_filters", "nr_mix", "batch", "size", "device", "torch",
           "commit", "date")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


def measure(sizes: dict, batch: int, size: int, repeats: int, source_pixels: int) -> list[tuple[str, float, str, str]]:
    """(measure, value, unit, note) rows."""
    state = pclucas14_state_dict(**sizes, seed=0)
    start = time.perf_counter()
    model = load_pixelcnnpp(state, source="pclucas14", image_size=size)
    convert_s = time.perf_counter() - start
    x = torch.randint(0, 256, (2, 3, size, size), generator=torch.Generator().manual_seed(1))
    source_input = x.float() * (2 / 255) - 1  # what pclucas14 feeds its network
    with torch.no_grad():
        ours = model(x)
        error32 = relative_error(ours, pclucas14_forward(state, source_input))
        error64 = relative_error(ours, pclucas14_forward({k: v.double() for k, v in state.items()},
                                                         source_input.double()))
    rows = [("convert", convert_s, "s", "load_pixelcnnpp of a state_dict in memory"),
            ("max relative error vs source (float32)", error32, "", "max |ours - source| / max |source|, batch 2"),
            ("max relative error vs source (float64)", error64, "", "the source computed in float64")]

    noise = draw_noise(batch, model.noise_shape, generator=torch.Generator().manual_seed(0))
    image = torch.zeros(batch, 3, size, size)
    generator = torch.Generator().manual_seed(0)

    def source_loop() -> float:
        """ms per image batch of the source's loop, scaled from its first pixels."""
        current, begin = image, time.perf_counter()
        for p in range(source_pixels):
            current = naive_sample_step(lambda v: pclucas14_forward(state, v), current, p // size, p % size,
                                        sizes["nr_mix"], generator)
        return (time.perf_counter() - begin) * 1e3 * size * size / source_pixels

    def cached() -> float:
        begin = time.perf_counter()
        model.sample(batch, noise=noise)
        return (time.perf_counter() - begin) * 1e3

    times: dict[str, list[float]] = {"source": [], "cached": []}
    with torch.no_grad():
        source_loop(), cached()  # warm-up
        for _ in range(repeats):
            times["source"].append(source_loop())
            times["cached"].append(cached())
    source_ms, cached_ms = statistics.median(times["source"]), statistics.median(times["cached"])
    implementation = fastgen.ops.implementations()["sample_program"]["CPU"]
    rows += [("source sampling loop", source_ms, "ms", f"one forward per pixel; timed over {source_pixels} of "
              f"{size * size} pixels, scaled; median of {repeats}"),
             ("fastgen cached sampler", cached_ms, "ms", f"model.sample ({implementation}); median of {repeats}"),
             ("speed-up", source_ms / cached_ms, "x", "source loop / fastgen cached sampler")]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_interop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each (default 3)")
    parser.add_argument("--source-pixels", type=int, default=2, help="pixels the source loop is timed over")
    parser.add_argument("--quick", action="store_true", help="a tiny model: checks the script, not the speed")
    parser.add_argument("--out", default=None, help="CSV to append to (default: bench/results/interop/<device>.csv)")
    args = parser.parse_args(argv)
    if min(args.batch, args.repeats, args.source_pixels) < 1:
        parser.error("--batch, --repeats and --source-pixels must be positive")
    sizes = dict(nr_resnet=1, nr_filters=8, nr_mix=2) if args.quick else dict(nr_resnet=5, nr_filters=160, nr_mix=10)
    size = 8 if args.quick else 32
    device = torch.device("cpu")
    out = args.out or os.path.join(RESULTS_DIR, f"{device_slug(device)}.csv")
    rows = measure(sizes, args.batch, size, args.repeats, args.source_pixels)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {**sizes, "batch": args.batch, "size": size, "device": device_name(device), "torch": torch.__version__,
              "commit": git_commit(), "date": stamp}
    records = [{"measure": m, "value": f"{v:.4g}", "unit": u, "note": n, **common} for m, v, u, n in rows]
    if not args.quick:
        append_rows(out, records, COLUMNS)
    print(f"{common['device']}, PixelCNN++ nr_resnet {sizes['nr_resnet']}, nr_filters {sizes['nr_filters']}, "
          f"nr_mix {sizes['nr_mix']}, 3x{size}x{size}, batch {args.batch}")
    for m, v, u, n in rows:
        print(f"  {m}: {v:.4g} {u}  ({n})")
    if not args.quick:
        print(f"rows appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

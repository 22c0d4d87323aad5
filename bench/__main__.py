"""``python -m bench``: run the op benchmarks, append rows under bench/results/, print ratios.

    python -m bench                          # every op, full sizes, CPU (or --device cuda)
    python -m bench --op masked_conv2d       # one op
    python -m bench --quick                  # tiny sizes: checks the harness, not the speed
    python -m bench --train                  # the training-step benchmark instead (bench/bench_train.py)
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch

from bench.harness import MODES, PROVIDERS, append_rows, device_name, device_slug, measure, ratio_table

OPS = ("masked_conv2d", "gated_activation", "categorical_nll", "dmol_nll", "dmol_sample", "vae_nelbo", "reparameterize", "gan_loss",
       "gradient_penalty", "feature_stats", "instance_norm_act", "pixel_norm", "minibatch_stddev")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def default_results_path(device: torch.device) -> str:
    return os.path.join(RESULTS_DIR, f"{device_slug(device)}.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=OPS, action="append", help="op to run (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list from {PROVIDERS}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list from {MODES}")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per provider")
    parser.add_argument("--out", default=None, help="CSV to append to (default: bench/results/<device>.csv)")
    parser.add_argument("--train", action="store_true",
                        help="time one training step of every model instead (python -m bench.bench_train; "
                             "--quick, --device, --repeats and --out pass through)")
    args = parser.parse_args(argv)
    if args.train:
        from bench.bench_train import main as train_main

        forwarded = ["--device", args.device] + (["--quick"] if args.quick else [])
        forwarded += (["--repeats", str(args.repeats)] if args.repeats is not None else [])
        return train_main(forwarded + (["--out", args.out] if args.out else []))

    device = torch.device(args.device)
    providers = tuple(p for p in args.providers.split(",") if p)
    modes = tuple(m for m in args.modes.split(",") if m)
    for p in providers:
        if p not in PROVIDERS:
            parser.error(f"--providers: unknown provider {p!r}; expected some of {PROVIDERS}")
    for m in modes:
        if m not in MODES:
            parser.error(f"--modes: unknown mode {m!r}; expected some of {MODES}")
    repeats = args.repeats or (3 if args.quick else 25)
    out = args.out or default_results_path(device)

    rows = []
    for op in args.op or OPS:
        module = importlib.import_module(f"bench.bench_{op}")
        for case in module.cases(quick=args.quick):
            for mode in modes:
                if mode not in case.modes:
                    continue
                new = measure(case, device, mode, providers, repeats)
                append_rows(out, new)
                rows += new
                print(f"  {case.op} {case.shape} {mode}: " +
                      ", ".join(f"{r['provider']} {r['median_ms']:.3f} ms" for r in new), flush=True)
    print()
    print(f"device: {device_name(device)}, torch {torch.__version__}; medians of {repeats} interleaved runs")
    print(ratio_table(rows))
    print(f"\nrows appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``fastgen`` command line."""
from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    import fastgen

    fastgen.info()
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgen", description="Generative image models with compiled kernels.")
    commands = parser.add_subparsers(dest="command", required=True)
    p_info = commands.add_parser("info", help="versions and which implementation serves each op")
    p_info.set_defaults(run=_info)
    p_bench = commands.add_parser("bench", help="run the benchmark harness (from a source checkout)")
    p_bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for `python -m bench`")
    p_bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``fastgen`` command line."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

from fastgen.commands import add_commands


def _info(args: argparse.Namespace, extra: list[str]) -> int:
    import fastgen

    fastgen.info()
    return 0


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    # The harness is not part of the package (nothing in fastgen imports it): it runs as its own
    # process from a source checkout.
    if importlib.util.find_spec("bench.__main__") is None:
        print("fastgen bench: the benchmark harness lives in the source checkout (bench/); run it from there",
              file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "bench", *(extra[1:] if extra[:1] == ["--"] else extra)])


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    from fastgen.demo import main as demo_main

    return demo_main(args.out, epochs=args.epochs, seed=args.seed, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgen", description="Generative image models with compiled kernels.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_commands(commands)
    commands.add_parser("info", help="versions and which implementation serves each op").set_defaults(run=_info)
    demo = commands.add_parser("demo", help="train a class-conditional Gated PixelCNN on the bundled digits, "
                                             "report test bits/dim and write a sample grid")
    demo.add_argument("--out", default="runs/demo", help="directory for checkpoints and the grid (default: runs/demo)")
    demo.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    commands.add_parser(
        "bench", help="run the benchmark harness; takes the options of `python -m bench` (see --help there)",
        add_help=False,
    ).set_defaults(run=_bench, passes_options=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.run(args, extra)


if __name__ == "__main__":
    sys.exit(main())

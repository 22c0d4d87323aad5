"""The ``fastgen`` command line.

A user error (a bad option, path, data file or checkpoint, a run directory that would be lost, a run
that diverged) ends the command with one line on stderr, ``fastgen: error: ...``, and exit code 2.
``--debug`` (anywhere on the command line) shows the traceback instead. Any other exception is a
bug in fastgen and keeps its traceback."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import subprocess
import sys
import warnings
from typing import Iterator, NoReturn

import torch

from fastgen.commands import SEED, add_commands, int_option, path_option
from fastgen.train import TrainingDiverged
from fastgen.train._validate import MAX_EPOCHS

# What a user can cause, and so gets a one-line message: ValueError covers the argument checks and
# fastgen's DataError, CheckpointError and RunDirectoryError; OSError covers missing or unwritable
# paths, a directory where a file belongs and a full disk; TrainingDiverged a run that diverged;
# MemoryError and torch's OutOfMemoryError a request larger than the machine. TypeError, KeyError,
# AttributeError, IndexError, AssertionError and other RuntimeErrors are programming errors: every
# input is checked before it could cause them, so they keep their traceback.
USER_ERRORS = (ValueError, OSError, TrainingDiverged, MemoryError, torch.OutOfMemoryError)
EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are the one line every fastgen error is. The top-level
    parser keeps its commands' parsers in ``commands`` (by name)."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("fastgen").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USER_ERROR, f"fastgen: error: {where}{message} (see `{self.prog} --help`)\n")


def one_line(error: BaseException) -> str:
    """An exception's message as one line (OSError: its reason and path, without the errno)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    elif isinstance(error, MemoryError):
        text = f"out of memory{': ' + str(error) if str(error) else ''}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings as ``fastgen: warning: ...`` lines, for the duration of a command."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"fastgen: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _info(args: argparse.Namespace, extra: list[str]) -> int:
    import fastgen

    fastgen.info()
    return 0


def _check_bench_options(extra: list[str]) -> None:
    """The harness's options that would fail deep inside it (a device that is not here, a count
    that is not positive, a directory as its CSV file), refused here in one line; it parses the
    rest itself."""
    from fastgen.commands import check_output_file
    from fastgen.train.distributed import resolve_device

    parser = Parser(prog="fastgen bench", add_help=False, allow_abbrev=False)
    parser.add_argument("--device")
    parser.add_argument("--repeats", type=int_option(1))
    parser.add_argument("--out", type=path_option)
    for name in ("--providers", "--modes"):
        parser.add_argument(name)
    known, _ = parser.parse_known_args(extra)
    if known.device is not None:
        resolve_device(known.device)
    if known.out is not None:
        check_output_file(known.out, "--out")
    for name in ("providers", "modes"):
        value = getattr(known, name)
        if value is not None and not [part for part in value.split(",") if part]:
            raise ValueError(f"--{name} must name at least one, got {value!r}")


def _harness_found() -> bool:
    try:
        return importlib.util.find_spec("bench.__main__") is not None
    except ModuleNotFoundError:  # find_spec raises, rather than answer None, when there is no bench package
        return False


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    # The harness is not part of the package (nothing in fastgen imports it): it runs as its own
    # process from a source checkout.
    if not _harness_found():
        raise ValueError("the benchmark harness lives in the source checkout (bench/); run fastgen bench from there")
    options = extra[1:] if extra[:1] == ["--"] else extra
    if not {"-h", "--help"} & set(options):
        _check_bench_options(options)
    return subprocess.call([sys.executable, "-m", "bench", *options])


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    from fastgen.demo import main as demo_main

    return demo_main(args.out, epochs=args.epochs, seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before and after the command; SUPPRESS keeps a command's parser from
    # resetting a --debug given before it.
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error instead of its one-line message")
    parser = Parser(prog="fastgen", description="Generative image models with compiled kernels.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the traceback of an error instead of its one-line message")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    parser.commands = add_commands(commands, [debug])
    commands.add_parser("info", parents=[debug],
                        help="versions and which implementation serves each op").set_defaults(run=_info)
    demo = commands.add_parser("demo", parents=[debug],
                               help="train a class-conditional Gated PixelCNN on the bundled digits, report test "
                                    "bits/dim and write a sample grid")
    demo.add_argument("--out", type=path_option, default="runs/demo",
                      help="directory for checkpoints and the grid (default: runs/demo); an earlier demo there is "
                           "replaced, any other run is refused unless --overwrite")
    demo.add_argument("--epochs", type=int_option(1, MAX_EPOCHS), default=None,
                      help="override the number of epochs (default 20)")
    demo.add_argument("--seed", type=SEED, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace whatever run is in --out")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    commands.add_parser(
        "bench", help="run the benchmark harness; takes the options of `python -m bench` (see --help there)",
        add_help=False,
    ).set_defaults(run=_bench, passes_options=True)
    return parser


def _parse_train(parser: Parser, args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """``fastgen train``'s arguments: with --config, the file's options become the defaults and
    the command line is parsed again over them. The resolved options go to ``args.run_options``
    (the train command writes them to the run directory)."""
    from fastgen.run_config import apply_config, missing_required, read_config_file, resolved_options

    train_parser = parser.commands["train"]
    if args.config is not None:
        apply_config(train_parser, read_config_file(args.config), args.config)
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    missing = missing_required(args)
    if missing:
        train_parser.error(f"the following arguments are required: {', '.join(missing)}")
    args.run_options = resolved_options(args, train_parser)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one fastgen command; returns its exit code (2 and one line on stderr for a user error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with one_line_warnings():
        try:
            if args.command == "train":
                args = _parse_train(parser, args, argv)
            return args.run(args, extra)
        except KeyboardInterrupt:
            if args.debug:
                raise
            print("fastgen: interrupted", file=sys.stderr)
            return 130
        except USER_ERRORS as e:
            if args.debug:
                raise
            print(f"fastgen: error: {one_line(e)}", file=sys.stderr)
            return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""The command line under random bad command lines (tests/fuzz_cli.py): no tracebacks, no signals,
no hangs, exit code 2 with one line for every user error. The groups are train (pix2pix and
cyclegan among its models), sample, eval, convert, translate, demo, info, bench and the bare
``fastgen``; FASTGEN_FUZZ_CASES sets the cases per group (a few in `make test`; `make fuzz` runs
many)."""
from __future__ import annotations

import os

import pytest

from tests.fuzz_cli import GROUPS, Result, fuzz, run_cases

pytest.importorskip("safetensors")
pytest.importorskip("PIL")

CASES = int(os.environ.get("FASTGEN_FUZZ_CASES", "4"))
SEED = int(os.environ.get("FASTGEN_FUZZ_SEED", "0"))


def test_no_bad_command_line_crashes_the_cli():
    summary = fuzz(CASES, SEED)
    assert len(summary.results) == CASES * len(GROUPS)
    assert not summary.failures, f"{len(summary.failures)} failing command lines:\n{summary.failure_report()}"


def test_the_fuzzer_sees_tracebacks_signals_and_bad_exits(tmp_path):
    """The fuzzer's own check: a crash, a signal and a user error, run by one worker in turn (the
    worker is restarted after the signal)."""
    summary = run_cases([("t", ["__crash__"]), ("t", ["__signal__"]), ("t", ["info", "--bogus"]), ("t", ["--help"])],
                        cwd=str(tmp_path), timeout=120)
    assert [r.failure for r in summary.results] == ["traceback", "signal SIGSEGV", None, None]
    assert summary.results[2].code == 2 and summary.results[3].code == 0
    assert Result("t", [], None, "", 1.0, timed_out=True).failure == "timeout"
    assert Result("t", [], 1, "error", 1.0).failure == "exit code 1"
    assert Result("t", [], 2, "usage: fastgen\nsomething went wrong", 1.0).failure == \
        "exit code 2 without a one-line error"

"""The sampler ops under random bad input (tests/fuzz_sample_program.py), in a subprocess so that a
crash shows as a signal instead of taking the test run with it. FASTGEN_FUZZ_CASES sets the size
(`make fuzz` runs a long mode)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import compiled_cpu

ROOT = Path(__file__).resolve().parents[1]
NOT_BUILT = pytest.mark.skipif(not compiled_cpu("sample_program_describe"), reason="fastgen._C not built")
FUZZ_CASES = int(os.environ.get("FASTGEN_FUZZ_CASES", "60"))


@NOT_BUILT
def test_mutated_programs_raise_and_never_crash(tmp_path):
    """Random changes to a program's ints and tensors, in a subprocess: every call of the three
    sampler ops returns or raises; a crash by signal fails the test."""
    out = tmp_path / "fuzz.txt"
    result = subprocess.run([sys.executable, "-m", "tests.fuzz_sample_program", "--cases", str(FUZZ_CASES),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    report = out.read_text()
    assert "crashes 0" in report and "unexplained 0" in report, report

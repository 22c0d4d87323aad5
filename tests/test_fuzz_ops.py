"""Fuzzing of every public op entry point (issue 15), through the driver tests/fuzz_ops.py.

``FASTGEN_FUZZ_CASES`` sets the cases per entry point (100 here by default, well under a minute;
``make fuzz`` runs 1000), ``FASTGEN_FUZZ_SEED`` the seed (0), and ``FASTGEN_FUZZ_OPS_OUT`` a file for
the counts per entry point (``make fuzz`` writes bench/results/fuzz-ops-<machine>.txt).
"""
from __future__ import annotations

import json
import os
import platform
import time

import torch

from tests import fuzz_ops

CASES = int(os.environ.get("FASTGEN_FUZZ_CASES", "100"))
SEED = int(os.environ.get("FASTGEN_FUZZ_SEED", "0"))


def test_fuzz_every_entry_point():
    """Random bad inputs raise an exception (never a signal); valid extreme ones agree with the
    reference (no silent disagreement, no refusal of a valid call)."""
    start = time.time()
    counts, failures = fuzz_ops.run(CASES, SEED)
    table = fuzz_ops.format_counts(counts)
    report = (f"fuzz_ops: {CASES} cases per entry point, seed {SEED}, {time.time() - start:.0f} s, "
              f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n\n"
              f"{table}\n")
    print(report)
    out = os.environ.get("FASTGEN_FUZZ_OPS_OUT")
    if out:
        with open(out, "w") as fh:
            fh.write(report + "".join(json.dumps(f) + "\n" for f in failures))
    assert set(counts) == set(fuzz_ops.ENTRY_NAMES)
    for name, n in counts.items():
        assert n["cases"] == CASES, f"{name} ran {n['cases']} of {CASES} cases"
        assert n["exceptions"] > 0, f"{name}: no case raised; the mutations do not reach it"
    totals = {k: sum(n[k] for n in counts.values()) for k in ("crashes", "accepted", "silent", "refused")}
    assert totals == dict(crashes=0, accepted=0, silent=0, refused=0), \
        f"{totals}\n{table}\n" + "\n".join(json.dumps(f)[:600] for f in failures[:20])


def test_driver_reports_crashes_acceptances_and_disagreements():
    """The driver itself can fail: a signal, an accepted bad input and a silent disagreement are
    each counted (a fuzzer that cannot fail is no test)."""
    counts, failures = fuzz_ops.run(2, 0, ["selftest.crash", "selftest.accepts", "selftest.disagrees"])
    assert counts["selftest.crash"]["crashes"] == 2 and counts["selftest.crash"]["cases"] == 2
    assert counts["selftest.accepts"]["accepted"] == 2
    assert counts["selftest.disagrees"]["silent"] == 2
    assert {f["outcome"] for f in failures} == {"crash", "accepted", "silent"}
    assert any("rc -11" in f.get("error", "") for f in failures if f["outcome"] == "crash")

"""Markdown table of one benchmark run, for the README: ``python -m bench.table [--commit C] [CSV ...]``.

A run is the set of rows sharing a commit and device; by default the newest run in each file.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import sys

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def latest_run(rows: list[dict]) -> list[dict]:
    last = rows[-1]
    return [r for r in rows if r["commit"] == last["commit"] and r["device"] == last["device"]]


def print_latest_table(parser, path: str, what: str, render) -> int:
    """``--markdown`` of a benchmark script: the newest run in ``path`` as a table (``render``), or
    the parser's error when there is none."""
    rows = latest_rows(path)
    if not rows:
        parser.error(f"--markdown: no {what} results in {path}")
    print(render(rows))
    return 0


def latest_rows(path: str) -> list[dict]:
    """The newest run's rows of the CSV at path; none when the file is missing or empty."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return latest_run(rows) if rows else []


def markdown(rows: list[dict]) -> str:
    by_case: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault((r["op"], r["shape"], r["mode"]), {})[r["provider"]] = r
    first = rows[0]
    lines = [f"{first['device']}, torch {first['torch']}, commit {first['commit']}, {first['date'][:10]}; "
             "median ms of interleaved runs (p20-p80 in the CSV)", "",
             "| op | shape | mode | reference | torch.compile | fastgen | vs reference | vs compile | peak mem vs reference |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (op, shape, mode), by in by_case.items():
        def ms(p):
            return float(by[p]["median_ms"]) if p in by else float("nan")

        mem = (float(by["fastgen"]["peak_mem_mb"]) / float(by["reference"]["peak_mem_mb"])
               if {"fastgen", "reference"} <= set(by) and float(by["reference"]["peak_mem_mb"]) > 0 else float("nan"))
        lines.append(f"| {op} | {shape} | {mode} | {ms('reference'):.2f} | {ms('compiled'):.2f} | {ms('fastgen'):.2f} "
                     f"| {ms('reference') / ms('fastgen'):.2f}x | {ms('compiled') / ms('fastgen'):.2f}x | {mem:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", nargs="*", help="result files (default: every op benchmark in bench/results/*.csv)")
    parser.add_argument("--commit", default=None, help="the run of this commit (default: the newest run)")
    parser.add_argument("--op", action="append", help="only these ops (repeatable)")
    args = parser.parse_args(argv)
    paths = args.csv or sorted(glob.glob(os.path.join(RESULTS_DIR, "*.csv")))
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if "op" not in (reader.fieldnames or ()):  # another benchmark's results (quality, training steps)
            continue
        if args.commit:
            rows = [r for r in rows if r["commit"] == args.commit]
        if args.op:
            rows = [r for r in rows if r["op"] in args.op]
        if rows:
            print(markdown(latest_run(rows)))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

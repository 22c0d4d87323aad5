"""Timing, peak memory and result rows shared by every op benchmark.

Providers are measured side by side: each repetition runs every provider once, in turn, so slow
drift of the machine (frequency, neighbours) hits all of them alike. Reported: median, p20, p80.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

PROVIDERS = ("reference", "compiled", "fastgen")
# Every case compiles the same reference function anew (other shapes, grad mode); the default
# limit would silently fall back to eager after 8 and time the wrong thing.
torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
MODES = ("fwd", "fwd+bwd")
COLUMNS = ("op", "provider", "mode", "shape", "median_ms", "p20_ms", "p80_ms", "peak_mem_mb", "device", "torch",
           "commit", "date")


@dataclass
class Case:
    """One op at one size. ``make_inputs(device)`` returns (args, kwargs); float tensors in args
    get gradients in fwd+bwd mode. ``fastgen`` and ``reference`` take the same arguments."""

    op: str
    shape: str
    make_inputs: Callable[[torch.device], tuple[tuple, dict]]
    fastgen: Callable
    reference: Callable
    modes: tuple[str, ...] = MODES
    compiled: dict[str, Callable] = field(default_factory=dict, repr=False)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # "Intel(R) Xeon(R) Processor" -> "Intel Xeon": trademarks and generic words say nothing.
    model = " ".join(re.sub(r"\((R|TM)\)|\b(Processor|CPU)\b", " ", model).split()) or "cpu"
    return f"{model} ({torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    """The device name as a file name: "amd-epyc-2-threads", "nvidia-h200"."""
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def git_commit() -> str:
    """The checkout's commit, with "-dirty" when tracked files other than bench/results/ differ from it;
    $FASTGEN_COMMIT where set (a copy of the tree without .git)."""
    if os.environ.get("FASTGEN_COMMIT"):
        return os.environ["FASTGEN_COMMIT"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=root).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=5, cwd=root).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = any(not line[3:].startswith("bench/results/") for line in status)
    return (head + "-dirty" if dirty else head) or "unknown"


def write_report(lines: list[str], path: str) -> None:
    """Print a text report and write it to ``path``."""
    report = "\n".join(lines) + "\n"
    print(report)
    with open(path, "w") as f:
        f.write(report)
    print(f"written to {path}")


def timing_ms(ts_ms: list[float], digits: int) -> dict[str, float]:
    """median_ms, p20_ms and p80_ms of repeated timings in milliseconds (inclusive deciles; one
    timing is all three), rounded to ``digits``: the columns every benchmark's rows carry."""
    q = statistics.quantiles(ts_ms, n=10, method="inclusive") if len(ts_ms) > 1 else [ts_ms[0]] * 9
    return {"median_ms": round(statistics.median(ts_ms), digits), "p20_ms": round(q[1], digits),
            "p80_ms": round(q[7], digits)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(fn: Callable, args: tuple, kwargs: dict, mode: str) -> Callable[[], Any]:
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return run
    grads = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    with torch.no_grad():
        grad_out = torch.randn_like(fn(*args, **kwargs))

    def release():
        for a in grads:
            a.grad = None

    def run():
        release()
        out = fn(*args, **kwargs)
        out.backward(grad_out)
    # The previous call's gradients must be freed before a memory measurement starts; freed inside
    # the measured call, they would offset the new ones and hide them from the peak.
    run.release = release
    return run


def _inputs(case: Case, device: torch.device, mode: str) -> tuple[tuple, dict]:
    args, kwargs = case.make_inputs(device)
    if mode == "fwd+bwd":
        args = tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                     for a in args)
    return args, kwargs


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines (written straight to file descriptor 2)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(run: Callable[[], Any], device: torch.device) -> float:
    """Peak bytes allocated above the starting point while ``run`` executes, in MiB."""
    getattr(run, "release", lambda: None)()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    # CPU: replay the profiler's allocation events in time order.
    with _quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                 profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return peak / 2**20


def measure(case: Case, device: torch.device, mode: str, providers: tuple[str, ...], repeats: int,
            warmup: int = 2) -> list[dict]:
    """Time every provider on one case and mode, interleaved; returns one row per provider."""
    runs = {}
    for name in providers:
        args, kwargs = _inputs(case, device, mode)
        if name == "fastgen":
            fn = case.fastgen
        elif name == "reference":
            fn = case.reference
        else:
            fn = case.compiled.setdefault(mode, torch.compile(case.reference, dynamic=False))
        runs[name] = _runner(fn, args, kwargs, mode)
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"device": device_name(device), "torch": torch.__version__, "commit": git_commit(), "date": stamp}
    rows = []
    for name, ts in times.items():
        rows.append({"op": case.op, "provider": name, "mode": mode, "shape": case.shape, **timing_ms(ts, 4),
                     "peak_mem_mb": round(peak_memory_mb(runs[name], device), 2), **common})
    return rows


def append_rows(path: str, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    """Append rows to a CSV file (header written when the file is new)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def ratio_table(rows: list[dict]) -> str:
    """Medians per provider and the speedups of fastgen over the reference and torch.compile."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["op"], r["shape"], r["mode"]), {})[r["provider"]] = r
    header = (f"{'op':<18} {'shape':<34} {'mode':<8} {'reference':>10} {'compiled':>10} {'fastgen':>10} "
              f"{'vs ref':>7} {'vs comp':>7} {'mem vs ref':>10}")
    lines = [header, "-" * len(header)]
    for (op, shape, mode), by in groups.items():
        def ms(p):
            return by[p]["median_ms"] if p in by else float("nan")

        def speedup(p):
            return ms(p) / ms("fastgen") if p in by and "fastgen" in by else float("nan")

        mem = (by["fastgen"]["peak_mem_mb"] / by["reference"]["peak_mem_mb"]
               if "fastgen" in by and "reference" in by and by["reference"]["peak_mem_mb"] > 0 else float("nan"))
        lines.append(f"{op:<18} {shape:<34} {mode:<8} {ms('reference'):>10.3f} {ms('compiled'):>10.3f} "
                     f"{ms('fastgen'):>10.3f} {speedup('reference'):>6.2f}x {speedup('compiled'):>6.2f}x "
                     f"{mem:>9.2f}x")
    return "\n".join(lines)

"""The arithmetic bound of the PixelCNN training step of ``bench.bench_train``:
``python -m bench.step_bound``.

Counts the multiply-adds the causal masks keep (a k x k mask 'B' keeps p * k + p + 1 taps, 'A'
one fewer; p = k // 2) in every masked convolution of the model at batch 32, times three passes
(forward, grad_x, grad_W), and divides by the GEMM rate this machine reaches with ``torch.mm`` of
two 2048 x 2048 float32 matrices (median of 10, after 3 warm-up products). The report goes to
bench/results/step-bound-<device>.txt.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from bench.harness import device_name, device_slug, git_commit, write_report
from fastgen.models import PixelCNN
from fastgen.nn import MaskedConv2d

BATCH, SIZE, MM = 32, 28, 2048


def kept_multiply_adds(model: torch.nn.Module, batch: int, pixels: int) -> int:
    """Multiply-adds of one forward pass over the taps the masks keep (one colour group)."""
    total = 0
    for m in model.modules():
        if isinstance(m, MaskedConv2d):
            k = m.weight.shape[-1]
            p = k // 2
            taps = p * k + p + (1 if m.mask_type == "B" else 0)
            total += taps * m.weight.shape[0] * m.weight.shape[1] * batch * pixels
    return total


def gemm_rate() -> float:
    """FLOP/s of torch.mm on two MM x MM float32 matrices, median of 10."""
    a, b = torch.randn(MM, MM), torch.randn(MM, MM)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * MM ** 3 / statistics.median(times)


def main() -> int:
    model = PixelCNN(1, 2, SIZE, hidden_channels=128, n_layers=12)
    macs = kept_multiply_adds(model, BATCH, SIZE * SIZE)
    flops = 3 * 2 * macs
    rate = gemm_rate()
    device = torch.device("cpu")
    lines = [f"# {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"commit {git_commit()}", "# command: python -m bench.step_bound", "",
             f"PixelCNN (12 x 128, {SIZE}x{SIZE}, batch {BATCH}): {macs / 1e9:.2f} G kept multiply-adds per "
             f"forward, {flops / 1e9:.1f} GFLOP per step (forward, grad_x, grad_W)",
             f"torch.mm {MM}x{MM} float32: {rate / 1e9:.1f} GFLOP/s",
             f"the step's arithmetic at that rate: {flops / rate * 1e3:.0f} ms"]
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    write_report(lines, os.path.join(results, f"step-bound-{device_slug(device)}.txt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

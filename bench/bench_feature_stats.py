"""feature_stats (the op feature_stats_update): FID's feature covariance streamed over batches of
500 (fastgen) vs what a user would write with every feature in memory,
``torch.cov(torch.cat(batches).T)`` in float32 (reference), vs torch.compile of that (compiled:
inductor keeps the matrix product an ATen call, so it mostly measures the same GEMM).

The fastgen provider includes what a user pays for the covariance: the float64 accumulators, one
update per batch and the finish (mean, correction, symmetrising); it returns float64.
"""
from __future__ import annotations

import torch

from bench.harness import Case
from fastgen.metrics import FeatureStatistics

BATCH = 500
FULL = [(50_000, 2048), (10_000, 512)]  # FID's Inception pool features; a smaller feature network
QUICK = [(1_000, 16)]


def streamed_covariance(batches: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The covariance of all rows, one batch at a time: what fastgen.metrics' FID does."""
    stats = FeatureStatistics(batches[0].shape[1], batches[0].device)
    for batch in batches:
        stats.update(batch)
    return stats.covariance()


def concatenated_covariance(batches: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cov(torch.cat(batches).T)


def _case(n: int, d: int) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        # Non-negative and correlated, like pooled ReLU features.
        mix = torch.randn(d, d, generator=g) / d**0.5
        batches = tuple((torch.randn(BATCH, d, generator=g) @ mix).relu().to(device) for _ in range(n // BATCH))
        return (batches,), {}

    return Case(op="feature_stats", shape=f"{n}x{d} batches of {BATCH}", make_inputs=make_inputs,
                fastgen=streamed_covariance, reference=concatenated_covariance, modes=("fwd",))


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]

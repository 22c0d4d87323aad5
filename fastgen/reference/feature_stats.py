r"""Reference streaming update of feature statistics (the mean and covariance behind FID).

With d = features - shift (B rows of D features, in the features' dtype), one update adds

    total[i]    += sum_b d[b, i]                   (accumulated in float64)
    cross[i, j] += sum_b d[b, i] * d[b, j]         for i <= j only

so that after every batch of N rows in all, mean = shift + total / N and

    cov[i, j] = (cross[i, j] - total[i] * total[j] / N) / (N - 1)     (i <= j; symmetric).

The shift (any fixed vector near the mean: the first batch's mean, or zero) keeps the sums of
products small, so the subtraction above loses little to cancellation. The strictly lower
triangle of ``cross`` is never read or written: the caller symmetrises once at the end.

Precision: the products of each chunk of at most ``CHUNK`` (1024) rows are summed in the
features' dtype, then added into the float64 accumulators, so for float32 features the float32
rounding is that of a sum of at most 1024 terms whatever the number of rows (and a float32 product
that overflows is inf, as in the kernels); float64 features are float64 throughout.
"""
from __future__ import annotations

import torch

CHUNK = 1024  # rows whose products are summed in the features' dtype


def feature_stats_update_reference(features: torch.Tensor, shift: torch.Tensor, total: torch.Tensor,
                                   cross: torch.Tensor) -> None:
    """Add one batch (B, D) into ``total`` (D,) and the upper triangle of ``cross`` (D, D), both float64."""
    if features.shape[0] == 0:
        return
    d = features - shift
    total += d.sum(0, dtype=torch.float64)
    rows, cols = torch.triu_indices(d.shape[1], d.shape[1], device=d.device)
    for chunk in d.split(CHUNK):
        cross[rows, cols] += (chunk.T @ chunk)[rows, cols].double()


def finish_covariance_reference(total: torch.Tensor, cross: torch.Tensor, shift: torch.Tensor,
                                n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of the ``n`` rows accumulated, from the upper triangle of ``cross``."""
    mean = total / n
    # cov[i, j] = (cross[i, j] - total[i] * total[j] / n) / (n - 1) for i <= j, then mirrored (in
    # place where it can be: at D = 2048 each new D x D tensor costs more than its arithmetic).
    cov = torch.triu(cross).addr_(total, mean, alpha=-1).div_(n - 1).triu_()
    cov += cov.T.tril(-1)
    return shift.double() + mean, cov

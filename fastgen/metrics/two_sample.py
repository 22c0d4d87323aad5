"""A kernel two-sample test: do ``x`` and ``y`` come from the same distribution? (Gretton et al., 2012)

For samples x_1..x_n and y_1..y_m in R^D and the Gaussian (RBF) kernel
k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), the statistic is the unbiased estimate of the squared
maximum mean discrepancy (Gretton et al., 2012, eq. 3):

    MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
              - 2/(nm) sum_{i, j} k(x_i, y_j).

The Gaussian kernel is characteristic, so the population MMD^2 is 0 if and only if the two
distributions are equal; the unbiased estimate is centred on it, so it can come out slightly
negative when they are. The bandwidth sigma defaults to the median heuristic: the median of
|z_i - z_j| over the pairs i < j of the pooled sample z = (x_1..x_n, y_1..y_m).

Under the null hypothesis (one distribution) the pooled sample is exchangeable, so the statistic
of a random split of z into groups of n and m has the null distribution of the observed one. With
B such splits and T_b their statistics, the permutation p-value

    p = (1 + #{b : T_b >= T_observed}) / (1 + B)

is valid (P(p <= alpha) <= alpha under the null) for any B (Phipson & Smyth, 2010), and never below
1 / (1 + B): to reject at level alpha, use at least 1/alpha - 1 permutations.

The pooled (n + m) x (n + m) kernel matrix is computed once, in float64, and every split is
evaluated from it, so memory is O((n + m)^2): about 3.2 GB at n + m = 20,000.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from fastgen.metrics.scores import _mmd2_from_sums, _unbiased_mmd2

MAX_PERMUTATIONS = 1_000_000
# Permutations x pooled points per batch of the permutation loop: each of its four (batch, n + m)
# float64 buffers then stays at 16 MiB, and 2 x 1000 points take their 1000 permutations in one batch.
_BATCH_ELEMENTS = 1 << 21
# A split that only reorders points within each group (or, for n = m, swaps the groups) reproduces
# the observed statistic, but through different arithmetic, so the two can differ by rounding; such a
# tie must count as ">=". Kernel values lie in (0, 1], the statistic in [-2, 2], and its rounding error
# is ~1e-15, so a margin of 1e-12 catches the ties and nothing that is a real difference in practice
# (any it did catch would only make the p-value more conservative).
_TIE_TOLERANCE = 1e-12


class MMDTest(NamedTuple):
    """The outcome of ``mmd_test``: the unbiased MMD^2 of the two samples, its permutation p-value,
    the kernel bandwidth used (given, or the median heuristic) and the number of permutations."""
    statistic: float
    p_value: float
    bandwidth: float
    permutations: int


def _check_sample(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, (N, D) samples by features, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows (samples) for the unbiased MMD, got {t.shape[0]}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 column (feature), got shape {tuple(t.shape)}")


def _median_heuristic(distance: torch.Tensor) -> float:
    """The median of the distances over pairs i < j (each pair once; numpy's median: the mean of
    the two middle values when their number is even)."""
    n = distance.shape[0]
    pairs = distance[torch.ones(n, n, dtype=torch.bool, device=distance.device).triu(1)]
    k = pairs.numel()
    lower, upper = pairs.kthvalue((k + 1) // 2).values, pairs.kthvalue(k // 2 + 1).values
    median = float(lower / 2 + upper / 2)  # halves first: the sum of two huge distances could overflow
    if median == 0:
        raise ValueError("the pooled sample of x and y is degenerate: at least half of its pairs of points are "
                         "equal (all of them, if every point is the same), so the median heuristic gives "
                         "bandwidth 0; check the inputs, or pass bandwidth= explicitly")
    if not math.isfinite(median):
        raise ValueError("the pairwise distances of x and y overflow float64; rescale the inputs")
    return median


def mmd_test(x: torch.Tensor, y: torch.Tensor, *, permutations: int = 1000, bandwidth: float | None = None,
             generator: torch.Generator | None = None) -> MMDTest:
    """The kernel MMD two-sample permutation test (Gretton et al., 2012) with a Gaussian kernel.

    Args:
        x: (n, D) floating tensor, one sample per row, n >= 2.
        y: (m, D) floating tensor on the same device, m >= 2; n and m may differ.
        permutations: the number B of random splits of the pooled sample into groups of n and m,
            an integer in [1, 1,000,000]. The p-value is at least 1 / (1 + B).
        bandwidth: sigma of k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), a finite positive number; None
            (the default) takes the median heuristic, the median pairwise distance of the pooled
            sample.
        generator: the torch.Generator that draws the permutations (the global one if None); the
            same generator state gives the same result.

    Returns:
        MMDTest(statistic, p_value, bandwidth, permutations): the unbiased MMD^2 of x and y, the
        permutation p-value (1 + #{permuted statistic >= statistic}) / (1 + permutations), in (0, 1],
        the bandwidth used and the number of permutations.

    Raises:
        TypeError, ValueError: naming the bad argument, before any heavy work.

    Example: two samples of one distribution; a p-value above 0.01 means the test does not reject
    "same distribution" at the 1% level (it does not prove the distributions are equal).

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g)
    >>> result = mmd_test(x, y, generator=g)
    >>> result.p_value > 0.01
    True
    >>> mmd_test(x, y + 1.0, generator=g).p_value < 0.01  # shifted by one standard deviation: rejected
    True
    """
    _check_sample(x, "x")
    _check_sample(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different feature sizes (D): {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"x and y are on different devices: {x.device} and {y.device}")
    if isinstance(permutations, bool) or not isinstance(permutations, numbers.Integral):
        raise TypeError(f"permutations must be an integer, got {permutations!r}")
    if not 1 <= permutations <= MAX_PERMUTATIONS:
        raise ValueError(f"permutations must be in [1, {MAX_PERMUTATIONS:,}], got {permutations}")
    permutations = int(permutations)
    if bandwidth is not None:
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real):
            raise TypeError(f"bandwidth must be None (the median heuristic) or a number, got {bandwidth!r}")
        if not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be a finite positive number, got {bandwidth!r}")
        bandwidth = float(bandwidth)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    for t, name in ((x, "x"), (y, "y")):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} holds NaN or infinite values")

    n, m = len(x), len(y)
    pooled = torch.cat([x.detach(), y.detach()]).double()
    # The direct distance, not cdist's faster |a|^2 + |b|^2 - 2 a.b, which leaves equal points ~1e-8
    # apart: duplicates must come out exactly 0 for the median heuristic and its degeneracy check.
    distance = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist")
    if bandwidth is None:
        bandwidth = _median_heuristic(distance)
    # (d / sigma)^2 rather than d^2 / sigma^2: a tiny sigma^2 would underflow to 0 and give 0 / 0 on the diagonal.
    kernel = (distance / bandwidth).square_().mul_(-0.5).exp_()
    del distance
    statistic = _unbiased_mmd2(kernel[:n, :n], kernel[:n, n:], kernel[n:, n:])

    # A split is an indicator u of the x group (and 1 - u of the y group). With the kernel's diagonal
    # zeroed, the three sums of the statistic are quadratic forms: within_x = u' K u,
    # within_y = (1-u)' K (1-u), cross = u' K (1-u), one matrix product per group for a whole batch of
    # splits. Each is summed directly rather than by subtraction from the total: the kernel is positive,
    # so the sums do not cancel and the permuted statistics are as accurate as the observed one.
    kernel.fill_diagonal_(0)
    total = n + m
    batch = max(1, _BATCH_ELEMENTS // total)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    at_least = 0
    for start in range(0, permutations, batch):
        size = min(batch, permutations - start)
        order = torch.stack([torch.randperm(total, generator=generator, device=draw_device) for _ in range(size)])
        in_x = torch.zeros(size, total, dtype=torch.float64, device=kernel.device)
        in_x.scatter_(1, order[:, :n].to(kernel.device), 1.0)
        in_y = 1 - in_x
        from_x, from_y = in_x @ kernel, in_y @ kernel  # (size, total): kernel sums from each group to every point
        permuted = _mmd2_from_sums((from_x * in_x).sum(1), (from_y * in_y).sum(1), (from_x * in_y).sum(1), n, m)
        at_least += int((permuted >= statistic - _TIE_TOLERANCE).sum())
    return MMDTest(statistic=statistic, p_value=(1 + at_least) / (1 + permutations), bandwidth=bandwidth,
                   permutations=permutations)

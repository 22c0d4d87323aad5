"""fastgen.metrics.mmd_test: the statistic and the median heuristic against independent numpy
computations, the permutation p-value against the exact one over every split, its calibration
under the null and its power on a shift, determinism, and bad input refused by name."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import fastgen.metrics.two_sample as two_sample
from fastgen.metrics import MMDTest, mmd_test


def draw(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def numpy_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def numpy_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al. (2012), eq. 3, written out with numpy: off-diagonal within-sample means."""
    def k(a, b):
        return np.exp(-numpy_distances(a, b) ** 2 / (2 * sigma ** 2))
    kxx, kyy = k(x, x), k(y, y)
    off_x, off_y = ~np.eye(len(x), dtype=bool), ~np.eye(len(y), dtype=bool)
    return float(kxx[off_x].mean() + kyy[off_y].mean() - 2 * k(x, y).mean())


def numpy_median_heuristic(x: np.ndarray, y: np.ndarray) -> float:
    z = np.concatenate([x, y])
    i, j = np.triu_indices(len(z), k=1)
    return float(np.median(numpy_distances(z, z)[i, j]))


# -- the statistic and the bandwidth -------------------------------------------------------------------
@pytest.mark.parametrize("bandwidth", [None, 0.4, 1.3, 25.0])
def test_statistic_equals_the_unbiased_mmd2_written_out(bandwidth):
    x, y = draw(40, 3, 0), draw(25, 3, 1, shift=0.3)  # unequal sizes
    result = mmd_test(x, y, permutations=10, bandwidth=bandwidth, generator=torch.Generator().manual_seed(0))
    assert isinstance(result, MMDTest)
    sigma = numpy_median_heuristic(x.numpy(), y.numpy()) if bandwidth is None else bandwidth
    assert result.bandwidth == pytest.approx(sigma, rel=1e-12)
    assert result.statistic == pytest.approx(numpy_mmd2(x.numpy(), y.numpy(), sigma), rel=1e-10, abs=1e-14)
    assert result.permutations == 10


@pytest.mark.parametrize("sizes", [(3, 2), (3, 3), (40, 25)])  # 10, 15 and 2080 pairs: even and odd counts
def test_median_heuristic_equals_numpy_median_of_pairwise_distances(sizes):
    x, y = draw(sizes[0], 4, 2), draw(sizes[1], 4, 3)
    result = mmd_test(x, y, permutations=1, generator=torch.Generator().manual_seed(0))
    assert result.bandwidth == pytest.approx(numpy_median_heuristic(x.numpy(), y.numpy()), rel=1e-12)


def test_float32_input_is_computed_in_float64():
    x, y = draw(30, 2, 4).float(), draw(20, 2, 5).float()
    result = mmd_test(x, y, permutations=5, generator=torch.Generator().manual_seed(0))
    assert result == mmd_test(x.double(), y.double(), permutations=5, generator=torch.Generator().manual_seed(0))


# -- the p-value ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", [(3, 4), (3, 3)])
def test_p_value_matches_the_exact_permutation_test(sizes):
    # Few enough points to list every split: the p-value over random splits estimates the exact share
    # of splits whose statistic reaches the observed one. For n = m the swapped split ties the observed
    # statistic exactly, which only counts if ties are caught despite rounding.
    n, m = sizes
    x, y = draw(n, 2, 6), draw(m, 2, 7, shift=2.0)
    result = mmd_test(x, y, permutations=4000, generator=torch.Generator().manual_seed(1))
    z, sigma = torch.cat([x, y]).numpy(), result.bandwidth
    observed = numpy_mmd2(x.numpy(), y.numpy(), sigma)
    splits = list(itertools.combinations(range(n + m), n))
    reached = 0
    for group in splits:
        mask = np.zeros(n + m, dtype=bool)
        mask[list(group)] = True
        reached += numpy_mmd2(z[mask], z[~mask], sigma) >= observed - 1e-9
    exact = reached / len(splits)
    assert reached >= (2 if n == m else 1)
    assert abs(result.p_value - exact) < 4 * math.sqrt(exact * (1 - exact) / 4000) + 1 / 4001


def test_same_distribution_is_rarely_rejected():
    small = []
    for seed in range(20):
        x, y = draw(40, 2, 100 + 2 * seed), draw(40, 2, 101 + 2 * seed)
        result = mmd_test(x, y, permutations=200, generator=torch.Generator().manual_seed(seed))
        assert 1 / 201 <= result.p_value <= 1
        small.append(result.p_value < 0.05)
    assert np.mean(small) < 0.25  # about 0.05 expected


def test_shifted_distribution_is_rejected():
    x, y = draw(100, 2, 8), draw(120, 2, 9, shift=1.0)
    result = mmd_test(x, y, permutations=500, generator=torch.Generator().manual_seed(0))
    assert result.statistic > 0
    assert result.p_value < 0.01
    assert result.p_value >= 1 / 501  # never 0: the observed split counts as one of its own permutations


def test_p_value_range_and_determinism():
    x, y = draw(30, 3, 10), draw(30, 3, 11)
    one = mmd_test(x, y, permutations=1, generator=torch.Generator().manual_seed(0))
    assert one.p_value in (0.5, 1.0)
    identical = mmd_test(x, x.clone(), permutations=50, generator=torch.Generator().manual_seed(0))
    assert 0 < identical.p_value <= 1
    a = mmd_test(x, y, permutations=300, generator=torch.Generator().manual_seed(5))
    b = mmd_test(x, y, permutations=300, generator=torch.Generator().manual_seed(5))
    assert a == b
    other = mmd_test(x, y, permutations=300, generator=torch.Generator().manual_seed(6))
    assert other.statistic == a.statistic and other.bandwidth == a.bandwidth  # only the p-value is random
    torch.manual_seed(3)
    c = mmd_test(x, y, permutations=100)  # the global generator when none is given
    torch.manual_seed(3)
    assert mmd_test(x, y, permutations=100) == c


def test_batches_of_permutations_do_not_change_the_result(monkeypatch):
    x, y = draw(12, 2, 12), draw(9, 2, 13, shift=0.5)
    whole = mmd_test(x, y, permutations=100, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(two_sample, "_BATCH_ELEMENTS", 21 * 7)  # 7 permutations a batch, the last one short
    assert mmd_test(x, y, permutations=100, generator=torch.Generator().manual_seed(2)) == whole


def test_degenerate_sample():
    same = torch.ones(5, 2)
    with pytest.raises(ValueError, match="degenerate"):
        mmd_test(same, same.clone())
    mostly = torch.zeros(10, 2)
    mostly[0] = 1.0  # pooled with y, 55 of the 66 pairs are equal: the median distance is 0, not all points
    with pytest.raises(ValueError, match="degenerate"):
        mmd_test(mostly, torch.zeros(2, 2))
    result = mmd_test(same, same.clone(), bandwidth=1.0, permutations=20)  # a given bandwidth needs no median
    assert result.statistic == 0.0 and result.p_value == 1.0


# -- bad input -----------------------------------------------------------------------------------------
GOOD = torch.zeros(4, 2).normal_(generator=torch.Generator().manual_seed(0))
NAN = GOOD.clone()
NAN[1, 1] = float("nan")


@pytest.mark.parametrize("x, y, kwargs, error, match", [
    (GOOD[0], GOOD, {}, ValueError, "x must be 2-D"),
    (GOOD, GOOD[None], {}, ValueError, "y must be 2-D"),
    (GOOD, torch.zeros(4, 3), {}, ValueError, r"feature sizes \(D\): 2 and 3"),
    (NAN, GOOD, {}, ValueError, "x holds NaN"),
    (GOOD, GOOD.clone().fill_(float("inf")), {}, ValueError, "y holds NaN or infinite"),
    (GOOD, GOOD[:1], {}, ValueError, "y must have at least 2 rows"),
    (GOOD[:, :0], GOOD[:, :0], {}, ValueError, "x must have at least 1 column"),
    (GOOD.long(), GOOD, {}, TypeError, "x must be a floating-point tensor"),
    (GOOD.tolist(), GOOD, {}, TypeError, "x must be a torch.Tensor"),
    (GOOD, GOOD, {"permutations": 0}, ValueError, "permutations must be in"),
    (GOOD, GOOD, {"permutations": 2_000_000}, ValueError, "permutations must be in"),
    (GOOD, GOOD, {"permutations": True}, TypeError, "permutations must be an integer"),
    (GOOD, GOOD, {"permutations": 10.0}, TypeError, "permutations must be an integer"),
    (GOOD, GOOD, {"bandwidth": 0}, ValueError, "bandwidth must be a finite positive"),
    (GOOD, GOOD, {"bandwidth": -1.0}, ValueError, "bandwidth must be a finite positive"),
    (GOOD, GOOD, {"bandwidth": float("nan")}, ValueError, "bandwidth must be a finite positive"),
    (GOOD, GOOD, {"bandwidth": float("inf")}, ValueError, "bandwidth must be a finite positive"),
    (GOOD, GOOD, {"bandwidth": "1"}, TypeError, "bandwidth must be None"),
    (GOOD, GOOD, {"bandwidth": True}, TypeError, "bandwidth must be None"),
    (GOOD, GOOD, {"generator": 0}, TypeError, "generator must be a torch.Generator"),
])
def test_bad_input_is_refused_by_name(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd_test(x, y, **kwargs)


def test_numpy_scalars_are_accepted():
    result = mmd_test(GOOD, GOOD + 1, permutations=np.int64(9), bandwidth=np.float64(0.5))
    assert result.permutations == 9 and type(result.permutations) is int and result.bandwidth == 0.5

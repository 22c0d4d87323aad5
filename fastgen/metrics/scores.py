"""The sample-quality scores, from features (or from images and a feature network):

- ``fid``: the Frechet distance between Gaussians fitted to two feature sets (Heusel et al., 2017),
- ``kid``: the squared MMD with the cubic polynomial kernel, unbiased, over random subsets
  (Binkowski et al., 2018),
- ``inception_score``: exp E[KL(p(y|x) || p(y))] over splits (Salimans et al., 2016),
- ``precision_recall``: k-nearest-neighbour manifolds (Kynkaanniemi et al., 2019) with density
  and coverage (Naeem et al., 2020).

All arithmetic is float64. The definitions are those of torch-fidelity, pytorch-fid and prdc
(tests/test_metrics.py checks equality on the same features), so the numbers can be compared
with theirs as long as the feature network, the sample counts and the reference split agree:
every figure fastgen prints states those.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from fastgen.metrics.features import FeatureNetwork, extract_features
from fastgen.metrics.statistics import FeatureStatistics


class ScoreWithSpread(NamedTuple):
    """A score and its standard deviation over subsets or splits (numpy.std, ddof 0)."""
    mean: float
    std: float


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float
    density: float
    coverage: float


def _features(x, network: FeatureNetwork | None, what: str, batch_size: int, logits: bool = False) -> torch.Tensor:
    """Features (or logits) from an (N, D) tensor, or from (N, C, H, W) images through ``network``."""
    if isinstance(x, torch.Tensor) and x.dim() == 2:
        if not x.dtype.is_floating_point:
            raise ValueError(f"{what} must be float features, got dtype {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} hold NaN or infinite values")
        return x.detach().double()
    if network is None:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be (N, D) features, or images together with network=, got {shape}")
    features, class_logits = extract_features(network, x, batch_size)
    if logits:
        if class_logits is None:
            raise ValueError(f"the Inception Score needs class logits, and {network.name} has no classifier head")
        return class_logits.double()
    return features.double()


def frechet_distance(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """||m_a - m_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)).

    tr((C_a C_b)^(1/2)) = tr((S C_b S)^(1/2)) with S = C_a^(1/2): S C_b S is symmetric positive
    semi-definite, so both roots come from symmetric eigen-decompositions and no complex residue
    of a general matrix square root is left to discard."""
    mean_a, cov_a, mean_b, cov_b = (torch.as_tensor(t, dtype=torch.float64) for t in (mean_a, cov_a, mean_b, cov_b))
    d = mean_a.shape[0] if mean_a.dim() == 1 else -1
    for name, t, shape in (("mean_a", mean_a, (d,)), ("mean_b", mean_b, (d,)), ("cov_a", cov_a, (d, d)),
                           ("cov_b", cov_b, (d, d))):
        if d < 1 or tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape if d > 0 else '(D,) or (D, D)'}, got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    values, vectors = torch.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    inner = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mean_a - mean_b
    return float(diff @ diff + cov_a.trace() + cov_b.trace() - 2 * trace_root)


def _statistics(x, network, what: str, batch_size: int) -> FeatureStatistics:
    if isinstance(x, FeatureStatistics):
        return x
    features = _features(x, network, what, batch_size)
    return FeatureStatistics.of(features)


def fid(a, b, *, network: FeatureNetwork | None = None, batch_size: int = 256) -> float:
    """The Frechet distance between the feature distributions of ``a`` and ``b``: each a
    FeatureStatistics, (N, D) features, or (N, C, H, W) images in [0, 1] with ``network``."""
    stats = [_statistics(x, network, name, batch_size) for x, name in ((a, "a"), (b, "b"))]
    if stats[0].dim != stats[1].dim:
        raise ValueError(f"a and b have different feature sizes: {stats[0].dim} and {stats[1].dim}")
    for s, name in zip(stats, "ab"):
        if s.count <= s.dim:
            raise ValueError(f"FID needs more samples than feature dimensions: {name} has {s.count} samples of "
                             f"{s.dim} features, so its covariance is singular; use at least {s.dim + 1} (10,000 "
                             "or more for comparable numbers)")
    return frechet_distance(stats[0].mean, stats[0].covariance(), stats[1].mean, stats[1].covariance())


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef0: float) -> torch.Tensor:
    return (x @ y.T * gamma + coef0) ** degree


def _mmd2_from_sums(within_x, within_y, cross, n: int, m: int):
    """The unbiased squared MMD (Gretton et al., 2012, eq. 3) of a sample of n and one of m from its
    kernel sums: ``within_x`` = sum over i != j of k(x_i, x_j), ``within_y`` likewise, ``cross`` =
    sum over all i, j of k(x_i, y_j). Elementwise, so the one formula serves a single pair of
    samples (kid) and a batch of permuted pairs (metrics.two_sample.mmd_test) alike."""
    return within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2 * cross / (n * m)


def _unbiased_mmd2(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor) -> float:
    """The unbiased squared MMD of a sample of n and one of m from the kernel blocks (n, n), (n, m)
    and (m, m): the within-sample kernel means leave out the diagonal (i = j), the cross term keeps
    every pair."""
    n, m = k_xy.shape
    return float(_mmd2_from_sums(k_xx.sum() - k_xx.diagonal().sum(), k_yy.sum() - k_yy.diagonal().sum(),
                                 k_xy.sum(), n, m))


def kid(a, b, *, network: FeatureNetwork | None = None, subsets: int = 100, subset_size: int | None = None,
        degree: int = 3, gamma: float | None = None, coef0: float = 1.0, seed: int = 0,
        batch_size: int = 256) -> ScoreWithSpread:
    """The Kernel Inception Distance: the unbiased squared MMD with the kernel
    (x.y * gamma + coef0)^degree (gamma = 1 / D by default), averaged over ``subsets`` random
    subsets of ``subset_size`` from each side (default min(1000, N_a, N_b)), with its standard
    deviation over the subsets. ``a`` and ``b``: (N, D) features, or images with ``network``."""
    x, y = (_features(t, network, name, batch_size) for t, name in ((a, "a"), (b, "b")))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b have different feature sizes: {x.shape[1]} and {y.shape[1]}")
    size = min(1000, len(x), len(y)) if subset_size is None else subset_size
    if not isinstance(size, int) or not 2 <= size <= min(len(x), len(y)):
        raise ValueError(f"subset_size must be an integer in [2, {min(len(x), len(y))}] (the smaller sample), "
                         f"got {size!r}")
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        xs = x[torch.randperm(len(x), generator=generator)[:size]]
        ys = y[torch.randperm(len(y), generator=generator)[:size]]
        values.append(_unbiased_mmd2(_polynomial_kernel(xs, xs, degree, gamma, coef0),
                                     _polynomial_kernel(xs, ys, degree, gamma, coef0),
                                     _polynomial_kernel(ys, ys, degree, gamma, coef0)))
    values = torch.tensor(values, dtype=torch.float64)
    return ScoreWithSpread(float(values.mean()), float(values.std(correction=0)))


def inception_score(x, *, network: FeatureNetwork | None = None, splits: int = 10,
                    batch_size: int = 256) -> ScoreWithSpread:
    """exp(mean over x of KL(p(y|x) || p(y))), p(y) the mean of p(y|x) within each of ``splits``
    consecutive splits, as mean and standard deviation over the splits. ``x``: (N, K) class logits,
    or images with a ``network`` that has a classifier head."""
    logits = _features(x, network, "x", batch_size, logits=True)
    if not isinstance(splits, int) or not 1 <= splits <= len(logits):
        raise ValueError(f"splits must be an integer in [1, {len(logits)}] (the number of samples), got {splits!r}")
    log_p = logits.log_softmax(dim=1)
    n, scores = len(log_p), []
    for i in range(splits):
        chunk = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = chunk.exp().mean(0).log()
        scores.append((chunk.exp() * (chunk - log_marginal)).sum(1).mean().exp())
    scores = torch.stack(scores)
    return ScoreWithSpread(float(scores.mean()), float(scores.std(correction=0)))


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (itself, at 0, not counted)."""
    return torch.cat([torch.cdist(rows, x).kthvalue(k + 1, dim=1).values for rows in x.split(chunk)])


def precision_recall(real, fake, *, network: FeatureNetwork | None = None, k: int = 5,
                     batch_size: int = 256, chunk: int = 1024) -> PrecisionRecall:
    """Improved precision and recall (Kynkaanniemi et al., 2019), density and coverage (Naeem et al.,
    2020): each point's manifold ball has the radius of its k-th nearest neighbour in its own set.

    precision: share of fake points inside some real ball; recall: share of real points inside
    some fake ball; density: mean number of real balls a fake point is in, over k; coverage: share
    of real balls that hold a fake point. Distances are Euclidean, float64, computed ``chunk``
    rows at a time, so memory stays O(chunk x N)."""
    x, y = (_features(t, network, name, batch_size) for t, name in ((real, "real"), (fake, "fake")))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake have different feature sizes: {x.shape[1]} and {y.shape[1]}")
    if not isinstance(k, int) or not 1 <= k < min(len(x), len(y)):
        raise ValueError(f"k must be an integer in [1, {min(len(x), len(y)) - 1}] (fewer than either sample), "
                         f"got {k!r}")
    real_radii, fake_radii = _kth_neighbour_radii(x, k, chunk), _kth_neighbour_radii(y, k, chunk)
    in_real_balls = torch.zeros(len(y), dtype=torch.float64)  # per fake point: how many real balls hold it
    recalled, covered = [], []
    for rows, radii in zip(x.split(chunk), real_radii.split(chunk)):
        distance = torch.cdist(rows, y)  # (chunk of real, fake)
        inside = distance < radii[:, None]
        in_real_balls += inside.sum(0)
        recalled.append((distance < fake_radii[None, :]).any(1))
        covered.append(inside.any(1))
    return PrecisionRecall(precision=float((in_real_balls > 0).double().mean()),
                           recall=float(torch.cat(recalled).double().mean()),
                           density=float(in_real_balls.mean() / k),
                           coverage=float(torch.cat(covered).double().mean()))

"""fastgen.metrics' scores: equal to torch-fidelity's, pytorch-fid's and prdc's on the same
features; right on distributions with known answers; the streaming statistics against numpy.cov;
bad input refused."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastgen.metrics import (FeatureNetwork, FeatureStatistics, fid, frechet_distance, inception_score, kid,
                             levels_to_unit, precision_recall)
from tests.peer_metrics import peer


def correlated(n: int, d: int, seed: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """n draws of a d-dimensional Gaussian with a random dense covariance and a nonzero mean."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix) * scale + offset + torch.linspace(-1, 1, d,
                                                                                                         dtype=torch.float64)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# -- streaming statistics ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_streaming_statistics_equal_numpy_cov(dtype):
    x = correlated(1203, 37, 0, offset=50.0).to(dtype)  # a large mean: the shift must prevent cancellation
    stats = FeatureStatistics(37)
    for batch in x.split(97):  # uneven batches, the last one short
        stats.update(batch)
    expected = np.cov(x.double().numpy(), rowvar=False)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert stats.count == 1203
    np.testing.assert_allclose(stats.mean.numpy(), x.double().mean(0).numpy(), rtol=tol, atol=0)
    np.testing.assert_allclose(stats.covariance().numpy(), expected, rtol=tol, atol=tol * np.abs(expected).max())
    assert torch.equal(stats.covariance(), stats.covariance().T)


def test_streaming_statistics_refuse_bad_batches():
    stats = FeatureStatistics(4)
    with pytest.raises(ValueError, match=r"features must be a \(batch, 4\) tensor"):
        stats.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="float32 or float64"):
        stats.update(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no features yet"):
        stats.mean
    poisoned = FeatureStatistics(4).update(torch.randn(3, 4)).update(torch.tensor([[0.0, 1.0, float("inf"), 2.0]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        poisoned.covariance()
    with pytest.raises(ValueError, match="NaN or infinite"):
        poisoned.mean
    stats.update(torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        stats.covariance()
    with pytest.raises(ValueError, match="one dtype"):
        stats.update(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim must be a positive"):
        FeatureStatistics(0)


# -- FID -----------------------------------------------------------------------------------------------
def test_fid_equals_pytorch_fid_and_torch_fidelity():
    a, b = correlated(800, 24, 1), correlated(700, 24, 2, scale=1.3, offset=0.2)
    ours = fid(a, b)
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    theirs_fid = peer("pytorch_fid.fid_score").calculate_frechet_distance(mu_a, cov_a, mu_b, cov_b)
    fidelity = peer("torch_fidelity.metric_fid")
    theirs_fidelity = fidelity.fid_statistics_to_metric(fidelity.fid_features_to_statistics(a),
                                                        fidelity.fid_features_to_statistics(b), False)
    assert ours > 1.0
    assert relative(ours, float(theirs_fid)) < 1e-6
    assert relative(ours, theirs_fidelity[fidelity.KEY_METRIC_FID]) < 1e-6


def test_fid_of_a_set_against_itself_is_zero():
    a = correlated(500, 16, 3, offset=3.0)
    assert abs(fid(a, a)) < 1e-8 * a.var(0).sum().item()


def test_frechet_distance_of_two_known_gaussians():
    # Commuting covariances: tr((C_a C_b)^(1/2)) = sum sqrt(a_i b_i), so
    # FID = |m_a - m_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.25],
                                                                                     dtype=torch.float64)
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0],
                                                                                      dtype=torch.float64)
    expected = ((mean_a - mean_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()
    assert frechet_distance(mean_a, var_a.diag(), mean_b, var_b.diag()) == pytest.approx(expected.item(), rel=1e-12)
    # A rotated second covariance (non-commuting): the same value as scipy's general square root.
    from scipy import linalg

    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    cov_b = q @ var_b.diag() @ q.T
    root = linalg.sqrtm(var_a.diag().numpy() @ cov_b.numpy()).real
    closed = ((mean_a - mean_b) ** 2).sum().item() + var_a.sum().item() + var_b.sum().item() - 2 * np.trace(root)
    assert frechet_distance(mean_a, var_a.diag(), mean_b, cov_b) == pytest.approx(closed, rel=1e-10)


def test_fid_of_samples_approaches_the_closed_form():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(40_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    b = torch.randn(40_000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5],
                                                                               dtype=torch.float64) + 1.0
    expected = 3 * 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2  # |m_a - m_b|^2 + sum (sd_a - sd_b)^2
    assert fid(a, b) == pytest.approx(expected, rel=0.03)


def test_fid_refuses_too_few_samples_for_the_feature_size():
    with pytest.raises(ValueError, match="FID needs more samples than feature dimensions: a has 8 samples of 8"):
        fid(torch.randn(8, 8), torch.randn(100, 8))
    with pytest.raises(ValueError, match="different feature sizes"):
        fid(torch.randn(50, 8), torch.randn(50, 9))
    with pytest.raises(ValueError, match="cov_a must have shape"):
        frechet_distance(torch.zeros(3), torch.eye(4), torch.zeros(3), torch.eye(3))


# -- KID -----------------------------------------------------------------------------------------------
def test_kid_equals_torch_fidelity_on_the_full_sets():
    # With one subset holding every sample, the estimate does not depend on which permutation
    # either implementation draws, so the two must agree to rounding.
    a, b = correlated(300, 20, 5), correlated(300, 20, 6, scale=1.2, offset=0.3)
    ours = kid(a, b, subsets=1, subset_size=300)
    theirs = peer("torch_fidelity.metric_kid").kid_features_to_metric(a, b, kid_subsets=1, kid_subset_size=300,
                                                                       verbose=False)
    assert ours.mean > 0
    assert relative(ours.mean, theirs["kernel_inception_distance_mean"]) < 1e-6
    assert ours.std == 0.0


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    g = torch.Generator().manual_seed(15)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)

    def draw():
        return torch.randn(40, 6, generator=g, dtype=torch.float64) @ mix + 2.0

    values = [kid(draw(), draw(), subsets=1).mean for _ in range(300)]
    mean, spread = np.mean(values), np.std(values) / math.sqrt(len(values))
    assert abs(mean) < 4 * spread
    assert np.std(values) > 0
    shifted = [kid(draw(), draw() + 0.5, subsets=1).mean for _ in range(30)]  # and it sees a difference
    assert np.mean(shifted) > 10 * spread


def test_kid_spread_over_subsets_and_its_errors():
    a, b = correlated(200, 8, 7), correlated(200, 8, 8, offset=1.0)
    result = kid(a, b, subsets=20, subset_size=50, seed=3)
    assert result.mean > 0 and result.std > 0
    assert result == kid(a, b, subsets=20, subset_size=50, seed=3)  # seeded
    with pytest.raises(ValueError, match=r"subset_size must be an integer in \[2, 200\]"):
        kid(a, b, subset_size=201)
    with pytest.raises(ValueError, match="subsets must be a positive"):
        kid(a, b, subsets=0)


# -- Inception Score -----------------------------------------------------------------------------------
def test_inception_score_equals_torch_fidelity():
    logits = torch.randn(1000, 17, dtype=torch.float64) * 3
    ours = inception_score(logits, splits=10)
    theirs = peer("torch_fidelity.metric_isc").isc_features_to_metric(logits, splits=10, shuffle=False)
    assert relative(ours.mean, theirs["inception_score_mean"]) < 1e-6
    assert relative(ours.std, theirs["inception_score_std"]) < 1e-6


def test_inception_score_bounds():
    confident_and_balanced = torch.eye(10, dtype=torch.float64).repeat(50, 1) * 200  # one-hot, every class
    assert inception_score(confident_and_balanced, splits=5).mean == pytest.approx(10.0, rel=1e-9)
    uniform = torch.zeros(100, 10, dtype=torch.float64)
    assert inception_score(uniform, splits=2).mean == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="splits must be an integer in"):
        inception_score(uniform, splits=101)


# -- precision and recall ------------------------------------------------------------------------------
def test_precision_recall_density_coverage_equal_prdc():
    real, fake = correlated(300, 16, 9).float(), correlated(250, 16, 10, scale=0.8, offset=0.4).float()
    ours = precision_recall(real, fake, k=5)
    theirs = peer("prdc").compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(ours, name) == pytest.approx(float(theirs[name]), abs=1e-12), name
    assert 0 < ours.precision < 1 and 0 < ours.recall < 1


def test_precision_recall_chunking_does_not_change_the_result():
    real, fake = correlated(130, 5, 11), correlated(90, 5, 12, offset=0.5)
    assert precision_recall(real, fake, k=3, chunk=7) == precision_recall(real, fake, k=3, chunk=1000)


def test_precision_recall_of_a_set_against_itself():
    real = correlated(200, 4, 13)
    result = precision_recall(real, real, k=3)
    assert result.precision == 1.0 and result.recall == 1.0 and result.coverage == 1.0
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 199\]"):
        precision_recall(real, real, k=200)


# -- images through a feature network ------------------------------------------------------------------
class MeanPool(FeatureNetwork):
    """A toy feature network: per-channel means of a 2x2 grid, and those as logits."""
    name, feature_dim, n_classes, channels, image_size = "toy", 4, 4, (1,), (8, 8)

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def features_and_logits(self, images):
        f = torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1) * self.scale
        return f, f * 3


def test_scores_from_images_equal_scores_from_their_features():
    g = torch.Generator().manual_seed(14)
    a, b = torch.randint(0, 17, (60, 1, 8, 8), generator=g), torch.randint(0, 12, (50, 1, 8, 8), generator=g)
    net = MeanPool()
    ua, ub = levels_to_unit(a, 17), levels_to_unit(b, 17)
    fa, fb = net(ua)[0].double(), net(ub)[0].double()
    assert fid(ua, ub, network=net, batch_size=7) == pytest.approx(fid(fa, fb), rel=1e-6)
    assert kid(ua, ub, network=net, subsets=3) == kid(fa, fb, subsets=3)
    assert inception_score(ua, network=net, splits=2) == inception_score(fa * 3, splits=2)
    assert precision_recall(ua, ub, network=net, k=2) == precision_recall(fa, fb, k=2)


def test_bad_images_and_features_are_refused():
    net = MeanPool()
    with pytest.raises(ValueError, match=r"images must be in \[0, 1\]"):
        fid(torch.full((20, 1, 8, 8), 2.0), torch.rand(20, 1, 8, 8), network=net)
    with pytest.raises(ValueError, match="reads images with 1 channels, got 3"):
        fid(torch.rand(20, 3, 8, 8), torch.rand(20, 1, 8, 8), network=net)
    with pytest.raises(ValueError, match="reads 8x8 images, got 9x8"):
        kid(torch.rand(20, 1, 9, 8), torch.rand(20, 1, 8, 8), network=net)
    with pytest.raises(ValueError, match="images together with network="):
        fid(torch.rand(20, 1, 8, 8), torch.rand(20, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        kid(torch.full((5, 2), float("inf")), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"levels in \[0, 16\]"):
        levels_to_unit(torch.full((1, 1, 2, 2), 17), 17)
    with pytest.raises(ValueError, match="integer levels"):
        levels_to_unit(torch.rand(1, 1, 2, 2), 17)

"""Streaming feature statistics: the mean and covariance of features that arrive in batches,
accumulated in float64, so that 50,000 feature vectors never sit in memory at once.

Each batch adds its shifted sums to two float64 accumulators in one pass
(``fastgen.ops.feature_stats_update``): total = sum(x - s) and the upper triangle of
cross = sum((x - s)(x - s)^T), with the shift s the mean of the first batch. Shifting by a value
near the mean keeps the final ``cross - total total^T / n`` free of the cancellation that raw
second moments suffer when the mean is large against the spread.
"""
from __future__ import annotations

import torch

from fastgen.ops import feature_stats_update
from fastgen.reference.feature_stats import finish_covariance_reference



class FeatureStatistics:
    """Running mean and covariance of (N, D) features fed by ``update``.

    >>> stats = FeatureStatistics(2048)
    >>> for batch in batches: stats.update(network(batch)[0])
    >>> stats.mean, stats.covariance()
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive number of features, got {dim!r}")
        self.dim = dim
        self.count = 0
        self.dtype: torch.dtype | None = None  # of the features: every batch must share it
        self._shift: torch.Tensor | None = None
        self._total = torch.zeros(dim, dtype=torch.float64, device=device)
        self._cross = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add a batch of (B, D) float32 or float64 features. Returns self."""
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[1] != self.dim:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"features must be a (batch, {self.dim}) tensor, got {shape}")
        if features.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"features must be float32 or float64, got {features.dtype}")
        if self.dtype is not None and features.dtype != self.dtype:
            raise ValueError(f"features must keep one dtype: the first batch was {self.dtype}, this one "
                             f"{features.dtype}")
        if len(features) == 0:
            return self
        features = features.detach().to(self._total.device).contiguous()
        if self._shift is None:
            self.dtype, self._shift = features.dtype, features.mean(0)
        feature_stats_update(features, self._shift, self._total, self._cross)
        self.count += len(features)
        return self

    def _check_finite(self) -> None:
        # A NaN or infinite feature always leaves the running sum non-finite, so one look at the
        # accumulators here replaces a scan of every batch (a float32 product that overflowed
        # shows in cross alone).
        if not (torch.isfinite(self._total).all() and torch.isfinite(self._cross).all()):
            raise ValueError("the features held NaN or infinite values (or products too large for their dtype)")

    @property
    def mean(self) -> torch.Tensor:
        """The (D,) float64 mean of every feature seen."""
        if self.count == 0:
            raise ValueError("no features yet: call update first")
        self._check_finite()
        return self._shift.double() + self._total / self.count

    def covariance(self) -> torch.Tensor:
        """The (D, D) float64 sample covariance (normalised by N - 1, as numpy.cov)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        self._check_finite()
        # The op's own finishing formula (it fills the upper triangle only; this mirrors it).
        return finish_covariance_reference(self._total, self._cross, self._shift, self.count)[1]

    @classmethod
    def of(cls, features: torch.Tensor, batch_size: int = 1024) -> FeatureStatistics:
        """The statistics of an (N, D) feature tensor, fed in batches."""
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"features must be an (N, D) tensor, got {shape}")
        stats = cls(features.shape[1], features.device)
        for batch in features.split(batch_size):
            stats.update(batch)
        return stats

"""Sample quality of a trained model against a data split: draw samples, run them and the split
through one feature network, and compute the requested scores. Every report states the sample
count, the reference split and the feature network, since FIDs computed with different ones are
different numbers.

The feature network: for the bundled 8x8 digits, the digits classifier fastgen trains and caches
(``digits_network``, "FID-digits"); for anything else, the FID variant of InceptionV3 with
weights from a local file (``load_inception``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from fastgen.data import ImageDataset
from fastgen.metrics.features import FeatureNetwork, levels_to_unit
from fastgen.metrics.scores import fid, inception_score, kid, precision_recall
from fastgen.metrics.statistics import FeatureStatistics

METRICS = ("fid", "kid", "is", "pr")
DIGITS_SHAPE = (1, 8, 8)


def check_metrics(metrics) -> tuple[str, ...]:
    """The metric names, checked: a subset of fid, kid, is, pr."""
    if isinstance(metrics, str):
        metrics = tuple(m.strip() for m in metrics.split(","))
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if not metrics or unknown:
        raise ValueError(f"metrics must be a comma-separated subset of {','.join(METRICS)}, got "
                         f"{','.join(map(str, metrics)) or 'nothing'}")
    return metrics


def default_network(shape: tuple[int, int, int], inception_weights: str | None = None) -> FeatureNetwork:
    """The digits classifier for 1 x 8 x 8 images, else InceptionV3 (weights from a local file)."""
    if tuple(shape) == DIGITS_SHAPE and inception_weights is None:
        from fastgen.metrics.digits_features import digits_network

        return digits_network()
    from fastgen.metrics.inception import load_inception

    return load_inception(inception_weights)


@dataclass
class QualityReport:
    """The scores of one evaluation and what they were computed from."""
    scores: dict[str, float]
    n_samples: int
    reference: str
    n_reference: int
    network: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per score, after a line saying what was compared."""
        head = (f"{self.n_samples} samples against {self.reference} ({self.n_reference} images), "
                f"features: {self.network}")
        s = self.scores
        lines = [head]
        if "fid" in s:
            lines.append(f"  FID {s['fid']:.4f}")
        if "kid" in s:
            lines.append(f"  KID {s['kid']:.6f} +- {s['kid_std']:.6f} (over subsets of {int(s['kid_subset_size'])})")
        if "is" in s:
            lines.append(f"  IS {s['is']:.4f} +- {s['is_std']:.4f} (over {int(s['is_splits'])} splits)")
        if "precision" in s:
            lines.append(f"  precision {s['precision']:.4f}, recall {s['recall']:.4f}, density {s['density']:.4f}, "
                         f"coverage {s['coverage']:.4f} (k = {int(s['pr_k'])})")
        if "agreement" in s:
            lines.append(f"  classifier agreement {s['agreement']:.4f} (samples labelled as their class)")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


class _Features:
    """Features (and logits) of image batches, with their streaming statistics."""

    def __init__(self, network: FeatureNetwork):
        self.network, self.stats = network, FeatureStatistics(network.feature_dim)
        self.features: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, unit_images: torch.Tensor) -> None:
        features, logits = self.network(unit_images.to(next(self.network.parameters()).device))
        features = features.float().cpu()
        self.stats.update(features)
        self.features.append(features)
        if logits is not None:
            self.logits.append(logits.float().cpu())

    def all(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.cat(self.features), (torch.cat(self.logits) if self.logits else None)


def _dataset_features(data: ImageDataset, network: FeatureNetwork, batch_size: int) -> _Features:
    out = _Features(network)
    for batch in data.images.split(batch_size):
        out.add(levels_to_unit(batch, data.levels))
    return out


def _scores(samples: _Features, reference: _Features, metrics: tuple[str, ...], *, kid_subsets: int, k: int,
            is_splits: int, seed: int) -> tuple[dict[str, float], list[str]]:
    fake, fake_logits = samples.all()
    real, _ = reference.all()
    scores: dict[str, float] = {}
    notes: list[str] = []
    if "fid" in metrics:
        scores["fid"] = fid(samples.stats, reference.stats)
    if "kid" in metrics:
        size = min(1000, len(fake), len(real))
        result = kid(fake, real, subsets=kid_subsets, subset_size=size, seed=seed)
        scores.update(kid=result.mean, kid_std=result.std, kid_subset_size=size)
    if "is" in metrics:
        if fake_logits is None:
            notes.append(f"IS skipped: {samples.network.name} has no classifier head")
        else:
            splits = min(is_splits, len(fake_logits))
            result = inception_score(fake_logits, splits=splits)
            scores.update(**{"is": result.mean, "is_std": result.std, "is_splits": splits})
    if "pr" in metrics:
        result = precision_recall(real, fake, k=k)
        scores.update(precision=result.precision, recall=result.recall, density=result.density,
                      coverage=result.coverage, pr_k=k)
    return scores, notes


def _check_reference(shape: tuple[int, ...], reference: ImageDataset, what: str) -> None:
    if not isinstance(reference, ImageDataset):
        raise TypeError(f"reference must be a fastgen.data.ImageDataset, got {type(reference).__name__}")
    if len(reference) < 2:
        raise ValueError(f"reference {reference.name} needs at least 2 images, has {len(reference)}")
    if tuple(reference.shape) != tuple(shape):
        raise ValueError(f"{what} makes images of shape {tuple(shape)}, reference {reference.name} has "
                         f"{tuple(reference.shape)}")


@torch.no_grad()
def sample_quality(model: torch.nn.Module, reference: ImageDataset, *, metrics=METRICS, n: int = 10_000,
                   network: FeatureNetwork | None = None, inception_weights: str | None = None, seed: int = 0,
                   batch_size: int = 500, kid_subsets: int = 100, k: int = 5, is_splits: int = 10) -> QualityReport:
    """Draw ``n`` samples from ``model`` (any fastgen model: autoregressive ones with their cached
    sampler) and score them against ``reference``. A class-conditional model samples the
    reference's labels in turn (so the class frequencies match), and the report adds classifier
    agreement when the network classifies the model's classes.

    >>> report = sample_quality(model, digits("test"), metrics="fid,kid", n=10_000)
    >>> print(report.summary())
    """
    metrics = check_metrics(metrics)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer of at least 2 samples, got {n!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if getattr(model, "cond_channels", None) is not None:
        raise ValueError("this model needs a spatial conditioning map per sample; score its samples with "
                         "fastgen.metrics.fid and friends directly")
    shape = (model.in_channels, *model.image_size)
    _check_reference(shape, reference, type(model).__name__)
    network = network or default_network(shape, inception_weights)
    start = time.perf_counter()
    n_classes = getattr(model, "n_classes", None)
    labels = None
    if n_classes is not None:
        labels = (reference.labels[torch.arange(n) % len(reference)] if reference.labels is not None
                  else torch.arange(n) % n_classes)
    device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    generator = torch.Generator(device).manual_seed(seed)
    samples, agree = _Features(network), 0
    was_training = model.training
    model.eval()
    try:
        for chunk in torch.arange(n).split(batch_size):
            cond = labels[chunk].to(device) if labels is not None else None
            images = model.sample(len(chunk), cond, generator=generator).cpu()
            samples.add(levels_to_unit(images, model.levels))
            if labels is not None and network.n_classes == n_classes:
                agree += (samples.logits[-1].argmax(1) == labels[chunk]).sum().item()
    finally:
        model.train(was_training)
    scores, notes = _scores(samples, _dataset_features(reference, network, batch_size), metrics,
                            kid_subsets=kid_subsets, k=k, is_splits=is_splits, seed=seed)
    if labels is not None and network.n_classes == n_classes:
        scores["agreement"] = agree / n
    return QualityReport(scores, n, reference.name, len(reference), network.name, time.perf_counter() - start, notes)


@torch.no_grad()
def data_quality(data: ImageDataset, reference: ImageDataset, *, metrics=METRICS,
                 network: FeatureNetwork | None = None, inception_weights: str | None = None, seed: int = 0,
                 batch_size: int = 500, kid_subsets: int = 100, k: int = 5, is_splits: int = 10) -> QualityReport:
    """The same scores for a set of images instead of a model's samples: e.g. the training split
    against the test split, the floor any model's FID is compared with."""
    metrics = check_metrics(metrics)
    if not isinstance(data, ImageDataset):
        raise TypeError(f"data must be a fastgen.data.ImageDataset, got {type(data).__name__}")
    _check_reference(data.shape, reference, data.name)
    network = network or default_network(data.shape, inception_weights)
    start = time.perf_counter()
    scores, notes = _scores(_dataset_features(data, network, batch_size),
                            _dataset_features(reference, network, batch_size), metrics,
                            kid_subsets=kid_subsets, k=k, is_splits=is_splits, seed=seed)
    return QualityReport(scores, len(data), reference.name, len(reference), network.name,
                         time.perf_counter() - start, notes)


def finite_scores(report: QualityReport) -> dict[str, float]:
    """The report's scores for a metrics log (all finite floats)."""
    return {key: float(value) for key, value in report.scores.items() if math.isfinite(value)}

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
from fastgen.metrics.digits_features import digits_network
from fastgen.metrics.features import FeatureNetwork, eval_mode, levels_to_unit
from fastgen.metrics.inception import load_inception
from fastgen.metrics.scores import fid, inception_score, kid, precision_recall
from fastgen.metrics.statistics import FeatureStatistics
from fastgen.models import AutoregressiveImageModel

METRICS = ("fid", "kid", "is", "pr")
DIGITS_SHAPE = (1, 8, 8)
FEATURE_BATCH = 100  # images per feature-network call: InceptionV3 at 299 x 299 holds ~60 MB of activations each


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
        return digits_network()
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
    """Features (and logits) of image batches, with their streaming statistics. The features
    themselves are kept only where a metric needs them all (KID, precision/recall); FID alone
    needs only the statistics."""

    def __init__(self, network: FeatureNetwork, keep: bool):
        self.network, self.stats, self.keep = network, FeatureStatistics(network.feature_dim), keep
        self.features: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, unit_images: torch.Tensor) -> None:
        device = next(self.network.parameters()).device
        for part in unit_images.split(FEATURE_BATCH):
            features, logits = self.network(part.to(device))
            features = features.float().cpu()
            self.stats.update(features)
            if self.keep:
                self.features.append(features)
            if logits is not None:
                self.logits.append(logits.float().cpu())

    def all(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (torch.cat(self.features) if self.features else None), (torch.cat(self.logits) if self.logits else None)


def _dataset_features(data: ImageDataset, network: FeatureNetwork, batch_size: int, keep: bool) -> _Features:
    out = _Features(network, keep)
    for batch in data.images.split(batch_size):
        out.add(levels_to_unit(batch, data.levels))
    return out


def check_request(network: FeatureNetwork, metrics: tuple[str, ...], n: int, n_reference: int, k: int) -> None:
    """Refuse, before anything is sampled, a request whose scores cannot be computed."""
    if "fid" in metrics:
        for what, count in (("samples", n), ("reference images", n_reference)):
            if count <= network.feature_dim:
                raise ValueError(f"FID with {network.name} ({network.feature_dim} features) needs more than "
                                 f"{network.feature_dim} images on each side (a covariance of fewer is singular), "
                                 f"got {count} {what}")
    if "pr" in metrics and min(n, n_reference) <= k:
        raise ValueError(f"precision/recall with k = {k} needs more than {k} images on each side, got {n} samples "
                         f"and {n_reference} reference images")


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


def _check_reference(shape: tuple[int, ...], levels: int, reference: ImageDataset, what: str) -> None:
    if not isinstance(reference, ImageDataset):
        raise TypeError(f"reference must be a fastgen.data.ImageDataset, got {type(reference).__name__}")
    if len(reference) < 2:
        raise ValueError(f"reference {reference.name} needs at least 2 images, has {len(reference)}")
    if tuple(reference.shape) != tuple(shape):
        raise ValueError(f"{what} makes images of shape {tuple(shape)}, reference {reference.name} has "
                         f"{tuple(reference.shape)}")
    if reference.levels != levels:
        raise ValueError(f"{what} makes images with {levels} levels, reference {reference.name} has "
                         f"{reference.levels} (score against reference.quantize({levels}))")


def check_model(model: object) -> None:
    """A model that sample_quality can score: a fastgen model, or anything with its attributes."""
    missing = [a for a in ("in_channels", "image_size", "levels", "sample") if not hasattr(model, a)]
    if not isinstance(model, torch.nn.Module) or missing:
        raise TypeError(f"model must be a fastgen model (an nn.Module with in_channels, image_size, levels and "
                        f"sample), got {type(model).__name__}" + (f" without {', '.join(missing)}" if missing else ""))
    if getattr(model, "cond_channels", None) is not None:
        raise ValueError("this model needs a spatial conditioning map per sample; score its samples with "
                         "fastgen.metrics.fid and friends directly")


def model_device(model: torch.nn.Module) -> torch.device:
    return next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device


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
    check_model(model)
    shape = (model.in_channels, *model.image_size)
    _check_reference(shape, model.levels, reference, type(model).__name__)
    device = model_device(model)
    network = network or default_network(shape, inception_weights).to(device)
    check_request(network, metrics, n, len(reference), k)
    start = time.perf_counter()
    n_classes = getattr(model, "n_classes", None)
    labels = None
    if n_classes is not None:
        labels = (reference.labels[torch.arange(n) % len(reference)] if reference.labels is not None
                  else torch.arange(n) % n_classes)
    # The autoregressive samplers draw their noise on the CPU; latent models on the model's device.
    generator = torch.Generator("cpu" if isinstance(model, AutoregressiveImageModel) else device).manual_seed(seed)
    keep = bool({"kid", "pr"} & set(metrics))
    samples, agree = _Features(network, keep), 0
    with eval_mode(model, network):
        for chunk in torch.arange(n).split(batch_size):
            cond = labels[chunk].to(device) if labels is not None else None
            images = model.sample(len(chunk), cond, generator=generator).cpu()
            before = len(samples.logits)
            samples.add(levels_to_unit(images, model.levels))
            if labels is not None and network.n_classes == n_classes:
                agree += (torch.cat(samples.logits[before:]).argmax(1) == labels[chunk]).sum().item()
        reference_features = _dataset_features(reference, network, batch_size, keep)
    scores, notes = _scores(samples, reference_features, metrics, kid_subsets=kid_subsets, k=k,
                            is_splits=is_splits, seed=seed)
    if labels is not None and network.n_classes == n_classes:
        scores["agreement"] = agree / n
    return QualityReport(scores, n, reference.name, len(reference), network.name, time.perf_counter() - start, notes)


@torch.no_grad()
def data_quality(data: ImageDataset, reference: ImageDataset, *, metrics=METRICS,
                 network: FeatureNetwork | None = None, inception_weights: str | None = None, seed: int = 0,
                 batch_size: int = 500, kid_subsets: int = 100, k: int = 5, is_splits: int = 10) -> QualityReport:
    """The same scores for a set of images instead of a model's samples: e.g. the training split
    against the test split, the real-data row any model's FID is compared with."""
    metrics = check_metrics(metrics)
    if not isinstance(data, ImageDataset):
        raise TypeError(f"data must be a fastgen.data.ImageDataset, got {type(data).__name__}")
    _check_reference(data.shape, data.levels, reference, data.name)
    network = network or default_network(data.shape, inception_weights)
    check_request(network, metrics, len(data), len(reference), k)
    start = time.perf_counter()
    keep = bool({"kid", "pr"} & set(metrics))
    with eval_mode(network):
        features = _dataset_features(data, network, batch_size, keep), _dataset_features(reference, network,
                                                                                         batch_size, keep)
    scores, notes = _scores(*features, metrics, kid_subsets=kid_subsets, k=k, is_splits=is_splits, seed=seed)
    return QualityReport(scores, len(data), reference.name, len(reference), network.name,
                         time.perf_counter() - start, notes)


def finite_scores(report: QualityReport) -> dict[str, float]:
    """The report's scores for a metrics log (all finite floats)."""
    return {key: float(value) for key, value in report.scores.items() if math.isfinite(value)}

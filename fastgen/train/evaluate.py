"""Likelihood of a data set under a model, in bits per dimension."""
from __future__ import annotations

import math

import torch

from fastgen.data import ImageDataset
from fastgen.metrics.quality import (check_metrics, check_model, check_request, default_network, finite_scores,
                                     model_device, sample_quality)
from fastgen.train._validate import MAX_COUNT, MAX_EPOCHS, check_int


@torch.no_grad()
def bits_per_dim_on(model: torch.nn.Module, data: ImageDataset, *, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> float:
    """Mean bits/dim of ``data`` under ``model`` (which takes ``loss(x, cond)``, nats per
    sub-pixel); a class-conditional model gets the labels. The model is evaluated in eval mode."""
    conditional = getattr(model, "n_classes", None) is not None
    if conditional and data.labels is None:
        raise ValueError(f"the model is class-conditional but {data.name} has no labels")
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for index in torch.arange(len(data)).split(batch_size):
            x = data.images[index].to(device, torch.long)
            cond = data.labels[index].to(device) if conditional else None
            total += model.loss(x, cond).item() * len(index)
    finally:
        model.train(was_training)
    return total / len(data) / math.log(2.0)


def check_quality_options(eval_every: int | None, eval_samples: int, eval_metrics: str) -> None:
    """The sample-quality options of both trainers' configs."""
    check_int("eval_every", eval_every, 1, MAX_EPOCHS, none=True)
    check_int("eval_samples", eval_samples, 2, MAX_COUNT)
    if not isinstance(eval_metrics, str):
        raise TypeError(f"eval_metrics must be a comma-separated string such as 'fid,kid', got {eval_metrics!r}")
    check_metrics(eval_metrics)


class QualityEvaluation:
    """The trainers' ``eval_every``: the feature network is resolved and the request checked when
    the trainer is made, so that a run whose samples could not be scored (no Inception weights,
    fewer samples than features) fails before its first step, not at the end of an epoch.

    Calling it scores the model: ``quality/<score>`` entries for the metrics log and a short text
    for the epoch line. The samples come from their own seeded generator, and building the
    feature network leaves the global RNG alone, so a run with evaluations trains exactly as one
    without."""

    def __init__(self, model: torch.nn.Module, reference: ImageDataset, n: int, metrics: str, seed: int):
        check_model(model)
        self.metrics = check_metrics(metrics)
        self.network = default_network((model.in_channels, *model.image_size)).to(model_device(model))
        check_request(self.network, self.metrics, n, len(reference), k=5)
        self.reference, self.n, self.seed = reference, n, seed

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], str]:
        report = sample_quality(model, self.reference, metrics=self.metrics, n=self.n, seed=self.seed,
                                network=self.network)
        scores = finite_scores(report)
        shown = ", ".join(f"{name.upper()} {scores[name]:.4g}" for name in ("fid", "kid", "is", "precision", "recall")
                          if name in scores)
        logged = {f"quality/{key}": value for key, value in scores.items()}
        return logged, f"{shown} ({report.n_samples} samples vs {self.reference.name}, {report.network})"

"""What every feature network of the sample-quality metrics provides.

A feature network maps images to a feature vector per image (what FID, KID and precision/recall
compare) and, when it has a classifier head, to class logits (what the Inception Score reads).
Images reach it as floats in [0, 1], shape (N, C, H, W); turning a model's integer levels into
that range is the caller's job (``levels_to_unit``), so that every network sees the same input.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


def levels_to_unit(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer level images (0 .. levels - 1) as float32 in [0, 1]."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if images.dtype.is_floating_point or images.dtype == torch.bool:
        raise ValueError(f"images must hold integer levels, got dtype {images.dtype}")
    if images.numel():
        low, high = torch.aminmax(images)
        if low.item() < 0 or high.item() >= levels:
            raise ValueError(f"images must hold levels in [0, {levels - 1}], got values in "
                             f"[{low.item()}, {high.item()}]")
    return images.float() / (levels - 1)


class FeatureNetwork(nn.Module):
    """Base class of the metrics' feature networks.

    Subclasses set ``name`` (stated next to every figure, e.g. ``"inception-v3-fid"``),
    ``feature_dim``, ``n_classes`` (None without a classifier head), ``channels`` (the channel
    counts accepted, e.g. ``(1, 3)``) and ``image_size`` (the (H, W) required, or None when any
    size is resized inside), and implement ``features_and_logits``.
    """

    name: str = "features"
    feature_dim: int = 0
    n_classes: int | None = None
    channels: tuple[int, ...] = (1, 3)
    image_size: tuple[int, int] | None = None

    def check_images(self, images: torch.Tensor) -> None:
        """Refuse what this network cannot read, naming what it expected."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (N, C, H, W) tensor, got {shape}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be floats in [0, 1] (see fastgen.metrics.levels_to_unit), "
                             f"got dtype {images.dtype}")
        if images.shape[1] not in self.channels:
            raise ValueError(f"{self.name} reads images with {' or '.join(map(str, self.channels))} channels, "
                             f"got {images.shape[1]}")
        if self.image_size is not None and tuple(images.shape[2:]) != tuple(self.image_size):
            raise ValueError(f"{self.name} reads {self.image_size[0]}x{self.image_size[1]} images, "
                             f"got {images.shape[2]}x{images.shape[3]}")
        if images.numel():
            low, high = torch.aminmax(images.detach())
            if not (low.item() >= 0.0 and high.item() <= 1.0):
                raise ValueError(f"images must be in [0, 1], got values in [{low.item():g}, {high.item():g}]")

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features (N, feature_dim) float32, logits (N, n_classes) or None) of checked images."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.check_images(images)
        return self.features_and_logits(images)


@torch.no_grad()
def extract_features(network: FeatureNetwork, images, batch_size: int = 256
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features, logits or None) of ``images``, a (N, C, H, W) float tensor in [0, 1] or an
    iterable of such batches, run through ``network`` in eval mode ``batch_size`` images at a time."""
    if not isinstance(network, FeatureNetwork):
        raise TypeError(f"network must be a fastgen.metrics.FeatureNetwork, got {type(network).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    features, logits = [], []
    with eval_mode(network):
        for batch in batches:
            f, l = network(batch.to(next(network.parameters()).device))
            features.append(f.float().cpu())
            if l is not None:
                logits.append(l.float().cpu())
    if not features:
        raise ValueError("images holds no images")
    return torch.cat(features), (torch.cat(logits) if logits else None)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """Modules in eval mode (batch norm on its running statistics, no dropout), restored after."""
    modes = [m.training for m in modules]
    try:
        yield [m.eval() for m in modules]
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)

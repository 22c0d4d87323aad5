"""Input checks every image model shares: integer image batches, class labels, size arguments."""
from __future__ import annotations

import torch


def check_images(x: object, shape: tuple[int, int, int], levels: int, name: str = "x") -> torch.Tensor:
    """Validate integer images (N, C, H, W) in [0, levels) of (C, H, W) = ``shape``; returns int64."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, {shape[0]}, {shape[1]}, {shape[2]}) of levels, "
                        f"got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must be (N, {shape[0]}, {shape[1]}, {shape[2]}) for this model "
                         f"(channels={shape[0]}, image_size={tuple(shape[1:])}), got {tuple(x.shape)}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer levels in [0, {levels}), got dtype {x.dtype}; "
                         "quantise images first (e.g. fastgen.data.ImageDataset.images)")
    if x.numel() and not torch.compiler.is_compiling():
        # As Python ints: a uint8 tensor compared with 256 would wrap the 256 to 0.
        low, high = (int(v) for v in torch.aminmax(x))
        if low < 0 or high >= levels:
            raise ValueError(f"{name} values must lie in [0, {levels}) (levels={levels}), "
                             f"got values in [{low}, {high}]")
    return x.long()


def check_labels(labels: object, n: int, n_classes: int | None, name: str = "cond labels") -> torch.Tensor | None:
    """Validate class labels (n,) in [0, n_classes) for a class-conditional model (None for an
    unconditional one, which must get no labels); returns int64 labels or None."""
    if n_classes is None:
        if labels is not None:
            raise ValueError(f"{name} were given but the model was built without n_classes")
        return None
    if labels is None:
        raise ValueError(f"this model is class-conditional (n_classes={n_classes}): pass the labels")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != n \
            or labels.is_floating_point():
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be an integer tensor of shape ({n},), got {got}")
    if n and not torch.compiler.is_compiling() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes}) (n_classes={n_classes}), "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels.long()


def check_positive_int(name: str, value: object) -> None:
    """A constructor's size argument (widths, depths, counts): an int >= 1 (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")

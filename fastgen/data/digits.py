"""The handwritten digits that ship inside scikit-learn: 1797 grey 8x8 images, 17 levels (0..16),
labels 0..9. Nothing is downloaded.

The split is fixed: the images are shuffled with ``numpy.random.default_rng(0).permutation``; the
first 1257 are ``train``, the next 180 ``val`` and the last 360 ``test``.

``digits(split, size=S)`` gives the same images resized to S x S as 8-bit images (levels 256):
each value v in 0..16 is scaled to v * 255 / 16, the images are resized by bilinear interpolation
(``torch.nn.functional.interpolate``, ``align_corners=False``, in float64) and rounded to the
nearest integer. The result is a pure function of (split, size): the same on every call.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fastgen.data.dataset import ImageDataset

SPLITS = {"train": (0, 1257), "val": (1257, 1437), "test": (1437, 1797)}
LEVELS = 17
SIDE = 8  # the bundled images are 8 x 8
RESIZED_LEVELS = 256


def _check_digits_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < SIDE:
        raise ValueError(f"size must be an integer >= {SIDE} (the digits are {SIDE}x{SIDE}; they are only "
                         f"enlarged), got {size!r}")
    return size


def resize_digits(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, 8, 8) images in 0..16 as (N, 1, size, size) uint8 images in 0..255 (see module docstring)."""
    scaled = images.double() * ((RESIZED_LEVELS - 1) / (LEVELS - 1))
    resized = F.interpolate(scaled, size=(size, size), mode="bilinear", align_corners=False)
    return resized.round().clamp(0, RESIZED_LEVELS - 1).to(torch.uint8)


def digits(split: str = "train", *, binarized: bool = False, size: int | None = None) -> ImageDataset:
    """One split of the bundled digits: images (N, 1, 8, 8) with 17 levels, or 2 when ``binarized``
    (a sub-pixel is 1 when its value is 8 or more). With ``size`` (an integer >= 8) the images are
    (N, 1, size, size) with 256 levels, resized as the module docstring says; ``binarized`` then
    makes a sub-pixel 1 when its resized value is 128 or more."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if size is not None:
        size = _check_digits_size(size)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.images))
    start, stop = SPLITS[split]
    rows = order[start:stop]
    images = torch.from_numpy(bunch.images[rows].astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target[rows].astype(np.int64))
    classes = [str(d) for d in range(10)]
    if size is None:
        data = ImageDataset(images, labels, LEVELS, classes, f"digits/{split}")
    else:
        data = ImageDataset(resize_digits(images, size), labels, RESIZED_LEVELS, classes,
                            f"digits/{split} ({size}x{size})")
    return data.binarize() if binarized else data

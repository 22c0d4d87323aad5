"""The handwritten digits that ship inside scikit-learn: 1797 grey 8x8 images, 17 levels (0..16),
labels 0..9. Nothing is downloaded.

The split is fixed: the images are shuffled with ``numpy.random.default_rng(0).permutation``; the
first 1257 are ``train``, the next 180 ``val`` and the last 360 ``test``.
"""
from __future__ import annotations

import numpy as np
import torch

from fastgen.data.dataset import ImageDataset

SPLITS = {"train": (0, 1257), "val": (1257, 1437), "test": (1437, 1797)}
LEVELS = 17


def digits(split: str = "train", *, binarized: bool = False) -> ImageDataset:
    """One split of the bundled digits: images (N, 1, 8, 8) with 17 levels, or 2 when ``binarized``
    (a sub-pixel is 1 when its value is 8 or more)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.images))
    start, stop = SPLITS[split]
    rows = order[start:stop]
    images = torch.from_numpy(bunch.images[rows].astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target[rows].astype(np.int64))
    data = ImageDataset(images, labels, LEVELS, [str(d) for d in range(10)], f"digits/{split}")
    return data.binarize() if binarized else data

"""``load("digits" | "mnist:PATH" | "cifar10:PATH" | "folder:PATH" | "npz:PATH" | "pairs:PATH" |
"unpaired:PATH" | "edges-digits" | "inverted-digits" ...)``: one string per data set, as the
command line takes it."""
from __future__ import annotations

import os

from fastgen.data.dataset import ImageDataset
from fastgen.data.digits import digits
from fastgen.data.files import load_cifar10, load_image_folder, load_mnist, load_npz
from fastgen.data.translation import (PairedDataset, UnpairedDataset, edges_to_digits, inverted_digits, load_pairs,
                                      load_unpaired)

BUNDLED = ("digits", "digits-binary", "edges-digits", "inverted-digits")  # no path
KINDS = BUNDLED + ("mnist", "cifar10", "folder", "npz", "pairs", "unpaired")
WITH_VALIDATION = BUNDLED + ("pairs",)  # pix2pix sets such as facades have train/, val/ and test/
SPEC_FORMS = ", ".join(f"'{k}'" for k in BUNDLED) + ", " + ", ".join(f"'{k}:PATH'" for k in KINDS if k not in BUNDLED)


def load(spec: str, split: str = "train") -> ImageDataset | PairedDataset | UnpairedDataset:
    """The data set named by ``spec`` (see module docstring). ``mnist:DIR`` reads
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from DIR; ``split`` is 'train' or 'test'
    (and 'val' for the bundled sets and pairs); a folder or an .npz file holds one split, returned
    for either. ``pairs:DIR`` (pix2pix layouts) and ``edges-digits`` give a ``PairedDataset``;
    ``unpaired:DIR`` (CycleGAN's ``trainA``/``trainB``) and ``inverted-digits`` an ``UnpairedDataset``."""
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a string such as 'digits' or 'mnist:PATH', got {type(spec).__name__}")
    kind, _, path = spec.partition(":")
    if kind not in KINDS or ((kind in BUNDLED) != (path == "")):
        raise ValueError(f"data spec must be one of {SPEC_FORMS}; got {spec!r}")
    splits = ("train", "val", "test") if kind in WITH_VALIDATION else ("train", "test")
    if split not in splits:
        raise ValueError(f"split must be one of {splits} for {kind} data, got {split!r}"
                         + ("" if kind in WITH_VALIDATION else
                            " (only the bundled digit sets and pairs have a validation split)"))
    if kind.startswith("digits"):
        return digits(split, binarized=kind == "digits-binary")
    if kind == "edges-digits":
        return edges_to_digits(split)
    if kind == "inverted-digits":
        return inverted_digits(split)
    if kind == "pairs":
        return load_pairs(path, split)
    if kind == "unpaired":
        return load_unpaired(path, split)
    if kind == "mnist":
        prefix = "train" if split == "train" else "t10k"

        def find(stem: str) -> str:
            for name in (stem, stem + ".gz"):
                if os.path.exists(os.path.join(path, name)):
                    return os.path.join(path, name)
            return os.path.join(path, stem)

        return load_mnist(find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte"))
    if kind == "cifar10":
        return load_cifar10(path, "train" if split == "train" else "test")
    if kind == "folder":
        return load_image_folder(path)
    return load_npz(path)

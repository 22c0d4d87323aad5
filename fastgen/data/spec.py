"""``load("digits" | "mnist:PATH" | "cifar10:PATH" | "folder:PATH" | "npz:PATH")``: one string per data set,
as the command line takes it."""
from __future__ import annotations

import os

from fastgen.data.dataset import ImageDataset
from fastgen.data.digits import digits
from fastgen.data.files import load_cifar10, load_image_folder, load_mnist, load_npz

KINDS = ("digits", "digits-binary", "mnist", "cifar10", "folder", "npz")


def load(spec: str, split: str = "train") -> ImageDataset:
    """The data set named by ``spec`` (see module docstring). ``mnist:DIR`` reads
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from DIR; ``split`` is 'train' or 'test'
    (and 'val' for the digits); a folder or an .npz file holds one split, returned for either."""
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a string such as 'digits' or 'mnist:PATH', got {type(spec).__name__}")
    kind, _, path = spec.partition(":")
    if kind not in KINDS or (kind.startswith("digits") != (path == "")):
        raise ValueError(f"data spec must be one of 'digits', 'digits-binary', 'mnist:PATH', 'cifar10:PATH', "
                         f"'folder:PATH', 'npz:PATH'; got {spec!r}")
    splits = ("train", "val", "test") if kind.startswith("digits") else ("train", "test")
    if split not in splits:
        raise ValueError(f"split must be one of {splits} for {kind} data, got {split!r}"
                         + ("" if kind.startswith("digits") else " (only the digits have a validation split)"))
    if kind.startswith("digits"):
        return digits(split, binarized=kind == "digits-binary")
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

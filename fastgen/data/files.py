"""Loaders for image data users keep on disk. Each returns an ``ImageDataset`` of 8-bit images
(levels = 256; ``.quantize(levels)`` or ``.binarize()`` for fewer) and raises ``DataError``,
naming the path and the expected format, for a missing or malformed file."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import torch

from fastgen.data.dataset import DataError, ImageDataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_bytes(path: str | os.PathLike, expected: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(path, expected, "no such file") from None
    except OSError as e:
        raise DataError(path, expected, f"cannot be read ({e.strerror})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(path, expected, f"is a damaged gzip file ({e})") from None
    return data


def _read_idx(path: str | os.PathLike, dims: int) -> np.ndarray:
    expected = f"an MNIST IDX file of unsigned bytes with {dims} dimension(s), raw or gzip"
    data = _read_bytes(path, expected)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != dims:
        raise DataError(path, expected, f"header {data[:4].hex() or 'missing'} is not a {dims}-D ubyte IDX header")
    if len(data) < 4 + 4 * dims:
        raise DataError(path, expected, "the header is truncated")
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = data[4 + 4 * dims:]
    if len(body) != int(np.prod(shape)):
        raise DataError(path, expected, f"holds {len(body)} bytes of data where its header {shape} needs "
                        f"{int(np.prod(shape))} (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def load_mnist(images_path: str | os.PathLike, labels_path: str | os.PathLike | None = None) -> ImageDataset:
    """MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` and, optionally, its labels)."""
    images = torch.from_numpy(_read_idx(images_path, 3).copy()).unsqueeze(1)
    labels = None
    if labels_path is not None:
        labels = torch.from_numpy(_read_idx(labels_path, 1).astype(np.int64))
        if len(labels) != len(images):
            raise DataError(labels_path, f"{len(images)} labels (one per image in {images_path})",
                            f"holds {len(labels)} labels")
    return ImageDataset(images, labels, 256, name=str(images_path))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file never runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: str, expected: str) -> tuple[np.ndarray, np.ndarray]:
    data = _read_bytes(path, expected)
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        images = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"] if b"labels" in batch else batch["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(path, expected, f"is not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise DataError(path, expected, f"holds data of shape {images.shape} and {len(labels)} labels")
    return images.reshape(-1, 3, 32, 32), labels


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(directory: str | os.PathLike, split: str = "train") -> ImageDataset:
    """CIFAR-10 "python version" batches: ``data_batch_1..5`` (train) or ``test_batch`` (test)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    expected = "a CIFAR-10 python batch (a pickled dict with 'data' (N, 3072) uint8 and 'labels')"
    if not os.path.isdir(directory):
        raise DataError(directory, "the cifar-10-batches-py directory", "no such directory")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_batch(os.path.join(directory, name), expected) for name in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageDataset(images, labels, 256, list(CIFAR10_CLASSES), f"{directory} ({split})")


def _read_image(path: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(path, "a PNG or JPEG image", f"cannot be decoded ({e})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_image_folder(directory: str | os.PathLike, *, grey: bool = False,
                      size: int | tuple[int, int] | None = None) -> ImageDataset:
    """PNG/JPEG images in ``directory``. Images in sub-folders are labelled by sub-folder (sorted
    names = classes); images directly in ``directory`` make an unlabelled set. All images must
    share one size unless ``size`` (H or (H, W)) resizes them."""
    if not os.path.isdir(directory):
        raise DataError(directory, "a directory of PNG/JPEG images (optionally one sub-folder per class)",
                        "no such directory")
    size = (size, size) if isinstance(size, int) else size
    subdirs = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    groups = [(None, directory)] if not subdirs else [(d, os.path.join(directory, d)) for d in subdirs]
    arrays, labels = [], []
    for label, (_, folder) in enumerate(groups):
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(IMAGE_SUFFIXES):
                arrays.append(_read_image(os.path.join(folder, name), "L" if grey else "RGB", size))
                labels.append(label)
    if not arrays:
        raise DataError(directory, f"images ending in {', '.join(IMAGE_SUFFIXES)}", "contains no images")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(directory, "images of one size (or pass size=)", f"has images of sizes {sorted(shapes)}")
    images = torch.from_numpy(np.stack(arrays))
    classes = [d for d, _ in groups] if subdirs else []
    return ImageDataset(images, torch.tensor(labels) if subdirs else None, 256, classes, str(directory))


def load_npz(path: str | os.PathLike, images_key: str | None = None, labels_key: str | None = None) -> ImageDataset:
    """Images from a ``.npz`` archive: uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) under
    ``images_key`` (default: 'images' or 'x'), labels under ``labels_key`` (default: 'labels' or 'y', optional)."""
    expected = "an .npz archive with uint8 images (N, H, W[, C]) under 'images' or 'x', optional labels"
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, expected, "no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, expected, f"cannot be read as .npz ({e})") from None
    with archive:
        keys = list(archive.keys())
        key = images_key or next((k for k in ("images", "x") if k in keys), None)
        if key is None or key not in keys:
            raise DataError(path, expected, f"has no images array (keys: {keys})")
        try:
            images = archive[key]
            lkey = labels_key or next((k for k in ("labels", "y") if k in keys), None)
            if labels_key is not None and labels_key not in keys:
                raise DataError(path, expected, f"has no {labels_key!r} array (keys: {keys})")
            labels = archive[lkey] if lkey else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(path, expected, f"is damaged ({e})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(path, expected, f"{key!r} is {images.dtype} of shape {images.shape}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    labels_t = None
    if labels is not None:
        if labels.shape != (len(images),):
            raise DataError(path, expected, f"labels have shape {labels.shape} for {len(images)} images")
        labels_t = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)), labels_t, 256, name=str(path))

"""Loaders for image data users keep on disk. Each returns an ``ImageDataset`` of 8-bit images
(levels = 256; ``.quantize(levels)`` or ``.binarize()`` for fewer) and raises ``DataError``,
naming the path and the expected format, for a missing or malformed file."""
from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import warnings
import zipfile
import zlib

import numpy as np
import torch

from fastgen.data.dataset import DataError, ImageDataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than about 1032:1, so a gzip file of S bytes holds at most
# this many times S: a header declaring more is lying, and is refused before anything is inflated.
DEFLATE_MAX_RATIO = 1032
MAX_IDX_BYTES = 4 << 30  # 4 GiB of pixels: MNIST-style files in use are far smaller (EMNIST: 0.6 GB)
MAX_BATCH_BYTES = 1 << 30  # a CIFAR-10 batch is 31 MB
MNIST_CLASSES = 10


def _open(path: str | os.PathLike, expected: str) -> io.BufferedReader:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(path, expected, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, expected, "is a directory, not a file") from None
    except OSError as e:
        raise DataError(path, expected, f"cannot be read ({e.strerror})") from None


def _read_bytes(path: str | os.PathLike, expected: str, limit: int) -> bytes:
    """The contents of a raw or gzip file, refusing more than ``limit`` bytes (after inflating)
    without reading past them."""
    with _open(path, expected) as f:
        gz = f.read(2) == GZIP_MAGIC
        f.seek(0)
        if not gz and os.fstat(f.fileno()).st_size > limit:
            raise DataError(path, expected, f"is {os.fstat(f.fileno()).st_size} bytes, more than {limit}")
        try:
            data = (gzip.GzipFile(fileobj=f) if gz else f).read(limit + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, expected, f"is a damaged gzip file ({e})") from None
    if len(data) > limit:
        raise DataError(path, expected, f"inflates to more than {limit} bytes")
    return data


def _read_exactly(stream: io.IOBase, n: int, path: str | os.PathLike, expected: str) -> bytes:
    try:
        data = stream.read(n)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, expected, f"is a damaged gzip file ({e})") from None
    return data


def _read_idx(path: str | os.PathLike, dims: int) -> np.ndarray:
    """An IDX array of unsigned bytes. The header is read and checked first, and the size it
    declares is compared with the file's before the data is read: a gzip file is inflated as a
    stream, only as far as the header says, so a damaged or hostile file cannot make the loader
    inflate or allocate more than the file can hold."""
    expected = f"an MNIST IDX file of unsigned bytes with {dims} dimension(s), raw or gzip"
    with _open(path, expected) as f:
        size = os.fstat(f.fileno()).st_size
        gz = f.read(2) == GZIP_MAGIC
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f) if gz else f
        magic = _read_exactly(stream, 4, path, expected)
        if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] != 0x08 or magic[3] != dims:
            raise DataError(path, expected, f"header {magic.hex() or 'missing'} is not a {dims}-D ubyte IDX header")
        header = _read_exactly(stream, 4 * dims, path, expected)
        if len(header) < 4 * dims:
            raise DataError(path, expected, "the header is truncated")
        shape = struct.unpack(f">{dims}I", header)
        declared = math.prod(shape)
        if declared > MAX_IDX_BYTES:
            raise DataError(path, expected, f"its header declares {shape}, {declared} bytes: more than the "
                            f"{MAX_IDX_BYTES} an IDX file may hold here")
        if gz and declared > DEFLATE_MAX_RATIO * size:
            raise DataError(path, expected, f"its header declares {shape}, {declared} bytes, more than a gzip file of "
                            f"{size} bytes can hold (damaged?)")
        if not gz and size - 4 - 4 * dims != declared:
            body_size = size - 4 - 4 * dims
            raise DataError(path, expected, f"holds {body_size} bytes of data where its header {shape} needs "
                            f"{declared}{' (truncated?)' if body_size < declared else ''}")
        body = _read_exactly(stream, declared + 1, path, expected)  # one byte more: trailing data is refused
    if len(body) != declared:
        have = "more" if len(body) > declared else str(len(body))
        raise DataError(path, expected, f"holds {have} bytes of data where its header {shape} needs "
                        f"{declared}{' (truncated?)' if len(body) < declared else ''}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def check_labels(path: str | os.PathLike, expected: str, labels: np.ndarray, n: int,
                 n_classes: int | None) -> torch.Tensor:
    """Labels as int64, refusing what a cast would silently change: a non-integer dtype, a shape
    other than (n,), negative values, and values of ``n_classes`` or more (when known)."""
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, expected, f"labels are {labels.dtype}, not integers")
    if labels.shape != (n,):
        raise DataError(path, expected, f"labels have shape {labels.shape} for {n} images")
    if n:
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise DataError(path, expected, f"holds the label {low} (at index {int(labels.argmin())}); labels are >= 0")
        if n_classes is not None and high >= n_classes:
            raise DataError(path, expected, f"holds the label {high} (at index {int(labels.argmax())}), outside the "
                            f"{n_classes} classes [0, {n_classes})")
    return torch.from_numpy(labels.astype(np.int64))


def check_pixels(path: str | os.PathLike, expected: str, images: np.ndarray) -> np.ndarray:
    """8-bit pixels as uint8, refusing a non-integer dtype and values outside [0, 255] (a cast
    would wrap 300 to 44 and -1 to 255)."""
    if images.dtype == np.bool_ or not np.issubdtype(images.dtype, np.integer):
        raise DataError(path, expected, f"pixels are {images.dtype}, not integers")
    if images.size and images.dtype != np.uint8:
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            bad = low if low < 0 else high
            raise DataError(path, expected, f"holds the pixel value {bad}, outside [0, 255] (16-bit data: scale it to "
                            "8 bits first, e.g. images >> 8)")
    return images.astype(np.uint8, copy=False)


def load_mnist(images_path: str | os.PathLike, labels_path: str | os.PathLike | None = None, *,
               n_classes: int = MNIST_CLASSES) -> ImageDataset:
    """MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` and, optionally, its labels, which
    must lie in [0, n_classes): 10 for MNIST, Fashion-MNIST and KMNIST; pass another count for
    EMNIST-style files)."""
    images = torch.from_numpy(_read_idx(images_path, 3).copy()).unsqueeze(1)
    if images.numel() == 0:
        raise DataError(images_path, "an MNIST IDX file of images", f"holds no images (shape {tuple(images.shape)})")
    labels = None
    if labels_path is not None:
        raw = _read_idx(labels_path, 1)
        if len(raw) != len(images):
            raise DataError(labels_path, f"{len(images)} labels (one per image in {images_path})",
                            f"holds {len(raw)} labels")
        labels = check_labels(labels_path, f"MNIST labels in [0, {n_classes})", raw, len(images), n_classes)
    return ImageDataset(images, labels, 256, [str(k) for k in range(n_classes)] if labels is not None else [],
                        name=str(images_path))


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


def _read_cifar_batch(path: str, expected: str) -> tuple[np.ndarray, torch.Tensor]:
    data = _read_bytes(path, expected, MAX_BATCH_BYTES)
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        images = batch[b"data"] if b"data" in batch else batch["data"]
        labels = batch[b"labels"] if b"labels" in batch else batch["labels"]
        images, labels = np.asarray(images), np.asarray(labels)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise DataError(path, expected, f"is not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or labels.shape != (len(images),):
        raise DataError(path, expected, f"holds data of shape {images.shape} and labels of shape {labels.shape}")
    images = check_pixels(path, expected, images)
    labels = check_labels(path, expected, labels, len(images), len(CIFAR10_CLASSES))
    return images.reshape(-1, 3, 32, 32), labels


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(directory: str | os.PathLike, split: str = "train") -> ImageDataset:
    """CIFAR-10 "python version" batches: ``data_batch_1..5`` (train) or ``test_batch`` (test). Pixels
    must be integers in [0, 255] and labels integers in [0, 10)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    expected = "a CIFAR-10 python batch (a pickled dict with 'data' (N, 3072) uint8 and 'labels' in [0, 10))"
    if not os.path.isdir(directory):
        raise DataError(directory, "the cifar-10-batches-py directory", "no such directory")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_batch(os.path.join(directory, name), expected) for name in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.cat([p[1] for p in parts])
    if len(images) == 0:
        raise DataError(directory, expected, "its batches hold no images")
    return ImageDataset(images, labels, 256, list(CIFAR10_CLASSES), f"{directory} ({split})")


ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _has_transparency(img) -> bool:
    """Whether an image's alpha channel (or palette transparency) hides anything: dropping a fully
    opaque alpha channel loses nothing."""
    if img.mode in ALPHA_MODES:
        return img.getchannel(img.mode[-1]).getextrema()[0] < 255
    return img.mode == "P" and "transparency" in img.info


def read_image(path: str, mode: str, size: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    """One image as a (C, H, W) uint8 array, and whether a transparency was dropped. 16-bit grey
    images keep their high byte (what Pillow does for 16-bit RGB); 32-bit integer and
    floating-point images are refused."""
    from PIL import Image, UnidentifiedImageError

    expected = "a PNG or JPEG image (8-bit or 16-bit grey, RGB, optionally with alpha)"
    try:
        with Image.open(path) as img:
            if img.mode in ("I", "F"):
                raise DataError(path, expected, f"is a 32-bit {'integer' if img.mode == 'I' else 'floating-point'} "
                                f"image (mode {img.mode}); convert it to 8 bits first")
            transparent = _has_transparency(img)
            if img.mode in SIXTEEN_BIT_MODES:
                img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, expected, f"cannot be decoded ({e})") from None
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)), transparent


def image_names(folder: str, empty: str = "contains no images") -> list[str]:
    """The PNG/JPEG files directly in ``folder``, sorted; an empty folder is refused (``empty`` says why)."""
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_SUFFIXES) and not os.path.isdir(os.path.join(folder, n)))
    if not names:
        raise DataError(folder, f"images ending in {', '.join(IMAGE_SUFFIXES)}", empty)
    return names


def _check_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in pair):
        raise ValueError(f"size must be an integer or an (H, W) pair of integers in [1, 4096], got {size!r}")
    return int(pair[0]), int(pair[1])


def load_image_folder(directory: str | os.PathLike, *, grey: bool = False,
                      size: int | tuple[int, int] | None = None) -> ImageDataset:
    """PNG/JPEG images in ``directory``. Images in sub-folders are labelled by sub-folder (sorted
    names = classes); images directly in ``directory`` make an unlabelled set. All images must
    share one size unless ``size`` (H or (H, W)) resizes them. An alpha channel is dropped, with a
    warning when it made anything transparent; 16-bit images keep their high byte."""
    if not os.path.isdir(directory):
        raise DataError(directory, "a directory of PNG/JPEG images (optionally one sub-folder per class)",
                        "no such directory" if not os.path.exists(directory) else "is not a directory")
    size = _check_size(size)
    subdirs = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    groups = [(None, directory)] if not subdirs else [(d, os.path.join(directory, d)) for d in subdirs]
    arrays, labels, transparent = [], [], []
    for label, (_, folder) in enumerate(groups):
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(IMAGE_SUFFIXES) and not os.path.isdir(os.path.join(folder, name)):
                array, dropped = read_image(os.path.join(folder, name), "L" if grey else "RGB", size)
                arrays.append(array)
                labels.append(label)
                if dropped:
                    transparent.append(os.path.join(folder, name))
    if not arrays:
        raise DataError(directory, f"images ending in {', '.join(IMAGE_SUFFIXES)}", "contains no images")
    if transparent:
        warnings.warn(f"{directory}: {len(transparent)} image(s) have transparent pixels (e.g. {transparent[0]}); "
                      "the alpha channel is dropped: fastgen models read grey or RGB", stacklevel=2)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(directory, "images of one size (or pass size=)", f"has images of sizes {sorted(shapes)}")
    images = torch.from_numpy(np.stack(arrays))
    classes = [d for d, _ in groups] if subdirs else []
    return ImageDataset(images, torch.tensor(labels) if subdirs else None, 256, classes, str(directory))


def _channels_first(path: str | os.PathLike, expected: str, images: np.ndarray) -> np.ndarray:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) images as (N, C, H, W) with C = 1 or 3. A 4-D array
    is channels-first when its dimension 1 is 1 or 3, else channels-last when its last one is; any
    other layout (RGBA, two channels, ...) is refused rather than guessed."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images.transpose(0, 3, 1, 2)
    hint = " (RGBA? drop the alpha channel first: images[..., :3])" if images.ndim == 4 and 4 in (
        images.shape[1], images.shape[-1]) else ""
    raise DataError(path, expected, f"images have shape {images.shape}: no channel axis of 1 or 3{hint}")


def load_npz(path: str | os.PathLike, images_key: str | None = None, labels_key: str | None = None, *,
             n_classes: int | None = None) -> ImageDataset:
    """Images from a ``.npz`` archive: integers in [0, 255] (N, H, W), (N, H, W, C) or (N, C, H, W)
    with C = 1 or 3, under ``images_key`` (default: 'images' or 'x'); labels, non-negative integers
    (in [0, n_classes) when given), under ``labels_key`` (default: 'labels' or 'y', optional)."""
    expected = ("an .npz archive with 8-bit images (N, H, W[, C]) under 'images' or 'x' and optional integer "
                "labels under 'labels' or 'y'")
    if os.path.isdir(path):
        raise DataError(path, expected, "is a directory, not a file")
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, expected, "no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, expected, f"cannot be read as .npz ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(path, expected, "is a single .npy array, not an .npz archive")
    with archive:
        keys = list(archive.keys())
        key = images_key or next((k for k in ("images", "x") if k in keys), None)
        if key is None or key not in keys:
            raise DataError(path, expected, f"has no images array (keys: {keys})")
        lkey = labels_key or next((k for k in ("labels", "y") if k in keys), None)
        if labels_key is not None and labels_key not in keys:
            raise DataError(path, expected, f"has no {labels_key!r} array (keys: {keys})")
        images = _read_member(archive, key, path, expected)
        labels = _read_member(archive, lkey, path, expected) if lkey else None
    if images.ndim not in (3, 4) or images.dtype == np.bool_ or not np.issubdtype(images.dtype, np.integer):
        raise DataError(path, expected, f"{key!r} is {images.dtype} of shape {images.shape} (pixels must be "
                        "integers in [0, 255])")
    if len(images) == 0 or images.size == 0:
        raise DataError(path, expected, f"{key!r} holds no images (shape {images.shape})")
    images = check_pixels(path, expected, _channels_first(path, expected, images))
    labels_t = None
    if labels is not None:
        labels_t = check_labels(path, expected, labels, len(images), n_classes)
        _warn_missing_classes(path, labels_t, n_classes)
    classes = [str(k) for k in range(n_classes)] if n_classes is not None and labels_t is not None else []
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)), labels_t, 256, classes, name=str(path))


def _declared_npy_bytes(archive: np.lib.npyio.NpzFile, name: str) -> tuple[int, int] | None:
    """(bytes of data the .npy member's header declares, bytes after its header), read from the
    header alone; None for a header version this check does not parse (numpy checks it later)."""
    from numpy.lib import format as npy

    with archive.zip.open(name) as f:
        version = npy.read_magic(f)
        readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
        if version not in readers:
            return None
        shape, _, dtype = readers[version](f)
        return math.prod(shape) * dtype.itemsize, archive.zip.getinfo(name).file_size - f.tell()


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: str | os.PathLike, expected: str) -> np.ndarray:
    """One array of an .npz archive. The zip entry and the .npy header are checked before the data
    is read: an entry claiming to inflate beyond deflate's limit, or a header declaring more data
    than its entry holds, is refused before numpy allocates what it declares."""
    name = f"{key}.npy"
    try:
        if name in archive.zip.namelist():
            info = archive.zip.getinfo(name)
            if info.file_size > DEFLATE_MAX_RATIO * max(info.compress_size, 1) + 4096:
                raise DataError(path, expected, f"{key!r} claims {info.file_size} bytes from {info.compress_size} "
                                "compressed ones (damaged?)")
            sizes = _declared_npy_bytes(archive, name)
            if sizes is not None and sizes[0] > sizes[1]:
                raise DataError(path, expected, f"{key!r} declares {sizes[0]} bytes of data and holds {sizes[1]}")
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, expected, f"{key!r} is damaged ({type(e).__name__}: {e})") from None


def _warn_missing_classes(path: str | os.PathLike, labels: torch.Tensor, n_classes: int | None) -> None:
    """Labels define classes 0..max: warn when some never occur (a stray label such as 255 would
    otherwise silently make a 256-class model)."""
    if n_classes is None and len(labels):
        count, present = int(labels.max()) + 1, len(torch.unique(labels))
        if present < count:
            warnings.warn(f"{path}: the labels make {count} classes (0..{count - 1}), and only {present} occur; "
                          "pass n_classes to load_npz to say how many there are", stacklevel=3)

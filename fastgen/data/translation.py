"""Data for image-to-image translation: paired sets (pix2pix) and unpaired ones (CycleGAN).

``PairedDataset`` holds a source and a target image per item; ``UnpairedDataset`` holds two
domains A and B of unrelated images, optionally with the true translation of each image (for
scoring). ``load_pairs`` and ``load_unpaired`` read the folder layouts of the pix2pix and CycleGAN
repositories; every file problem raises ``DataError`` naming the path and what was expected.

Two bundled tasks with known ground truth are built from the bundled digits (``digits(split,
size=size)``: the 8x8 digits enlarged by bilinear interpolation to ``size`` x ``size``, 256
levels). Nothing is random and nothing is downloaded: the same arguments give the same data,
bit for bit, on every call.

``edges_to_digits(split, size=32)`` (pix2pix): the target is the enlarged digit; the source is its
edge map, ``ink_edges(target)``: the ink is the pixels of value >= 128, and an ink pixel is an edge
when one of its 8 neighbours (3x3 box) is not ink, pixels beyond the border counting as paper.
That is ink AND NOT erode(ink), a one-pixel inner outline, stored as 0 / 255 (levels 256, one
channel). Labels are the digits'.

``inverted_digits(split, size=32)`` (CycleGAN): the split's enlarged digits are cut in two disjoint
halves by index, even indices (0, 2, 4, ...) for domain A and odd ones for domain B. Domain A keeps
them as they are, white ink on black; domain B applies ``invert_ink``, the per-pixel map
f(v) = round(255 * (1 - sqrt(v / 255))), which turns them into dark ink on white paper, the ink
looking thicker (the square root lifts faint ink). The ground truth is ``a_in_b = f(A)`` and
``b_in_a = uninvert_ink(B)``, the B images mapped back; labels are kept on both domains.

``uninvert_ink`` is the real inverse of f, rounded: f^-1(w) = round(255 * (1 - w / 255) ** 2).
f is not one-to-one on the 0..255 grid (it maps 256 levels onto 192: near full ink two or three
levels share one value), so no map can undo it exactly; this one does as well as any: for every
level v, f^-1(f(v)) is v or a neighbour of v (within one level), and f(f^-1(w)) = w for every
value w that f produces. Both maps are lookup tables of 256 entries computed once in float64
(no value falls on a rounding tie).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fastgen.data.dataset import DataError, ImageDataset
from fastgen.data.digits import digits
from fastgen.data.files import _check_size, image_names, read_image

INK_THRESHOLD = 128  # a pixel of an 8-bit digit is ink at this value or above
BUNDLED_SIZE = 32


# -- the data sets ---------------------------------------------------------------------------------
def _hw(data: ImageDataset) -> str:
    return f"{data.images.shape[2]}x{data.images.shape[3]}"


def _check_is_dataset(owner: str, role: str, value: object) -> None:
    if not isinstance(value, ImageDataset):
        raise TypeError(f"{owner}: {role} must be an ImageDataset, got {type(value).__name__}")


@dataclass
class PairedDataset(torch.utils.data.Dataset):
    """Aligned pairs (source i, target i), as a torch Dataset of (source image, target image).

    Attributes:
        source: the inputs, an ``ImageDataset`` (N, C_s, H, W).
        target: the outputs, an ``ImageDataset`` (N, C_t, H, W): same N, H and W; channels and
            levels may differ.
        name: where it came from (for messages).
    """

    source: ImageDataset
    target: ImageDataset
    name: str = "pairs"

    def __post_init__(self):
        _check_is_dataset(self.name, "source", self.source)
        _check_is_dataset(self.name, "target", self.target)
        if len(self.source) != len(self.target):
            raise ValueError(f"{self.name}: source and target must hold one image per pair, got {len(self.source)} "
                             f"source and {len(self.target)} target images")
        if self.source.shape[1:] != self.target.shape[1:]:
            raise ValueError(f"{self.name}: source and target images must have the same height and width, got "
                             f"{_hw(self.source)} and {_hw(self.target)}")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source image, target image), (C, H, W) each, in the stored dtype (uint8 for 8-bit data)."""
        return self.source.images[index], self.target.images[index]

    @property
    def labels(self) -> torch.Tensor | None:
        """The source's labels (None when it has none)."""
        return self.source.labels

    def subset(self, index: torch.Tensor | slice, name: str | None = None) -> PairedDataset:
        """The pairs at ``index`` (a slice, index tensor or mask), still aligned."""
        return PairedDataset(self.source.subset(index), self.target.subset(index), name or self.name)


@dataclass
class UnpairedDataset(torch.utils.data.Dataset):
    """Two domains of unrelated images, as a torch Dataset of (image of A, image of B).

    Item i is (a[i % len(a)], b[i % len(b)]) and the length is the larger domain's, so an epoch
    sees every image of both domains; a trainer that wants independent draws reads ``a`` and ``b``
    separately.

    Attributes:
        a, b: the two domains, ``ImageDataset`` of the same height and width (their lengths,
            channels and levels may differ).
        name: where it came from (for messages).
        a_in_b: optional ground truth: the true translation of each image of ``a`` into domain B
            (aligned with ``a``, shaped like ``b``'s images), as the bundled tasks know it.
        b_in_a: likewise for ``b`` into domain A.
    """

    a: ImageDataset
    b: ImageDataset
    name: str = "unpaired"
    a_in_b: ImageDataset | None = None
    b_in_a: ImageDataset | None = None

    def __post_init__(self):
        _check_is_dataset(self.name, "a", self.a)
        _check_is_dataset(self.name, "b", self.b)
        if self.a.shape[1:] != self.b.shape[1:]:
            raise ValueError(f"{self.name}: domains a and b must have images of the same height and width, got "
                             f"{_hw(self.a)} and {_hw(self.b)}")
        for role, truth, source, domain in (("a_in_b", self.a_in_b, self.a, self.b),
                                            ("b_in_a", self.b_in_a, self.b, self.a)):
            if truth is None:
                continue
            _check_is_dataset(self.name, role, truth)
            other = "b" if role == "a_in_b" else "a"
            if len(truth) != len(source) or truth.shape != domain.shape or truth.levels != domain.levels:
                raise ValueError(f"{self.name}: {role} must hold one image per image of {role[0]} "
                                 f"({len(source)}), shaped like {other}'s {domain.shape} with {domain.levels} "
                                 f"levels; got {len(truth)} of {truth.shape} with {truth.levels} levels")

    def __len__(self) -> int:
        return max(len(self.a), len(self.b)) if len(self.a) and len(self.b) else 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image of a, image of b), in the stored dtype (uint8 for 8-bit data)."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} is outside [0, {len(self)})")
        return self.a.images[index % len(self.a)], self.b.images[index % len(self.b)]

    def subset(self, a: torch.Tensor | slice | None = None, b: torch.Tensor | slice | None = None,
               name: str | None = None) -> UnpairedDataset:
        """The images of a at index ``a`` and of b at index ``b`` (None keeps a domain whole); the
        ground truth follows its domain."""
        def pick(data, index):
            return None if data is None else data if index is None else data.subset(index)

        return UnpairedDataset(pick(self.a, a), pick(self.b, b), name or self.name, pick(self.a_in_b, a),
                               pick(self.b_in_a, b))


# -- folders on disk -------------------------------------------------------------------------------
PAIRS_EXPECTED = ("pix2pix pairs: DIR/<split>/ holding side-by-side A|B images (left half A, right half B), or "
                  "DIR/A/<split>/ and DIR/B/<split>/ holding images of the same file names")


def _check_split(split: object) -> str:
    if not isinstance(split, str) or split in ("", ".", "..") or "/" in split or os.sep in split:
        raise ValueError(f"split must be the name of a folder such as 'train' or 'test', got {split!r}")
    return split


def _check_directory(directory: str | os.PathLike, expected: str) -> None:
    if not os.path.isdir(directory):
        raise DataError(directory, expected,
                        "no such directory" if not os.path.exists(directory) else "is not a directory")


def _warn_transparent(folder: str, transparent: list[str]) -> None:
    if transparent:
        warnings.warn(f"{folder}: {len(transparent)} image(s) have transparent pixels (e.g. {transparent[0]}); "
                      "the alpha channel is dropped: fastgen models read grey or RGB", stacklevel=3)


def _read_folder(folder: str, names: list[str], mode: str, size: tuple[int, int] | None) -> list[np.ndarray]:
    arrays, transparent = [], []
    for name in names:
        array, dropped = read_image(os.path.join(folder, name), mode, size)
        arrays.append(array)
        if dropped:
            transparent.append(os.path.join(folder, name))
    _warn_transparent(folder, transparent)
    return arrays


def _stack_one_size(folder: str, names: list[str], arrays: list[np.ndarray], what: str = "images") -> torch.Tensor:
    """The arrays as one (N, C, H, W) tensor; differing sizes are refused, naming a file of each."""
    first: dict[tuple[int, ...], str] = {}
    for name, array in zip(names, arrays):
        first.setdefault(array.shape[1:], name)
    if len(first) > 1:
        examples = ", ".join(f"{name} is {h}x{w}" for (h, w), name in sorted(first.items()))
        raise DataError(folder, f"{what} of one size (or pass size=)",
                        f"has {what} of sizes {sorted(first)} (height, width): {examples}")
    return torch.from_numpy(np.stack(arrays))


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (C, H, W) uint8 array resized to ``size`` = (H, W) as ``read_image`` does (Pillow, bilinear)."""
    from PIL import Image

    if array.shape[1:] == size:
        return array
    img = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    out = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def _names_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _load_side_by_side(directory: str, folder: str, split: str, mode: str,
                       size: tuple[int, int] | None) -> PairedDataset:
    names = image_names(folder)
    expected = "a side-by-side A|B image of even width (left half A, right half B)"
    sources, targets, transparent = [], [], []
    for name in names:
        path = os.path.join(folder, name)
        array, dropped = read_image(path, mode, None)
        if dropped:
            transparent.append(path)
        width = array.shape[2]
        if width % 2:
            raise DataError(path, expected, f"is {width} pixels wide, an odd width that cannot split into two halves")
        left, right = array[:, :, : width // 2], array[:, :, width // 2:]
        sources.append(left if size is None else _resize(left, size))
        targets.append(right if size is None else _resize(right, size))
    _warn_transparent(folder, transparent)
    source = _stack_one_size(folder, names, sources, "image halves")
    target = torch.from_numpy(np.stack(targets))  # halves of one image: the same size as the source's
    name = f"{directory} ({split})"
    return PairedDataset(ImageDataset(source, None, 256, name=f"{name} A"),
                         ImageDataset(target, None, 256, name=f"{name} B"), name)


def _load_a_b_folders(directory: str, split: str, mode: str, size: tuple[int, int] | None) -> PairedDataset:
    folder_a, folder_b = os.path.join(directory, "A", split), os.path.join(directory, "B", split)
    for folder, other in ((folder_a, folder_b), (folder_b, folder_a)):
        if not os.path.isdir(folder):
            raise DataError(folder, PAIRS_EXPECTED, f"no such directory (while {other} exists)")
    names_a, names_b = image_names(folder_a), image_names(folder_b)
    if names_a != names_b:
        only_a = sorted(set(names_a) - set(names_b))
        only_b = sorted(set(names_b) - set(names_a))
        parts = [f"{len(only)} image(s) only in {side}/{split}: {_names_list(only)}"
                 for side, only in (("A", only_a), ("B", only_b)) if only]
        raise DataError(directory, f"the same file names in A/{split} and B/{split} (one pair per name)",
                        "; ".join(parts))
    source = _stack_one_size(folder_a, names_a, _read_folder(folder_a, names_a, mode, size))
    target = _stack_one_size(folder_b, names_b, _read_folder(folder_b, names_b, mode, size))
    if source.shape[2:] != target.shape[2:]:
        raise DataError(directory, f"A/{split} and B/{split} images of one size (or pass size=)",
                        f"A/{split} images are {source.shape[2]}x{source.shape[3]}, B/{split} images are "
                        f"{target.shape[2]}x{target.shape[3]}")
    name = f"{directory} ({split})"
    return PairedDataset(ImageDataset(source, None, 256, name=folder_a), ImageDataset(target, None, 256, name=folder_b),
                         name)


def load_pairs(directory: str | os.PathLike, split: str = "train", *, grey: bool = False,
               size: int | tuple[int, int] | None = None) -> PairedDataset:
    """pix2pix's paired images, in either of its layouts:

    - ``DIR/<split>/*.png|jpg``: each image holds a pair side by side, the left half the source
      (A) and the right half the target (B); its width must be even;
    - ``DIR/A/<split>/`` and ``DIR/B/<split>/``: the source and target of a pair share a file name.

    Images are grey (``grey``) or RGB, 8-bit (levels 256), unlabelled; all must share one size
    unless ``size`` (H or (H, W)) resizes them (each half, for side-by-side images). An alpha
    channel is dropped, with a warning when it made anything transparent."""
    split = _check_split(split)
    _check_directory(directory, PAIRS_EXPECTED)
    size = _check_size(size)
    mode = "L" if grey else "RGB"
    directory = os.fspath(directory)
    side_by_side = os.path.isdir(os.path.join(directory, split))
    a_b = any(os.path.isdir(os.path.join(directory, side, split)) for side in ("A", "B"))
    if side_by_side and a_b:
        raise DataError(directory, PAIRS_EXPECTED, f"holds both {split}/ (side-by-side pairs) and A/{split}/ or "
                        f"B/{split}/ (separate folders): keep one layout")
    if side_by_side:
        return _load_side_by_side(directory, os.path.join(directory, split), split, mode, size)
    if a_b:
        return _load_a_b_folders(directory, split, mode, size)
    raise DataError(directory, PAIRS_EXPECTED, f"has neither a {split}/ folder nor A/{split}/ and B/{split}/")


def load_unpaired(directory: str | os.PathLike, split: str = "train", *, grey: bool = False,
                  size: int | tuple[int, int] | None = None) -> UnpairedDataset:
    """CycleGAN's unpaired domains: the images of ``DIR/<split>A/`` and ``DIR/<split>B/``
    (``trainA``, ``trainB``; ``testA``, ``testB``), grey (``grey``) or RGB, 8-bit (levels 256),
    unlabelled. The domains may hold different numbers of images; all images of both must share
    one size unless ``size`` (H or (H, W)) resizes them. An alpha channel is dropped, with a
    warning when it made anything transparent."""
    split = _check_split(split)
    expected = f"CycleGAN domains: DIR/{split}A/ and DIR/{split}B/ holding images"
    _check_directory(directory, expected)
    size = _check_size(size)
    mode = "L" if grey else "RGB"
    directory = os.fspath(directory)
    domains = []
    for side in ("A", "B"):
        folder = os.path.join(directory, split + side)
        if not os.path.isdir(folder):
            raise DataError(folder, expected, f"no such directory (domain {side})")
        names = image_names(folder, f"contains no images: domain {side} is empty")
        domains.append(ImageDataset(_stack_one_size(folder, names, _read_folder(folder, names, mode, size)), None,
                                    256, name=folder))
    a, b = domains
    if a.shape[1:] != b.shape[1:]:
        raise DataError(directory, f"{split}A and {split}B images of one size (or pass size=)",
                        f"{split}A images are {_hw(a)}, {split}B images are {_hw(b)}")
    return UnpairedDataset(a, b, f"{directory} ({split})")


# -- the bundled tasks ------------------------------------------------------------------------------
def ink_edges(images: torch.Tensor) -> torch.Tensor:
    """The edge map of 8-bit images (N, C, H, W): 255 where a pixel is ink (>= 128) and one of its
    8 neighbours is not (beyond the border is paper), else 0; uint8, on the images' device."""
    _check_bytes(images, "ink_edges")
    if images.dim() != 4:
        raise ValueError(f"ink_edges takes (N, C, H, W) images, got shape {tuple(images.shape)}")
    ink = images >= INK_THRESHOLD
    paper = F.pad((~ink).float(), (1, 1, 1, 1), value=1.0)
    near_paper = F.max_pool2d(paper.flatten(0, 1).unsqueeze(1), 3, stride=1).view(ink.shape) > 0
    return (ink & near_paper).to(torch.uint8) * 255


def edges_to_digits(split: str = "train", size: int = BUNDLED_SIZE) -> PairedDataset:
    """The pix2pix task on the digits: source = the edge map of each enlarged digit, target = the
    digit (see module docstring); both (N, 1, size, size), levels 256, labelled."""
    target = digits(split, size=size)
    name = f"edges-digits/{split}"
    return PairedDataset(ImageDataset(ink_edges(target.images), target.labels, 256, list(target.classes),
                                      f"{name} edges"),
                         ImageDataset(target.images, target.labels, 256, list(target.classes), f"{name} digits"),
                         name)


def _ink_tables() -> tuple[torch.Tensor, torch.Tensor]:
    v = np.arange(256, dtype=np.float64)
    forward = np.round(255.0 * (1.0 - np.sqrt(v / 255.0)))
    inverse = np.round(255.0 * (1.0 - v / 255.0) ** 2)
    return torch.from_numpy(forward.astype(np.uint8)), torch.from_numpy(inverse.astype(np.uint8))


INVERT_TABLE, UNINVERT_TABLE = _ink_tables()


def _check_bytes(images: object, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.is_floating_point() or images.is_complex() \
            or images.dtype == torch.bool:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"{what} takes an integer tensor of 8-bit values in [0, 255], got {got}")
    if images.numel():
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise ValueError(f"{what} takes 8-bit values in [0, 255], got {low if low < 0 else high}")


def invert_ink(images: torch.Tensor) -> torch.Tensor:
    """f(v) = round(255 * (1 - sqrt(v / 255))) per value: white ink on black becomes dark, thicker
    ink on white. An integer tensor of any shape in [0, 255] -> uint8, on its device."""
    _check_bytes(images, "invert_ink")
    return INVERT_TABLE.to(images.device)[images.long()]


def uninvert_ink(images: torch.Tensor) -> torch.Tensor:
    """The inverse of ``invert_ink``, rounded: round(255 * (1 - w / 255) ** 2) per value (within one
    level of the original; see module docstring). An integer tensor in [0, 255] -> uint8."""
    _check_bytes(images, "uninvert_ink")
    return UNINVERT_TABLE.to(images.device)[images.long()]


def inverted_digits(split: str = "train", size: int = BUNDLED_SIZE) -> UnpairedDataset:
    """The CycleGAN task on the digits: domain A = the split's enlarged digits at even indices,
    domain B = those at odd indices through ``invert_ink``, with both translations as ground truth
    (see module docstring); (1, size, size) images, levels 256, labelled."""
    data = digits(split, size=size)
    name = f"inverted-digits/{split}"
    classes = list(data.classes)
    a = data.subset(slice(0, None, 2), f"{name} A")
    b_images = invert_ink(data.images[1::2])
    b = ImageDataset(b_images, data.labels[1::2], 256, classes, f"{name} B")
    a_in_b = ImageDataset(invert_ink(a.images), a.labels, 256, classes, f"{name} A in B")
    b_in_a = ImageDataset(uninvert_ink(b_images), b.labels, 256, classes, f"{name} B in A")
    return UnpairedDataset(a, b, name, a_in_b, b_in_a)

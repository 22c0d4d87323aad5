"""``ImageDataset``: integer images (N, C, H, W) in [0, levels) with optional labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DataError(ValueError):
    """A data file is missing, unreadable or not in the expected format (the message names both)."""

    def __init__(self, path: object, expected: str, problem: str):
        super().__init__(f"{path}: {problem}; expected {expected}")
        self.path, self.expected = path, expected


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Images of ``levels`` values per sub-pixel, as a torch Dataset of (image int64, label).

    Attributes:
        images: (N, C, H, W) integer tensor in [0, levels) (uint8 when levels <= 256).
        labels: (N,) int64 class labels, or None.
        levels: values per sub-pixel.
        classes: the class names, index = label.
        name: where it came from (for messages).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    levels: int
    classes: list[str] = field(default_factory=list)
    name: str = "images"

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4 or self.images.is_floating_point() \
                or self.images.is_complex() or self.images.dtype == torch.bool:
            got = (f"{self.images.dtype} {tuple(self.images.shape)}" if isinstance(self.images, torch.Tensor)
                   else type(self.images).__name__)
            raise ValueError(f"{self.name}: images must be an integer (N, C, H, W) tensor, got {got}")
        if self.classes is None:  # "no class names", as the default
            self.classes = []
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(f"{self.name}: levels must be an integer >= 2, got {self.levels!r}")
        if self.images.numel():
            low, high = int(self.images.min()), int(self.images.max())
            if low < 0 or high >= self.levels:
                raise ValueError(f"{self.name}: image values reach {low if low < 0 else high}, outside "
                                 f"levels={self.levels} ([0, {self.levels}))")
        if self.labels is not None:
            self._check_labels()
            self.labels = self.labels.long()
            if not self.classes and len(self.labels):
                self.classes = [str(i) for i in range(int(self.labels.max()) + 1)]

    def _check_labels(self) -> None:
        """Labels are integers (a cast would truncate 2.7 to 2), one per image, in [0, len(classes))."""
        labels = self.labels
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex() \
                or labels.dtype == torch.bool:
            got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"{self.name}: labels must be an integer tensor, got {got}")
        if tuple(labels.shape) != (self.images.shape[0],):
            raise ValueError(f"{self.name}: labels must be ({self.images.shape[0]},), got {tuple(labels.shape)}")
        if len(labels):
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or (self.classes and high >= len(self.classes)):
                bound = f"[0, {len(self.classes)}) (one per class name)" if self.classes else ">= 0"
                raise ValueError(f"{self.name}: labels must be {bound}, got {low if low < 0 else high}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        label = self.labels[index] if self.labels is not None else torch.tensor(-1)
        return self.images[index].long(), label

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.labels is not None else None

    def subset(self, index: torch.Tensor | slice, name: str | None = None) -> ImageDataset:
        return ImageDataset(self.images[index], None if self.labels is None else self.labels[index], self.levels,
                            list(self.classes), name or self.name)

    def quantize(self, levels: int) -> ImageDataset:
        """The same images with ``levels`` values per sub-pixel (value v -> floor(v * levels / self.levels))."""
        if not 2 <= levels <= self.levels:
            raise ValueError(f"levels must be between 2 and {self.levels} (the current levels), got {levels}")
        images = torch.div(self.images.long() * levels, self.levels, rounding_mode="floor")
        return ImageDataset(images.to(torch.uint8 if levels <= 256 else torch.int32), self.labels, levels,
                            list(self.classes), f"{self.name} ({levels} levels)")

    def resize(self, size: int, batch: int = 4096) -> ImageDataset:
        """The same images resized to ``size`` x ``size`` (an integer >= 1): bilinear interpolation
        of the levels when enlarging, area averaging when shrinking, rounded back to integer levels.
        Non-square images are stretched."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if tuple(self.images.shape[2:]) == (size, size):
            return self
        import torch.nn.functional as F

        shrink = size < min(self.images.shape[2:])
        parts = []
        for chunk in self.images.split(batch):  # in chunks: float copies of a large set would be large
            x = chunk.float()
            x = F.interpolate(x, size=(size, size), mode="area") if shrink else \
                F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            parts.append(x.round().clamp(0, self.levels - 1).to(self.images.dtype))
        images = torch.cat(parts) if parts else self.images.new_zeros(0, self.images.shape[1], size, size)
        return ImageDataset(images, self.labels, self.levels, list(self.classes), f"{self.name} ({size}x{size})")

    def binarize(self, threshold: float = 0.5) -> ImageDataset:
        """Sub-pixels at or above ``threshold`` of the range become 1, the rest 0 (levels = 2)."""
        images = (self.images.float() >= threshold * (self.levels - 1)).to(torch.uint8)
        return ImageDataset(images, self.labels, 2, list(self.classes), f"{self.name} (binarized)")

"""What the image-to-image GANs (``Pix2Pix``, ``CycleGAN``) share: the base class that maps integer
images of a source domain to a target domain, and the PatchGAN discriminator.

Images enter as integer levels and are scaled to [-1, 1] (``encode_levels``); generators end in
tanh, and translated images are quantised back (``decode_levels``). Both domains have the same
height and width and the same number of levels; their channel counts may differ (edges -> RGB).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastgen._core import decode_levels, encode_levels
from fastgen.models._checks import check_images
from fastgen.nn import InstanceNormAct
from fastgen.sampling import eval_mode


def patch_receptive_field(layers: int) -> int:
    """The receptive field (pixels) of one output of a ``PatchDiscriminator`` with ``layers``
    strided layers: 16, 34, 70 (pix2pix's "70x70 PatchGAN"), 142, ... for 1, 2, 3, 4, ..."""
    field = 1
    for stride in [1, 1] + [2] * layers:  # walked from the output back to the input: every conv is 4x4
        field = field * stride + (4 - stride)
    return field


def check_patch_layers(layers: object, image_size: int) -> None:
    """The PatchGAN's strided layers must leave at least one output patch: each halves the image,
    and the two stride-1 4x4 layers after them take one pixel each."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"patch_layers must be a positive integer, got {layers!r}")
    if image_size // 2 ** layers - 2 < 1:
        most = max(k for k in range(1, 32) if image_size // 2 ** k - 2 >= 1)  # image_size >= 8: at least 1
        raise ValueError(f"patch_layers={layers} leaves no patch of {image_size}x{image_size} images to judge "
                         f"(at most {most})")


def default_patch_layers(image_size: int) -> int:
    """The most strided layers whose patch is at most half the image (at least one): 1 at 32x32, 3 at 256x256."""
    layers = 1
    while patch_receptive_field(layers + 1) <= image_size // 2:
        layers += 1
    return layers


DISCRIMINATOR_NORMS = ("instance", "spectral")


def check_norm(norm: object) -> str:
    if norm not in DISCRIMINATOR_NORMS:
        raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS} (the discriminators' normalisation), "
                         f"got {norm!r}")
    return norm


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al., 2017): images (N, C, H, W) in [-1, 1] -> a map of logits (N, 1, h, w),
    each judging one patch of ``patch_receptive_field(layers)`` pixels. ``layers`` 4x4 stride-2
    convolutions (width, 2 width, ... at most 8 width), then a stride-1 one and a 1-channel
    stride-1 output; instance norm and LeakyReLU(0.2) after all but the first and the last
    (``norm="instance"``), or LeakyReLU alone with every weight spectrally normalised
    (``norm="spectral"``: call ``spectral_normalize`` on it after initialising the weights)."""

    def __init__(self, channels: int, width: int = 64, layers: int = 3, norm: str = "instance"):
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"patch layers must be a positive integer, got {layers!r}")
        check_norm(norm)
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, layers + 1):
            out = width * 2 ** min(i, 3)
            stride = 2 if i < layers else 1
            if norm == "instance":
                blocks += [nn.Conv2d(c, out, 4, stride, 1, bias=False), InstanceNormAct(out, act="leaky_relu")]
            else:
                blocks += [nn.Conv2d(c, out, 4, stride, 1), nn.LeakyReLU(0.2)]
            c = out
        blocks.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.body = nn.Sequential(*blocks)
        self.layers = layers

    @property
    def receptive_field(self) -> int:
        return patch_receptive_field(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def init_weights(module: nn.Module) -> None:
    """pix2pix's and CycleGAN's initialisation: convolution weights ~ N(0, 0.02), biases 0, norm
    scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, InstanceNormAct) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ImageTranslator(nn.Module):
    """Base class of the image-to-image models: the domains' shapes and level scaling.

    Subclasses build their networks and define, on images in [-1, 1], what
    ``fastgen.train.TranslationTrainer`` runs for a batch of real images ``reals`` (a (source,
    target) pair for pix2pix, an (a, b) draw of the two domains for CycleGAN):

        fakes = model.fakes(*reals)                                  the generated images
        model.generator_loss(*reals, *fakes) -> (loss, parts)        the generators' update (D frozen)
        model.discriminator_loss(*reals, *pooled_fakes) -> loss      the discriminators' update

    and ``translate_unit(x, direction)``; ``generators`` and ``discriminators`` list the networks
    each optimiser owns.
    """

    def __init__(self, source_channels: int, target_channels: int, levels: int, image_size: int):
        super().__init__()
        for name, channels in (("source_channels", source_channels), ("target_channels", target_channels)):
            if channels not in (1, 3):
                raise ValueError(f"{name} must be 1 (grey) or 3 (RGB), got {channels!r}")
        if not isinstance(levels, int) or not 2 <= levels <= 65536:
            raise ValueError(f"levels must be an integer between 2 and 65536, got {levels!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8 (square images), got {image_size!r}")
        self.source_channels, self.target_channels = source_channels, target_channels
        self.levels, self.image_size = levels, (image_size, image_size)
        self._config: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        """The constructor arguments: ``type(model)(**model.config())`` rebuilds the model."""
        return dict(self._config)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        return (self.source_channels, *self.image_size)

    @property
    def target_shape(self) -> tuple[int, int, int]:
        return (self.target_channels, *self.image_size)

    def to_unit(self, x: torch.Tensor, domain: str = "source") -> torch.Tensor:
        """Integer images of ``domain`` ("source" or "target") as floats in [-1, 1], checked."""
        shape = self.source_shape if domain == "source" else self.target_shape
        name = "source images" if domain == "source" else "target images"
        return encode_levels(check_images(x, shape, self.levels, name), self.levels, next(self.parameters()).dtype)

    def to_levels(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] quantised to integer levels (a ValueError for NaN or infinite values)."""
        return decode_levels(images, self.levels)

    def translate_unit(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "forward", *, batch_size: int = 64,
                  stochastic: bool = False) -> torch.Tensor:
        """Integer images translated in eval mode: ``direction="forward"`` maps source -> target,
        ``"backward"`` target -> source (CycleGAN only), in batches of ``batch_size``.
        ``stochastic=True`` keeps dropout on (pix2pix's test-time noise); by default the
        translation is deterministic."""
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
        domain = "source" if direction == "forward" else "target"
        device = next(self.parameters()).device
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        x = self.to_unit(images, domain)  # checks every image once, before any network runs
        with eval_mode(self):
            if stochastic:
                for module in self.modules():
                    if isinstance(module, nn.Dropout):
                        module.train()
            out = [self.to_levels(self.translate_unit(x[i:i + batch_size].to(device), direction)).cpu()
                   for i in range(0, len(x), batch_size)]
        shape = self.target_shape if direction == "forward" else self.source_shape
        return torch.cat(out) if out else torch.empty(0, *shape, dtype=torch.long)

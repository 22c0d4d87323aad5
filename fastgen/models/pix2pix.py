"""pix2pix (Isola, Zhu, Zhou and Efros, 2017, "Image-to-Image Translation with Conditional
Adversarial Networks"): paired translation source -> target by a U-Net generator and a PatchGAN
discriminator that judges (source, image) pairs.

Losses, with G the generator, D the discriminator and (x, y) a (source, target) pair:

    discriminator   (1/2) [ E softplus(-D(x, y)) + E softplus(D(x, G(x))) ]     (``gan_loss``, halved as in the paper)
    generator       E softplus(-D(x, G(x)))  +  l1_weight * E |G(x) - y|       (non-saturating + L1, lambda = 100)

The noise is dropout (p = 0.5) in the three innermost decoder blocks, as in the paper, on in
training; ``translate`` runs in eval mode (dropout off, a deterministic translation) unless asked
to keep it on (``stochastic=True``, the paper's test-time behaviour).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.models._checks import check_positive_int
from fastgen.models.translation import (ImageTranslator, PatchDiscriminator, check_norm, check_patch_layers,
                                        default_patch_layers, init_weights)
from fastgen.nn import InstanceNormAct, spectral_normalize
from fastgen.ops import gan_loss
from fastgen.reference.gan_loss import KINDS

LOSSES = tuple(kind for kind in KINDS if kind != "wasserstein")


class UNetGenerator(nn.Module):
    """U-Net (Ronneberger et al., 2015) as in pix2pix: ``depth`` 4x4 stride-2 convolutions halve the
    image down to 1x1 (width, 2w, 4w, 8w, 8w, ...), and as many 4x4 stride-2 transposed convolutions
    double it back, each decoder block reading the previous block's output concatenated with the
    encoder block of the same size (the skip connections). Encoder blocks: instance norm +
    LeakyReLU(0.2) (none on the first and the innermost); decoder blocks: instance norm + ReLU,
    dropout in the three innermost; the output is a tanh."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, width: int = 64,
                 dropout: float = 0.5):
        super().__init__()
        depth = int(math.log2(image_size))
        if 2 ** depth != image_size:
            raise ValueError(f"image_size must be a power of two for the U-Net (it halves to 1x1), got {image_size}")
        widths = [width * 2 ** min(i, 3) for i in range(depth)]
        self.down = nn.ModuleList()
        c = in_channels
        for i, out in enumerate(widths):
            innermost = i == depth - 1
            act = nn.ReLU() if innermost else (
                nn.LeakyReLU(0.2) if i == 0 else InstanceNormAct(out, act="leaky_relu"))
            self.down.append(nn.Sequential(nn.Conv2d(c, out, 4, 2, 1, bias=i == 0 or innermost), act))
            c = out
        self.up = nn.ModuleList()
        for i in reversed(range(1, depth)):  # up to the size of encoder block i - 1, then concatenated with it
            into = c if i == depth - 1 else 2 * c
            c = widths[i - 1]
            drop = [nn.Dropout(dropout)] if depth - 1 - i < 3 and dropout > 0 else []
            self.up.append(nn.Sequential(nn.ConvTranspose2d(into, c, 4, 2, 1, bias=False),
                                         InstanceNormAct(c, act="relu"), *drop))
        self.out = nn.Sequential(nn.ConvTranspose2d(2 * c, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the innermost block's output is x itself
        for block in self.up:
            x = torch.cat([block(x), skips.pop()], 1)
        return self.out(x)


class Pix2Pix(ImageTranslator):
    """Paired image-to-image translation (see the module docstring).

    Args:
        source_channels, target_channels: 1 (grey) or 3 (RGB) for the two domains.
        levels: levels of both domains' images (256 for 8-bit images).
        image_size: the side of the square images, a power of two (32, 64, 128, 256).
        width: channels of the generator's first block and the discriminator's first layer.
        patch_layers: the PatchGAN's strided layers (receptive field 16, 34, 70 for 1, 2, 3);
            default: the largest whose patch is at most half the image.
        l1_weight: lambda, the weight of the L1 term (100 in the paper).
        loss: the ``gan_loss`` kind of the adversarial terms (``"lsgan"``'s generator term is
            (1/2) E (D - 1)^2, half the MSE of pix2pix's code, so L1 weighs relatively twice as much).
        dropout: the decoder's dropout probability (0 turns the noise off).
        norm: the discriminator's normalisation, ``"instance"`` (the paper's) or ``"spectral"``.
    """

    def __init__(self, source_channels: int = 1, target_channels: int = 1, levels: int = 256, image_size: int = 32, *,
                 width: int = 64, patch_layers: int | None = None, l1_weight: float = 100.0,
                 loss: str = "non_saturating", dropout: float = 0.5, norm: str = "instance"):
        super().__init__(source_channels, target_channels, levels, image_size)
        check_positive_int("width", width)
        if not (isinstance(l1_weight, (int, float)) and math.isfinite(l1_weight) and l1_weight >= 0):
            raise ValueError(f"l1_weight must be a finite number >= 0, got {l1_weight!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        check_norm(norm)
        patch_layers = default_patch_layers(image_size) if patch_layers is None else patch_layers
        check_patch_layers(patch_layers, image_size)
        self._config = dict(source_channels=source_channels, target_channels=target_channels, levels=levels,
                            image_size=image_size, width=width, patch_layers=patch_layers, l1_weight=float(l1_weight),
                            loss=loss, dropout=float(dropout), norm=norm)
        self.l1_weight, self.loss_kind = float(l1_weight), loss
        self.generator = UNetGenerator(source_channels, target_channels, image_size, width, dropout)
        self.discriminator = PatchDiscriminator(source_channels + target_channels, width, patch_layers, norm)
        init_weights(self)
        if norm == "spectral":
            spectral_normalize(self.discriminator)

    @property
    def generators(self) -> list[nn.Module]:
        return [self.generator]

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.discriminator]

    def fakes(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor]:
        """The generated images a training step scores: (G(source),)."""
        return (self.generator(source),)

    def translate_unit(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        if direction != "forward":
            raise ValueError("pix2pix translates one way only (source -> target): direction must be 'forward'")
        return self.generator(x)

    def discriminate(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """PatchGAN logits (N, 1, h, w) of (source, image) pairs, both in [-1, 1]."""
        return self.discriminator(torch.cat([source, image], 1))

    def discriminator_loss(self, source: torch.Tensor, target: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Half the ``gan_loss`` of D on real pairs (source, target) against generated ones (source, fake)."""
        return 0.5 * gan_loss(self.discriminate(source, target), self.discriminate(source, fake.detach()),
                              kind=self.loss_kind)

    def generator_loss(self, source: torch.Tensor, target: torch.Tensor,
                       fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's adversarial loss plus ``l1_weight`` times the mean absolute error to the
        target; returns (loss, {"adversarial", "l1"}) (the parts detached)."""
        adversarial = gan_loss(None, self.discriminate(source, fake), kind=self.loss_kind, target="generator")
        l1 = F.l1_loss(fake, target)
        return adversarial + self.l1_weight * l1, {"adversarial": adversarial.detach(), "l1": l1.detach()}

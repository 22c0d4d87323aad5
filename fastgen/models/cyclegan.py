"""CycleGAN (Zhu, Park, Isola and Efros, 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks"): two generators, G: A -> B and F: B -> A, and two PatchGAN
discriminators, D_B (real B against G's images) and D_A (real A against F's), trained on unpaired
images of the two domains.

Losses, with a in A, b in B and lambda = ``cycle_weight`` (10):

    generators        adv(D_B(G(a))) + adv(D_A(F(b)))                       least squares: E (D(.) - 1)^2
                      + lambda * (E |F(G(a)) - a| + E |G(F(b)) - b|)         cycle consistency
                      + identity_weight * lambda * (E |G(b) - b| + E |F(a) - a|)
                                                                             identity: each generator fed images
                                                                             of its own target domain (0.5)
    D_A and D_B       (1/2) [E (D(real) - 1)^2 + E D(fake)^2] each, summed, with the fakes drawn from
                      a history of generated images (``fastgen.train.ImagePool``, 50 per discriminator)

The least-squares terms are ``fastgen.ops.gan_loss(kind="lsgan")``: its discriminator loss is the
line above as written, and its generator loss is (1/2) E (D(.) - 1)^2, so the generators' adversarial
terms are twice it (CycleGAN's MSE against 1). The identity loss needs both domains to have the
same channel count (``identity_weight=0`` otherwise).
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


class ResidualBlock(nn.Module):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))), each convolution after a reflection pad of 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False),
                                  InstanceNormAct(channels, act="relu"),
                                  nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False),
                                  InstanceNormAct(channels, act="none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator (after Johnson et al., 2016): a 7x7 convolution (reflection padded),
    two 3x3 stride-2 convolutions (width, 2w, 4w), ``blocks`` residual blocks at 1/4 of the size,
    two 3x3 stride-2 transposed convolutions back, and a 7x7 convolution with tanh. Every hidden
    convolution is followed by instance norm + ReLU (``fastgen.ops.instance_norm_act``)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, blocks: int = 6):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=False),
                                   InstanceNormAct(width, act="relu")]
        for k in range(2):
            c = width * 2 ** k
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), InstanceNormAct(2 * c, act="relu")]
        layers += [ResidualBlock(4 * width) for _ in range(blocks)]
        for k in reversed(range(2)):
            c = width * 2 ** k
            layers += [nn.ConvTranspose2d(2 * c, c, 3, 2, 1, output_padding=1, bias=False),
                       InstanceNormAct(c, act="relu")]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CycleGAN(ImageTranslator):
    """Unpaired translation between domain A (the source) and domain B (the target); see the
    module docstring. ``translate(images, "forward")`` maps A -> B, ``"backward"`` B -> A.

    Args:
        source_channels, target_channels: 1 (grey) or 3 (RGB) for A and B.
        levels: levels of both domains' images (256 for 8-bit images).
        image_size: the side of the square images, a multiple of 4 (the generators halve it twice).
        width: channels of the generators' first convolution and the discriminators' first layer.
        blocks: residual blocks per generator (6 at 128x128, 9 at 256x256 in the paper).
        patch_layers: the PatchGANs' strided layers (default: the largest whose patch is at most
            half the image).
        cycle_weight: lambda, the weight of the cycle-consistency terms (10).
        identity_weight: the identity terms' weight as a fraction of lambda (0.5; 0 turns them off).
        norm: the discriminators' normalisation, ``"instance"`` (the paper's) or ``"spectral"``.
    """

    def __init__(self, source_channels: int = 1, target_channels: int = 1, levels: int = 256, image_size: int = 32, *,
                 width: int = 64, blocks: int = 6, patch_layers: int | None = None, cycle_weight: float = 10.0,
                 identity_weight: float = 0.5, norm: str = "instance"):
        super().__init__(source_channels, target_channels, levels, image_size)
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (the generators halve it twice), got {image_size}")
        check_positive_int("width", width)
        if not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks must be an integer >= 0, got {blocks!r}")
        for name, value in (("cycle_weight", cycle_weight), ("identity_weight", identity_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if identity_weight and source_channels != target_channels:
            raise ValueError(f"the identity loss feeds each generator images of its target domain, so it needs "
                             f"equal channel counts (source_channels={source_channels}, target_channels="
                             f"{target_channels}); pass identity_weight=0")
        check_norm(norm)
        patch_layers = default_patch_layers(image_size) if patch_layers is None else patch_layers
        check_patch_layers(patch_layers, image_size)
        self._config = dict(source_channels=source_channels, target_channels=target_channels, levels=levels,
                            image_size=image_size, width=width, blocks=blocks, patch_layers=patch_layers,
                            cycle_weight=float(cycle_weight), identity_weight=float(identity_weight), norm=norm)
        self.cycle_weight, self.identity_weight = float(cycle_weight), float(identity_weight)
        self.generator_ab = ResnetGenerator(source_channels, target_channels, width, blocks)
        self.generator_ba = ResnetGenerator(target_channels, source_channels, width, blocks)
        self.discriminator_a = PatchDiscriminator(source_channels, width, patch_layers, norm)
        self.discriminator_b = PatchDiscriminator(target_channels, width, patch_layers, norm)
        init_weights(self)
        if norm == "spectral":
            for discriminator in self.discriminators:
                spectral_normalize(discriminator)

    @property
    def generators(self) -> list[nn.Module]:
        return [self.generator_ab, self.generator_ba]

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.discriminator_a, self.discriminator_b]

    def fakes(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated images a training step scores: (F(b), G(a)), i.e. (fake_a, fake_b)."""
        return self.generator_ba(b), self.generator_ab(a)

    def translate_unit(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        return (self.generator_ab if direction == "forward" else self.generator_ba)(x)

    def generator_loss(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor,
                       fake_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generators' loss for real a, b and their translations fake_b = G(a), fake_a = F(b),
        all in [-1, 1]; returns (loss, {"adversarial", "cycle", "identity"}) (the parts detached)."""
        adversarial = 2 * (gan_loss(None, self.discriminator_b(fake_b), kind="lsgan", target="generator")
                           + gan_loss(None, self.discriminator_a(fake_a), kind="lsgan", target="generator"))
        cycle = F.l1_loss(self.generator_ba(fake_b), a) + F.l1_loss(self.generator_ab(fake_a), b)
        loss = adversarial + self.cycle_weight * cycle
        parts = {"adversarial": adversarial.detach(), "cycle": cycle.detach()}
        if self.identity_weight:
            identity = F.l1_loss(self.generator_ab(b), b) + F.l1_loss(self.generator_ba(a), a)
            loss = loss + self.identity_weight * self.cycle_weight * identity
            parts["identity"] = identity.detach()
        return loss, parts

    def discriminator_loss(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor,
                           fake_b: torch.Tensor) -> torch.Tensor:
        """D_A's and D_B's least-squares losses, summed, on real images against (pooled) fakes."""
        return (gan_loss(self.discriminator_a(a), self.discriminator_a(fake_a.detach()), kind="lsgan")
                + gan_loss(self.discriminator_b(b), self.discriminator_b(fake_b.detach()), kind="lsgan"))

"""Generative adversarial networks: DCGAN (Radford et al., 2016) and an MLP GAN, both optionally
class-conditional, with any loss of ``fastgen.ops.gan_loss``.

A generator maps z ~ N(0, I) (and a label) to an image in [-1, 1] (tanh); a discriminator (a
critic, for the Wasserstein losses) maps an image in [-1, 1] (and a label) to one logit per image.
The data's integer levels are scaled to [-1, 1] on the way in (``to_unit``) and generated images
are quantised back on the way out (``sample``).

Conditioning: the generator concatenates a learned label embedding to z; the discriminator either
adds the projection term <embed(y), features> to its logit (Miyato and Koyama, 2018) or reads the
label as extra one-hot input channels (``conditioning="concat"``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastgen._core import decode_levels, encode_levels
from fastgen.models._checks import check_images, check_labels
from fastgen.nn import spectral_normalize
from fastgen.ops import gradient_penalty
from fastgen.reference.gan_loss import KINDS
from fastgen.sampling import eval_mode

CONDITIONINGS = ("projection", "concat")
NORMS = ("batch", "layer", "spectral", "none")
MLP_NORMS = ("spectral", "none")


def _upsamplings(size: int) -> tuple[int, int]:
    """(base size, number of x2 upsamplings): halve while even and above 4 (8 -> 4, 28 -> 7, 32 -> 4, 64 -> 4)."""
    steps = 0
    while size % 2 == 0 and size > 4:
        size //= 2
        steps += 1
    return size, steps


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation: what a WGAN-GP critic needs (no batch coupling)
        return nn.GroupNorm(1, channels)
    return nn.Identity()  # "none", and "spectral", which normalises the weights instead (spectral_normalize)


def _logit(discriminator: nn.Module, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A discriminator's head: a linear logit of its features, plus the projection term
    <embed(label), features> when it conditions by projection."""
    logit = discriminator.head(features).squeeze(1)
    if discriminator.embed is not None:
        logit = logit + (discriminator.embed(labels) * features).sum(1)
    return logit


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) [+ labels] -> images (N, C, H, W) in [-1, 1]: a linear projection to
    (8 * width, s, s), then transposed convolutions (stride 2, batch norm, ReLU) doubling the size
    to H, and a 3x3 convolution with tanh."""

    def __init__(self, latent_dim: int, image_size: int, channels: int, width: int = 32,
                 n_classes: int | None = None):
        super().__init__()
        base, steps = _upsamplings(image_size)
        widths = [width * 2 ** min(3, steps - i) for i in range(steps + 1)]
        self.embed = nn.Embedding(n_classes, latent_dim) if n_classes else None
        in_features = latent_dim * (2 if n_classes else 1)
        self.project = nn.Sequential(nn.Linear(in_features, widths[0] * base * base, bias=False),
                                     nn.Unflatten(1, (widths[0], base, base)), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks = []
        for i in range(steps):
            blocks += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(widths[i + 1]),
                       nn.ReLU()]
        self.body = nn.Sequential(*blocks, nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], 1)
        return self.body(self.project(z))


class DCGANDiscriminator(nn.Module):
    """images (N, C, H, W) in [-1, 1] [+ labels] -> logits (N,): strided 4x4 convolutions with
    LeakyReLU(0.2) (normalisation after all but the first) halving the size, then a linear layer."""

    def __init__(self, image_size: int, channels: int, width: int = 32, n_classes: int | None = None,
                 conditioning: str = "projection", norm: str = "batch"):
        super().__init__()
        base, steps = _upsamplings(image_size)
        self.n_classes, self.conditioning = n_classes, conditioning
        in_channels = channels + (n_classes if n_classes and conditioning == "concat" else 0)
        # Small images (8x8 halves once) would leave a single layer: start with a 3x3 one.
        layers, c = ([nn.Conv2d(in_channels, width, 3, 1, 1), nn.LeakyReLU(0.2)], width) if steps < 2 \
            else ([], in_channels)
        for i in range(steps):
            out = width * 2 ** min(3, i)
            first = i == 0 and steps >= 2
            layers += [nn.Conv2d(c, out, 4, 2, 1, bias=first or norm in ("none", "spectral")),
                       *([] if first else [_norm(norm, out)]), nn.LeakyReLU(0.2)]
            c = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * base * base, 1)
        self.embed = nn.Embedding(n_classes, c * base * base) if n_classes and conditioning == "projection" else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes and self.conditioning == "concat":
            onehot = nn.functional.one_hot(labels, self.n_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        return _logit(self, self.features(x), labels)


class MLPGenerator(nn.Module):
    """z [+ label embedding] -> two hidden ReLU layers -> tanh images."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], hidden: int = 256, n_classes: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(n_classes, latent_dim) if n_classes else None
        c, h, w = shape
        self.body = nn.Sequential(nn.Linear(latent_dim * (2 if n_classes else 1), hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, c * h * w), nn.Tanh(),
                                  nn.Unflatten(1, shape))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], 1)
        return self.body(z)


class MLPDiscriminator(nn.Module):
    """images -> two hidden LeakyReLU layers -> a logit, with the label by projection or concatenation."""

    def __init__(self, shape: tuple[int, int, int], hidden: int = 256, n_classes: int | None = None,
                 conditioning: str = "projection"):
        super().__init__()
        self.n_classes, self.conditioning = n_classes, conditioning
        extra = n_classes if n_classes and conditioning == "concat" else 0
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2] + extra, hidden),
                                      nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(n_classes, hidden) if n_classes and conditioning == "projection" else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        if self.n_classes and self.conditioning == "concat":
            x = torch.cat([x, nn.functional.one_hot(labels, self.n_classes).to(x.dtype)], 1)
        return _logit(self, self.features(x), labels)


class GAN(nn.Module):
    """A generator and a discriminator trained against each other with ``loss``.

    Subclasses build the two networks (``DCGAN``, ``MLPGAN``); ``fastgen.train.GANTrainer`` trains them.

    Attributes:
        generator, discriminator: the two networks.
        loss: the ``fastgen.ops.gan_loss`` kind.
    """

    def __init__(self, in_channels: int, levels: int, image_size: int, latent_dim: int, n_classes: int | None,
                 loss: str):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if not 2 <= levels <= 65536:
            raise ValueError(f"levels must be between 2 and 65536, got {levels}")
        if not isinstance(image_size, int) or image_size < 2:
            raise ValueError(f"image_size must be an integer >= 2 (square images), got {image_size!r}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        if n_classes is not None and n_classes < 1:
            raise ValueError(f"n_classes must be positive or None, got {n_classes}")
        if loss not in KINDS:
            raise ValueError(f"loss must be one of {KINDS}, got {loss!r}")
        self.in_channels, self.levels, self.image_size = in_channels, levels, (image_size, image_size)
        self.latent_dim, self.n_classes, self.loss_kind = latent_dim, n_classes, loss

    def config(self) -> dict[str, Any]:
        """The constructor arguments: ``type(model)(**model.config())`` rebuilds the model."""
        return dict(self._config)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.image_size)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images in [0, levels) as floats in [-1, 1], what the discriminator reads."""
        return encode_levels(check_images(x, self.shape, self.levels), self.levels, next(self.parameters()).dtype)

    def to_levels(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] quantised to integer levels (a ValueError for NaN or infinite values)."""
        return decode_levels(images, self.levels)

    def training_view(self, real: torch.Tensor) -> torch.Tensor:
        """Real images in [-1, 1] (from ``to_unit``) as the discriminator is shown them in training.
        The images themselves here; a model whose discriminator reads another form of them (the
        progressive GAN's current, lower resolution) overrides this."""
        return real

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), (n, latent_dim), on the model's device and in its dtype (drawn in float32, so
        that a seed gives the same latents whatever the dtype)."""
        weight = next(self.parameters())
        return torch.randn(n, self.latent_dim, generator=generator, device=weight.device).to(weight.dtype)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from latents (N, latent_dim) (differentiable; the training path). A
        floating-point z of another dtype is cast to the model's."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, {self.latent_dim}) (latent_dim={self.latent_dim}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if not z.is_floating_point():
            raise ValueError(f"z must be a floating-point tensor, got {z.dtype}")
        return self.generator(z.to(next(self.parameters()).dtype), check_labels(labels, z.shape[0], self.n_classes))

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N,) of images in [-1, 1]."""
        return self.discriminator(images, check_labels(labels, images.shape[0], self.n_classes))

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None, *,
                         weight: float = 10.0, generator: torch.Generator | None = None,
                         alpha: torch.Tensor | None = None) -> torch.Tensor:
        """WGAN-GP's penalty: ``fastgen.ops.gradient_penalty`` of the critic's gradient at random
        points x_hat = a * real + (1 - a) * fake (one a ~ U(0, 1) per sample, or the given ``alpha``
        (N,)), taken with create_graph so that the penalty trains the critic (a double backward)."""
        if alpha is None:
            alpha = torch.rand(real.shape[0], generator=generator, device=real.device)
        elif not isinstance(alpha, torch.Tensor) or alpha.shape != (real.shape[0],):
            raise ValueError(f"alpha must be a tensor of shape ({real.shape[0]},) (one weight per sample), got "
                             f"{tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__}")
        alpha = alpha.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
        x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminate(x_hat, labels).sum(), x_hat, create_graph=True)
        return gradient_penalty(grad, weight=weight)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` integer images (n, C, H, W) in [0, levels), generated in eval mode (batch norm
        uses its running statistics)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        return self.images_from(self.noise(n, generator), labels)

    @torch.no_grad()
    def images_from(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Integer images generated (in eval mode) from given latents, e.g. ``fastgen.latent`` paths."""
        with eval_mode(self):
            return self.to_levels(self.generate(z, labels))


class DCGAN(GAN):
    """DCGAN for square images: 8x8, 28x28, 32x32, 64x64 (any size that halves to 4..7 or to an
    odd size).

    Args:
        in_channels, levels, image_size: the data.
        latent_dim: dimension of z.
        width: channels of the discriminator's first layer and the generator's last (doubling
            per layer, at most 8 x).
        n_classes: class-conditional generator and discriminator.
        loss: the ``gan_loss`` kind used to train it.
        conditioning: ``"projection"`` or ``"concat"`` (the discriminator's use of the label).
        norm: the discriminator's normalisation, ``"batch"`` (DCGAN), ``"layer"``, ``"spectral"``
            (spectral normalisation of every weight, Miyato et al., 2018; see ``spectral_normalize``) or ``"none"``
            (a WGAN-GP critic must not couple the samples of a batch: use "layer" or "none").
    """

    def __init__(self, in_channels: int = 1, levels: int = 256, image_size: int = 28, *, latent_dim: int = 64,
                 width: int = 32, n_classes: int | None = None, loss: str = "non_saturating",
                 conditioning: str = "projection", norm: str = "batch"):
        super().__init__(in_channels, levels, image_size, latent_dim, n_classes, loss)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self._config = dict(in_channels=in_channels, levels=levels, image_size=image_size, latent_dim=latent_dim,
                            width=width, n_classes=n_classes, loss=loss, conditioning=conditioning, norm=norm)
        self.generator = DCGANGenerator(latent_dim, image_size, in_channels, width, n_classes)
        self.discriminator = DCGANDiscriminator(image_size, in_channels, width, n_classes, conditioning, norm)
        for module in self.modules():  # DCGAN's initialisation
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
        if norm == "spectral":  # after the initialisation, which writes the weights it then normalises
            spectral_normalize(self.discriminator)


class MLPGAN(GAN):
    """A GAN of fully connected networks (Goodfellow et al., 2014), for small images; ``norm``
    ``"spectral"`` spectrally normalises the discriminator's weights."""

    def __init__(self, in_channels: int = 1, levels: int = 256, image_size: int = 28, *, latent_dim: int = 64,
                 hidden: int = 256, n_classes: int | None = None, loss: str = "non_saturating",
                 conditioning: str = "projection", norm: str = "none"):
        super().__init__(in_channels, levels, image_size, latent_dim, n_classes, loss)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if norm not in MLP_NORMS:
            raise ValueError(f"norm must be one of {MLP_NORMS} (the MLP discriminator's weights), got {norm!r}")
        self._config = dict(in_channels=in_channels, levels=levels, image_size=image_size, latent_dim=latent_dim,
                            hidden=hidden, n_classes=n_classes, loss=loss, conditioning=conditioning, norm=norm)
        self.generator = MLPGenerator(latent_dim, self.shape, hidden, n_classes)
        self.discriminator = MLPDiscriminator(self.shape, hidden, n_classes, conditioning)
        if norm == "spectral":
            spectral_normalize(self.discriminator)

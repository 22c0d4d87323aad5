"""The adversarial autoencoder (Makhzani et al., 2015): an autoencoder whose codes are matched to
a prior p(z) by a discriminator on the code, in place of the VAE's KL term. Training alternates
three updates on each batch (``fastgen.train.Trainer`` runs them):

    reconstruction   encoder and decoder: -log p(x | z = encoder(x))       (``loss``)
    discriminator    D tells prior draws (real) from codes (fake)          (``discriminator_loss``)
    regularisation   the encoder, as D's generator: its codes scored real  (``encoder_loss``)

both adversarial losses through ``fastgen.ops.gan_loss``. Sampling decodes draws from the prior.

Labels can enter in two ways (Makhzani et al., sections 2.3 and 5):
    - ``supervised=True``: the decoder reads the label (one-hot) and the encoder does not, so the
      code is pushed to hold what the label does not say, the style;
    - ``n_classes`` without ``supervised``: each class is tied to a region of the prior (a mixture
      component or an arc of the swiss roll); the discriminator reads the label, and the prior
      draw that an image's code is compared with comes from its class's region. The decoder does
      not read the label, so the code's region alone says the class: sampling a region draws that
      class.
The encoder is deterministic or a diagonal Gaussian (``encoder="gaussian"``, its code a
reparameterised draw). The decoder's likelihoods are the VAE's.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.models._checks import check_labels, check_positive_int
from fastgen.models.priors import check_prior, sample_prior
from fastgen.models.vae import Autoencoder
from fastgen.ops import gan_loss, reparameterize
from fastgen.reference.gan_loss import KINDS

ENCODERS = ("deterministic", "gaussian")
LOSSES = tuple(kind for kind in KINDS if kind != "wasserstein")


class CodeDiscriminator(nn.Module):
    """An MLP from a code (and, for a label-tied prior, a one-hot label) to one logit."""

    def __init__(self, latent_dim: int, n_classes: int | None, hidden: int):
        super().__init__()
        self.n_classes = n_classes
        self.body = nn.Sequential(nn.Linear(latent_dim + (n_classes or 0), hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.n_classes is not None:
            z = torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], 1)
        return self.body(z).squeeze(1)


class AdversarialAutoencoder(Autoencoder):
    """An adversarial autoencoder over integer images (see the module).

    Args:
        in_channels, levels, image_size, likelihood, arch, hidden, channels: as for ``VAE``.
        latent_dim: dimension of the code.
        prior: ``"gaussian"``, ``"mixture"`` or ``"swiss_roll"`` (2-D; ``fastgen.models.priors``).
        n_classes: classes of the labels (see the module for what they do).
        supervised: the decoder reads the label (needs ``n_classes``).
        encoder: ``"deterministic"`` or ``"gaussian"``.
        components: mixture components or swiss-roll arcs of an unlabelled prior (a label-tied one
            has one per class).
        discriminator_hidden: width of the code discriminator's two hidden layers.
        loss: the ``gan_loss`` kind of the two adversarial updates (not ``"wasserstein"``: nothing
            keeps the code discriminator Lipschitz).
    """

    def __init__(self, in_channels: int = 1, levels: int = 2, image_size: int | tuple[int, int] = 28, *,
                 latent_dim: int = 8, prior: str = "gaussian", n_classes: int | None = None, supervised: bool = False,
                 encoder: str = "deterministic", likelihood: str = "bernoulli", arch: str = "conv", hidden: int = 256,
                 channels: int = 32, components: int = 10, discriminator_hidden: int = 256,
                 loss: str = "non_saturating"):
        check_prior(prior, latent_dim)
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} (the code discriminator has no Lipschitz constraint "
                             f"for a Wasserstein critic), got {loss!r}")
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1):
            raise ValueError(f"n_classes must be a positive integer or None, got {n_classes!r}")
        if not isinstance(supervised, bool):
            raise TypeError(f"supervised must be True or False, got {supervised!r}")
        if supervised and n_classes is None:
            raise ValueError("supervised=True gives the decoder the label: it needs n_classes")
        tied = n_classes is not None and not supervised
        if tied and prior == "gaussian":
            raise ValueError("n_classes without supervised ties each class to a region of the prior: use "
                             "prior='mixture' or 'swiss_roll' (or supervised=True, where the decoder reads the label)")
        check_positive_int("components", components)
        check_positive_int("discriminator_hidden", discriminator_hidden)
        # The decoder is conditioned only when supervised; the encoder never is.
        super().__init__(in_channels, levels, image_size, latent_dim=latent_dim, likelihood=likelihood, arch=arch,
                         hidden=hidden, channels=channels, n_classes=n_classes if supervised else None)
        self.n_classes, self.supervised, self.prior, self.loss_kind = n_classes, supervised, prior, loss
        self.tied = tied
        self.components = n_classes if tied else components
        self.gaussian_encoder = encoder == "gaussian"
        self.to_latent = nn.Linear(hidden, (2 if self.gaussian_encoder else 1) * latent_dim)
        self.code_discriminator = CodeDiscriminator(latent_dim, n_classes if tied else None, discriminator_hidden)
        self._config = dict(in_channels=in_channels, levels=levels, image_size=list(self.image_size),
                            latent_dim=latent_dim, prior=prior, n_classes=n_classes, supervised=supervised,
                            encoder=encoder, likelihood=likelihood, arch=arch, hidden=hidden, channels=channels,
                            components=components, discriminator_hidden=discriminator_hidden, loss=loss)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters the regularisation update trains (the encoder's)."""
        return [*self.encoder.parameters(), *self.to_latent.parameters()]

    # -- pieces --------------------------------------------------------------------------------
    def _labels(self, labels: torch.Tensor | None, n: int, needed: bool) -> torch.Tensor | None:
        """``labels`` checked for a batch of n; they may be left out where nothing reads them."""
        return None if labels is None and not needed else check_labels(labels, n, self.n_classes)

    def _checked(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.check_images(x)
        return x, self._labels(labels, x.shape[0], self.supervised)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of a Gaussian encoder, (code, None) of a deterministic one; the
        encoder reads no label (``labels``, when given, are only checked)."""
        x = self.check_images(x)
        self._labels(labels, x.shape[0], False)
        return self._encode(x, None)

    def _decoder_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        labels = self._labels(labels, n, self.supervised)
        return labels if self.supervised else None

    def _decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return super()._decode(z, labels if self.supervised else None)

    def _encode(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of a Gaussian encoder, (code, None) of a deterministic one; labels unused."""
        out = self.to_latent(self.encoder(x.to(self.to_latent.weight.dtype) / (self.levels - 1)))
        d = self.latent_dim
        return (out[:, :d], out[:, d:]) if self.gaussian_encoder else (out, None)

    def _code(self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        mean, logvar = self._encode(x, labels)
        return reparameterize(mean, logvar, generator=generator) if self.gaussian_encoder else mean

    def prior_sample(self, n: int, labels: torch.Tensor | None = None, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes (n, latent_dim) from the prior; a label-tied prior draws from the labels'
        regions (random ones without labels)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        labels = self._labels(labels, n, False)
        weight = self.to_latent.weight
        return sample_prior(self.prior, n, self.latent_dim, self.components, labels if self.tied else None,
                            generator=generator, device=weight.device, dtype=weight.dtype)

    # -- the adversarial updates -------------------------------------------------------------------
    def _adversarial_labels(self, x: torch.Tensor, labels: torch.Tensor | None):
        """x checked, and the labels the discriminator and the prior read (a label-tied prior's only)."""
        x = self.check_images(x)
        labels = self._labels(labels, x.shape[0], self.tied)
        return x, labels if self.tied else None

    def discriminator_loss(self, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """The code discriminator's loss: prior draws are real, the (fixed) codes of ``x`` fake."""
        x, tied = self._adversarial_labels(x, labels)
        with torch.no_grad():
            fake = self._code(x, None, generator)
        real = sample_prior(self.prior, x.shape[0], self.latent_dim, self.components, tied, generator=generator,
                            device=fake.device, dtype=fake.dtype)
        D = self.code_discriminator
        return gan_loss(D(real, tied), D(fake, tied), kind=self.loss_kind)

    def encoder_loss(self, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """The encoder's loss as the discriminator's generator: its codes of ``x`` scored as real."""
        x, tied = self._adversarial_labels(x, labels)
        return gan_loss(None, self.code_discriminator(self._code(x, None, generator), tied), kind=self.loss_kind,
                        target="generator")

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, *, draw: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` integer images decoded from prior draws (the decoder's most likely image for each,
        or with ``draw`` a draw from p(x|z)). ``labels`` choose the regions of a label-tied prior
        (optional: random regions without them) or are read by a supervised decoder (required)."""
        z = self.prior_sample(n, labels, generator=generator)
        return self.generate(z, labels, draw=draw, generator=generator)

"""Variational autoencoder (Kingma and Welling, 2014), its class-conditional form (CVAE), and a
deterministic autoencoder for comparison.

Images are integer levels (N, C, H, W) in [0, levels), as everywhere in fastgen. The encoder
maps an image to the mean and log-variance of a diagonal Gaussian q(z|x); the decoder maps a
latent z to the parameters of p(x|z), one of four likelihoods (the layouts of
``fastgen.ops.vae_nelbo``):

    "bernoulli"    a logit per sub-pixel; the data is x / (levels - 1) in [0, 1] (binary data for
                   levels = 2, else a probability target)
    "categorical"  ``levels`` logits per sub-pixel
    "gaussian"     mean and log-scale per sub-pixel of the data scaled to [-1, 1]
    "logistic"     mean and log-scale of a discretized logistic over the ``levels`` bins of [-1, 1]

The loss is the negative ELBO, ``fastgen.ops.vae_nelbo``. Categorical, logistic and (for binary
data) Bernoulli are discrete likelihoods, so the negative ELBO bounds -log P(x) and bits/dim
compare with the autoregressive models. The Gaussian is a density: its nats are converted to the
discrete scale by adding -log(bin width) per sub-pixel (bin width 2 / (levels - 1)), the usual
dequantisation convention, which is an estimate rather than a bound.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.models._checks import check_images, check_labels
from fastgen.ops import reparameterize, vae_nelbo
from fastgen.reference.vae_nelbo import LIKELIHOODS, parameter_planes

ARCHITECTURES = ("mlp", "conv")


class LikelihoodEstimate(NamedTuple):
    """log p(x) per image, (N,), in nats and in bits per dimension (of -log p)."""

    nats: torch.Tensor
    bits_per_dim: torch.Tensor


def _conv_sizes(size: int, downsamplings: int) -> list[int]:
    sizes = [size]
    for _ in range(downsamplings):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class _Encoder(nn.Module):
    """x (as floats in [0, 1]) -> features (N, hidden)."""

    def __init__(self, arch: str, shape: tuple[int, int, int], hidden: int, channels: int):
        super().__init__()
        c, h, w = shape
        if arch == "mlp":
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                                      nn.Linear(hidden, hidden), nn.ReLU())
        else:
            hs, ws = _conv_sizes(h, 2), _conv_sizes(w, 2)
            self.body = nn.Sequential(
                nn.Conv2d(c, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, 2 * channels, 3, 2, 1), nn.ReLU(),
                nn.Flatten(), nn.Linear(2 * channels * hs[-1] * ws[-1], hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Decoder(nn.Module):
    """(z, condition) (N, in_features) -> decoder outputs (N, out_channels, H, W)."""

    def __init__(self, arch: str, in_features: int, shape: tuple[int, int, int], out_channels: int, hidden: int,
                 channels: int):
        super().__init__()
        _, h, w = shape
        self.h, self.w = h, w
        if arch == "mlp":
            self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, out_channels * h * w), nn.Unflatten(1, (out_channels, h, w)))
        else:
            hs, ws = _conv_sizes(h, 2), _conv_sizes(w, 2)
            self.body = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 2 * channels * hs[-1] * ws[-1]), nn.ReLU(),
                nn.Unflatten(1, (2 * channels, hs[-1], ws[-1])),
                nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), nn.ReLU(),
                nn.ConvTranspose2d(channels, out_channels, 4, 2, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # The transposed convolutions give 4 x the smallest size, at least H x W: crop to it.
        return self.body(features)[:, :, :self.h, :self.w]


class VAE(nn.Module):
    """A VAE over integer images; class-conditional (a CVAE) with ``n_classes``.

    Args:
        in_channels: 1 (grey) or 3 (RGB).
        levels: values per sub-pixel of the data.
        image_size: H or (H, W).
        latent_dim: dimension of z.
        likelihood: ``"bernoulli"``, ``"categorical"``, ``"gaussian"`` or ``"logistic"`` (see the module).
        arch: ``"mlp"`` or ``"conv"`` encoder and decoder.
        hidden: width of the fully connected layers.
        channels: channels of the first convolution (``arch="conv"``).
        n_classes: condition encoder and decoder on class labels in [0, n_classes).
        beta: weight of the KL term in the training loss (1: the ELBO; beta-VAE otherwise); ``nelbo``
            uses it too unless given another, ``loss`` in eval mode does not.
    """

    variational = True

    def __init__(self, in_channels: int = 1, levels: int = 2, image_size: int | tuple[int, int] = 28, *,
                 latent_dim: int = 16, likelihood: str = "bernoulli", arch: str = "mlp", hidden: int = 256,
                 channels: int = 32, n_classes: int | None = None, beta: float = 1.0):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if not 2 <= levels <= 65536:
            raise ValueError(f"levels must be between 2 and 65536, got {levels}")
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden), ("channels", channels)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if n_classes is not None and n_classes < 1:
            raise ValueError(f"n_classes must be positive or None, got {n_classes}")
        if not beta >= 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.in_channels, self.levels, self.image_size = in_channels, levels, (int(h), int(w))
        self.latent_dim, self.likelihood, self.n_classes, self.beta = latent_dim, likelihood, n_classes, beta
        self._config = dict(in_channels=in_channels, levels=levels, image_size=[int(h), int(w)], latent_dim=latent_dim,
                            likelihood=likelihood, arch=arch, hidden=hidden, channels=channels, n_classes=n_classes,
                            beta=beta)
        shape = (in_channels, int(h), int(w))
        self.params = parameter_planes(likelihood, levels) or 1
        n_cond = n_classes or 0
        self.encoder = _Encoder(arch, shape, hidden, channels)
        self.to_latent = nn.Linear(hidden + n_cond, (2 if self.variational else 1) * latent_dim)
        self.decoder = _Decoder(arch, latent_dim + n_cond, shape, self.params * in_channels, hidden, channels)

    def config(self) -> dict[str, Any]:
        """The constructor arguments: ``type(model)(**model.config())`` rebuilds the model."""
        return dict(self._config)

    @property
    def dims(self) -> int:
        """Sub-pixels per image."""
        return self.in_channels * self.image_size[0] * self.image_size[1]

    # -- pieces --------------------------------------------------------------------------------
    def _condition(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            return features
        return torch.cat([features, F.one_hot(labels, self.n_classes).to(features.dtype)], 1)

    def check_images(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        return check_images(x, (self.in_channels, *self.image_size), self.levels, name)

    def _checked(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x and labels validated (once per call) and as int64."""
        x = self.check_images(x)
        return x, check_labels(labels, x.shape[0], self.n_classes)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mu, logvar) of q(z|x), each (N, latent_dim); a plain autoencoder returns (z, None)."""
        return self._encode(*self._checked(x, labels))

    def _encode(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.encoder(x.to(self.to_latent.weight.dtype) / (self.levels - 1))
        out = self.to_latent(self._condition(features, labels))
        return (out[:, :self.latent_dim], out[:, self.latent_dim:]) if self.variational else (out, None)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The parameters of p(x|z) in ``vae_nelbo``'s layout: (N, C, H, W) logits (bernoulli), or
        (N, P, C, H, W) with P = levels (categorical) or 2 (gaussian, logistic: mean, log-scale)."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, {self.latent_dim}) (latent_dim={self.latent_dim}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if not z.is_floating_point():
            raise ValueError(f"z must be a floating-point tensor, got {z.dtype}")
        # A latent of another floating dtype (e.g. float32 from fastgen.latent for a float64 model) is cast.
        return self._decode(z.to(self.to_latent.weight.dtype), self._decoder_labels(labels, z.shape[0]))

    def _decoder_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The labels the decoder reads, validated for a batch of n."""
        return check_labels(labels, n, self.n_classes)

    def _decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.decoder(self._condition(z, labels))
        n, _, h, w = out.shape
        if self.likelihood == "bernoulli":
            return out
        return out.view(n, self.in_channels, self.params, h, w).transpose(1, 2)

    def _reconstruction(self, z: torch.Tensor, labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """The parameters of p(x|z) that score the validated images ``x`` (a decoder that reads x,
        an autoregressive one, overrides this)."""
        return self._decode(z, labels)

    def data_for_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The integer images as the likelihood reads them (see the module docstring)."""
        if self.likelihood == "bernoulli":
            return x.to(self.to_latent.weight.dtype) / (self.levels - 1)
        if self.likelihood == "gaussian":
            return x.to(self.to_latent.weight.dtype) * (2.0 / (self.levels - 1)) - 1.0
        return x

    def _dequantization_nats(self) -> float:
        """Nats per image added to a Gaussian density's NLL to put it on the discrete scale."""
        return -self.dims * math.log(2.0 / (self.levels - 1)) if self.likelihood == "gaussian" else 0.0

    # -- likelihood ------------------------------------------------------------------------------
    def nelbo(self, x: torch.Tensor, labels: torch.Tensor | None = None, *, beta: float | None = None,
              return_parts: bool = False, generator: torch.Generator | None = None):
        """Negative ELBO per image in nats, (N,) (with ``beta`` for the KL; default ``self.beta``).
        With ``return_parts``: (nelbo, reconstruction NLL, KL)."""
        x, labels = self._checked(x, labels)
        mu, logvar = self._encode(x, labels)
        z = reparameterize(mu, logvar, generator=generator)
        recon = self._reconstruction(z, labels, x)
        nelbo, nll, kl = vae_nelbo(recon, self.data_for_likelihood(x), mu, logvar, likelihood=self.likelihood,
                                   beta=self.beta if beta is None else beta, levels=self.levels, return_parts=True)
        shift = self._dequantization_nats()
        return (nelbo + shift, nll + shift, kl) if return_parts else nelbo + shift

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative ELBO in nats per sub-pixel (the trainer's loss; / ln 2 for bits/dim), with
        the KL weighted by ``beta`` in training mode; in eval mode (validation, ``fastgen eval``)
        always the true bound (beta = 1)."""
        return self.nelbo(x, labels, beta=self.beta if self.training else 1.0).mean() / self.dims

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None, *, k: int = 100,
                       chunk: int = 1024, generator: torch.Generator | None = None) -> LikelihoodEstimate:
        """Importance-weighted estimate of log p(x) (Burda et al., 2016) with ``k`` samples of q(z|x):

            log p(x) ~= logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k

        a lower bound on log p(x) in expectation that tightens with k; at k = 1 its expectation is
        the ELBO. ``chunk`` bounds the number of (image, sample) pairs decoded at once.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not self.variational:
            raise ValueError(f"{type(self).__name__} has no posterior q(z|x) and prior to weigh: log_likelihood "
                             "needs a VAE")
        x, labels = self._checked(x, labels)
        mu, logvar = self._encode(x, labels)
        n = x.shape[0]
        data = self.data_for_likelihood(x)
        log_w = torch.empty(n, k, dtype=mu.dtype, device=mu.device)
        per_chunk = max(1, chunk // n)
        for start in range(0, k, per_chunk):
            s = min(per_chunk, k - start)
            eps = torch.randn(s, *mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps  # (s, N, Z)
            def rep(t: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (s * N, ...), sample-major like z
                return t.expand(s, *t.shape).reshape(s * n, *t.shape[1:])

            recon = self._reconstruction(z.reshape(s * n, -1), rep(labels) if labels is not None else None, rep(x))
            zeros = torch.zeros(s * n, self.latent_dim, dtype=mu.dtype, device=mu.device)
            log_px = -vae_nelbo(recon, rep(data), zeros, zeros, likelihood=self.likelihood, beta=0.0,
                                levels=self.levels).view(s, n)
            # log p(z) - log q(z|x): the 2 pi terms cancel.
            log_ratio = 0.5 * (eps.pow(2) - z.pow(2) + logvar).sum(-1)
            log_w[:, start:start + s] = (log_px + log_ratio).T
        nats = torch.logsumexp(log_w, 1) - math.log(k) - self._dequantization_nats()
        return LikelihoodEstimate(nats, -nats / (self.dims * math.log(2.0)))

    # -- generation -------------------------------------------------------------------------------
    def _images_from(self, recon: torch.Tensor, draw: bool, generator: torch.Generator | None) -> torch.Tensor:
        """Integer images from decoder outputs: a draw from p(x|z), or its most likely image.
        Non-finite outputs (a decoder whose weights diverged) raise a ValueError: NaN would become
        an arbitrary level."""
        if not bool(torch.isfinite(recon).all()):
            raise ValueError(f"the decoder produced NaN or infinite values (weights {self.to_latent.weight.dtype}); "
                             "its weights are probably not finite (a diverged run?)")
        top = self.levels - 1
        if self.likelihood == "bernoulli":
            p = torch.sigmoid(recon)
            if draw and self.levels == 2:
                return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).long()
            return (p * top).round().long()
        if self.likelihood == "categorical":
            if not draw:
                return recon.argmax(1)
            u = torch.rand((recon.shape[0], *recon.shape[2:]), generator=generator, device=recon.device)
            cdf = recon.softmax(1).cumsum(1)
            return (cdf < u.unsqueeze(1)).sum(1).clamp_max(top)
        mean, log_scale = recon[:, 0], recon[:, 1].clamp(-7, 7)
        value = mean
        if draw:
            u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype).clamp(1e-6, 1 - 1e-6)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype) \
                if self.likelihood == "gaussian" else torch.log(u) - torch.log1p(-u)
            value = mean + torch.exp(log_scale) * noise
        return ((value + 1) * (top / 2)).round().clamp(0, top).long()

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, *, draw: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` integer images (n, C, H, W) from z ~ N(0, I): the decoder's most likely image for
        each z, or (``draw=True``) a draw from p(x|z)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        weight = self.to_latent.weight  # z is drawn in float32, so that a seed gives the same z in every dtype
        z = torch.randn(n, self.latent_dim, generator=generator, device=weight.device).to(weight.dtype)
        return self.generate(z, labels, draw=draw, generator=generator)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, *, draw: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Integer images decoded from given latents (N, latent_dim) (see ``sample``)."""
        return self._images_from(self.decode(z, labels), draw, generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The most likely image of p(x | z = posterior mean) for each image of ``x``."""
        return self.generate(self.encode(x, labels)[0], labels)


class Autoencoder(VAE):
    """A deterministic autoencoder with the VAE's encoder, decoder and likelihoods: z = encoder(x),
    loss = -log p(x | z) per sub-pixel, no KL and no prior. ``sample`` decodes z ~ N(0, I), which
    is not a model of the data; it is there to compare with the VAE's samples."""

    variational = False

    def __init__(self, in_channels: int = 1, levels: int = 2, image_size: int | tuple[int, int] = 28, *,
                 latent_dim: int = 16, likelihood: str = "bernoulli", arch: str = "mlp", hidden: int = 256,
                 channels: int = 32, n_classes: int | None = None):
        super().__init__(in_channels, levels, image_size, latent_dim=latent_dim, likelihood=likelihood, arch=arch,
                         hidden=hidden, channels=channels, n_classes=n_classes, beta=0.0)
        del self._config["beta"]

    def nelbo(self, x: torch.Tensor, labels: torch.Tensor | None = None, *, beta: float | None = None,
              return_parts: bool = False, generator: torch.Generator | None = None):
        """-log p(x | encoder(x)) per image in nats (no KL: an autoencoder has no posterior)."""
        x, labels = self._checked(x, labels)
        z = self._code(x, labels, generator)
        zeros = torch.zeros_like(z)
        nll = vae_nelbo(self._decode(z, labels), self.data_for_likelihood(x), zeros, zeros,
                        likelihood=self.likelihood, beta=0.0, levels=self.levels) + self._dequantization_nats()
        return (nll, nll.detach(), torch.zeros_like(nll)) if return_parts else nll

    def _code(self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """The latent the decoder reconstructs ``x`` from (the encoder's output)."""
        return self._encode(x, labels)[0]

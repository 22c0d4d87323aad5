"""PixelVAE (Gulrajani et al., 2016): a VAE whose decoder p(x|z) is a Gated PixelCNN conditioned
on the latent, so that z carries the global structure of an image and the autoregressive decoder
its local detail.

    q(z|x)   the VAE's convolutional encoder: a diagonal Gaussian over ``latent_dim`` values
    m(z)     a network (the VAE's convolutional decoder) from z to a feature map (N, map_channels, H, W)
    p(x|z)   a Gated PixelCNN reading m(z) through its spatial conditioning (a 1x1 projection added
             to every gate): exact and autoregressive given z

The loss is the negative ELBO, -log p(x|z) + KL(q(z|x) || N(0, I)) with z drawn by the
reparameterisation, computed by ``fastgen.ops.vae_nelbo`` (the categorical likelihood over the
PixelCNN's logits, the analytic KL). ``log_likelihood`` is the importance-weighted estimate of
``VAE.log_likelihood``; ``sample`` draws z from the prior, computes m(z) once and runs the
PixelCNN's cached sampler with it.

A PixelCNN decoder can model the data without z and drive the KL to zero (the latent then carries
nothing). ``free_bits`` (Kingma et al., 2016) guards against that: in the training loss, each
latent dimension's KL (averaged over the batch) counts as at least ``free_bits`` nats, so the
optimiser gains nothing by pushing it lower. The likelihood estimates and ``loss`` in eval mode
(what validation reads) are always the true bound (so is ``nelbo`` with ``beta`` = 1). A shallow decoder (few
``pixelcnn_layers``, so a small receptive field) has the same effect and is the paper's other
advice.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from fastgen.models._checks import check_labels, check_positive_int
from fastgen.models.gated_pixelcnn import GatedPixelCNN
from fastgen.models.priors import sample_prior
from fastgen.models.vae import VAE, _Decoder
from fastgen.ops import reparameterize, vae_nelbo


class PixelVAE(VAE):
    """A VAE with a Gated PixelCNN decoder over integer images; class-conditional with ``n_classes``
    (the label then goes to the encoder, the map network and the PixelCNN).

    Args:
        in_channels: 1 (grey) or 3 (RGB).
        levels: values per sub-pixel (the decoder is categorical over them).
        image_size: H or (H, W).
        latent_dim: dimension of z.
        pixelcnn_layers: gated layers of the PixelCNN decoder.
        hidden_channels: channels of the PixelCNN's stacks.
        kernel_size: odd width of the PixelCNN's kernels.
        map_channels: channels of the feature map m(z) the PixelCNN reads.
        dropout: dropout on the PixelCNN's gated outputs.
        hidden, channels: width of the encoder's and map network's fully connected layers, and
            channels of their first convolution (as for ``VAE(arch="conv")``).
        n_classes: condition on class labels in [0, n_classes).
        beta: weight of the KL term in the training loss.
        free_bits: nats of KL per latent dimension the training loss does not penalise (0: off;
            see the module docstring).
    """

    def __init__(self, in_channels: int = 1, levels: int = 256, image_size: int | tuple[int, int] = 28, *,
                 latent_dim: int = 16, pixelcnn_layers: int = 4, hidden_channels: int = 64, kernel_size: int = 5,
                 map_channels: int = 32, dropout: float = 0.0, hidden: int = 256, channels: int = 32,
                 n_classes: int | None = None, beta: float = 1.0, free_bits: float = 0.0):
        super().__init__(in_channels, levels, image_size, latent_dim=latent_dim, likelihood="categorical", arch="conv",
                         hidden=hidden, channels=channels, n_classes=n_classes, beta=beta)
        for name, value in (("pixelcnn_layers", pixelcnn_layers), ("map_channels", map_channels)):
            check_positive_int(name, value)
        if isinstance(free_bits, bool) or not isinstance(free_bits, (int, float)) or not 0.0 <= free_bits < math.inf:
            raise ValueError(f"free_bits must be a finite number >= 0, got {free_bits!r}")
        self.free_bits = float(free_bits)
        self._config = dict(in_channels=in_channels, levels=levels, image_size=list(self.image_size),
                            latent_dim=latent_dim, pixelcnn_layers=pixelcnn_layers, hidden_channels=hidden_channels,
                            kernel_size=kernel_size, map_channels=map_channels, dropout=dropout, hidden=hidden,
                            channels=channels, n_classes=n_classes, beta=beta, free_bits=self.free_bits)
        # The VAE's decoder, now to the feature map m(z) instead of the likelihood's parameters.
        self.decoder = _Decoder("conv", latent_dim + (n_classes or 0), (in_channels, *self.image_size), map_channels,
                                hidden, channels)
        self.pixelcnn = GatedPixelCNN(in_channels, levels, self.image_size, hidden_channels=hidden_channels,
                                      n_layers=pixelcnn_layers, kernel_size=kernel_size, dropout=dropout,
                                      n_classes=n_classes, cond_channels=map_channels)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    # -- pieces --------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The feature map m(z) (N, map_channels, H, W) the PixelCNN decoder reads (the decoder's
        likelihood needs the image too: see ``forward``)."""
        return super().decode(z, labels)

    def _decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(self._condition(z, labels))

    def _reconstruction(self, z: torch.Tensor, labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        # (N, levels, C, H, W): the categorical layout of vae_nelbo.
        return self.pixelcnn.logits(x, labels, self._decode(z, labels))

    def forward(self, x: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, levels, C, H, W) of p(x|z) for every sub-pixel given the ones before it."""
        x, labels = self._checked(x, labels)
        return self.pixelcnn.logits(x, labels, self.decode(z, labels))

    # -- likelihood ------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean negative ELBO in nats per sub-pixel. In training mode with ``free_bits`` set,
        each latent dimension's batch-mean KL counts as at least ``free_bits`` nats; in eval mode
        (validation, ``fastgen eval``) it is always the true bound."""
        if not self.free_bits or not self.training:
            return super().loss(x, labels)
        x, labels = self._checked(x, labels)
        mu, logvar = self._encode(x, labels)
        recon = self._reconstruction(reparameterize(mu, logvar), labels, x)
        # beta = 0: the reconstruction NLL alone, differentiable (vae_nelbo's parts are not).
        nll = vae_nelbo(recon, x, mu, logvar, likelihood="categorical", beta=0.0, levels=self.levels)
        mu, logvar = mu.float(), logvar.float()  # under autocast they may be bfloat16
        kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)
        return (nll.mean() + self.beta * kl_per_dim.clamp_min(self.free_bits).sum()) / self.dims

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, *, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, cache: bool = True) -> torch.Tensor:
        """``n`` integer images (n, C, H, W): z ~ N(0, I) (drawn first from ``generator``), then a
        draw from p(x|z) (see ``generate``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        weight = self.to_latent.weight
        z = sample_prior("gaussian", n, self.latent_dim, 1, generator=generator, device=weight.device,
                         dtype=weight.dtype)
        return self.generate(z, labels, noise=noise, generator=generator, cache=cache)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, *, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, cache: bool = True) -> torch.Tensor:
        """A draw from p(x|z) for each latent of ``z`` (N, latent_dim): m(z) is computed once, then
        the PixelCNN samples given it, with its cached sampler (``cache=False``: the naive one,
        which draws the same images from the same ``noise``; see ``AutoregressiveImageModel.sample``).
        An autoregressive decoder has no cheap most-likely image, so every image is a draw."""
        cond_map = self.decode(z, labels)
        labels = check_labels(labels, z.shape[0], self.n_classes)
        cond = cond_map if labels is None else (labels, cond_map)
        if noise is None:  # drawn on the generator's device (the sampling driver draws on the CPU)
            where = generator.device if generator is not None else "cpu"
            noise = torch.rand((z.shape[0], *self.pixelcnn.noise_shape), generator=generator, dtype=torch.float64,
                               device=where)
        return self.pixelcnn.sample(z.shape[0], cond, noise=noise, cache=cache)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from p(x | z = posterior mean) for each image of ``x``."""
        return self.generate(self.encode(x, labels)[0], labels, generator=generator)

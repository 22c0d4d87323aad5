"""PixelCNN++ (Salimans et al., ICLR 2017): a discretized logistic mixture output, a down/up
network of two causal streams at three resolutions with shortcut connections, gated resnet blocks
with concat_elu and dropout, optional class conditioning and weight normalisation."""
from __future__ import annotations

import torch
from torch import nn

from fastgen._core import dmol_channels
from fastgen.models.autoregressive import AutoregressiveImageModel, Cond
from fastgen.nn.shifted_conv import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    NetworkInNetwork,
    concat_elu,
)
from fastgen.ops import dmol_nll, dmol_sample
from fastgen.sampling import draw_noise, partial_image
from fastgen.sampling.pixelcnnpp import cached_sample_pixelcnnpp, naive_sample_dmol

SCALES = 3  # resolutions: full, 1/2, 1/4


class GatedResnet(nn.Module):
    """x + a * sigmoid(b), (a, b) = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip)))))
    (+ a class embedding before the gate). ``conv`` is the stream's causal convolution."""

    def __init__(self, filters: int, conv: type, skip_inputs: int, dropout: float, n_classes: int | None,
                 weight_norm: bool):
        super().__init__()
        self.conv_input = conv(2 * filters, filters, weight_norm=weight_norm)
        self.nin_skip = NetworkInNetwork(2 * skip_inputs * filters, filters, weight_norm) if skip_inputs else None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv_out = conv(2 * filters, 2 * filters, weight_norm=weight_norm)
        self.embed = nn.Embedding(n_classes, 2 * filters) if n_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.05)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        h = self.conv_input(concat_elu(x))
        if skip is not None:
            h = h + self.nin_skip(concat_elu(skip))
        h = self.conv_out(self.dropout(concat_elu(h)))
        if self.embed is not None:
            h = h + self.embed(labels)[:, :, None, None]
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class PixelCNNpp(AutoregressiveImageModel):
    """PixelCNN++ over 1 or 3 colour channels with a discretized logistic mixture per pixel.

    The network takes images in [-1, 1] with a channel of ones (so that zero padding is told apart
    from black) and returns mixture parameters (N, K, H, W) in the layout of ``fastgen.ops.dmol_nll``
    (K = 10 nr_mix for RGB, 3 nr_mix for grey); the colours of a pixel are coupled inside the
    mixture, not by masks.

    Args:
        in_channels, levels, image_size, n_classes: see ``AutoregressiveImageModel``; the image
            height and width must be multiples of 4 (two 2x downsamplings).
        nr_resnet: gated resnet blocks per resolution in the up pass; the down pass has nr_resnet
            at 1/4 resolution and nr_resnet + 1 at 1/2 and full resolution, as in the paper.
        nr_filters: channels of both streams.
        nr_mix: logistic mixture components.
        dropout: dropout rate inside every gated resnet.
        weight_norm: weight-normalise every convolution.

    The defaults are the paper's CIFAR-10 model (about 53M parameters). On 2 CPU cores,
    ``nr_resnet=1, nr_filters=32, nr_mix=5`` trains on 8x8 digits in minutes, and
    ``nr_resnet=2, nr_filters=64`` on 32x32 RGB in hours.
    """

    def __init__(self, in_channels: int = 3, levels: int = 256, image_size: int | tuple[int, int] = 32, *,
                 nr_resnet: int = 5, nr_filters: int = 160, nr_mix: int = 10, dropout: float = 0.5,
                 n_classes: int | None = None, weight_norm: bool = False):
        super().__init__(in_channels, levels, image_size, n_classes, None)
        if any(s % 4 for s in self.image_size):
            raise ValueError(f"image_size must have height and width divisible by 4 (two 2x downsamplings), "
                             f"got {self.image_size}")
        for name, value in (("nr_resnet", nr_resnet), ("nr_filters", nr_filters), ("nr_mix", nr_mix)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._config = dict(in_channels=in_channels, levels=levels, image_size=list(self.image_size),
                            nr_resnet=nr_resnet, nr_filters=nr_filters, nr_mix=nr_mix, dropout=dropout,
                            n_classes=n_classes, weight_norm=weight_norm)
        self.nr_resnet, self.nr_filters, self.nr_mix = nr_resnet, nr_filters, nr_mix
        f, wn = nr_filters, weight_norm

        def resnets(count: int, conv: type, skip_inputs: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(f, conv, skip_inputs, dropout, n_classes, wn) for _ in range(count))

        inputs = in_channels + 1
        self.u_init = DownShiftedConv2d(inputs, f, (2, 3), shift_down=True, weight_norm=wn)
        self.ul_init_down = DownShiftedConv2d(inputs, f, (1, 3), shift_down=True, weight_norm=wn)
        self.ul_init_right = DownRightShiftedConv2d(inputs, f, (2, 1), shift_right=True, weight_norm=wn)
        self.up_u = nn.ModuleList(resnets(nr_resnet, DownShiftedConv2d, 0) for _ in range(SCALES))
        self.up_ul = nn.ModuleList(resnets(nr_resnet, DownRightShiftedConv2d, 1) for _ in range(SCALES))
        self.downsize_u = nn.ModuleList(DownShiftedConv2d(f, f, stride=2, weight_norm=wn) for _ in range(SCALES - 1))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv2d(f, f, stride=2, weight_norm=wn)
                                         for _ in range(SCALES - 1))
        down_counts = [nr_resnet] + [nr_resnet + 1] * (SCALES - 1)  # in down-pass order: 1/4 first
        self.down_u = nn.ModuleList(resnets(down_counts[i], DownShiftedConv2d, 1) for i in range(SCALES))
        self.down_ul = nn.ModuleList(resnets(down_counts[i], DownRightShiftedConv2d, 2) for i in range(SCALES))
        self.upsize_u = nn.ModuleList(DownShiftedConvTranspose2d(f, f, wn) for _ in range(SCALES - 1))
        self.upsize_ul = nn.ModuleList(DownRightShiftedConvTranspose2d(f, f, wn) for _ in range(SCALES - 1))
        self.head = NetworkInNetwork(f, dmol_channels(in_channels, nr_mix), wn)

    # -- the network -------------------------------------------------------------------------
    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images -> [-1, 1] with a channel of ones appended."""
        encoded = self.encode(x)
        return torch.cat([encoded, torch.ones_like(encoded[:, :1])], dim=1)

    def params(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Mixture parameters (N, K, H, W) of every pixel given the pixels before it."""
        inp = self.network_input(x)
        u_list = [self.u_init(inp)]
        ul_list = [self.ul_init_down(inp) + self.ul_init_right(inp)]
        for s in range(SCALES):  # up pass: full resolution, then 1/2, then 1/4
            for block_u, block_ul in zip(self.up_u[s], self.up_ul[s]):
                u_list.append(block_u(u_list[-1], labels=labels))
                ul_list.append(block_ul(ul_list[-1], u_list[-1], labels))
            if s < SCALES - 1:
                u_list.append(self.downsize_u[s](u_list[-1]))
                ul_list.append(self.downsize_ul[s](ul_list[-1]))
        u, ul = u_list.pop(), ul_list.pop()
        for i in range(SCALES):  # down pass: 1/4, then 1/2, then full resolution
            for block_u, block_ul in zip(self.down_u[i], self.down_ul[i]):
                u = block_u(u, u_list.pop(), labels)
                ul = block_ul(ul, torch.cat([u, ul_list.pop()], dim=1), labels)
            if i < SCALES - 1:
                u, ul = self.upsize_u[i](u), self.upsize_ul[i](ul)
        return self.head(nn.functional.elu(ul))

    # -- likelihood --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Mixture parameters (N, K, H, W) of every pixel given the ones before it."""
        x = self.check_images(x)
        return self.params(x, self.split_cond(cond, x.shape[0])[0])

    def log_prob(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Exact log-likelihood of each image in nats, (N,)."""
        x = self.check_images(x)
        params = self.params(x, self.split_cond(cond, x.shape[0])[0])
        return -dmol_nll(self.encode(x).to(params.dtype), params, nr_mix=self.nr_mix, levels=self.levels)

    # -- sampling ----------------------------------------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """Noise per image: nr_mix Gumbel numbers and one logistic number per colour, per pixel."""
        return (self.nr_mix + self.in_channels, *self.image_size)

    def draw(self, params: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Integer levels (N, C, H', W') drawn from params (N, K, H', W') with noise (N, M + C, H', W')."""
        values = dmol_sample(params, nr_mix=self.nr_mix, noise=noise.to(params.dtype), levels=self.levels)
        return torch.round((values + 1) * ((self.levels - 1) / 2)).long()

    @torch.no_grad()
    def sample(self, n: int, cond: Cond = None, *, partial: tuple[torch.Tensor, torch.Tensor] | None = None,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
               cache: bool = True) -> torch.Tensor:
        """Draw n images (n, C, H, W) int64.

        Args:
            cond: class labels (n,) for a class-conditional model.
            partial: (image, known) to complete images; a pixel is kept when all its colours are
                known (the mixture draws the colours of a pixel together).
            noise: uniform [0, 1) noise of shape (n, nr_mix + C, H, W) (``noise_shape``); the same
                noise gives the same images.
            generator: where noise is drawn from when not given (on the CPU, up front).
            cache: the cached incremental sampler (``fastgen.sampling.pixelcnnpp``); False runs
                one forward pass per pixel. Both draw the same images from the same noise.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        device = next(self.parameters()).device
        labels, _ = self.split_cond(cond, n)
        if noise is None:
            noise = draw_noise(n, self.noise_shape, generator=generator, device=device)
        elif tuple(noise.shape) != (n, *self.noise_shape):
            raise ValueError(f"noise must have shape {(n, *self.noise_shape)} (n, nr_mix + C, H, W), "
                             f"got {tuple(noise.shape)}")
        image, known = partial_image(partial, n, (self.in_channels, *self.image_size), self.levels, device)
        known = known.all(dim=1)
        was_training = self.training
        self.eval()
        try:
            sampler = cached_sample_pixelcnnpp if cache else naive_sample_dmol
            return sampler(self, image, known, noise.to(device), labels)
        finally:
            self.train(was_training)

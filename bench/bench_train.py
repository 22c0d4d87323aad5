"""Time of one training step of each fastgen model, against the same network written in plain PyTorch.
Rows go to bench/results/train/<device>.csv.

    python -m bench.bench_train                       # every model, float32 (or: python -m bench --train)
    python -m bench.bench_train --model PixelCNN --amp --device cuda
    python -m bench.bench_train --quick --repeats 1   # tiny models: checks the script, not the speed
    python -m bench.bench_train --markdown            # the latest run as a README table

A step is what the shipped trainers do per batch, in their order. For the likelihood models
(fastgen.train.Trainer): the training loss (mean negative log-likelihood, or negative ELBO, in nats
per sub-pixel) under bfloat16 autocast when --amp, zero_grad, backward, gradient clipping at
TrainConfig's grad_clip (1.0), and an Adam step at TrainConfig's lr. For DCGAN
(fastgen.train.GANTrainer): a discriminator update on a real batch and a generated one (drawn under
no_grad), then a generator update through the frozen discriminator, both with the non-saturating
loss and GANTrainConfig's Adam settings; no clipping, as GANTrainer has none (nor an autocast
option: its --amp rows have no trainer counterpart). The trainers' bookkeeping (loss.item(), finite
checks, logging) is left out: it is the same whatever computes the loss; fastgen's own input checks
inside ``loss`` and ``to_unit`` are timed, as part of the model. Inputs are random but fixed: one
batch, and for DCGAN one latent batch for each update.

Providers, each with its own copy of the same initial weights and its own optimiser:

- ``plain``: the architecture in plain PyTorch, as a user of a peer library writes it:
  ``nn.Conv2d`` whose weight is multiplied by a registered mask buffer in forward (the style of
  EugenHotaj/pytorch-generative), the gated stacks as padded ``nn.Conv2d``, PixelCNN++ written from
  the paper (padded, shifted ``nn.Conv2d``, 1x1 convolutions for its network-in-network layers) with
  an eager discretized logistic mixture loss,
  ``F.cross_entropy`` and ``F.binary_cross_entropy_with_logits``. The same layers and parameter
  count as fastgen's model (asserted), with fastgen's initial weights copied in; once per model the
  bench checks that both give the same float32 loss and gradient norm on the same batch, to rounding
  (else it stops), and prints the differences (the relative loss difference: column loss_rel_diff).
- ``compiled``: ``torch.compile`` of plain's forward and loss (backward through the compiled graph;
  clipping and Adam eager, as for the others). Its first call, compile included, is reported
  separately (compile_s); a compile that fails is recorded in the note column. compile_s counts
  torch's compile caches as they stand (a rerun of the same code hits the FX graph cache and takes
  a fraction of the first run's time); TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 gives the cold figure.
- ``fastgen``: the model as shipped, its ``loss`` (GAN: ``to_unit``, the networks and
  ``fastgen.ops.gan_loss``), as the trainers call it.

Models (each class's defaults but for the settings named; --quick shrinks every one to seconds):

- PixelCNN: 12 mask-B blocks of 128 channels (kernel 3), 1x28x28, levels=2, batch 32.
- GatedPixelCNN: 10 layers of 128 channels (kernel 5, no dropout), 1x28x28, levels=2, batch 32.
- PixelCNNpp: nr_filters=64, nr_resnet=2, and the class's nr_mix=10, dropout 0.5 and no weight
  norm (``fastgen train pixelcnnpp`` defaults to nr_mix 5 and no dropout), 3x32x32, levels=256,
  batch 16.
- VAE: arch="conv", likelihood="categorical" (what ``fastgen train vae`` builds; the class alone
  defaults to an MLP with a Bernoulli likelihood), latent_dim=16, hidden=256, channels=32, 1x28x28,
  levels=256 (MNIST), batch 128.
- DCGAN: width 32, the class's latent_dim=64 (``fastgen train dcgan``: 16), batch norm, 3x32x32,
  levels=256 (CIFAR-10), batch 64.

Providers are interleaved in every repetition (drift of the machine hits all alike) after two
warm-up steps; reported: median, p20 and p80 of the step time, images per second at the median, and
the peak memory allocated during one step (``bench.harness.peak_memory_mb``: the profiler's
allocations on CPU, the caching allocator's peak on CUDA), counted from no gradients.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.harness import append_rows, device_name, device_slug, git_commit, peak_memory_mb, timing_ms
from bench.table import print_latest_table
from fastgen.models import DCGAN, VAE, GatedPixelCNN, PixelCNN, PixelCNNpp
from fastgen.ops import gan_loss, implementations
from fastgen.train import GANTrainConfig, TrainConfig

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train")
COLUMNS = ("model", "provider", "mode", "batch", "shape", "median_ms", "p20_ms", "p80_ms", "images_per_s",
           "peak_mem_mb", "compile_s", "params", "loss_rel_diff", "note", "device", "torch", "commit", "date")
PROVIDERS = ("plain", "compiled", "fastgen")
MODES = ("fp32", "amp")  # amp: forward and loss under bfloat16 autocast
MODELS = ("PixelCNN", "GatedPixelCNN", "PixelCNNpp", "VAE", "DCGAN")
WARMUP = 2
# plain and fastgen sum in different orders (fastgen's kernels block and vectorise), so their float32
# losses differ by rounding: a few 1e-7 relative. A layer wired differently moves them by far more.
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
# The fastgen op each model's step leans on most: named in the fastgen rows' note.
KEY_OPS = {"PixelCNN": ("masked_conv2d", "categorical_nll"), "GatedPixelCNN": ("gated_activation", "categorical_nll"),
           "PixelCNNpp": ("dmol_nll",), "VAE": ("vae_nelbo", "reparameterize"), "DCGAN": ("gan_loss",)}


# -- plain PyTorch: the networks as a peer library's user writes them ----------------------------------------
# Grey images only (the benchmark's PixelCNN and Gated PixelCNN): with one colour there is no channel
# mask, and a mask-B 1x1 convolution is a plain 1x1 convolution.

def encode(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer levels to [-1, 1]."""
    return x.float() * (2.0 / (levels - 1)) - 1.0


class CausalConv2d(nn.Conv2d):
    """A k x k convolution whose weight is multiplied by the PixelCNN mask in every forward: rows above,
    the row's pixels to the left, and the centre for mask 'B'. (pytorch-generative zeroes
    ``weight.data`` in place instead; the product keeps the masked taps' gradients at zero, as
    fastgen's, so that both clip the same gradient norm.)"""

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = kernel_size
        mask = torch.zeros_like(self.weight)
        mask[:, :, : k // 2] = 1
        mask[:, :, k // 2, : k // 2 + (mask_type == "B")] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PlainResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 2, 1)
        self.conv = CausalConv2d("B", channels // 2, channels // 2, kernel_size)
        self.expand = nn.Conv2d(channels // 2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(F.relu(self.conv(F.relu(self.reduce(F.relu(x))))))


class PlainPixelCNN(nn.Module):
    """7x7 mask-A input layer, residual blocks, a ReLU-1x1-ReLU-1x1 head; logits (N, L, 1, H, W)."""

    def __init__(self, levels: int, hidden: int, n_layers: int, kernel_size: int, head: int):
        super().__init__()
        self.levels = levels
        self.input = CausalConv2d("A", 1, hidden, 7)
        self.blocks = nn.ModuleList(PlainResidualBlock(hidden, kernel_size) for _ in range(n_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, head, 1), nn.ReLU(), nn.Conv2d(head, levels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(encode(x, self.levels))
        for block in self.blocks:
            h = block(h)
        return self.head(h).unsqueeze(2)


class PlainGatedLayer(nn.Module):
    """Vertical stack: rows above (the first layer's window ends one row higher); horizontal stack: the
    row up to the pixel (the first layer masks the pixel itself); tanh * sigmoid gates."""

    def __init__(self, in_channels: int, channels: int, skip_channels: int, kernel_size: int, first: bool):
        super().__init__()
        p = self.pad = kernel_size // 2
        self.first = first
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (p if first else p + 1, kernel_size))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, p + 1))
        mask = torch.ones_like(self.h_conv.weight)
        if first:
            mask[:, :, :, p] = 0
        self.register_buffer("h_mask", mask)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.skip = nn.Conv2d(channels, skip_channels, 1)

    @staticmethod
    def gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.pad
        v_pre = self.v_conv(F.pad(v, (p, p, p, -1 if self.first else 0)))
        h_pre = F.conv2d(F.pad(h, (p, 0, 0, 0)), self.h_conv.weight * self.h_mask, self.h_conv.bias)
        gated = self.gate(h_pre + self.v_to_h(v_pre))
        out = self.h_out(gated)
        return self.gate(v_pre), out if self.first else h + out, self.skip(gated)


class PlainGatedPixelCNN(nn.Module):
    def __init__(self, levels: int, hidden: int, n_layers: int, kernel_size: int, skip: int):
        super().__init__()
        self.levels = levels
        self.layers = nn.ModuleList(PlainGatedLayer(1 if i == 0 else hidden, hidden, skip, kernel_size, i == 0)
                                    for i in range(n_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(skip, skip, 1), nn.ReLU(), nn.Conv2d(skip, levels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = h = encode(x, self.levels)
        skips = 0
        # The last layer's v and h outputs feed nothing; they are computed anyway, as fastgen's forward does.
        for layer in self.layers:
            v, h, s = layer(v, h)
            skips = skips + s
        return self.head(skips).unsqueeze(2)


def categorical_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean NLL per sub-pixel; float32 under autocast too, as one computes a loss."""
    return F.cross_entropy(logits.float(), x)


# PixelCNN++ in plain PyTorch, written from the paper (Salimans et al., 2017): two causal streams made by
# padding and shifting ``nn.Conv2d``, gated resnet blocks with concat_elu, 1x1 convolutions for the
# network-in-network layers, an eager discretized logistic mixture loss. fastgen's default model: no
# weight norm, element-wise dropout.

def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=1))


class ShiftedConv(nn.Conv2d):
    """A convolution padded so that output (r, c) reads no row below r (``kind="down"``: kh - 1 rows on
    top, kw // 2 columns each side) and, for ``"down_right"``, no column right of c either (kh - 1 rows
    on top, kw - 1 columns on the left). ``shift`` moves the output one row down ("down") or one column
    right ("down_right"), zero-filled: the input layers use it so that a pixel never sees itself."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] | None = None,
                 kind: str = "down", stride: int = 1, shift: bool = False):
        if kind not in ("down", "down_right"):
            raise ValueError(f"kind must be 'down' or 'down_right', got {kind!r}")
        kh, kw = kernel_size or ((2, 3) if kind == "down" else (2, 2))
        super().__init__(in_channels, out_channels, (kh, kw), stride)
        left = kw // 2 if kind == "down" else kw - 1
        self.pads = (left, kw - 1 - left, kh - 1, 0)
        # F.pad crops where a pad is negative: one row (column) in at the top (left), one out at the end.
        self.output_shift = None if not shift else (0, 0, 1, -1) if kind == "down" else (1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(F.pad(x, self.pads))
        return y if self.output_shift is None else F.pad(y, self.output_shift)


class ShiftedDeconv(nn.ConvTranspose2d):
    """2x upsampling that keeps a stream causal: a stride-2 transposed convolution, (2h, 2w) out of (h, w).
    "down": kernel (2, 3), its first output column dropped, so that output (r, c) reads input row r // 2
    and the columns around c // 2; "down_right": kernel (2, 2), output (r, c) reads input (r // 2, c // 2)."""

    def __init__(self, channels: int, kind: str):
        super().__init__(channels, channels, (2, 3) if kind == "down" else (2, 2), stride=2)
        self.first_column = 1 if kind == "down" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., self.first_column:]


class Resnet(nn.Module):
    """Gated residual block: x + a * sigmoid(b), (a, b) = conv2(dropout(concat_elu(h))) with
    h = conv1(concat_elu(x)) + shortcut(concat_elu(extra)); ``extra`` (n_extra * channels, optional) is
    what the block reads besides its own stream, through a 1x1 convolution."""

    def __init__(self, channels: int, kind: str, n_extra: int, dropout: float):
        super().__init__()
        self.conv1 = ShiftedConv(2 * channels, channels, kind=kind)
        self.shortcut = nn.Conv2d(2 * n_extra * channels, channels, 1) if n_extra else None
        self.drop = nn.Dropout(dropout)
        self.conv2 = ShiftedConv(2 * channels, 2 * channels, kind=kind)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(concat_elu(x))
        if extra is not None:
            h = h + self.shortcut(concat_elu(extra))
        a, b = self.conv2(self.drop(concat_elu(h))).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class PlainPixelCNNpp(nn.Module):
    """Mixture parameters (N, K, H, W) of images (N, C, H, W) in [-1, 1]: K = 10 nr_mix for RGB, 3 nr_mix for
    grey. Stream u sees the rows above a pixel, stream ul those and the pixels to its left. Up: nr_resnet
    blocks per stream at full, 1/2 and 1/4 resolution, strided convolutions between; down: nr_resnet blocks
    at 1/4, nr_resnet + 1 at 1/2 and at full resolution, transposed convolutions between, each block
    reading an up-pass output of its stream (ul's: and the u stream's new output) last in, first out."""

    def __init__(self, channels: int, levels: int, nr_resnet: int, nr_filters: int, nr_mix: int, dropout: float):
        super().__init__()
        self.levels, self.nr_mix = levels, nr_mix
        f, inputs = nr_filters, channels + 1  # a channel of ones: the zero padding is told apart from black

        def blocks(n: int, kind: str, n_extra: int) -> nn.ModuleList:
            return nn.ModuleList(Resnet(f, kind, n_extra, dropout) for _ in range(n))

        self.u_init = ShiftedConv(inputs, f, (2, 3), "down", shift=True)
        self.ul_init_down = ShiftedConv(inputs, f, (1, 3), "down", shift=True)
        self.ul_init_right = ShiftedConv(inputs, f, (2, 1), "down_right", shift=True)
        self.up_u = nn.ModuleList(blocks(nr_resnet, "down", 0) for _ in range(3))
        self.up_ul = nn.ModuleList(blocks(nr_resnet, "down_right", 1) for _ in range(3))
        self.downsize_u = nn.ModuleList(ShiftedConv(f, f, kind="down", stride=2) for _ in range(2))
        self.downsize_ul = nn.ModuleList(ShiftedConv(f, f, kind="down_right", stride=2) for _ in range(2))
        down_blocks = (nr_resnet, nr_resnet + 1, nr_resnet + 1)
        self.down_u = nn.ModuleList(blocks(n, "down", 1) for n in down_blocks)
        self.down_ul = nn.ModuleList(blocks(n, "down_right", 2) for n in down_blocks)
        self.upsize_u = nn.ModuleList(ShiftedDeconv(f, "down") for _ in range(2))
        self.upsize_ul = nn.ModuleList(ShiftedDeconv(f, "down_right") for _ in range(2))
        self.head = nn.Conv2d(f, (10 if channels == 3 else 3) * nr_mix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        saved_u, saved_ul = [self.u_init(x)], [self.ul_init_down(x) + self.ul_init_right(x)]
        for scale in range(3):
            for block_u, block_ul in zip(self.up_u[scale], self.up_ul[scale]):
                saved_u.append(block_u(saved_u[-1]))
                saved_ul.append(block_ul(saved_ul[-1], saved_u[-1]))
            if scale < 2:
                saved_u.append(self.downsize_u[scale](saved_u[-1]))
                saved_ul.append(self.downsize_ul[scale](saved_ul[-1]))
        u, ul = saved_u.pop(), saved_ul.pop()
        for scale in range(3):
            for block_u, block_ul in zip(self.down_u[scale], self.down_ul[scale]):
                u = block_u(u, saved_u.pop())
                ul = block_ul(ul, torch.cat([u, saved_ul.pop()], dim=1))
            if scale < 2:
                u, ul = self.upsize_u[scale](u), self.upsize_ul[scale](ul)
        return self.head(F.elu(ul))


# fastgen keeps each convolution in a module of its own (``.conv``) and names a block's layers its own way.
FASTGEN_BLOCK_NAMES = {"conv1": "conv_input", "shortcut": "nin_skip", "conv2": "conv_out"}


def fastgen_pixelcnnpp_name(name: str) -> str:
    """PlainPixelCNNpp parameter name -> fastgen PixelCNNpp's, e.g. up_ul.0.1.shortcut.weight ->
    up_ul.0.1.nin_skip.conv.weight."""
    *path, leaf = name.split(".")
    return ".".join([FASTGEN_BLOCK_NAMES.get(part, part) for part in path] + ["conv", leaf])


def logistic_mixture_nll(x: torch.Tensor, params: torch.Tensor, nr_mix: int, levels: int) -> torch.Tensor:
    """Mean negative log-likelihood in nats per sub-pixel of images x (N, C, H, W) in [-1, 1], C = 1 or 3,
    under nr_mix discretized logistics per pixel. params (N, K, H, W): nr_mix mixture logits, then for each
    colour nr_mix means, nr_mix log-scales (at least -7) and, for RGB, nr_mix coefficients (through tanh)
    that add to green's mean a multiple of red, to blue's multiples of red and of green. A sub-pixel's
    probability is its logistic's mass over its bin (width 2 / (levels - 1)), the end bins reaching to
    infinity. Float32 under autocast too."""
    params = params.float()
    c = x.shape[1]
    blocks = params[:, nr_mix:].unflatten(1, (c, 3 if c == 3 else 2, nr_mix))  # (N, C, 3 or 2, M, H, W)
    mean, log_scale = blocks[:, :, 0], blocks[:, :, 1].clamp(min=-7.0)  # (N, C, M, H, W)
    if c == 3:
        coeff = torch.tanh(blocks[:, :, 2])
        red, green = x[:, 0:1], x[:, 1:2]  # (N, 1, H, W) against the components' (N, M, H, W)
        mean = torch.stack([mean[:, 0], mean[:, 1] + coeff[:, 0] * red,
                            mean[:, 2] + coeff[:, 1] * red + coeff[:, 2] * green], dim=1)
    value = x.unsqueeze(2)  # (N, C, 1, H, W)
    half_bin = 1.0 / (levels - 1)
    offset, inv_scale = value - mean, torch.exp(-log_scale)
    upper, lower, mid = (offset + half_bin) * inv_scale, (offset - half_bin) * inv_scale, offset * inv_scale
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    # A bin too small for a difference of sigmoids: the density at its centre (sigmoid(t) sigmoid(-t) / scale)
    # times its width. The clamp keeps log's gradient finite where the other branch is taken.
    log_mid_mass = F.logsigmoid(mid) + F.logsigmoid(-mid) - log_scale + math.log(2 * half_bin)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_mid_mass)
    log_mass = torch.where(value < -0.999, F.logsigmoid(upper),  # the bottom bin: P(X <= x + h)
                           torch.where(value > 0.999, F.logsigmoid(-lower), log_mass))  # the top: P(X > x - h)
    log_pixel = torch.logsumexp(F.log_softmax(params[:, :nr_mix], dim=1) + log_mass.sum(dim=1), dim=1)
    return -log_pixel.sum() / x.numel()


class PlainConvVAE(nn.Module):
    """Two stride-2 convolutions and a Linear down to (mu, logvar); a Linear, two transposed convolutions
    up to ``levels`` logits per pixel (grey images)."""

    def __init__(self, levels: int, size: int, latent_dim: int, hidden: int, channels: int):
        super().__init__()
        self.levels, self.size, self.latent_dim = levels, size, latent_dim
        small = ((size + 1) // 2 + 1) // 2
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, 2 * channels, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * channels * small * small, hidden), nn.ReLU())
        self.to_latent = nn.Linear(hidden, 2 * latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * channels * small * small), nn.ReLU(),
            nn.Unflatten(1, (2 * channels, small, small)), nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1),
            nn.ReLU(), nn.ConvTranspose2d(channels, levels, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (N, L, 1, H, W), mu, logvar)."""
        mu, logvar = self.to_latent(self.encoder(x.float() / (self.levels - 1))).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z)[:, :, : self.size, : self.size].unsqueeze(2), mu, logvar


def vae_loss(recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative ELBO per sub-pixel: categorical reconstruction NLL plus the analytic KL, mean over the batch."""
    nll = F.cross_entropy(recon.float(), x, reduction="none").flatten(1).sum(1)
    mu, logvar = mu.float(), logvar.float()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return (nll + kl).mean() / x[0].numel()


class PlainGenerator(nn.Module):
    def __init__(self, channels: int, steps: int, latent_dim: int, width: int):
        super().__init__()
        widths = [width * 2 ** min(3, steps - i) for i in range(steps + 1)]
        self.project = nn.Sequential(nn.Linear(latent_dim, widths[0] * 16, bias=False),
                                     nn.Unflatten(1, (widths[0], 4, 4)), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(steps):
            layers += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(widths[i + 1]),
                       nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z))


class PlainDiscriminator(nn.Module):
    def __init__(self, channels: int, steps: int, width: int):
        super().__init__()
        layers, c = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)], width
        for i in range(1, steps):
            out = width * 2 ** min(3, i)
            layers += [nn.Conv2d(c, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            c = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class PlainDCGAN(nn.Module):
    """The PyTorch DCGAN tutorial's networks for 4 * 2**k square images: generator Linear -> (8w, 4, 4),
    transposed convolutions with batch norm and ReLU, a 3x3 convolution and tanh; discriminator strided
    4x4 convolutions with LeakyReLU (batch norm after all but the first), a Linear to one logit."""

    def __init__(self, channels: int, size: int, latent_dim: int, width: int):
        super().__init__()
        steps = round(math.log2(size // 4))
        if size != 4 * 2 ** steps or steps < 2:
            raise ValueError(f"PlainDCGAN takes 16x16, 32x32, 64x64, ... images, got {size}")
        self.generator = PlainGenerator(channels, steps, latent_dim, width)
        self.discriminator = PlainDiscriminator(channels, steps, width)


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# -- the models and their plain twins -------------------------------------------------------------------------

@dataclass
class Subject:
    """One model of the benchmark: fastgen's, its plain twin (fastgen's weights copied in), a batch, and
    for each provider the loss function(s) of one step."""

    name: str
    batch: int
    shape: str
    fastgen: nn.Module
    plain: nn.Module
    x: torch.Tensor
    gan: bool = False
    z: tuple[torch.Tensor, torch.Tensor] | None = None
    extras: dict = field(default_factory=dict)


def copy_weights(src: nn.Module, dst: nn.Module, rename: Callable[[str], str] = lambda name: name) -> None:
    """dst's parameters (and batch-norm statistics) from src's of the same (renamed) name; every
    parameter of either model is used exactly once, or this raises. Masks are left alone: each model
    builds its own, and the loss check compares them."""
    source = dict(src.named_parameters()) | dict(src.named_buffers())
    params = {name for name, _ in src.named_parameters()}
    used = set()
    with torch.no_grad():
        for name, tensor in list(dst.named_parameters()) + list(dst.named_buffers()):
            if name.endswith("mask"):
                continue
            key = rename(name)
            if key not in source:
                raise AssertionError(f"plain {name} ({key}) has no fastgen counterpart")
            if source[key].numel() != tensor.numel():
                raise AssertionError(f"plain {name} {tuple(tensor.shape)} vs fastgen {key} {tuple(source[key].shape)}")
            tensor.copy_(source[key].reshape(tensor.shape))
            used.add(key)
    if params - used:
        raise AssertionError(f"fastgen parameters without a plain counterpart: {sorted(params - used)[:5]}")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, quick: bool, device: torch.device) -> Subject:
    """fastgen's model at the benchmark's size (tiny with ``quick``), its plain twin and a fixed batch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name in ("PixelCNN", "GatedPixelCNN"):
        size, batch, width = (8, 4, 16) if quick else (28, 32, 128)
        if name == "PixelCNN":
            fg = PixelCNN(1, 2, size, hidden_channels=width, n_layers=2 if quick else 12)
            plain = PlainPixelCNN(2, width, len(fg.blocks), fg.blocks[0].conv.kernel_size, fg.head[1].out_channels)
        else:
            fg = GatedPixelCNN(1, 2, size, hidden_channels=width, n_layers=2 if quick else 10)
            plain = PlainGatedPixelCNN(2, width, len(fg.layers), 2 * fg.layers[0].v_conv.pad + 1,
                                       fg.head[1].out_channels)
        copy_weights(fg, plain)
        x = torch.randint(0, 2, (batch, 1, size, size), generator=g)
        shape = f"1x{size}x{size} levels=2"
    elif name == "PixelCNNpp":
        size, batch = (8, 2) if quick else (32, 16)
        fg = PixelCNNpp(3, 256, size, nr_resnet=1 if quick else 2, nr_filters=8 if quick else 64,
                        nr_mix=3 if quick else 10)
        plain = PlainPixelCNNpp(3, 256, fg.nr_resnet, fg.nr_filters, fg.nr_mix, fg.config()["dropout"])
        copy_weights(fg, plain, fastgen_pixelcnnpp_name)
        x = torch.randint(0, 256, (batch, 3, size, size), generator=g)
        shape = f"3x{size}x{size} levels=256"
    elif name == "VAE":
        size, batch = (8, 8) if quick else (28, 128)
        fg = VAE(1, 256, size, arch="conv", likelihood="categorical", **(
            dict(latent_dim=4, hidden=32, channels=4) if quick else {}))
        cfg = fg.config()
        plain = PlainConvVAE(256, size, cfg["latent_dim"], cfg["hidden"], cfg["channels"])
        copy_weights(fg, plain, lambda n: n.replace("encoder.", "encoder.body.").replace("decoder.", "decoder.body."))
        x = torch.randint(0, 256, (batch, 1, size, size), generator=g)
        shape = f"1x{size}x{size} levels=256"
    elif name == "DCGAN":
        size, batch = (16, 4) if quick else (32, 64)
        fg = DCGAN(3, 256, size, **(dict(latent_dim=8, width=8) if quick else {}))
        cfg = fg.config()
        plain = PlainDCGAN(3, size, cfg["latent_dim"], cfg["width"])
        copy_weights(fg, plain)
        x = torch.randint(0, 256, (batch, 3, size, size), generator=g)
        shape = f"3x{size}x{size} levels=256"
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    # Same layers, same sizes: a drift between the two fails here, not in a silently unfair table.
    assert count(plain) == count(fg), f"{name}: plain has {count(plain)} parameters, fastgen {count(fg)}"
    assert len(list(plain.parameters())) == len(list(fg.parameters())), f"{name}: parameter tensors differ"
    subject = Subject(name, batch, shape, fg.to(device).train(), plain.to(device).train(), x.to(device))
    if name == "DCGAN":
        subject.gan = True
        subject.z = tuple(torch.randn(batch, cfg["latent_dim"], generator=g).to(device) for _ in range(2))
    return subject


# -- the loss of one step, per provider -------------------------------------------------------------------------
# Likelihood models: loss(x) -> scalar. DCGAN: (d_loss(x, z), g_loss(z)).

def plain_loss(subject: Subject, model: nn.Module) -> Callable | tuple[Callable, Callable]:
    if subject.name in ("PixelCNN", "GatedPixelCNN"):
        def loss(x: torch.Tensor) -> torch.Tensor:
            return categorical_loss(model(x), x)
    elif subject.name == "PixelCNNpp":
        def loss(x: torch.Tensor) -> torch.Tensor:
            x_unit = encode(x, model.levels)
            return logistic_mixture_nll(x_unit, model(x_unit), model.nr_mix, model.levels)
    elif subject.name == "VAE":
        def loss(x: torch.Tensor) -> torch.Tensor:
            return vae_loss(*model(x), x)
    else:
        G, D = model.generator, model.discriminator

        def d_loss(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            real = encode(x, 256)
            with torch.no_grad():
                fake = G(z)
            return bce(D(real), 1.0) + bce(D(fake), 0.0)

        def g_loss(z: torch.Tensor) -> torch.Tensor:
            return bce(D(G(z)), 1.0)
        return d_loss, g_loss
    return loss


def fastgen_loss(subject: Subject, model: nn.Module) -> Callable | tuple[Callable, Callable]:
    if not subject.gan:
        return model.loss
    G, D, kind = model.generator, model.discriminator, model.loss_kind

    def d_loss(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # GANTrainer.train_step's order
        real = model.to_unit(x)
        with torch.no_grad():
            fake = G(z)
        return gan_loss(D(real), D(fake), kind=kind)

    def g_loss(z: torch.Tensor) -> torch.Tensor:
        return gan_loss(None, D(G(z)), kind=kind, target="generator")
    return d_loss, g_loss


# -- one step ---------------------------------------------------------------------------------------------------

def likelihood_step(model: nn.Module, loss_fn: Callable, x: torch.Tensor, amp: bool,
                    device: torch.device) -> Callable[[], torch.Tensor]:
    """Trainer._train_step without its bookkeeping: the loss (autocast), zero_grad, backward, clip, Adam."""
    config = TrainConfig()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    params = list(model.parameters())

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Like the trainer: only the parameters that took part (the last gated layer's h_out never does).
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], config.grad_clip)
        opt.step()
        return loss.detach()

    # Frees the gradients before a memory measurement, so that the peak counts the new ones.
    step.release = lambda: opt.zero_grad(set_to_none=True)
    return step


def gan_step(model: nn.Module, losses: tuple[Callable, Callable], x: torch.Tensor, z: tuple[torch.Tensor, ...],
             amp: bool, device: torch.device) -> Callable[[], torch.Tensor]:
    """GANTrainer.train_step without its bookkeeping: a discriminator update, then a generator update
    with the discriminator frozen (n_critic=1, no gradient penalty)."""
    config = GANTrainConfig()
    G, D = model.generator, model.discriminator
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_generator, betas=config.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_discriminator, betas=config.betas)
    d_loss_fn, g_loss_fn = losses

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            d_loss = d_loss_fn(x, z[0])
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)  # the generator's step needs no discriminator gradients
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                g_loss = g_loss_fn(z[1])
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        finally:
            D.requires_grad_(True)
        return torch.stack([d_loss.detach(), g_loss.detach()])

    def release() -> None:
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)

    step.release = release
    return step


def make_step(subject: Subject, model: nn.Module, losses: Callable | tuple, amp: bool,
              device: torch.device) -> Callable[[], torch.Tensor]:
    if subject.gan:
        return gan_step(model, losses, subject.x, subject.z, amp, device)
    return likelihood_step(model, losses, subject.x, amp, device)


# -- the fairness check -----------------------------------------------------------------------------------------

def _losses_and_grad_norms(subject: Subject, model: nn.Module, losses: Callable | tuple) -> list[float]:
    """The step's loss(es) and pre-clipping gradient norm(s) in float32, without an update."""
    torch.manual_seed(0)  # the same dropout masks and VAE noise for both models
    out = []
    if subject.gan:
        d_loss_fn, g_loss_fn = losses
        parts = [(d_loss_fn(subject.x, subject.z[0]), model.discriminator),
                 (g_loss_fn(subject.z[1]), model.generator)]
    else:
        parts = [(losses(subject.x), model)]
    for loss, net in parts:
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        out += [loss.item(), float(torch.nn.utils.get_total_norm(grads))]
    model.zero_grad(set_to_none=True)
    return out


@contextlib.contextmanager
def _true_float32():
    """TF32 off (a GPU would otherwise round cuDNN's and the kernels' products to 10 bits, differently)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def check_same_loss(subject: Subject) -> tuple[float, str]:
    """plain and fastgen on the same batch from the same weights: (max relative loss difference, a line
    to print). Raises when they differ by more than float32 rounding. Runs on copies: the batch-norm
    statistics the forward passes update stay as they were."""
    fg, plain = copy.deepcopy(subject.fastgen), copy.deepcopy(subject.plain)
    with _true_float32():
        a = _losses_and_grad_norms(subject, plain, plain_loss(subject, plain))
        b = _losses_and_grad_norms(subject, fg, fastgen_loss(subject, fg))
    rel = [abs(p - q) / max(abs(q), 1e-12) for p, q in zip(a, b)]
    loss_rel, grad_rel = max(rel[0::2]), max(rel[1::2])
    diff = max(abs(p - q) for p, q in zip(a[0::2], b[0::2]))
    line = (f"  {subject.name}: loss plain {' / '.join(f'{v:.7f}' for v in a[0::2])}, fastgen "
            f"{' / '.join(f'{v:.7f}' for v in b[0::2])}: max |diff| {diff:.2e} (relative {loss_rel:.1e}); "
            f"gradient norm relative diff {grad_rel:.1e}")
    if not (loss_rel <= LOSS_RTOL and grad_rel <= GRAD_RTOL):
        raise AssertionError(f"plain and fastgen {subject.name} disagree beyond float32 rounding:\n{line}")
    return loss_rel, line


# -- timing -----------------------------------------------------------------------------------------------------

@dataclass
class Provider:
    name: str
    step: Callable[[], torch.Tensor]
    compile_s: float | None = None
    note: str = ""
    failed: bool = False
    times: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def providers(subject: Subject, names: tuple[str, ...], amp: bool, device: torch.device) -> list[Provider]:
    """Each provider's step on its own copy of the initial weights (so none trains another's)."""
    out = []
    for name in names:
        if name == "fastgen":
            model = copy.deepcopy(subject.fastgen)
            out.append(Provider(name, make_step(subject, model, fastgen_loss(subject, model), amp, device)))
            continue
        model = copy.deepcopy(subject.plain)
        losses = plain_loss(subject, model)
        if name == "compiled":
            losses = tuple(map(torch.compile, losses)) if subject.gan else torch.compile(losses)
        out.append(Provider(name, make_step(subject, model, losses, amp, device)))
    return out


def measure(subject: Subject, names: tuple[str, ...], mode: str, repeats: int, loss_diff: float,
            device: torch.device) -> list[dict]:
    runs = providers(subject, names, mode == "amp", device)
    for p in runs:
        for i in range(WARMUP):
            _sync(device)
            start = time.perf_counter()
            try:
                p.step()
            except Exception as e:  # noqa: BLE001 (a compiler failure is a result, not a crash)
                if p.name != "compiled":
                    raise
                first_line = (str(e).splitlines() or [""])[0][:160]
                p.failed, p.note = True, f"compile failed: {type(e).__name__}: {first_line}"
                break
            _sync(device)
            if i == 0 and p.name == "compiled":
                p.compile_s = time.perf_counter() - start
    live = [p for p in runs if not p.failed]
    for _ in range(repeats):  # interleaved, so drift of the machine hits every provider alike
        for p in live:
            _sync(device)
            start = time.perf_counter()
            p.step()
            _sync(device)
            p.times.append((time.perf_counter() - start) * 1e3)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"model": subject.name, "mode": mode, "batch": subject.batch, "shape": subject.shape,
              "params": count(subject.fastgen), "loss_rel_diff": f"{loss_diff:.2e}", "device": device_name(device),
              "torch": torch.__version__, "commit": git_commit(), "date": stamp}
    ops = ", ".join(f"{op}: {implementations()[op][device.type.upper()]}" for op in KEY_OPS[subject.name])
    rows = []
    for p in runs:
        row = {**common, "provider": p.name, "note": ops if p.name == "fastgen" else p.note,
               "compile_s": "" if p.compile_s is None else round(p.compile_s, 2)}
        if p.failed:
            row.update(median_ms="nan", p20_ms="nan", p80_ms="nan", images_per_s="nan", peak_mem_mb="nan")
        else:
            row.update(**timing_ms(p.times, 3), images_per_s=round(subject.batch / statistics.median(p.times) * 1e3, 1),
                       peak_mem_mb=round(peak_memory_mb(p.step, device), 2))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Medians, images per second and the ratios: fastgen's speed-up over plain and over torch.compile
    (> 1: fastgen is faster), its peak memory against plain's."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["mode"], int(r["batch"])), {})[r["provider"]] = r

    def num(by: dict, provider: str, key: str) -> float:
        try:
            return float(by[provider][key])
        except (KeyError, ValueError):
            return math.nan

    def shown(value: float, digits: int = 1, suffix: str = "") -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}{suffix}"

    lines = ["| model | mode | batch | plain ms | compiled ms | fastgen ms | fastgen img/s | vs plain | vs compiled "
             "| compile s | peak MB plain | peak MB fastgen | mem vs plain |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for (model, mode, batch), by in groups.items():
        ms = {p: num(by, p, "median_ms") for p in PROVIDERS}
        peak_plain, peak_fg = num(by, "plain", "peak_mem_mb"), num(by, "fastgen", "peak_mem_mb")
        mem = peak_fg / peak_plain if peak_plain > 0 else math.nan
        cells = [shown(ms["plain"]), shown(ms["compiled"]), shown(ms["fastgen"]),
                 shown(num(by, "fastgen", "images_per_s"), 0), shown(ms["plain"] / ms["fastgen"], 2, "x"),
                 shown(ms["compiled"] / ms["fastgen"], 2, "x"), shown(num(by, "compiled", "compile_s")),
                 shown(peak_plain), shown(peak_fg), shown(mem, 2, "x")]
        lines.append(f"| {model} | {mode} | {batch} | " + " | ".join(cells) + " |")
        if by.get("compiled", {}).get("note"):
            notes.append(f"{model} {mode} compiled: {by['compiled']['note']}")
    first = rows[0]
    header = (f"{first['device']}, torch {first['torch']}, commit {first['commit']}, {first['date'][:10]}; "
              "median of interleaved training steps; compile s: torch.compile's first step")
    return "\n".join([header, "", *lines, *([""] + notes if notes else [])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, action="append", help="model to run (repeatable; default: all)")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list from {PROVIDERS}")
    # Fewer than about 10 repeats let one slow stretch of a noisy machine move a median by 30%.
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per provider (default 11; quick 3)")
    parser.add_argument("--amp", action="store_true", help="also time every step under bfloat16 autocast")
    parser.add_argument("--quick", action="store_true", help="tiny models: checks the script, not the speed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="CSV to append to (default: bench/results/train/<device>.csv)")
    parser.add_argument("--markdown", action="store_true", help="print the latest run in --out as a table and exit")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    out = args.out or os.path.join(RESULTS_DIR, f"{device_slug(device)}.csv")
    if args.markdown:
        return print_latest_table(parser, out, "training-step", table)
    names = tuple(p for p in args.providers.split(",") if p)
    for p in names:
        if p not in PROVIDERS:
            parser.error(f"--providers: unknown provider {p!r}; expected some of {PROVIDERS}")
    repeats = args.repeats or (3 if args.quick else 11)
    if repeats < 1:
        parser.error("--repeats must be positive")
    modes = MODES if args.amp else MODES[:1]

    rows = []
    print("plain vs fastgen, same weights and batch, float32:")
    for model_name in args.model or MODELS:
        subject = build(model_name, args.quick, device)
        loss_diff, line = check_same_loss(subject)
        print(line + f"; {count(subject.fastgen)} parameters each", flush=True)
        for mode in modes:
            new = measure(subject, names, mode, repeats, loss_diff, device)
            append_rows(out, new, COLUMNS)
            rows += new
            print(f"    {mode}: " + ", ".join(
                f"{r['provider']} {float(r['median_ms']):.1f} ms"
                + (f" (compile {r['compile_s']} s)" if r["compile_s"] != "" else "") for r in new), flush=True)
    print()
    print(table(rows))
    print(f"\nrows appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

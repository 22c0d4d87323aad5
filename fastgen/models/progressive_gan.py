"""Progressive growing of GANs (Karras et al., 2018), optionally class-conditional.

Both networks grow together from 4x4 to ``image_size``: stage s (0 .. n_stages - 1) works at
resolution r = 4 * 2**s. When stage s > 0 begins, its new blocks fade in: the generator's output
is lerp(upsample(toRGB_{s-1}(h_{s-1})), toRGB_s(h_s), alpha) and the discriminator's first features
lerp(fromRGB_{s-1}(avgpool(x)), block_s(fromRGB_s(x)), alpha), with alpha rising from 0 to 1
(the trainer's schedule, ``fastgen.train.ProgressiveTrainer``). The real images are faded the same
way (``ProgressiveGAN.training_view``), so that the discriminator never sees a sharper real image
than the generator can make.

The paper's other stabilisers are here too: the equalised learning rate (``EqualizedConv2d``,
``EqualizedLinear``: N(0, 1) weights scaled at run time by He's constant, so that Adam's
per-parameter step size is the same for every layer), pixel-wise feature normalisation after every
generator convolution (``fastgen.ops.pixel_norm``, fused with the leaky ReLU) and the minibatch
standard deviation channel before the discriminator's last block (``fastgen.ops.minibatch_stddev``).
The generator's output is linear (no tanh), as in the paper; ``sample`` clamps when quantising.

Channels per resolution r: min(max_channels, channel_base // r). The default channel_base is
16 * max_channels, the ratio of the paper's (fmap_base 8192, fmap_max 512): full width up to
16x16, then halving with every doubling of the resolution (max_channels 128, image_size 32:
128, 128, 128, 64).

Growth state: ``stage`` and ``alpha`` are plain Python numbers of the two networks (so that the
generator's state dict, which the trainer averages, holds weights only) and are mirrored in one
persistent float64 buffer of the whole model, ``growth`` = [stage, alpha], which a load re-applies.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from fastgen.models._checks import check_positive_int
from fastgen.models.gan import GAN, _logit
from fastgen.ops import minibatch_stddev, pixel_norm

HE_GAIN = math.sqrt(2.0)  # He et al. (2015): keeps the activations' variance through a ReLU-like layer
NEGATIVE_SLOPE = 0.2


class EqualizedConv2d(nn.Module):
    """A convolution with the equalised learning rate: weights drawn N(0, 1) (biases 0) and
    multiplied at run time by ``scale = gain / sqrt(fan_in)`` (fan_in = in_channels * k * k).

    The optimiser thus sees unit-variance parameters in every layer, and an adaptive optimiser's
    step (which is invariant to a parameter's scale) moves every layer's effective weights by the
    same relative amount, whatever its fan-in."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int = 0,
                 gain: float = HE_GAIN):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.padding = (in_channels, out_channels,
                                                                              kernel_size, padding)
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, padding={self.padding}, "
                f"scale={self.scale:.4g}")


class EqualizedLinear(nn.Module):
    """A linear layer with the equalised learning rate: N(0, 1) weights, zero biases, and the
    weights multiplied at run time by ``scale = gain / sqrt(in_features)`` (see ``EqualizedConv2d``)."""

    def __init__(self, in_features: int, out_features: int, *, gain: float = HE_GAIN):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scale = gain / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale:.4g}"


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def _upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor (each pixel becomes a factor x factor block)."""
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


# -- generator -------------------------------------------------------------------------------------


class GeneratorFirstBlock(nn.Module):
    """The 4x4 block: (normalised) z -> a linear layer to (C, 4, 4) -> a 3x3 convolution, each
    followed by leaky ReLU and pixel norm. The linear layer's run-time scale is He's constant like
    every other layer's (the paper's code gives it a quarter of that; pixel norm follows it, so
    only its effective learning rate differs)."""

    def __init__(self, in_features: int, channels: int):
        super().__init__()
        self.channels = channels
        self.project = EqualizedLinear(in_features, channels * 16)
        self.conv = EqualizedConv2d(channels, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.channels, 4, 4)
        x = pixel_norm(x, negative_slope=NEGATIVE_SLOPE)
        return pixel_norm(self.conv(x), negative_slope=NEGATIVE_SLOPE)


class GeneratorBlock(nn.Module):
    """A later block: nearest x2 upsampling, then two 3x3 convolutions, each followed by leaky
    ReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = EqualizedConv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(self.conv1(_upsample(x)), negative_slope=NEGATIVE_SLOPE)
        return pixel_norm(self.conv2(x), negative_slope=NEGATIVE_SLOPE)


class ProgressiveGenerator(nn.Module):
    """z (N, latent_dim) [+ labels] -> images (N, C, r, r) at the current stage's resolution r.

    ``stage`` and ``alpha`` are set by ``ProgressiveGAN.set_growth`` (plain attributes, not
    buffers: this network's state dict is averaged by the trainer's EMA)."""

    def __init__(self, latent_dim: int, channels: tuple[int, ...], out_channels: int, n_classes: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(n_classes, latent_dim) if n_classes else None
        in_features = latent_dim * (2 if n_classes else 1)
        self.blocks = nn.ModuleList([GeneratorFirstBlock(in_features, channels[0])] +
                                    [GeneratorBlock(a, b) for a, b in zip(channels, channels[1:])])
        # toRGB has gain 1 as in the paper's code: a linear output layer, nothing after it to feed.
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c, out_channels, 1, gain=1.0) for c in channels])
        self.stage, self.alpha = len(channels) - 1, 1.0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], 1)
        # The paper normalises z itself (and here the label embedding with it) onto the sphere.
        h = self.blocks[0](pixel_norm(z))
        previous = h
        for block in self.blocks[1:self.stage + 1]:
            previous, h = h, block(h)
        images = self.to_rgb[self.stage](h)
        if self.stage > 0 and self.alpha < 1.0:
            images = torch.lerp(_upsample(self.to_rgb[self.stage - 1](previous)), images, self.alpha)
        return images


# -- discriminator ---------------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    """A block at resolution r > 4: two 3x3 convolutions with leaky ReLU (the second to the next
    lower resolution's channels), then 2x2 average pooling to r / 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualizedConv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = EqualizedConv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(_lrelu(self.conv2(_lrelu(self.conv1(x)))), 2)


class DiscriminatorLastBlock(nn.Module):
    """The 4x4 block: the minibatch standard deviation channel, a 3x3 convolution and a 4x4 valid
    convolution with leaky ReLU -> features (N, C)."""

    def __init__(self, channels: int, group_size: int):
        super().__init__()
        self.group_size = group_size
        self.conv = EqualizedConv2d(channels + 1, channels, 3, padding=1)
        self.dense = EqualizedConv2d(channels, channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = minibatch_stddev(x, self.group_size)
        return _lrelu(self.dense(_lrelu(self.conv(x)))).flatten(1)


class ProgressiveDiscriminator(nn.Module):
    """images (N, C, r, r) at the current stage's resolution r [+ labels] -> logits (N,), with the
    label by projection (``_logit``'s ``head`` and ``embed``). ``stage`` and ``alpha`` as in
    ``ProgressiveGenerator``."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], n_classes: int | None = None,
                 group_size: int = 4):
        super().__init__()
        self.in_channels = in_channels
        self.from_rgb = nn.ModuleList([EqualizedConv2d(in_channels, c, 1) for c in channels])
        # blocks[s] takes resolution 4 * 2**s down to half; stage 0 has none (its 4x4 block is `last`).
        self.blocks = nn.ModuleList([nn.Identity()] +
                                    [DiscriminatorBlock(b, a) for a, b in zip(channels, channels[1:])])
        self.last = DiscriminatorLastBlock(channels[0], group_size)
        features = channels[0]
        self.head = EqualizedLinear(features, 1, gain=1.0)  # the logit is linear: gain 1, as in the paper's code
        self.embed = nn.Embedding(n_classes, features) if n_classes else None
        if self.embed is not None:
            # The projection term starts at the head's scale (1 / sqrt(features) per weight), so it
            # does not swamp the unconditional logit at initialisation.
            nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(features))
        self.stage, self.alpha = len(channels) - 1, 1.0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        r = 4 * 2 ** self.stage
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, r, r):
            raise ValueError(f"the discriminator at stage {self.stage} reads images (N, {self.in_channels}, {r}, {r}) "
                             f"(real ones through ProgressiveGAN.training_view), got {tuple(x.shape)}")
        h = _lrelu(self.from_rgb[self.stage](x))
        if self.stage > 0:
            h = self.blocks[self.stage](h)
            if self.alpha < 1.0:
                h = torch.lerp(_lrelu(self.from_rgb[self.stage - 1](F.avg_pool2d(x, 2))), h, self.alpha)
            for block in self.blocks[self.stage - 1:0:-1]:
                h = block(h)
        return _logit(self, self.last(h), labels)


# -- the model -------------------------------------------------------------------------------------


class ProgressiveGAN(GAN):
    """A progressively grown GAN (Karras et al., 2018) for square images of a power-of-two size.

    Args:
        in_channels, levels, image_size: the data; image_size a power of two >= 4.
        latent_dim: dimension of z.
        max_channels: the most channels of any block (the paper's fmap_max).
        channel_base: channels at resolution r are min(max_channels, channel_base // r) (the
            paper's fmap_base); default 16 * max_channels (full width up to 16x16).
        n_classes: class-conditional: a label embedding concatenated to z, a projection
            discriminator.
        loss: the ``gan_loss`` kind (default the paper's Wasserstein loss; the trainer adds the
            gradient penalty and the drift term).
        group_size: the minibatch standard deviation's group size.

    Attributes:
        n_stages: log2(image_size) - 1 stages, stage s at resolution 4 * 2**s.
        channels: the channels per stage.
        stage, alpha: the growth (``set_growth``); a new model is fully grown (last stage, alpha 1).
        growth: float64 buffer [stage, alpha], saved in the state dict and re-applied on load.

    ``generator`` and ``discriminator`` work at the current stage's resolution (the trainer calls
    them directly, and shows the discriminator ``training_view(real)``); ``generate``,
    ``images_from`` and ``sample`` upsample (nearest) to ``image_size``, so grids and evaluation
    always see full-size images.
    """

    def __init__(self, in_channels: int = 1, levels: int = 256, image_size: int = 32, *, latent_dim: int = 128,
                 max_channels: int = 128, channel_base: int | None = None, n_classes: int | None = None,
                 loss: str = "wasserstein", group_size: int = 4):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4 \
                or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 4 (the networks grow from 4x4 by doubling), "
                             f"got {image_size!r}")
        check_positive_int("latent_dim", latent_dim)
        check_positive_int("max_channels", max_channels)
        check_positive_int("group_size", group_size)
        if channel_base is not None:
            check_positive_int("channel_base", channel_base)
        base = 16 * max_channels if channel_base is None else channel_base
        if base < image_size:  # channel_base // image_size would be 0
            raise ValueError(f"channel_base must be at least image_size ({image_size}), so that every resolution "
                             f"has a channel (channel_base // resolution), got {base}"
                             + (" (the default, 16 x max_channels)" if channel_base is None else ""))
        super().__init__(in_channels, levels, image_size, latent_dim, n_classes, loss)
        self._config = dict(in_channels=in_channels, levels=levels, image_size=image_size, latent_dim=latent_dim,
                            max_channels=max_channels, channel_base=channel_base, n_classes=n_classes, loss=loss,
                            group_size=group_size)
        self.n_stages = int(math.log2(image_size)) - 1
        self.channels = tuple(min(max_channels, base // (4 * 2 ** s)) for s in range(self.n_stages))
        self.generator = ProgressiveGenerator(latent_dim, self.channels, in_channels, n_classes)
        self.discriminator = ProgressiveDiscriminator(in_channels, self.channels, n_classes, group_size)
        self.register_buffer("growth", torch.tensor([self.n_stages - 1, 1.0], dtype=torch.float64))
        self.register_load_state_dict_post_hook(ProgressiveGAN._apply_loaded_growth)
        self.set_growth(self.n_stages - 1, 1.0)

    # -- growth ------------------------------------------------------------------------------------

    @property
    def stage(self) -> int:
        """The current stage (resolution 4 * 2**stage); change it with ``set_growth``."""
        return self._stage

    @property
    def alpha(self) -> float:
        """The fade-in weight of the newest stage's blocks, in [0, 1] (irrelevant at stage 0)."""
        return self._alpha

    @property
    def resolution(self) -> int:
        """The current stage's resolution: what ``generator`` makes and ``discriminator`` reads."""
        return 4 * 2 ** self._stage

    def set_growth(self, stage: int, alpha: float) -> None:
        """Grow (or shrink) both networks to ``stage`` (0 .. n_stages - 1) with the newest blocks
        faded in by ``alpha`` in [0, 1]."""
        if isinstance(stage, bool) or not isinstance(stage, numbers.Integral) or not 0 <= stage < self.n_stages:
            raise ValueError(f"stage must be an integer in [0, {self.n_stages}) (this model grows from 4x4 to "
                             f"{self.image_size[0]}x{self.image_size[0]} in {self.n_stages} stages), got {stage!r}")
        # A tensor is refused: the growth steers Python control flow, and a tensor would cost a sync.
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            # NaN fails the comparison too, and so is refused here.
            raise ValueError(f"alpha must be a finite number in [0, 1] (the fade-in weight), got {alpha!r}")
        self._stage, self._alpha = int(stage), float(alpha)
        for network in (self.generator, self.discriminator):
            network.stage, network.alpha = self._stage, self._alpha
        self._write_growth()

    def _write_growth(self) -> None:
        with torch.no_grad():
            self.growth.copy_(torch.tensor([self._stage, self._alpha], dtype=torch.float64))

    def _apply_loaded_growth(self, incompatible_keys) -> None:
        """load_state_dict post-hook: the loaded ``growth`` buffer becomes the networks' growth. A
        state dict whose growth does not fit this model raises, and the previous growth is kept;
        the weights are loaded by then (torch runs post-hooks after the copy), so the model then
        holds the new weights at the old growth (``fastgen.load`` builds a new model, which a
        refused checkpoint never reaches the caller as)."""
        stage, alpha = self.growth.tolist()
        try:
            if not float(stage).is_integer():
                raise ValueError(f"stage must be an integer, got {stage}")
            self.set_growth(int(stage), alpha)
        except ValueError as e:
            self._write_growth()
            raise ValueError(f"the state dict's growth [stage, alpha] = [{stage}, {alpha}] does not fit this "
                             f"model: {e}") from None

    def _apply(self, fn, recurse: bool = True):
        # ``model.half()`` and the like would round alpha in the buffer; the growth is a pair of
        # numbers, not a weight, so it stays float64 (rewritten from the exact Python values).
        super()._apply(fn, recurse)
        if self.growth.dtype != torch.float64:
            self.growth = torch.tensor([self._stage, self._alpha], dtype=torch.float64, device=self.growth.device)
        return self

    # -- data and sampling -------------------------------------------------------------------------

    def training_view(self, real: torch.Tensor) -> torch.Tensor:
        """Full-size real images in [-1, 1] as the discriminator is shown them now: average-pooled
        to the current resolution r and, during a fade-in, lerp(upsample(avgpool to r / 2), that,
        alpha), the paper's blend of the real images."""
        size = self.image_size[0]
        if not isinstance(real, torch.Tensor) or real.dim() != 4 or tuple(real.shape[1:]) != self.shape:
            got = tuple(real.shape) if isinstance(real, torch.Tensor) else type(real).__name__
            raise ValueError(f"real must be full-size images (N, {self.in_channels}, {size}, {size}), got {got}")
        x = F.avg_pool2d(real, size // self.resolution) if self.resolution < size else real
        if self._stage > 0 and self._alpha < 1.0:
            x = torch.lerp(_upsample(F.avg_pool2d(x, 2)), x, self._alpha)
        return x

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, image_size, image_size) from latents: the current stage's output upsampled
        (nearest neighbour) to full size (differentiable)."""
        return _upsample(super().generate(z, labels), self.image_size[0] // self.resolution)

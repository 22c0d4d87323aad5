"""What every autoregressive image model in fastgen shares: input checks, conditioning,
likelihood, loss and sampling. A subclass builds its layers and implements ``logits``."""
from __future__ import annotations

from typing import Any, Union

import torch
from torch import nn

from fastgen._core import encode_levels
from fastgen.models._checks import check_images, check_labels
from fastgen.nn import MaskedConv2d
from fastgen.ops import categorical_nll
from fastgen.program import Act, CategoricalDraw, Conv, CondRef, MixtureDraw, Pointwise, SamplingProgram, Stream, Term
from fastgen.sampling import sample as sample_with_driver

# A class label tensor (N,), a spatial map (N, cond_channels, H, W), or both as a pair.
Cond = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None]


def _pair(size: int | tuple[int, int], name: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {size}")
    return int(h), int(w)


class ConditionEmbedding(nn.Module):
    """Maps a class label and/or a spatial map to an additive term of ``out_channels``: (N, out)
    for labels only, (N, out, H, W) when a map is given."""

    def __init__(self, n_classes: int | None, cond_channels: int | None, out_channels: int):
        super().__init__()
        self.embed = nn.Embedding(n_classes, out_channels) if n_classes else None
        self.project = nn.Conv2d(cond_channels, out_channels, 1, bias=False) if cond_channels else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.1)

    def forward(self, labels: torch.Tensor | None, cond_map: torch.Tensor | None) -> torch.Tensor | None:
        term = self.project(cond_map) if self.project is not None else None
        if self.embed is not None:
            emb = self.embed(labels)
            term = emb if term is None else term + emb[:, :, None, None]
        return term


class AutoregressiveImageModel(nn.Module):
    """Base of the PixelCNN family: a categorical distribution over ``levels`` values for every
    sub-pixel, each conditioned on the sub-pixels before it (raster order, then R, G, B).

    Args shared by subclasses:
        in_channels: 1 (grey) or 3 (RGB, sub-pixels in R, G, B order).
        levels: values per sub-pixel (2 for binarised data, 256 for 8-bit).
        image_size: H or (H, W) of the images the model is trained on and samples.
        n_classes: enables class conditioning on labels in [0, n_classes).
        cond_channels: enables spatial conditioning on a (N, cond_channels, H, W) map.
    """

    def __init__(self, in_channels: int, levels: int, image_size: int | tuple[int, int], n_classes: int | None,
                 cond_channels: int | None):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if not 2 <= levels <= 65536:
            raise ValueError(f"levels must be between 2 and 65536, got {levels}")
        if n_classes is not None and n_classes < 1:
            raise ValueError(f"n_classes must be positive or None, got {n_classes}")
        if cond_channels is not None and cond_channels < 1:
            raise ValueError(f"cond_channels must be positive or None, got {cond_channels}")
        self.in_channels, self.levels = in_channels, levels
        self.image_size = _pair(image_size, "image_size")
        self.n_classes, self.cond_channels = n_classes, cond_channels
        self.color_groups = in_channels

    # -- what a subclass provides ------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor arguments (a subclass stores them as ``self._config``):
        ``type(model)(**model.config())`` rebuilds the model."""
        return dict(self._config)

    def draw_inputs(self, x: torch.Tensor, cond: tuple[torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
        """The output head for every pixel, (N, C * levels, H, W) in colour order (channel
        c * levels + l): what the draw reads. ``cond`` is ``prepare_cond``'s (labels, map)."""
        raise NotImplementedError

    def sampling_program(self, cond: tuple[torch.Tensor | None, torch.Tensor | None]) -> SamplingProgram:
        """The model's cached sampler as a program (``fastgen.program``), built from its modules."""
        raise NotImplementedError(f"{type(self).__name__} has no cached sampler; use sample(cache=False)")

    @property
    def draw_node(self) -> CategoricalDraw | MixtureDraw:
        """The kind of draw that ends the model's sampling program."""
        return CategoricalDraw(src=-1)

    # -- shared --------------------------------------------------------------------------------
    def layer_conditions(self, n_layers: int, width: int) -> nn.ModuleList | None:
        """One ``ConditionEmbedding`` of ``width`` per layer, or None for an unconditional model."""
        if self.n_classes is None and self.cond_channels is None:
            return None
        return nn.ModuleList(ConditionEmbedding(self.n_classes, self.cond_channels, width) for _ in range(n_layers))

    def output_head(self, in_width: int, width: int) -> nn.Sequential:
        """ReLU, 1x1 mask-B to ``width``, ReLU, 1x1 mask-B to the C x L logits."""
        groups = self.color_groups
        return nn.Sequential(
            nn.ReLU(), MaskedConv2d(in_width, width, 1, "B", groups),
            nn.ReLU(), MaskedConv2d(width, self.in_channels * self.levels, 1, "B", groups),
        )

    # -- pieces of a sampling program --------------------------------------------------------
    def new_program(self) -> SamplingProgram:
        return SamplingProgram(self.in_channels, self.levels, *self.image_size)

    def program_head(self, program: SamplingProgram, src: int) -> None:
        """The output head (ReLU, 1x1, ReLU, 1x1) on value ``src`` and the categorical draw."""
        relu = program.value(program.values[src].channels, Stream.PIXEL)
        program.add(Pointwise(relu, src, Act.RELU))
        hidden = program.value(self.head[1].out_channels, Stream.PIXEL)
        program.add(Conv(hidden, [masked_term(relu, self.head[1])], act=Act.RELU))
        logits = program.value(self.head[3].out_channels, Stream.PIXEL)
        program.add(Conv(logits, [masked_term(hidden, self.head[3])]))
        program.add(CategoricalDraw(logits))

    def program_conds(self, program: SamplingProgram, cond: tuple[torch.Tensor | None, torch.Tensor | None],
                      count: int) -> list[CondRef | None]:
        """Each of ``count`` layers' conditioning term registered in ``program`` channels-last,
        (N, 1, 1, K) for class labels only, (N, H, W, K) with a map; Nones for an unconditional model."""
        if self.cond is None:
            return [None] * count
        labels, cond_map = cond
        refs = []
        for embed in self.cond:
            t = embed(labels, cond_map).detach()
            refs.append(program.cond((t[:, None, None, :] if t.dim() == 2 else t.permute(0, 2, 3, 1)).contiguous()))
        return refs

    def head_to_logits(self, out: torch.Tensor) -> torch.Tensor:
        """A head's (N, C*L, H, W) output, colour-group order (channel c * L + l), viewed as
        (N, L, C, H, W) without a copy."""
        n, _, height, width = out.shape
        return out.view(n, self.in_channels, self.levels, height, width).transpose(1, 2)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """The sampling noise per image: one uniform number per sub-pixel, (C, H, W)."""
        return (self.in_channels, *self.image_size)

    @property
    def dims(self) -> int:
        """Sub-pixels per image (the 'dim' of bits/dim)."""
        return self.in_channels * self.image_size[0] * self.image_size[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Levels 0..L-1 to network inputs in [-1, 1]."""
        return encode_levels(x, self.levels, next(self.parameters()).dtype)

    def check_images(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate integer images (N, C, H, W) in [0, levels); returns them as int64."""
        return check_images(x, (self.in_channels, *self.image_size), self.levels, name)

    def split_cond(self, cond: Cond, n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Validate ``cond`` for a batch of n and return (labels or None, cond_map or None)."""
        labels = cond_map = None
        if isinstance(cond, (tuple, list)):
            if len(cond) != 2:
                raise ValueError("cond given as a sequence must be the pair (labels, cond_map)")
            labels, cond_map = cond
        elif isinstance(cond, torch.Tensor):
            cond_map, labels = (cond, None) if cond.is_floating_point() else (None, cond)
        elif cond is not None:
            raise TypeError(f"cond must be labels (N,), a map (N, C, H, W), a pair of them or None, "
                            f"got {type(cond).__name__}")
        if self.cond_channels is None and cond_map is not None:
            raise ValueError("cond has a spatial map but the model was built without cond_channels")
        labels = check_labels(labels, n, self.n_classes)
        if self.cond_channels is not None:
            want = (n, self.cond_channels, *self.image_size)
            if cond_map is None:
                raise ValueError(f"this model is spatially conditioned: pass a cond map of shape {want}")
            if tuple(cond_map.shape) != want:
                raise ValueError(f"cond map must have shape {want}, got {tuple(cond_map.shape)}")
            cond_map = cond_map.to(next(self.parameters()).dtype)
        return labels, cond_map

    def prepare_cond(self, cond: Cond, n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``split_cond`` for the sampling driver."""
        return self.split_cond(cond, n)

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None, cond_map: torch.Tensor | None) -> torch.Tensor:
        """Logits (N, levels, C, H, W) of validated images ``x``."""
        return self.head_to_logits(self.draw_inputs(x, (labels, cond_map)))

    def forward(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Logits (N, levels, C, H, W) of every sub-pixel given the ones before it."""
        x = self.check_images(x)
        return self.logits(x, *self.split_cond(cond, x.shape[0]))

    def log_prob(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Exact log-likelihood of each image in nats, (N,)."""
        x = self.check_images(x)
        return -categorical_nll(self.logits(x, *self.split_cond(cond, x.shape[0])), x)

    def loss(self, x: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per sub-pixel (divide by ln 2 for bits/dim)."""
        return -self.log_prob(x, cond).mean() / self.dims

    def sample(self, n: int, cond: Cond = None, *, partial: tuple[torch.Tensor, torch.Tensor] | None = None,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
               cache: bool = True) -> torch.Tensor:
        """Draw n images (n, C, H, W) int64 (``fastgen.sampling.sample``, which every model shares).

        Args:
            cond: labels (n,) and/or a map, as for ``forward``; required by conditional models.
            partial: (image, known) to complete images: sub-pixels where ``known`` is True keep
                the values of ``image`` (n, C, H, W); the rest are sampled given them.
            noise: pre-drawn uniform [0, 1) noise of shape (n, *noise_shape) (see
                ``fastgen.sampling``); the same noise gives the same images.
            generator: where noise is drawn from when not given (on the CPU, up front).
            cache: the cached incremental sampler (``sampling_program``, run by
                ``fastgen.ops.sample_program``: about one forward pass of work per image); False
                runs the naive sampler (one forward pass per sub-pixel). Both draw the same images
                from the same noise.
        """
        return sample_with_driver(self, n, cond, partial=partial, noise=noise, generator=generator, cache=cache)


def masked_term(src: int, conv: MaskedConv2d) -> Term:
    """A masked k x k convolution as a program term: its rows down to the output row (the rows
    below are masked), the output row at kernel row k // 2."""
    p = conv.kernel_size // 2
    return Term(src, conv.masked_weight()[:, :, : p + 1], conv.bias, top=p, left=p)


def check_hidden(hidden: int, multiple: int, name: str = "hidden_channels") -> None:
    if hidden < 1 or hidden % multiple:
        raise ValueError(f"{name} must be a positive multiple of {multiple} (colour groups"
                         f"{' x 2' if multiple % 2 == 0 else ''}), got {hidden}")


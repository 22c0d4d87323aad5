"""PixelCNN++ weights from the two reference codes, as a ``fastgen.models.PixelCNNpp``.

fastgen's PixelCNN++ is the network of both codes, layer for layer: the same two causal streams
(``u_init``, ``ul_init`` and their shifts), ``nr_resnet`` gated resnets per resolution on the way
up and ``nr_resnet``, ``nr_resnet + 1``, ``nr_resnet + 1`` on the way down, the same shortcut
wiring (``u`` from the up pass; ``cat(u, ul)`` into the ``ul`` stream), concat_elu, a channel of
ones appended to the [-1, 1] input, and ``nin(elu(ul))`` in the mixture layout of
``fastgen.ops.dmol_nll``. So a converted model needs no switch: ``weight_norm=True`` and the
constructor arguments read from the weights' shapes (``nr_resnet``, ``nr_filters``, ``nr_mix``,
colour channels, classes) rebuild it.

Sources:

- ``"pclucas14"``: github.com/pclucas14/pixel-cnn-pp, a ``state_dict`` of its ``PixelCNN``
  (``torch.nn.utils.weight_norm`` layers: ``<layer>.weight_g``, ``.weight_v``, ``.bias``; names
  such as ``up_layers.0.ul_stream.2.nin_skip.lin_a.weight_v``), or the ``.pth`` file holding one.
  Its ``g`` and ``v`` are copied as they are.
- ``"openai"``: github.com/openai/pixel-cnn, a TensorFlow checkpoint (read by
  ``fastgen.interop.read_tf_checkpoint``, no TensorFlow needed) or a dict of its variables:
  ``model/conv2d_<k>/{V,g,b}``, ``model/deconv2d_<k>/{V,g,b}``, ``model/dense_<k>/{V,g,b}`` and
  ``model/conditional_weights_<k>/hw``, numbered in the order the network creates them. Kernels
  are transposed from TensorFlow's layouts; the transposed convolutions, which TensorFlow
  normalises per output channel and torch's ``weight_norm`` per input channel, are folded into
  their effective weight (``v`` = that weight, ``g`` = its norms), which gives the same forward.
  The Polyak averages (``<name>/ExponentialMovingAverage``) are used when present, as OpenAI's
  evaluation does. Variables outside the network (optimiser slots, step counters) are ignored.

Every network tensor of the source must be used and every fastgen weight set; a missing or
unexpected name, or a shape that disagrees, is a ``ConversionError`` naming the tensor.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fastgen._core import dmol_channels
from fastgen.interop.tf_checkpoint import read_tf_checkpoint
from fastgen.models.pixelcnnpp import SCALES, GatedResnet, PixelCNNpp

SOURCES = ("pclucas14", "openai")
CONV, DENSE, DECONV, EMBED = "conv2d", "dense", "deconv2d", "conditional_weights"  # OpenAI's layer names
EMA_SUFFIX = "/ExponentialMovingAverage"
_OPENAI_VARIABLE = re.compile(rf"model/({CONV}|{DENSE}|{DECONV}|{EMBED})_(\d+)/(V|g|b|hw)")


class ConversionError(ValueError):
    """Weights that are not a PixelCNN++ of the named source, or do not fit one."""


@dataclass
class _Layer:
    """One layer of the network: its pclucas14 name, its kind, and the fastgen module it fills."""
    torch_name: str
    kind: str
    module: nn.Module


def _resnet_layers(prefix: str, block: GatedResnet) -> Iterator[_Layer]:
    # The order in which OpenAI's gated_resnet creates them: conv, shortcut nin, conv, class weights.
    yield _Layer(f"{prefix}.conv_input.conv", CONV, block.conv_input.conv)
    if block.nin_skip is not None:
        yield _Layer(f"{prefix}.nin_skip.lin_a", DENSE, block.nin_skip.conv)
    yield _Layer(f"{prefix}.conv_out.conv", CONV, block.conv_out.conv)
    if block.embed is not None:
        yield _Layer(f"{prefix}.embed", EMBED, block.embed)


def _layers(model: PixelCNNpp) -> Iterator[_Layer]:
    """Every layer of ``model`` in the order the forward pass first uses it (which is the order in
    which OpenAI's code creates, and so numbers, its layers)."""
    yield _Layer("u_init.conv", CONV, model.u_init.conv)
    yield _Layer("ul_init.0.conv", CONV, model.ul_init_down.conv)
    yield _Layer("ul_init.1.conv", CONV, model.ul_init_right.conv)
    for s in range(SCALES):
        for i, (block_u, block_ul) in enumerate(zip(model.up_u[s], model.up_ul[s])):
            yield from _resnet_layers(f"up_layers.{s}.u_stream.{i}", block_u)
            yield from _resnet_layers(f"up_layers.{s}.ul_stream.{i}", block_ul)
        if s < SCALES - 1:
            yield _Layer(f"downsize_u_stream.{s}.conv", CONV, model.downsize_u[s].conv)
            yield _Layer(f"downsize_ul_stream.{s}.conv", CONV, model.downsize_ul[s].conv)
    for i in range(SCALES):
        for j, (block_u, block_ul) in enumerate(zip(model.down_u[i], model.down_ul[i])):
            yield from _resnet_layers(f"down_layers.{i}.u_stream.{j}", block_u)
            yield from _resnet_layers(f"down_layers.{i}.ul_stream.{j}", block_ul)
        if i < SCALES - 1:
            yield _Layer(f"upsize_u_stream.{i}.deconv", DECONV, model.upsize_u[i].conv)
            yield _Layer(f"upsize_ul_stream.{i}.deconv", DECONV, model.upsize_ul[i].conv)
    yield _Layer("nin_out.lin_a", DENSE, model.head.conv)


def _openai_names(layers: list[_Layer]) -> list[str]:
    """``model/<kind>_<k>`` of each layer: OpenAI's code numbers each kind in creation order."""
    counters: dict[str, int] = {}
    names = []
    for layer in layers:
        names.append(f"model/{layer.kind}_{counters.get(layer.kind, 0)}")
        counters[layer.kind] = counters.get(layer.kind, 0) + 1
    return names


def _weight_shape(layer: _Layer) -> tuple[int, ...]:
    """The torch shape of the layer's (unnormalised) weight."""
    if layer.kind == EMBED:
        return tuple(layer.module.weight.shape)
    return tuple(layer.module.parametrizations.weight.original1.shape)


def _norms(weight: torch.Tensor) -> torch.Tensor:
    """Norm of each slice along dim 0 (torch's ``weight_norm`` axis), shaped for broadcasting."""
    return weight.flatten(1).norm(dim=1).reshape(-1, *([1] * (weight.dim() - 1)))


class _Source:
    """The tensors of one source, handed out once each, with shape checks that name them."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], what: str):
        self.tensors, self.what, self.used = dict(tensors), what, set()

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.tensors:
            raise ConversionError(f"{self.what}: {name} is missing (expected shape {list(shape)})")
        tensor = self.tensors[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ConversionError(f"{self.what}: {name} must be a floating-point tensor, got "
                                  f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
        if tuple(tensor.shape) != tuple(shape):
            raise ConversionError(f"{self.what}: {name} has shape {list(tensor.shape)}, expected {list(shape)} "
                                  "for the network its other tensors describe")
        if not torch.isfinite(tensor).all():
            raise ConversionError(f"{self.what}: {name} holds NaN or infinite values")
        self.used.add(name)
        return tensor.detach().to("cpu", torch.float32)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def check_all_used(self, names: set[str]) -> None:
        unused = sorted(names - self.used)
        if unused:
            more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
            raise ConversionError(f"{self.what}: {', '.join(unused[:3])}{more} not used: not part of a PixelCNN++ of "
                                  "the size the other tensors describe")


# -- pclucas14/pixel-cnn-pp -------------------------------------------------------------------------
def _pclucas14_weight(source: _Source, layer: _Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight or v, g or None) in torch's layout: a weight-normalised layer gives (v, g), a plain
    convolution (pclucas14's ``norm=None``) its weight."""
    target = _weight_shape(layer)
    shape = target[:2] if layer.kind == DENSE else target  # nn.Linear: (out, in), g (out, 1)
    name = layer.torch_name
    if not source.has(f"{name}.weight_v") and source.has(f"{name}.weight"):
        return source.take(f"{name}.weight", shape).reshape(target), None
    v = source.take(f"{name}.weight_v", shape)
    g = source.take(f"{name}.weight_g", (shape[0],) + (1,) * (len(shape) - 1))
    return v.reshape(target), g.reshape(-1, *([1] * (len(target) - 1)))


def _pclucas14_config(source: _Source) -> dict:
    tensors = source.tensors
    first = next((tensors[k] for k in ("u_init.conv.weight_v", "u_init.conv.weight") if k in tensors), None)
    head = next((tensors[k] for k in ("nin_out.lin_a.weight_v", "nin_out.lin_a.weight") if k in tensors), None)
    if not (isinstance(first, torch.Tensor) and isinstance(head, torch.Tensor)) or first.dim() != 4 \
            or head.dim() != 2:
        raise ConversionError(f"{source.what}: not a pclucas14 PixelCNN++ state_dict (expected u_init.conv.weight_v "
                              "(F, C + 1, 2, 3) and nin_out.lin_a.weight_v (K, F))")
    nr_resnet = 0
    while any(f"up_layers.0.u_stream.{nr_resnet}.conv_input.conv.{p}" in tensors for p in ("weight_v", "weight")):
        nr_resnet += 1
    return _config(source.what, first.shape[1] - 1, first.shape[0], nr_resnet, head.shape[0], None)


def _load_pclucas14(source: _Source, model: PixelCNNpp) -> dict[int, tuple]:
    weights = {}
    for layer in _layers(model):
        weight, g = _pclucas14_weight(source, layer)
        bias = source.take(f"{layer.torch_name}.bias", (layer.module.bias.shape[0],))
        weights[id(layer.module)] = (weight, g, bias)
    source.check_all_used(set(source.tensors))
    return weights


# -- openai/pixel-cnn --------------------------------------------------------------------------------
def _openai_network(tensors: Mapping[str, torch.Tensor], what: str, ema: bool | None) -> _Source:
    """The network's variables (their Polyak averages if ``ema``; None: if the checkpoint has them)."""
    names = [n for n in tensors if _OPENAI_VARIABLE.fullmatch(n)]
    if not names:
        raise ConversionError(f"{what}: not an openai/pixel-cnn checkpoint (no model/conv2d_<k>/V variables)")
    averaged = [n for n in names if n + EMA_SUFFIX in tensors]
    if ema is None:
        ema = bool(averaged)
    if ema and len(averaged) < len(names):
        missing = sorted(set(names) - set(averaged))[0]
        raise ConversionError(f"{what}: {missing}{EMA_SUFFIX} is missing (ema=True needs the average of every "
                              "variable; ema=False takes the trained values)")
    return _Source({n: tensors[n + EMA_SUFFIX] if ema else tensors[n] for n in names},
                   f"{what} ({'Polyak averages' if ema else 'trained values'})")


def _openai_config(source: _Source) -> dict:
    tensors = {n: t for n, t in source.tensors.items() if isinstance(t, torch.Tensor)}  # the rest fail in take
    first, convs = tensors.get(f"model/{CONV}_0/V"), {n for n in tensors if n.startswith(f"model/{CONV}_")}
    dense = max((int(m.group(2)) for n in tensors if (m := _OPENAI_VARIABLE.fullmatch(n)) and m.group(1) == DENSE),
                default=None)
    if first is None or first.dim() != 4 or dense is None:
        raise ConversionError(f"{source.what}: not an openai/pixel-cnn PixelCNN++ (expected model/{CONV}_0/V "
                              f"(2, 3, C + 1, F) and model/{DENSE}_<k>/V)")
    # Each of the 12 nr_resnet + 4 gated resnets has two convolutions; 3 start the streams, 4 downsample.
    n_convs = len({n.rsplit("/", 1)[0] for n in convs})
    nr_resnet, rest = divmod(n_convs - 15, 24)
    if rest or nr_resnet < 1:
        raise ConversionError(f"{source.what}: {n_convs} convolutions (model/{CONV}_<k>), but a PixelCNN++ has "
                              "24 nr_resnet + 15")
    head = tensors.get(f"model/{DENSE}_{dense}/V")  # the output layer is created last
    classes = tensors.get(f"model/{EMBED}_0/hw")
    return _config(source.what, first.shape[2] - 1, first.shape[3], nr_resnet,
                   head.shape[1] if head is not None and head.dim() == 2 else -1,
                   classes.shape[0] if classes is not None and classes.dim() == 2 else None)


def _load_openai(source: _Source, model: PixelCNNpp) -> dict[int, tuple]:
    weights = {}
    layers = list(_layers(model))
    for layer, name in zip(layers, _openai_names(layers)):
        shape = _weight_shape(layer)
        if layer.kind == EMBED:  # h (one-hot class) @ hw is an embedding lookup
            weights[id(layer.module)] = (source.take(f"{name}/hw", shape), None, None)
            continue
        if layer.kind == DENSE:  # [in, out] -> (out, in, 1, 1)
            v = source.take(f"{name}/V", (shape[1], shape[0])).t()[:, :, None, None]
        else:  # conv [kh, kw, in, out] -> (out, in, kh, kw); deconv [kh, kw, out, in] -> (in, out, kh, kw)
            v = source.take(f"{name}/V", (shape[2], shape[3], shape[1], shape[0])).permute(3, 2, 0, 1)
        out = shape[1] if layer.kind == DECONV else shape[0]
        g, bias = source.take(f"{name}/g", (out,)), source.take(f"{name}/b", (out,))
        if layer.kind == DECONV:
            # TensorFlow normalises per output channel (torch's dim 1): fold into the effective weight, in
            # float64 so that only the final rounding to float32 differs from TensorFlow's own product.
            per_output = v.double().transpose(0, 1)
            weight = (per_output * (g.double().reshape(-1, 1, 1, 1) / _norms(per_output))).transpose(0, 1)
            weights[id(layer.module)] = (weight.contiguous(), None, bias)
        else:
            weights[id(layer.module)] = (v.contiguous(), g.reshape(-1, 1, 1, 1), bias)
    source.check_all_used(set(source.tensors))
    return weights


# -- both ------------------------------------------------------------------------------------------
def _config(what: str, channels: int, nr_filters: int, nr_resnet: int, head_channels: int,
            n_classes: int | None) -> dict:
    if channels not in (1, 3):
        raise ConversionError(f"{what}: the first convolution reads {channels + 1} channels, expected 2 (grey) or 4 "
                              "(RGB) with the channel of ones")
    per_component = dmol_channels(channels, 1)
    if head_channels < per_component or head_channels % per_component:
        raise ConversionError(f"{what}: the output layer has {head_channels} channels, expected a multiple of "
                              f"{per_component} (nr_mix components of a {channels}-channel mixture)")
    if nr_resnet < 1:
        raise ConversionError(f"{what}: no gated resnet blocks found")
    return dict(in_channels=channels, nr_filters=nr_filters, nr_resnet=nr_resnet,
                nr_mix=head_channels // per_component, n_classes=n_classes)


def _source_tensors(weights, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """(name -> tensor, a description for messages) from a path or a mapping."""
    if isinstance(weights, Mapping):
        tensors, what = dict(weights), f"the {source} weights"
    elif isinstance(weights, (str, os.PathLike)) and str(weights):
        what = os.fspath(weights)
        if source == "openai":  # the network's variables and their averages, not the optimiser's state
            tensors = read_tf_checkpoint(weights, select=lambda n: bool(_OPENAI_VARIABLE.fullmatch(
                n.removesuffix(EMA_SUFFIX))))
        else:
            try:
                tensors = torch.load(weights, map_location="cpu", weights_only=True)
            except OSError as e:
                if e.filename is not None:  # a missing or unreadable file: the OSError names it
                    raise
                raise ConversionError(f"{what}: not a readable torch state_dict file ({e.strerror or e})") from None
            except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
                # torch's message advises weights_only=False, which would run code from the file: keep only
                # what it says was refused.
                reason = next((line.strip() for line in str(e).splitlines() if line.strip().startswith("Unsupported")),
                              type(e).__name__)
                raise ConversionError(f"{what}: not a torch state_dict file that loads without running code "
                                      f"(torch.load(weights_only=True): {reason})") from None
            if not isinstance(tensors, Mapping):
                raise ConversionError(f"{what}: holds a {type(tensors).__name__}, expected a state_dict")
    else:
        raise TypeError(f"weights must be a path or a mapping of tensor names to tensors, got {type(weights).__name__}")
    if not all(isinstance(name, str) for name in tensors):
        raise ConversionError(f"{what}: tensor names must be strings")
    if source == "pclucas14" and tensors and all(name.startswith("module.") for name in tensors):
        tensors = {name.removeprefix("module."): t for name, t in tensors.items()}  # saved from nn.DataParallel
    return tensors, what


def load_pixelcnnpp(weights: str | os.PathLike | Mapping[str, torch.Tensor], *, source: str = "pclucas14",
                    levels: int = 256, image_size: int | tuple[int, int] = 32, dropout: float = 0.5,
                    ema: bool | None = None) -> PixelCNNpp:
    """A PixelCNN++ trained with ``source``'s code, as a ``fastgen.models.PixelCNNpp`` in eval mode.

    Args:
        weights: pclucas14: a state_dict or the ``.pth`` file of one; openai: the checkpoint (its
            prefix, e.g. ``params_cifar.ckpt``, or its ``.index`` file) or a dict of its variables.
        source: ``"pclucas14"`` or ``"openai"`` (see the module docstring for their layouts).
        levels, image_size: the images the model will score and sample (the weights do not say;
            both codes trained 8-bit 32x32 images).
        dropout: the rate used if the model is trained further (both codes trained with 0.5).
        ema: openai only: the Polyak averages (True), the trained values (False), or the averages
            when the checkpoint has them (None).

    Its ``forward`` gives the source network's mixture parameters for the same images (up to
    float32 rounding). Raises ``ConversionError`` (a ValueError) naming the tensor that is
    missing, unexpected or of the wrong shape.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if ema is not None and source != "openai":
        raise ValueError(f"ema applies to source='openai' only (a {source} state_dict holds one set of weights)")
    tensors, what = _source_tensors(weights, source)
    network = _openai_network(tensors, what, ema) if source == "openai" else _Source(tensors, what)
    config = _openai_config(network) if source == "openai" else _pclucas14_config(network)

    def build() -> PixelCNNpp:
        return PixelCNNpp(config["in_channels"], levels, image_size, nr_resnet=config["nr_resnet"],
                          nr_filters=config["nr_filters"], nr_mix=config["nr_mix"], dropout=dropout,
                          n_classes=config["n_classes"], weight_norm=True)

    try:
        with torch.device("meta"):  # sizes read from one tensor must not allocate before the others agree
            needed = sum(p.numel() for p in build().parameters())
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    held = sum(t.numel() for t in network.tensors.values() if isinstance(t, torch.Tensor))
    if needed > 2 * held:  # far more than the tensors hold (a missing tensor or two is named below instead)
        raise ConversionError(f"{what}: its first and last layers describe a network of {needed:,} parameters "
                              f"(nr_filters {config['nr_filters']}, nr_resnet {config['nr_resnet']}), but its tensors "
                              f"hold {held:,} values")
    model = build()
    loaded = (_load_openai if source == "openai" else _load_pclucas14)(network, model)
    model.load_state_dict(_fastgen_state(model, loaded), strict=True)
    return model.eval()


def _fastgen_state(model: PixelCNNpp, loaded: dict[int, tuple]) -> dict[str, torch.Tensor]:
    """fastgen's state_dict from (weight or v, g or None, bias) per module: a plain weight becomes
    v = weight, g = its norms, which weight normalisation maps back to the same weight."""
    state = {}
    for name, module in model.named_modules():
        if id(module) not in loaded:
            continue
        weight, g, bias = loaded[id(module)]
        if isinstance(module, nn.Embedding):
            state[f"{name}.weight"] = weight.float()
            continue
        state[f"{name}.parametrizations.weight.original0"] = (_norms(weight) if g is None else g).float()
        state[f"{name}.parametrizations.weight.original1"] = weight.float()
        state[f"{name}.bias"] = bias.float()
    return state

"""Independent re-implementations of the two public PixelCNN++ codes whose weights fastgen converts.

Nothing here imports fastgen: these are plain functions on tensors from a dict (torch and
torch.nn.functional only), written from the sources' description, so that a converter test compares
fastgen's ``PixelCNNpp`` with a second implementation rather than with itself. Both sources are the same
network (Salimans et al. 2017): two causal streams, ``u`` (pixels above) and ``ul`` (above and to the
left), three resolutions (H, H/2, H/4), ``nr_resnet`` gated resnets per resolution on the way up,
``nr_resnet``, ``nr_resnet + 1``, ``nr_resnet + 1`` on the way down, every layer weight-normalised.
They differ in names, layouts and in one weight-norm axis.

Shared semantics (both sources)
-------------------------------
* Input: x in [-1, 1] (uint8 rescaled by (x - 127.5) / 127.5), with a channel of ones appended so that
  the zero padding of the shifted convolutions can be told from black pixels.
* ``down_shifted_conv2d`` (filter [kh, kw], default [2, 3]): zero-pad kh - 1 rows on top and
  (kw - 1) // 2 columns each side, then a VALID convolution. ``down_right_shifted_conv2d`` (default
  [2, 2]): pad kh - 1 rows on top and kw - 1 columns on the left, VALID convolution. With stride 2 they
  halve H and W.
* ``down_shift``: drop the last row, put a zero row on top; ``right_shift``: the same with columns.
* Initial streams: u = down_shift(down_shifted_conv2d(x, [2, 3])); ul = down_shift(down_shifted_conv2d(x,
  [1, 3])) + right_shift(down_right_shifted_conv2d(x, [2, 1])), each C + 1 -> nr_filters.
* ``concat_elu(x) = elu(cat([x, -x], channel axis))`` (doubles the channels).
* ``gated_resnet(x, a)``: c1 = conv(concat_elu(x)) (2F -> F); if a is given c1 += nin(concat_elu(a)) (a 1x1
  layer); c1 = concat_elu(c1); [dropout, off at evaluation]; c2 = conv(c1) (2F -> 2F); [OpenAI only: if a
  class vector h is given c2 += h @ hw, broadcast over H and W]; a, b = the two channel halves of c2;
  return x + a * sigmoid(b). ``conv`` is down_shifted_conv2d for the u stream, down_right_shifted_conv2d
  for the ul stream. The auxiliary input is: none (up pass, u), u (up pass, ul), the popped up-pass u
  (down pass, u), cat([u, popped up-pass ul]) (down pass, ul: 4F channels after concat_elu).
* Up pass: for each of the 3 resolutions, nr_resnet times {u = resnet(u); ul = resnet(ul, u)}, every
  result pushed on u_list / ul_list (after the initial streams); between resolutions one stride-2
  down_shifted_conv2d (u) and down_right_shifted_conv2d (ul), also pushed. Down pass: start from the popped
  last entries, then per resolution (nr_resnet, nr_resnet + 1, nr_resnet + 1 times) {u = resnet(u,
  u_list.pop()); ul = resnet(ul, cat([u, ul_list.pop()]))}, with a stride-2 ``down_shifted_deconv2d``
  ([2, 3]) and ``down_right_shifted_deconv2d`` ([2, 2]) between resolutions. Both lists end empty.
* Deconvolutions: a stride-2 transposed convolution whose output is [2H + kh - 1, 2W + kw - 1] (one row and
  column more than the minimal (H - 1) * 2 + kh: PyTorch's output_padding=1, TF's VALID target shape; the
  extra bottom row / right column only gets the bias), then cropped: rows [0, 2H), and columns
  [(kw - 1) // 2, 2W + (kw - 1) // 2) for the down-shifted one, [0, 2W) for the down-right one.
* Output: nin(elu(ul)) with K = 10 * nr_mix channels for RGB, laid out (channels last) as
  [mixture logits (nr_mix) | then for each colour channel c: means (nr_mix), log-scales (nr_mix),
  tanh-coefficients (nr_mix)], i.e. ``l[..., nr_mix:].reshape(..., 3, 3 * nr_mix)``; for one channel
  (pclucas14's MNIST) K = 3 * nr_mix: [logits | means | log-scales].
* Sampling (one full forward per pixel): Gumbel-max over the logits with u ~ U(1e-5, 1 - 1e-5), a
  logistic draw means + exp(max(log_scale, -7)) * (log u - log(1 - u)), clipped to [-1, 1]; RGB couples
  x1 += coeff0 * x0 and x2 += coeff1 * x0 + coeff2 * x1 (each clipped). Only pixel (row, col) is kept.

(a) pclucas14/pixel-cnn-pp (PyTorch, NCHW)
------------------------------------------
``PixelCNN(nr_resnet, nr_filters, nr_logistic_mix, input_channels=C).state_dict()``. Every conv / deconv /
Linear is wrapped in ``torch.nn.utils.weight_norm`` (old style, dim=0): each layer has ``bias``,
``weight_g`` and ``weight_v`` (in that order: the wrapper re-registers the weight after the bias) and
weight = g * v / ||v||, the norm over every dim but 0. For Conv2d dim 0 is the output channel (v
[out, in, kh, kw], g [out, 1, 1, 1]); for Linear (v [out, in], g [out, 1]); for ConvTranspose2d dim 0 is the
INPUT channel (v [in, out, kh, kw], g [in, 1, 1, 1]): its norm is per input channel. Keys, in
registration order (F = nr_filters; conv layers end in ``.conv``, deconvs in ``.deconv``, 1x1 layers are
``nin`` modules whose Linear is ``.lin_a``):

* ``down_layers.{i}`` for i = 0, 1, 2 with nr_resnet, nr_resnet + 1, nr_resnet + 1 resnets:
  ``.u_stream.{j}`` (skip_connection=1: conv_input [F, 2F, 2, 3], nin_skip [F, 2F], conv_out [2F, 2F, 2, 3])
  then ``.ul_stream.{j}`` (skip_connection=2: conv_input [F, 2F, 2, 2], nin_skip [F, 4F],
  conv_out [2F, 2F, 2, 2]); a resnet's keys are ``conv_input.conv.*``, ``nin_skip.lin_a.*``,
  ``conv_out.conv.*``.
* ``up_layers.{i}``, i = 0, 1, 2, nr_resnet resnets each: ``.u_stream.{j}`` (skip_connection=0: no
  nin_skip) then ``.ul_stream.{j}`` (skip_connection=1: nin_skip [F, 2F]).
* ``downsize_u_stream.{0,1}.conv`` [F, F, 2, 3], ``downsize_ul_stream.{0,1}.conv`` [F, F, 2, 2] (stride 2).
* ``upsize_u_stream.{0,1}.deconv`` [F, F, 2, 3], ``upsize_ul_stream.{0,1}.deconv`` [F, F, 2, 2].
* ``u_init.conv`` [F, C + 1, 2, 3], ``ul_init.0.conv`` [F, C + 1, 1, 3], ``ul_init.1.conv`` [F, C + 1, 2, 1].
* ``nin_out.lin_a`` [K, F], K = 3 * nr_mix if C == 1 else 10 * nr_mix.

(b) openai/pixel-cnn (TensorFlow 1, NHWC)
-----------------------------------------
``tf.make_template('model', model_spec)`` puts every variable under ``model/``; pixel_cnn_pp/nn.py names
each layer by a per-kind counter in CREATION order (``get_name``): ``conv2d_{k}``, ``deconv2d_{k}``,
``dense_{k}`` (every nin is a dense on the flattened pixels) and ``conditional_weights_{k}`` (only for a
class-conditional model). Variables: conv2d ``V`` [kh, kw, in, out], ``g`` [out], ``b`` [out], with
W = g * l2_normalize(V, axes [0, 1, 2]); deconv2d ``V`` [kh, kw, out, in], ``g`` [out], ``b`` [out], with
W = g * l2_normalize(V, axes [0, 1, 3]) (per OUTPUT channel, unlike pclucas14's per-input-channel norm)
and ``conv2d_transpose`` to [N, 2H + kh - 1, 2W + kw - 1, out]; dense ``V`` [in, out], ``g``, ``b``, with
y = (x @ V) * g / ||V||_axis0 + b; conditional_weights ``hw`` [n_classes, 2F], h = one_hot(label).
Creation order (Python's left-to-right evaluation included):

* conv2d_0 u init [2, 3], conv2d_1 ul init [1, 3], conv2d_2 ul init [2, 1] (C + 1 -> F).
* Each gated resnet creates conv2d (c1), then dense (its nin, if it has an auxiliary input), then conv2d
  (c2), then conditional_weights (if h is given).
* Up pass, per resolution: nr_resnet times {u resnet (2 conv2d), ul resnet (conv2d, dense [2F, F],
  conv2d)}; after the first two resolutions the stride-2 conv2d of u, then of ul.
* Down pass: nr_resnet times {u resnet (conv2d, dense [2F, F], conv2d), ul resnet (conv2d, dense [4F, F],
  conv2d)}; deconv2d of u, deconv2d of ul; nr_resnet + 1 times the same pair; two deconv2d; nr_resnet + 1
  times the pair.
* The output dense [F, 10 * nr_mix] last.
* Counts, n = nr_resnet: conv2d 24 n + 15, dense 9 n + 5, deconv2d 4, conditional_weights 12 n + 4
  (n = 5: 135, 50, 4, 64).

A training checkpoint also holds ``NAME/ExponentialMovingAverage`` for every trainable variable (train.py's
Polyak averaging, decay 0.9995, used for evaluation and sampling), and optimiser state a loader must skip:
the repository's own ``adam_updates`` creates unnamed ``tf.Variable``s (saved as ``Variable``,
``Variable_1``, ...), ``tf.train.AdamOptimizer`` would add ``NAME/Adam``, ``NAME/Adam_1``, ``beta1_power``
and ``beta2_power``, and a ``global_step`` is common. OpenAI's code is RGB only; the one-channel variant
here (a 3 * nr_mix output dense) is an extrapolation.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Random weights: the weight-norm directions v are N(0, 0.05) like both sources' initialisers, biases
# N(0, 0.1). Weight norm makes a layer's output scale g times its input's, so the gains decide whether
# activations survive ~40 residual blocks: O(1) gains everywhere except the gated output convolution
# (conv_out / c2), whose small gain keeps each block's increment small, as the sources' data-dependent
# init (init_scale=0.1) does.
_GAIN = {"main": (0.5, 1.5), "gate": (0.1, 0.3)}
_V_STD, _B_STD, _HW_STD = 0.05, 0.1, 0.1


def _uniform(shape: tuple[int, ...], lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def _weight_norm_values(kind: str, shape: tuple[int, ...], role: str, gen: torch.Generator) -> torch.Tensor:
    """One random tensor: ``kind`` is "v", "g", "b" or "hw"."""
    if kind == "v":
        return _V_STD * torch.randn(shape, generator=gen)
    if kind == "g":
        return _uniform(shape, *_GAIN[role], gen)
    if kind == "b":
        return _B_STD * torch.randn(shape, generator=gen)
    return _HW_STD * torch.randn(shape, generator=gen)


def _concat_elu(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=dim))


# ---------------------------------------------------------------------------------------------------------
# (a) pclucas14/pixel-cnn-pp
# ---------------------------------------------------------------------------------------------------------

def _pclucas14_layers(nr_resnet: int, nr_filters: int, n_out: int,
                      in_channels: int) -> list[tuple[str, str, tuple, str]]:
    """(module prefix, "conv" | "deconv" | "linear", weight_v shape, gain role), in registration order."""
    f = nr_filters
    layers: list[tuple[str, str, tuple, str]] = []

    def resnet(prefix: str, kh: int, kw: int, skip: int) -> None:
        layers.append((f"{prefix}.conv_input.conv", "conv", (f, 2 * f, kh, kw), "main"))
        if skip:
            layers.append((f"{prefix}.nin_skip.lin_a", "linear", (f, 2 * skip * f), "main"))
        layers.append((f"{prefix}.conv_out.conv", "conv", (2 * f, 2 * f, kh, kw), "gate"))

    # PixelCNN.__init__ registers down_layers before up_layers.
    for i, n in enumerate([nr_resnet, nr_resnet + 1, nr_resnet + 1]):
        for j in range(n):
            resnet(f"down_layers.{i}.u_stream.{j}", 2, 3, 1)
        for j in range(n):
            resnet(f"down_layers.{i}.ul_stream.{j}", 2, 2, 2)
    for i in range(3):
        for j in range(nr_resnet):
            resnet(f"up_layers.{i}.u_stream.{j}", 2, 3, 0)
        for j in range(nr_resnet):
            resnet(f"up_layers.{i}.ul_stream.{j}", 2, 2, 1)
    for stream, kw in (("u", 3), ("ul", 2)):
        for i in range(2):
            layers.append((f"downsize_{stream}_stream.{i}.conv", "conv", (f, f, 2, kw), "main"))
    for stream, kw in (("u", 3), ("ul", 2)):
        for i in range(2):
            # ConvTranspose2d weights are [in, out, kh, kw].
            layers.append((f"upsize_{stream}_stream.{i}.deconv", "deconv", (f, f, 2, kw), "main"))
    layers.append(("u_init.conv", "conv", (f, in_channels + 1, 2, 3), "main"))
    layers.append(("ul_init.0.conv", "conv", (f, in_channels + 1, 1, 3), "main"))
    layers.append(("ul_init.1.conv", "conv", (f, in_channels + 1, 2, 1), "main"))
    layers.append(("nin_out.lin_a", "linear", (n_out, f), "main"))
    return layers


def pclucas14_state_dict(nr_resnet: int, nr_filters: int, nr_mix: int, in_channels: int = 3, *,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights keyed and shaped like pclucas14's ``PixelCNN(...).state_dict()``."""
    gen = torch.Generator().manual_seed(seed)
    n_out = (3 if in_channels == 1 else 10) * nr_mix
    state: dict[str, torch.Tensor] = {}
    for prefix, kind, shape, role in _pclucas14_layers(nr_resnet, nr_filters, n_out, in_channels):
        out = shape[1] if kind == "deconv" else shape[0]
        # weight_norm(dim=0) keeps one gain per index of dim 0: the input channel of a ConvTranspose2d.
        g_shape = (shape[0],) + (1,) * (len(shape) - 1)
        state[f"{prefix}.bias"] = _weight_norm_values("b", (out,), role, gen)
        state[f"{prefix}.weight_g"] = _weight_norm_values("g", g_shape, role, gen)
        state[f"{prefix}.weight_v"] = _weight_norm_values("v", shape, role, gen)
    return state


def _pl_weight(state: dict[str, torch.Tensor], prefix: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.utils.weight_norm(dim=0): v * g / ||v||, the norm over every dim but 0."""
    v = state[f"{prefix}.weight_v"].to(dtype)
    g = state[f"{prefix}.weight_g"].to(dtype)
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm), state[f"{prefix}.bias"].to(dtype)


def _pl_down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x[:, :, :-1, :], (0, 0, 1, 0))


def _pl_right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x[:, :, :, :-1], (1, 0, 0, 0))


def _pl_down_shifted_conv(state: dict[str, torch.Tensor], prefix: str, x: torch.Tensor,
                          stride: int = 1) -> torch.Tensor:
    w, b = _pl_weight(state, f"{prefix}.conv", x.dtype)
    kh, kw = w.shape[2:]
    x = F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0))
    return F.conv2d(x, w, b, stride=stride)


def _pl_down_right_shifted_conv(state: dict[str, torch.Tensor], prefix: str, x: torch.Tensor,
                                stride: int = 1) -> torch.Tensor:
    w, b = _pl_weight(state, f"{prefix}.conv", x.dtype)
    kh, kw = w.shape[2:]
    x = F.pad(x, (kw - 1, 0, kh - 1, 0))
    return F.conv2d(x, w, b, stride=stride)


def _pl_deconv(state: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, centred: bool) -> torch.Tensor:
    """Stride-2 ConvTranspose2d(output_padding=1), then the crop of down_(right_)shifted_deconv2d."""
    w, b = _pl_weight(state, f"{prefix}.deconv", x.dtype)
    kh, kw = w.shape[2:]
    y = F.conv_transpose2d(x, w, b, stride=2, output_padding=1)
    rows, cols = y.shape[2], y.shape[3]
    if centred:
        return y[:, :, : rows - kh + 1, (kw - 1) // 2 : cols - (kw - 1) // 2]
    return y[:, :, : rows - kh + 1, : cols - kw + 1]


def _pl_nin(state: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    # nin permutes to channels-last and applies the Linear to every pixel.
    w, b = _pl_weight(state, f"{prefix}.lin_a", x.dtype)
    return F.linear(x.permute(0, 2, 3, 1), w, b).permute(0, 3, 1, 2)


def _pl_gated_resnet(state: dict[str, torch.Tensor], prefix: str, og_x: torch.Tensor, a: torch.Tensor | None,
                     conv: Callable[..., torch.Tensor]) -> torch.Tensor:
    x = conv(state, f"{prefix}.conv_input", _concat_elu(og_x, 1))
    if a is not None:
        x = x + _pl_nin(state, f"{prefix}.nin_skip", _concat_elu(a, 1))
    x = _concat_elu(x, 1)  # (Dropout2d here is off in eval mode.)
    x = conv(state, f"{prefix}.conv_out", x)
    a_half, b_half = torch.chunk(x, 2, dim=1)
    return og_x + a_half * torch.sigmoid(b_half)


def _pl_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    n = 0
    while f"{prefix}.{n}.conv_input.conv.weight_v" in state:
        n += 1
    return n


def pclucas14_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """pclucas14's ``PixelCNN.forward(x)`` in eval mode: x (N, C, H, W) in [-1, 1] -> nin_out (N, K, H, W).

    Computed in x's dtype (so a test may compare in float64); sizes come from the state dict.
    """
    x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    u_list = [_pl_down_shift(_pl_down_shifted_conv(state, "u_init", x))]
    ul_list = [_pl_down_shift(_pl_down_shifted_conv(state, "ul_init.0", x))
               + _pl_right_shift(_pl_down_right_shifted_conv(state, "ul_init.1", x))]
    for i in range(3):
        u, ul = u_list[-1], ul_list[-1]
        for j in range(_pl_count(state, f"up_layers.{i}.u_stream")):
            u = _pl_gated_resnet(state, f"up_layers.{i}.u_stream.{j}", u, None, _pl_down_shifted_conv)
            ul = _pl_gated_resnet(state, f"up_layers.{i}.ul_stream.{j}", ul, u, _pl_down_right_shifted_conv)
            u_list.append(u)
            ul_list.append(ul)
        if i != 2:
            u_list.append(_pl_down_shifted_conv(state, f"downsize_u_stream.{i}", u_list[-1], stride=2))
            ul_list.append(_pl_down_right_shifted_conv(state, f"downsize_ul_stream.{i}", ul_list[-1], stride=2))

    u, ul = u_list.pop(), ul_list.pop()
    for i in range(3):
        for j in range(_pl_count(state, f"down_layers.{i}.u_stream")):
            u = _pl_gated_resnet(state, f"down_layers.{i}.u_stream.{j}", u, u_list.pop(), _pl_down_shifted_conv)
            ul = _pl_gated_resnet(state, f"down_layers.{i}.ul_stream.{j}", ul, torch.cat([u, ul_list.pop()], 1),
                                  _pl_down_right_shifted_conv)
        if i != 2:
            u = _pl_deconv(state, f"upsize_u_stream.{i}", u, centred=True)
            ul = _pl_deconv(state, f"upsize_ul_stream.{i}", ul, centred=False)
    if u_list or ul_list:
        raise ValueError("the state dict's down_layers do not consume the up pass (wrong resnet counts)")
    return _pl_nin(state, "nin_out", F.elu(ul))


# ---------------------------------------------------------------------------------------------------------
# (b) openai/pixel-cnn
# ---------------------------------------------------------------------------------------------------------

# get(layer name, variable name, shape, gain role) -> tensor in the compute dtype.
_Getter = Callable[[str, str, tuple, str], torch.Tensor]


class _TFGraph:
    """model_spec and the nn.py layers it calls, on NHWC tensors. Variables come from ``get`` by the names
    that nn.py's counters give them, so that one walk both creates them (in TF's creation order, as the
    template's first call does) and reads them back."""

    def __init__(self, get: _Getter, h: torch.Tensor | None) -> None:
        self.get = get
        self.h = h
        self.counters: dict[str, int] = {}

    def name(self, kind: str) -> str:
        k = self.counters.get(kind, 0)
        self.counters[kind] = k + 1
        return f"{kind}_{k}"

    def conv2d(self, x: torch.Tensor, num_filters: int, filter_size: tuple[int, int], stride: tuple[int, int],
               role: str) -> torch.Tensor:
        """nn.conv2d with pad='VALID' (the shifted convolutions pad explicitly first)."""
        name = self.name("conv2d")
        kh, kw = filter_size
        v = self.get(name, "V", (kh, kw, x.shape[-1], num_filters), role)
        g = self.get(name, "g", (num_filters,), role)
        b = self.get(name, "b", (num_filters,), role)
        # tf.nn.l2_normalize(V, [0, 1, 2]) = V * rsqrt(max(sum V^2, 1e-12)): one norm per output channel.
        w = g * v * torch.rsqrt(torch.clamp((v * v).sum((0, 1, 2), keepdim=True), min=1e-12))
        y = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, stride=stride)
        return y.permute(0, 2, 3, 1)

    def deconv2d(self, x: torch.Tensor, num_filters: int, filter_size: tuple[int, int], stride: tuple[int, int],
                 role: str) -> torch.Tensor:
        """nn.deconv2d with pad='VALID': conv2d_transpose to [N, H*s + kh - 1, W*s + kw - 1, num_filters]."""
        name = self.name("deconv2d")
        kh, kw = filter_size
        v = self.get(name, "V", (kh, kw, num_filters, x.shape[-1]), role)
        g = self.get(name, "g", (num_filters,), role)
        b = self.get(name, "b", (num_filters,), role)
        # l2_normalize over [0, 1, 3]: one norm per OUTPUT channel (axis 2 of a transposed filter).
        w = g.view(1, 1, -1, 1) * v * torch.rsqrt(torch.clamp((v * v).sum((0, 1, 3), keepdim=True), min=1e-12))
        target = (x.shape[1] * stride[0] + kh - 1, x.shape[2] * stride[1] + kw - 1)
        # The minimal transposed output is (H - 1) * s + kh; TF's target is s - 1 larger, which VALID puts
        # at the bottom / right (those rows and columns receive no input), as output_padding does.
        extra = (target[0] - (x.shape[1] - 1) * stride[0] - kh, target[1] - (x.shape[2] - 1) * stride[1] - kw)
        # A TF transposed filter [kh, kw, out, in] is the conv filter of the adjoint convolution, so it maps
        # to PyTorch's transposed weight [in, out, kh, kw] without a spatial flip.
        y = F.conv_transpose2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, stride=stride, output_padding=extra)
        return y.permute(0, 2, 3, 1)

    def dense(self, x: torch.Tensor, num_units: int, role: str) -> torch.Tensor:
        name = self.name("dense")
        v = self.get(name, "V", (x.shape[-1], num_units), role)
        g = self.get(name, "g", (num_units,), role)
        b = self.get(name, "b", (num_units,), role)
        return (x @ v) * (g / torch.sqrt((v * v).sum(0))) + b

    def nin(self, x: torch.Tensor, num_units: int, role: str) -> torch.Tensor:
        shape = x.shape
        return self.dense(x.reshape(-1, shape[-1]), num_units, role).reshape(*shape[:-1], num_units)

    def down_shifted_conv2d(self, x: torch.Tensor, num_filters: int, filter_size: tuple[int, int] = (2, 3),
                            stride: tuple[int, int] = (1, 1), role: str = "main") -> torch.Tensor:
        kh, kw = filter_size
        x = F.pad(x, (0, 0, (kw - 1) // 2, (kw - 1) // 2, kh - 1, 0))
        return self.conv2d(x, num_filters, filter_size, stride, role)

    def down_right_shifted_conv2d(self, x: torch.Tensor, num_filters: int, filter_size: tuple[int, int] = (2, 2),
                                  stride: tuple[int, int] = (1, 1), role: str = "main") -> torch.Tensor:
        kh, kw = filter_size
        x = F.pad(x, (0, 0, kw - 1, 0, kh - 1, 0))
        return self.conv2d(x, num_filters, filter_size, stride, role)

    def down_shifted_deconv2d(self, x: torch.Tensor, num_filters: int, filter_size: tuple[int, int] = (2, 3),
                              stride: tuple[int, int] = (2, 2)) -> torch.Tensor:
        kh, kw = filter_size
        y = self.deconv2d(x, num_filters, filter_size, stride, "main")
        return y[:, : y.shape[1] - kh + 1, (kw - 1) // 2 : y.shape[2] - (kw - 1) // 2, :]

    def down_right_shifted_deconv2d(self, x: torch.Tensor, num_filters: int, filter_size: tuple[int, int] = (2, 2),
                                    stride: tuple[int, int] = (2, 2)) -> torch.Tensor:
        kh, kw = filter_size
        y = self.deconv2d(x, num_filters, filter_size, stride, "main")
        return y[:, : y.shape[1] - kh + 1, : y.shape[2] - kw + 1, :]

    def gated_resnet(self, x: torch.Tensor, a: torch.Tensor | None, conv: Callable[..., torch.Tensor]) -> torch.Tensor:
        num_filters = x.shape[-1]
        c1 = conv(_concat_elu(x, -1), num_filters)
        if a is not None:
            c1 = c1 + self.nin(_concat_elu(a, -1), num_filters, "main")
        c1 = _concat_elu(c1, -1)  # (dropout here is off at evaluation: dropout_p=0 in train.py's test graph)
        c2 = conv(c1, 2 * num_filters, role="gate")
        if self.h is not None:
            hw = self.get(self.name("conditional_weights"), "hw", (self.h.shape[-1], 2 * num_filters), "hw")
            c2 = c2 + (self.h @ hw)[:, None, None, :]
        a_half, b_half = torch.chunk(c2, 2, dim=-1)  # tf.split(c2, 2, 3)
        return x + a_half * torch.sigmoid(b_half)

    def model(self, x: torch.Tensor, nr_resnet: int, nr_filters: int, n_out: int) -> torch.Tensor:
        """model_spec on x (N, H, W, C); returns (N, H, W, n_out)."""
        f = nr_filters
        ds, drs = self.down_shifted_conv2d, self.down_right_shifted_conv2d
        x_pad = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
        u_list = [_tf_down_shift(ds(x_pad, f, (2, 3)))]
        # Python evaluates the left operand first: the [1, 3] conv is created before the [2, 1] one.
        ul_list = [_tf_down_shift(ds(x_pad, f, (1, 3))) + _tf_right_shift(drs(x_pad, f, (2, 1)))]
        for level in range(3):
            for _ in range(nr_resnet):
                u_list.append(self.gated_resnet(u_list[-1], None, ds))
                ul_list.append(self.gated_resnet(ul_list[-1], u_list[-1], drs))
            if level != 2:
                u_list.append(ds(u_list[-1], f, stride=(2, 2)))
                ul_list.append(drs(ul_list[-1], f, stride=(2, 2)))

        u, ul = u_list.pop(), ul_list.pop()
        for level, n in enumerate([nr_resnet, nr_resnet + 1, nr_resnet + 1]):
            if level:
                u = self.down_shifted_deconv2d(u, f)
                ul = self.down_right_shifted_deconv2d(ul, f)
            for _ in range(n):
                u = self.gated_resnet(u, u_list.pop(), ds)
                ul = self.gated_resnet(ul, torch.cat([u, ul_list.pop()], dim=-1), drs)
        assert not u_list and not ul_list
        return self.nin(F.elu(ul), n_out, "main")


def _tf_down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x[:, :-1], (0, 0, 0, 0, 1, 0))


def _tf_right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x[:, :, :-1], (0, 0, 1, 0))


def _tf_n_out(in_channels: int, nr_mix: int) -> int:
    # model_spec hard-codes 10 * nr_logistic_mix (RGB); 3 * nr_mix for one channel is our extrapolation.
    return (3 if in_channels == 1 else 10) * nr_mix


def openai_variables(nr_resnet: int, nr_filters: int, nr_mix: int, in_channels: int = 3, *,
                     n_classes: int | None = None, seed: int = 0, ema: bool = False) -> dict[str, torch.Tensor]:
    """Random float32 tensors named and shaped as in an OpenAI pixel-cnn checkpoint (see the module docstring).

    With ``ema`` every variable also gets ``NAME/ExponentialMovingAverage`` (other random values), and the
    optimiser / step tensors a loader must ignore are added.
    """
    gen = torch.Generator().manual_seed(seed)
    variables: dict[str, torch.Tensor] = {}
    roles: dict[str, str] = {}

    def create(layer: str, var: str, shape: tuple, role: str) -> torch.Tensor:
        key = f"model/{layer}/{var}"
        kind = "hw" if var == "hw" else var.lower()
        variables[key] = _weight_norm_values(kind, tuple(shape), role, gen)
        roles[key] = role
        return variables[key]

    # Like tf.make_template's first call: a forward on a small input creates the variables in order.
    h = None if n_classes is None else F.one_hot(torch.zeros(1, dtype=torch.long), n_classes).float()
    with torch.no_grad():
        _TFGraph(create, h).model(torch.zeros(1, 4, 4, in_channels), nr_resnet, nr_filters,
                                  _tf_n_out(in_channels, nr_mix))
    if not ema:
        return variables

    for key in list(variables):
        kind = "hw" if key.endswith("/hw") else key.rsplit("/", 1)[1].lower()
        variables[f"{key}/ExponentialMovingAverage"] = _weight_norm_values(kind, tuple(variables[key].shape),
                                                                           roles[key], gen)
    # Non-model tensors of a training checkpoint, for a loader to skip.
    variables["global_step"] = torch.tensor(123456, dtype=torch.int64)
    variables["beta1_power"] = torch.tensor(0.5, dtype=torch.float32)
    variables["beta2_power"] = torch.tensor(0.9, dtype=torch.float32)
    for key in ("model/conv2d_0/V", "model/conv2d_0/g", "model/conv2d_0/b", "model/dense_0/V"):
        variables[f"{key}/Adam"] = torch.randn(variables[key].shape, generator=gen)
        variables[f"{key}/Adam_1"] = torch.rand(variables[key].shape, generator=gen)
    # nn.adam_updates passes its names as tf.Variable's second positional argument (trainable), so its
    # step counter and moment buffers are saved under TF's default names.
    variables["Variable"] = torch.tensor(1000.0, dtype=torch.float32)
    variables["Variable_1"] = torch.randn(variables["model/conv2d_0/V"].shape, generator=gen)
    variables["Variable_2"] = torch.rand(variables["model/conv2d_0/V"].shape, generator=gen)
    return variables


def openai_forward(variables: dict[str, torch.Tensor], x: torch.Tensor, labels: torch.Tensor | None = None, *,
                   ema: bool = False) -> torch.Tensor:
    """OpenAI's ``model_spec`` at evaluation (dropout off): x (N, C, H, W) in [-1, 1] -> (N, K, H, W).

    ``labels`` (N,) class indices make h = one_hot(labels, n_classes) for a class-conditional checkpoint;
    ``ema`` reads the ``/ExponentialMovingAverage`` copies, as train.py's test and sampling graphs do.
    Computed in x's dtype; the sizes come from the variables.
    """
    n_conv = sum(1 for k in variables if k.startswith("model/conv2d_") and k.endswith("/V"))
    n_dense = sum(1 for k in variables if k.startswith("model/dense_") and k.endswith("/V"))
    if (n_conv - 15) % 24:
        raise ValueError(f"{n_conv} conv2d layers is not 24 * nr_resnet + 15")
    nr_resnet = (n_conv - 15) // 24
    nr_filters = variables["model/conv2d_0/V"].shape[3]
    n_out = variables[f"model/dense_{n_dense - 1}/V"].shape[1]
    hw0 = variables.get("model/conditional_weights_0/hw")
    if (hw0 is None) != (labels is None):
        raise ValueError("labels must be given exactly when the variables are class-conditional")
    h = None if hw0 is None else F.one_hot(labels.to(torch.long), hw0.shape[0]).to(x.dtype)
    suffix = "/ExponentialMovingAverage" if ema else ""

    def read(layer: str, var: str, shape: tuple, role: str) -> torch.Tensor:
        value = variables[f"model/{layer}/{var}{suffix}"]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"model/{layer}/{var}: shape {tuple(value.shape)}, the walk expects {tuple(shape)}")
        return value.to(x.dtype)

    out = _TFGraph(read, h).model(x.permute(0, 2, 3, 1), nr_resnet, nr_filters, n_out)
    return out.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------------
# The sources' sampling loop, one pixel
# ---------------------------------------------------------------------------------------------------------

def _sample_dmol(l: torch.Tensor, channels: int, nr_mix: int, gen: torch.Generator) -> torch.Tensor:
    """sample_from_discretized_mix_logistic (RGB) / pclucas14's _1d variant, on the whole map: (N, C, H, W)."""
    l = l.permute(0, 2, 3, 1)  # both sources unpack channels-last
    n_params = 3 if channels == 3 else 2
    if channels not in (1, 3) or l.shape[-1] != nr_mix * (1 + channels * n_params):
        raise ValueError(f"{l.shape[-1]} output channels do not fit {channels} channels and {nr_mix} mixtures")
    logits = l[..., :nr_mix]
    params = l[..., nr_mix:].reshape(*l.shape[:-1], channels, n_params * nr_mix)

    def uniform(shape: torch.Size) -> torch.Tensor:
        return 1e-5 + (1.0 - 2e-5) * torch.rand(shape, generator=gen, device=l.device, dtype=l.dtype)

    # Gumbel-max picks the component: argmax(logits - log(-log u)).
    pick = torch.argmax(logits - torch.log(-torch.log(uniform(logits.shape))), dim=-1)
    sel = F.one_hot(pick, nr_mix).to(l.dtype).unsqueeze(-2)  # (N, H, W, 1, M)
    means = (params[..., :nr_mix] * sel).sum(-1)
    log_scales = torch.clamp((params[..., nr_mix : 2 * nr_mix] * sel).sum(-1), min=-7.0)
    u = uniform(means.shape)
    draw = means + torch.exp(log_scales) * (torch.log(u) - torch.log(1.0 - u))
    x0 = torch.clamp(draw[..., 0], -1.0, 1.0)
    if channels == 1:
        return x0.unsqueeze(1)
    coeffs = (torch.tanh(params[..., 2 * nr_mix : 3 * nr_mix]) * sel).sum(-1)
    x1 = torch.clamp(draw[..., 1] + coeffs[..., 0] * x0, -1.0, 1.0)
    x2 = torch.clamp(draw[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1.0, 1.0)
    return torch.stack([x0, x1, x2], dim=1)


def naive_sample_step(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, row: int, col: int,
                      nr_mix: int, generator: torch.Generator) -> torch.Tensor:
    """One step of the sources' sampling loop: a FULL forward on x (N, C, H, W in [-1, 1]), a draw from the
    mixture everywhere (as both sources do), and a copy of x with pixel (row, col) replaced by the draw."""
    with torch.no_grad():
        l = forward(x)
        sample = _sample_dmol(l, x.shape[1], nr_mix, generator)
    out = x.clone()
    out[:, :, row, col] = sample[:, :, row, col].to(x.dtype)
    return out

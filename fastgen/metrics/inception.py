"""InceptionV3 as the FID and Inception Score papers ran it: TensorFlow's 2015-12-05 Inception graph.

This is not torchvision's ImageNet InceptionV3. The graph behind every published FID and IS has
its own weights (1008 classes, not 1000) and three quirks, kept here because the numbers depend
on them: the average pools of the A, C and first E blocks leave the zero padding out of the mean
(TensorFlow's SAME pooling), the last E block pools with max instead of average, and the input is
resized with TensorFlow 1.x's bilinear rule.

The weights are read from a local file, never downloaded (``load_inception``). Both public
conversions of the graph work, as .pth or as .safetensors:

    weights-inception-2015-12-05-6726825d.pth   torch-fidelity's, converted straight from the TF graph
    pt_inception-2015-12-05-6726825d.pth        pytorch-fid's, saved from a torchvision Inception3

They use the same tensor names (torchvision's: ``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_var``, ``fc.weight`` ...), which this module's attribute names
follow. The one difference: pytorch-fid's file also holds a ``num_batches_tracked`` counter per
batch norm (torchvision's modules have one), torch-fidelity's does not. Inference never reads the
counters, so they are dropped on loading.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureNetwork

WEIGHTS_ENV = "FASTGEN_INCEPTION_WEIGHTS"
INPUT_SIZE = 299


def resize_bilinear_tf1(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) float32 images to size x size, as TensorFlow 1.x's
    ``tf.image.resize_bilinear(align_corners=False)`` does it.

    TF 1.x maps output pixel i to input position i * in / out: no half-pixel centres, so the
    grid starts on the first input pixel and the last output pixels clamp to the last input row
    or column. PyTorch's ``F.interpolate(align_corners=False)`` samples (i + 0.5) * in / out - 0.5
    instead, which shifts the image by up to half an input pixel and gives other features.
    The positions are computed in float32, as the TF kernel (and torch-fidelity) computes them.
    """
    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(n_in / size, dtype=torch.float32)
        pos = torch.arange(size, dtype=torch.float32, device=images.device) * scale.to(images.device)
        lo = pos.long()  # pos >= 0, so this is the floor
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, pos - lo
    y_lo, y_hi, dy = taps(images.shape[2])
    x_lo, x_hi, dx = taps(images.shape[3])
    top, bottom = images[:, :, y_lo], images[:, :, y_hi]
    top = top[..., x_lo] + (top[..., x_hi] - top[..., x_lo]) * dx
    bottom = bottom[..., x_lo] + (bottom[..., x_hi] - bottom[..., x_lo]) * dx
    return top + (bottom - top) * dy[:, None]


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the pixels inside the image, not by 9.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (TensorFlow's epsilon, 1e-3), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _chain(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


class _BlockA(nn.Module):
    """35x35 block (Mixed_5b..5d): 1x1, 5x5, double 3x3 and pooled towers."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(c_in, 64, 1)
        self.branch5x5_1 = _ConvBN(c_in, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            _chain(x, self.branch5x5_1, self.branch5x5_2),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(_avg_pool_same(x)),
        ], 1)


class _BlockB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = _ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    """17x17 block (Mixed_6b..6e): 7x7 convolutions factored into 1x7 and 7x1."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = _ConvBN(c_in, 192, 1)
        self.branch7x7_1 = _ConvBN(c_in, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, **row)
        self.branch7x7_3 = _ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = _ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = _ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = _ConvBN(c7, 192, **row)
        self.branch_pool = _ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                   self.branch7x7dbl_4, self.branch7x7dbl_5),
            self.branch_pool(_avg_pool_same(x)),
        ], 1)


class _BlockD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(c_in, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            _chain(x, self.branch3x3_1, self.branch3x3_2),
            _chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class _BlockE(nn.Module):
    """8x8 block (Mixed_7b, 7c): 3x3 towers that fan out into parallel 1x3 and 3x1 convolutions.

    ``pool`` is the pooling of the last tower: average in Mixed_7b but max in Mixed_7c, where the
    2015 graph departs from the paper; the published FIDs were computed with the max.
    """

    def __init__(self, c_in: int, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _ConvBN(c_in, 320, 1)
        self.branch3x3_1 = _ConvBN(c_in, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(t), self.branch3x3_2b(t),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(self.pool(x)),
        ], 1)


class InceptionV3FID(FeatureNetwork):
    """The FID/IS Inception network: 2048 pool3 features and 1008 logits per image.

    Build it with ``load_inception`` (which fills in the weights); a bare ``InceptionV3FID()``
    holds random weights.

    Preprocessing follows torch-fidelity, which reproduces the original TensorFlow FID code
    (Heusel et al.'s ``fid.py``, fed uint8 images):

    1. The input x in [0, 1] stands for the uint8 image u = x * 255. fastgen does not round:
       x * 255 is used as the float pixel value, so images whose x are exact multiples of 1/255
       give torch-fidelity's features (to float32 rounding), and others get the same smooth map.
    2. Grey images are repeated to 3 channels.
    3. u is resized to 299x299 with TensorFlow 1.x's bilinear rule (``resize_bilinear_tf1``),
       also when the image is already that size (then it is the identity).
    4. u is mapped to (u - 128) / 128, the graph's own ``Sub``/``Mul`` by 1/128.

    pytorch-fid differs in two places, so its features (and FIDs) differ slightly: it resizes
    with ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres, see
    ``resize_bilinear_tf1``) and normalises with 2x - 1 = (u - 127.5) / 127.5. fastgen follows
    torch-fidelity and TensorFlow.

    The logits are ``features @ fc.weight.T`` without ``fc.bias``: the original Inception Score
    code (Salimans et al.) reads the ``softmax/logits/MatMul`` output, before the bias, and
    torch-fidelity's IS uses the same ("logits_unbiased"). The bias is still loaded, so
    ``logits + fc.bias`` are the graph's full logits.

    Images are moved to the network's device and computed in float32. The batch norms use their
    running statistics only in eval mode, the mode ``load_inception`` returns.
    """

    name = "inception-v3-fid"
    feature_dim = 2048
    n_classes = 1008
    channels = (1, 3)
    image_size = None

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, c7=128)
        self.Mixed_6c = _BlockC(768, c7=160)
        self.Mixed_6d = _BlockC(768, c7=160)
        self.Mixed_6e = _BlockC(768, c7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, pool=_avg_pool_same)
        self.Mixed_7c = _BlockE(2048, pool=_max_pool_same)
        self.fc = nn.Linear(2048, 1008)

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = images.to(self.fc.weight) * 255.0
        u = resize_bilinear_tf1(u, INPUT_SIZE)
        if u.shape[1] == 1:
            u = u.expand(-1, 3, -1, -1)
        x = (u - 128.0) / 128.0
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _chain(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                   self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        features = x.mean(dim=(2, 3))
        return features, features @ self.fc.weight.T


def _is_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (InceptionV3 FID weights)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # a dependency of loading this format only
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load and safetensors raise many types for a bad file
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: not a readable weights file ({type(e).__name__}: {first_line})") from None
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: not a state dict (a dict of tensor names to tensors), "
                         f"got {type(state).__name__}")
    return dict(state)


def _few(keys: set[str], n: int = 4) -> str:
    listed = sorted(keys)
    return ", ".join(listed[:n]) + (f", ... ({len(listed)} in all)" if len(listed) > n else "")


def load_inception(path: str | None = None) -> InceptionV3FID:
    """The FID Inception network with the weights of a local file, in eval mode, frozen.

    ``path`` is a torch-fidelity or pytorch-fid weights file (.pth, or the same tensors as
    .safetensors); None reads the path from the environment variable FASTGEN_INCEPTION_WEIGHTS.
    Nothing is downloaded. Every problem with the file is a ValueError naming it.
    """
    if path is None:
        path = os.environ.get(WEIGHTS_ENV) or None
    if path is None:
        raise ValueError(
            "the FID Inception network needs its weights: pass --inception-weights PATH or set "
            f"{WEIGHTS_ENV}=PATH, where PATH is torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
            "or pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or either saved as .safetensors); "
            "fastgen does not download them")
    path = os.fspath(path)
    state = {k: v for k, v in _read_state_dict(path).items() if not _is_counter(k)}
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
        model = InceptionV3FID()
    expected = {k: v.shape for k, v in model.state_dict().items() if not _is_counter(k)}
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        problems = ([f"missing {_few(missing)}"] if missing else []) + \
                   ([f"unexpected {_few(unexpected)}"] if unexpected else [])
        raise ValueError(f"{path}: not InceptionV3 FID weights (torch-fidelity's or pytorch-fid's "
                         f"layout): {'; '.join(problems)}")
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}")
    # strict=False only lets the batch-norm counters keep their defaults; every other key was checked.
    model.load_state_dict(state, strict=False)
    model.requires_grad_(False)
    return model.eval()

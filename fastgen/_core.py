"""What several layers of fastgen share, at the bottom of the package: it imports only torch.

- the dtype policy (``accumulation_dtype``),
- the causal mask of a PixelCNN masked convolution (``causal_mask``),
- the level encoding of images (``encode_levels``, ``decode_levels``),
- the inverse-CDF draw every sampler uses (``sample_from_logits``),
- PixelCNN++'s nonlinearity (``concat_elu``) and the discretized logistic mixture's constants,
- the logits layout the categorical kernels read (``logits_kernel_layout``).

Models, ops, kernels, references and samplers import these from here, never from each other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# -- dtype policy ----------------------------------------------------------------------------------


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32: the dtype of sums and of saved statistics."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# -- masks ------------------------------------------------------------------------------------------


def causal_mask(
    out_channels: int, in_channels: int, kernel_size: int, mask_type: str, color_groups: int = 1,
    *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> torch.Tensor:
    """The (out_channels, in_channels, k, k) 0/1 mask of a PixelCNN masked convolution."""
    p = kernel_size // 2
    mask = torch.zeros(out_channels, in_channels, kernel_size, kernel_size, dtype=dtype, device=device)
    mask[:, :, :p, :] = 1
    mask[:, :, p, :p] = 1
    g_out = torch.arange(out_channels, device=device) // (out_channels // color_groups)
    g_in = torch.arange(in_channels, device=device) // (in_channels // color_groups)
    if mask_type == "A":
        centre = g_in[None, :] < g_out[:, None]
    else:
        centre = g_in[None, :] <= g_out[:, None]
    mask[:, :, p, p] = centre.to(dtype)
    return mask


# -- levels and draws ------------------------------------------------------------------------------


def encode_levels(x: torch.Tensor, levels: int, dtype: torch.dtype) -> torch.Tensor:
    """Levels 0..L-1 to network inputs in [-1, 1]."""
    return x.to(dtype) * (2.0 / (levels - 1)) - 1.0


def decode_levels(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Network outputs in [-1, 1] quantised to int64 levels 0..L-1 (the inverse of ``encode_levels``).
    Non-finite values (a network whose weights diverged) raise a ValueError: NaN survives a clamp
    and would become an arbitrary integer, far outside [0, levels)."""
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"the network produced NaN or infinite values ({images.dtype}); its weights are "
                         "probably not finite (a diverged run?)")
    top = levels - 1
    return ((images + 1) * (top / 2)).round().clamp(0, top).long()


def sample_from_logits(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: logits (..., L), u (...) in [0, 1) -> int64 levels (...): the smallest
    level whose cumulative probability (float64) exceeds u."""
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(-1)
    return (cdf < u.double().unsqueeze(-1)).sum(-1).clamp_(max=logits.shape[-1] - 1)


# -- PixelCNN++ ------------------------------------------------------------------------------------


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """elu(cat(x, -x)) over channels: keeps both signs' information through the nonlinearity."""
    return F.elu(torch.cat([x, -x], dim=1))


# The discretized logistic mixture (fastgen/reference/dmol.py): log-scales are clamped below at
# LOG_SCALE_MIN; |x| > EDGE is the bottom or top bin; a bin probability under SMALL_BIN is replaced
# by the mid-bin density; uniform noise stays inside [NOISE_EPS, 1 - NOISE_EPS] before logs.
LOG_SCALE_MIN = -7.0
EDGE = 0.999
SMALL_BIN = 1e-5
NOISE_EPS = 1e-5


def dmol_channels(channels: int, nr_mix: int) -> int:
    """Parameter channels K for C colour channels and nr_mix components (10 M for RGB, 3 M for grey)."""
    return nr_mix * (10 if channels == 3 else 3)


# -- the categorical logits layout -----------------------------------------------------------------


def _dense(t: torch.Tensor) -> bool:
    """No gaps and no overlaps: some permutation of t's dims is contiguous."""
    expected = 1
    for d in sorted((d for d in range(t.dim()) if t.shape[d] != 1), key=t.stride):
        if t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def logits_kernel_layout(logits: torch.Tensor) -> torch.Tensor:
    """Logits (N, L, C, H, W) as every categorical kernel reads them: unchanged when dense with
    contiguous pixels (H, W), else a contiguous copy. Their gradient takes this tensor's strides."""
    w_ok = logits.shape[4] == 1 or logits.stride(4) == 1
    h_ok = logits.shape[3] == 1 or logits.stride(3) == logits.shape[4]
    return logits if (w_ok and h_ok and _dense(logits)) else logits.contiguous()


# -- sampling noise ------------------------------------------------------------------------------


def check_uniform_noise(noise: object, shape: tuple[int, ...], name: str = "noise") -> None:
    """Every sampler's noise check, in one place: a real floating tensor of ``shape`` whose values
    are finite and in [0, 1). Raises ValueError (TypeError for a non-tensor) naming ``name``."""
    if not isinstance(noise, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of uniform [0, 1) numbers, got {type(noise).__name__}")
    if not noise.is_floating_point() or noise.is_complex():
        raise ValueError(f"{name} must be a floating tensor of uniform [0, 1) numbers, got dtype {noise.dtype}")
    if tuple(noise.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(noise.shape)}")
    if noise.device.type == "meta" or noise.numel() == 0:
        return
    bad = ~((noise >= 0) & (noise < 1))  # NaN fails both comparisons
    if bool(bad.any()):
        value = noise[bad].flatten()[0].item()
        raise ValueError(f"{name} must hold finite numbers in [0, 1); found {value}")

"""Helpers shared by the Triton launchers."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def compute_dtype(dtype: torch.dtype):
    """Accumulate in float32, or float64 for float64 inputs (gradcheck)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(device: torch.device) -> str:
    """Follow PyTorch's convolution setting: TF32 on CUDA when cuDNN may use it, else IEEE."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


@triton.jit
def tanh(u):
    """tanh without overflow for any finite u."""
    e = tl.exp(-2.0 * tl.abs(u))  # in (0, 1]
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u >= 0, t, -t)


@triton.jit
def logsumexp_planes(base, offs, ok, plane, count, ACC: tl.constexpr):
    """logsumexp over ``count`` planes ``plane`` elements apart, at the positions ``offs`` of ``base``."""
    m = tl.load(base + offs, mask=ok, other=0.0).to(ACC)
    for k in range(1, count):
        m = tl.maximum(m, tl.load(base + k * plane + offs, mask=ok, other=0.0).to(ACC))
    s = tl.zeros_like(m)
    for k in range(0, count):
        s += tl.exp(tl.load(base + k * plane + offs, mask=ok, other=0.0).to(ACC) - m)
    return m + tl.log(s)

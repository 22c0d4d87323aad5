"""Helpers shared by the Triton launchers."""
from __future__ import annotations

import torch
import triton.language as tl


def compute_dtype(dtype: torch.dtype):
    """Accumulate in float32, or float64 for float64 inputs (gradcheck)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(device: torch.device) -> str:
    """Follow PyTorch's convolution setting: TF32 on CUDA when cuDNN may use it, else IEEE."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"

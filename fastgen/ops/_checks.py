"""Argument checks shared by the public op functions: clear errors before any kernel runs.

What every op refuses, whatever its backend:

* tensors of the wrong rank, shape, dtype (integer, bool, complex or float8 where a float32,
  float64, float16 or bfloat16 tensor is expected) or device (tensors of one call on two devices);
* inputs that repeat their memory (stride 0, as ``expand`` makes) whose dense copy would exceed
  ``MAX_OVERLAP_COPY_BYTES`` (256 MiB): ``torch.ones(1, 1).expand(1, 2**27)`` holds 4 bytes but is
  512 MiB dense, and the kernels read dense memory. Smaller ones are copied. The C++ kernels
  (csrc/cpu/checks.h) and the Triton launchers (kernels/_common.py) apply the same limit.
"""
from __future__ import annotations

import torch

MAX_OVERLAP_COPY_BYTES = 1 << 28  # 256 MiB
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def memory_span(t: torch.Tensor) -> int:
    """Elements of memory ``t`` spans: fewer than ``t.numel()`` when elements share memory."""
    if t.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))


def has_memory(t: torch.Tensor) -> bool:
    """Whether ``t`` has data a check may read: not a meta or fake tensor, nor traced by torch.compile."""
    return (t.device.type != "meta" and not isinstance(t, torch._subclasses.FakeTensor)
            and not torch.compiler.is_compiling())


def has_values(t: torch.Tensor) -> bool:
    return t.numel() > 0 and has_memory(t)


def check_copy_size(name: str, t: torch.Tensor) -> None:
    """Refuse ``t`` when it repeats its memory and its dense copy would exceed MAX_OVERLAP_COPY_BYTES."""
    if t.layout != torch.strided or t.is_contiguous() or not has_memory(t) or t.numel() <= memory_span(t):
        return
    if t.numel() * t.element_size() > MAX_OVERLAP_COPY_BYTES:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} and strides {t.stride()} repeats its memory (stride 0, as from "
            f"expand); its dense copy would take {t.numel() * t.element_size()} bytes, more than the limit of "
            f"{MAX_OVERLAP_COPY_BYTES} bytes (256 MiB) on copies of such inputs; pass a smaller tensor or one "
            "that owns its memory")


def check_float_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be a floating-point tensor (float32, float64, float16 or bfloat16), "
                         f"got dtype {t.dtype}")


def check_tensor(name: str, t: object, *, dims: int | tuple[int, ...], layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    allowed = (dims,) if isinstance(dims, int) else dims
    if t.dim() not in allowed:
        raise ValueError(f"{name} must be {layout}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
    check_float_dtype(name, t)
    check_copy_size(name, t)
    return t


def _autocast_enabled(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type without autocast (meta)
        return False


def check_same(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in ``others`` must share ``reference``'s dtype and device (dtypes may differ
    under autocast, whose rule for the op casts them to one; see ``register_autocast``)."""
    autocast = _autocast_enabled(reference.device)
    for name, t in others.items():
        if t is None:
            continue
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {reference_name} is on {reference.device}; "
                             "move them to one device")
        if t.dtype != reference.dtype and not autocast:
            raise ValueError(f"{name} has dtype {t.dtype} but {reference_name} has {reference.dtype}; "
                             "they must match")


FLOAT32_MAX = 3.4028234663852886e38


def check_scalar(name: str, value: object) -> float:
    """A finite real number within float32's range (the kernels compute in float32)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not abs(value) <= FLOAT32_MAX:  # NaN fails too
        raise ValueError(f"{name} must be a finite number within float32's range, got {value!r}")
    return float(value)


def check_output_mask(name: str, mask: object, length: int) -> list[bool]:
    if not isinstance(mask, (list, tuple)) or len(mask) != length or not all(isinstance(m, bool) for m in mask):
        raise ValueError(f"{name} must be a list of {length} bools, got {mask!r}")
    return list(mask)


def register_autocast(op: str, dtype: torch.dtype) -> None:
    """Under autocast (CPU and CUDA), cast the op's floating inputs to ``dtype`` and run it with
    autocast off: bfloat16 for the compute-heavy ops, float32 for losses, which accumulate in it."""
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast(f"fastgen::{op}", device_type, dtype)

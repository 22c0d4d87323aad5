"""Argument checks shared by the public op functions: clear errors before any kernel runs."""
from __future__ import annotations

import torch


def check_tensor(name: str, t: object, *, dims: int | tuple[int, ...], layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    allowed = (dims,) if isinstance(dims, int) else dims
    if t.dim() not in allowed:
        raise ValueError(f"{name} must be {layout}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_same(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in ``others`` must share ``reference``'s dtype and device (dtypes may differ
    under autocast, whose rule for the op casts them to one; see ``register_autocast``)."""
    autocast = torch.is_autocast_enabled(reference.device.type)
    for name, t in others.items():
        if t is None:
            continue
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {reference_name} is on {reference.device}; "
                             "move them to one device")
        if t.dtype != reference.dtype and not autocast:
            raise ValueError(f"{name} has dtype {t.dtype} but {reference_name} has {reference.dtype}; "
                             "they must match")


def register_autocast(op: str, dtype: torch.dtype) -> None:
    """Under autocast (CPU and CUDA), cast the op's floating inputs to ``dtype`` and run it with
    autocast off: bfloat16 for the compute-heavy ops, float32 for losses, which accumulate in it."""
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast(f"fastgen::{op}", device_type, dtype)

"""Helpers shared by the Triton launchers, among them the argument checks every launcher runs
before it launches: a Triton kernel indexes raw pointers, so a wrong shape reads or writes out of
bounds. The checks raise ValueError naming the launcher and the argument."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# The most bytes a launcher spends on a dense copy of an input that repeats its memory (stride 0,
# from expand); as fastgen.ops._checks.MAX_OVERLAP_COPY_BYTES and csrc/cpu/checks.h.
MAX_OVERLAP_COPY_BYTES = 1 << 28  # 256 MiB


def require(ok: bool, op: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{op}: {message}")


def _kernel_device_type() -> str:
    # Under TRITON_INTERPRET=1 the kernels run on CPU tensors; compiled, on CUDA ones.
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def check_tensor(op: str, name: str, t: object, *, dims: int | tuple[int, ...] | None = None,
                 dtype: str = "float", incoming_grad: bool = False) -> torch.Tensor:
    """``t`` a tensor of a float dtype the kernels compile for (``dtype="index"``: int64), of one of
    ``dims`` ranks, on the device the kernels run on, within the copy limit; an ``incoming_grad``
    is copied whatever its size (autograd passes expanded gradients, the backward of .sum())."""
    require(isinstance(t, torch.Tensor), op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype == "index":
        require(t.dtype == torch.int64, op, f"{name} must be an int64 tensor, got dtype {t.dtype}")
    else:
        require(t.dtype in FLOAT_DTYPES, op, f"{name} must be a float32, float64, float16 or bfloat16 tensor, "
                                             f"got dtype {t.dtype}")
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else dims
        require(t.dim() in allowed, op, f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                                        f"got shape {tuple(t.shape)}")
    want = _kernel_device_type()
    require(t.device.type == want, op, f"{name} must be a {want} tensor, got one on {t.device}")
    if not incoming_grad and not t.is_contiguous() and t.numel() > _memory_span(t):
        require(t.numel() * t.element_size() <= MAX_OVERLAP_COPY_BYTES, op,
                f"{name} of shape {tuple(t.shape)} and strides {t.stride()} repeats its memory (stride 0, as from "
                f"expand); its dense copy would take {t.numel() * t.element_size()} bytes, more than the limit of "
                f"{MAX_OVERLAP_COPY_BYTES} bytes (256 MiB) on copies of such inputs")
    return t


def _memory_span(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))


def check_same(op: str, ref_name: str, ref: torch.Tensor, *, dtype: bool = True, **others) -> None:
    """Every tensor of ``others`` (None skipped) on ``ref``'s device, and of its dtype when ``dtype``."""
    for name, t in others.items():
        if t is None:
            continue
        require(t.device == ref.device, op, f"{name} is on {t.device} but {ref_name} is on {ref.device}")
        if dtype:
            require(t.dtype == ref.dtype, op, f"{name} must have {ref_name}'s dtype {ref.dtype}, got {t.dtype}")


def check_shape(op: str, name: str, t: torch.Tensor, expected: tuple[int, ...], layout: str) -> None:
    require(tuple(t.shape) == tuple(expected), op, f"{name} must be {layout} = {tuple(expected)}, "
                                                   f"got {tuple(t.shape)}")


def check_int(op: str, name: str, value: object, low: int) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= low, op,
            f"{name} must be an int >= {low}, got {value!r}")
    return value


def check_scalar(op: str, name: str, value: object) -> float:
    """A finite real number within float32's range, as fastgen.ops._checks.check_scalar."""
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= 3.4028234663852886e38,
            op, f"{name} must be a finite number within float32's range, got {value!r}")
    return float(value)


def check_output_mask(op: str, mask: object, length: int) -> list[bool]:
    require(isinstance(mask, (list, tuple)) and len(mask) == length and all(isinstance(m, bool) for m in mask), op,
            f"output_mask must be a list of {length} bools, got {mask!r}")
    return list(mask)


def compute_dtype(dtype: torch.dtype):
    """Accumulate in float32, or float64 for float64 inputs (gradcheck)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(device: torch.device) -> str:
    """Follow PyTorch's convolution setting: TF32 on CUDA when cuDNN may use it, else IEEE."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


@triton.jit
def scalar_arg(value, s_ptr, INDEX: tl.constexpr, IN_MEMORY: tl.constexpr):
    """The float argument ``value``, or entry INDEX of the float64 scalars at s_ptr (float64
    kernels pass their scalars in memory: a Python float argument is float32 in the kernel)."""
    if IN_MEMORY:
        value = tl.load(s_ptr + INDEX)
    return value


@triton.jit
def clamp(v, lo, hi):
    """torch.clamp: NaN stays NaN (tl.minimum and tl.maximum may drop it on GPUs)."""
    return tl.where(v < lo, lo, tl.where(v > hi, hi, v))


@triton.jit
def clamp_min(v, lo):
    return tl.where(v < lo, lo, v)


@triton.jit
def tanh(u):
    """tanh without overflow for any finite u."""
    e = tl.exp(-2.0 * tl.abs(u))  # in (0, 1]
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u >= 0, t, -t)


@triton.jit
def logsumexp_planes(base, offs, ok, plane, count, ACC: tl.constexpr):
    """logsumexp over ``count`` planes ``plane`` elements apart, at the positions ``offs`` of ``base``;
    +inf where an entry is +inf and -inf where all are, as torch.logsumexp (the shift is 0 then)."""
    m = tl.load(base + offs, mask=ok, other=0.0).to(ACC)
    for k in range(1, count):
        m = tl.maximum(m, tl.load(base + k * plane + offs, mask=ok, other=0.0).to(ACC))
    m = tl.where(m - m == 0.0, m, 0.0)
    s = tl.zeros_like(m)
    for k in range(0, count):
        s += tl.exp(tl.load(base + k * plane + offs, mask=ok, other=0.0).to(ACC) - m)
    return m + tl.log(s)

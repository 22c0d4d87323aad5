"""Which implementation serves each op, the reference fallback, and ``use_reference``.

Order of precedence for a device: a compiled kernel from ``fastgen._C`` (C++ on CPU, CUDA C++ on
CUDA), then the Triton launcher (CUDA only), then the pure-PyTorch reference. The dispatcher is
asked what was registered rather than guessing from the hardware.
"""
from __future__ import annotations

import contextlib
import importlib.util
import threading
from typing import Callable, Iterator

import torch

from fastgen.ops._lib import lib

_DEVICE_KEYS = ("CPU", "CUDA")
_IMPLEMENTATIONS: dict[str, dict[str, str]] = {}
_state = threading.local()


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _lazy(module: str, attr: str) -> Callable:
    """A function that imports ``module`` on first call (Triton is slow to import and optional)."""

    def call(*args, **kwargs):
        fn = getattr(importlib.import_module(module), attr)
        return fn(*args, **kwargs)

    call.__name__ = attr
    return call


def register_implementations(name: str, reference: Callable, triton: tuple[str, str] | None = None,
                             cuda: Callable | None = None) -> None:
    """Fill every device key of ``fastgen::name`` that has no compiled kernel.

    ``triton`` names the launcher as (module, function); it serves CUDA when no CUDA kernel exists.
    ``cuda`` is a Python function that serves CUDA by calling compiled CUDA kernels of other ops.
    """
    qualname = f"fastgen::{name}"
    served = _IMPLEMENTATIONS.setdefault(name, {})
    for key in _DEVICE_KEYS:
        if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key):
            served[key] = "C++ (fastgen._C)" if key == "CPU" else "CUDA C++ (fastgen._C)"
        elif key == "CUDA" and cuda is not None:
            lib.impl(name, cuda, key)
            served[key] = "CUDA C++ (fastgen._C)"
        elif key == "CUDA" and triton is not None and triton_available():
            lib.impl(name, _lazy(*triton), key)
            served[key] = "Triton"
        else:
            lib.impl(name, reference, key)
            served[key] = "reference"


def implementations() -> dict[str, dict[str, str]]:
    """``{op: {"CPU": source, "CUDA": source}}`` for every op on this machine."""
    return {op: dict(keys) for op, keys in _IMPLEMENTATIONS.items()}


@contextlib.contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Run every fastgen op on its pure-PyTorch reference inside this block (this thread only).

    >>> with fastgen.use_reference():
    ...     y = fastgen.ops.masked_conv2d(x, w, mask_type="A")
    """
    previous = getattr(_state, "reference", False)
    _state.reference = enabled
    try:
        yield
    finally:
        _state.reference = previous


def reference_forced() -> bool:
    return getattr(_state, "reference", False)

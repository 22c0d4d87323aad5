"""Shared test setup. Triton kernels run on CPU tensors through the interpreter when there is no GPU;
that must be decided before triton is first imported."""
from __future__ import annotations

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fastgen  # noqa: E402
from fastgen.ops import implementations  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()


def compiled_cpu(op: str) -> bool:
    """Whether the dispatcher serves ``op`` on CPU from fastgen._C (asked, not guessed)."""
    return implementations()[op]["CPU"].startswith("C++")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def poison():
    """Fill every newly allocated float tensor with NaN, so an output element a kernel forgets to
    write fails the comparison instead of silently holding zero."""
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill


def tolerances(dtype: torch.dtype) -> dict:
    return {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4)}[dtype]


__all__ = ["HAS_CUDA", "HAS_TRITON", "compiled_cpu", "fastgen", "tolerances"]

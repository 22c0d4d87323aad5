"""Shared test setup. Triton kernels run on CPU tensors through the interpreter when there is no GPU;
that must be decided before triton is first imported."""
from __future__ import annotations

import importlib.util
import os
import tempfile

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# No test writes into the user's cache (e.g. the digits feature network of fastgen.metrics).
os.environ.setdefault("FASTGEN_CACHE_DIR", tempfile.mkdtemp(prefix="fastgen-test-cache-"))
# Nor reads the user's Inception weights: the tests that need them write their own.
os.environ.pop("FASTGEN_INCEPTION_WEIGHTS", None)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # Compare in true float32: with TF32 both the kernels (which follow this setting) and cuDNN's
    # reference would round their products to 10-bit mantissas, differently.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

import pytest  # noqa: E402

import fastgen  # noqa: E402
from fastgen.ops import implementations  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()


DTYPES = [torch.float32, torch.float64]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]


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


def op_implementations(op: str, also: tuple[str, ...] = (), module: str | None = None) -> list:
    """pytest params ``cpp``, ``triton``, ``cuda`` for an op with a ``<op>_backward`` op and
    ``fastgen.kernels.<module or op>`` launchers; each is a callable returning (device, forward,
    backward, then one implementation of each op named in ``also``, launchers in the same module)."""
    ops = torch.ops.fastgen
    names = (op, f"{op}_backward", *also)

    def dispatcher(device):
        return lambda: (device, *(getattr(ops, name) for name in names))

    def triton():
        kernels = importlib.import_module(f"fastgen.kernels.{module or op}")
        return ("cuda" if HAS_CUDA else "cpu", *(getattr(kernels, f"{name}_triton") for name in names))

    return [
        pytest.param(dispatcher("cpu"), id="cpp",
                     marks=pytest.mark.skipif(not compiled_cpu(op), reason="fastgen._C not built")),
        pytest.param(triton, id="triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")),
        pytest.param(dispatcher("cuda"), id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU")),
    ]


def tolerances(dtype: torch.dtype) -> dict:
    return {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4)}[dtype]


def assert_matches_reference(fn, reference, inputs, dtype=torch.float32):
    """fn() and reference() agree in value, and in the gradients of a random upstream gradient
    with respect to every tensor in ``inputs``."""
    y, y_ref = fn(), reference()
    tol = tolerances(dtype)
    torch.testing.assert_close(y, y_ref, **tol)
    grad_out = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, inputs, grad_out), torch.autograd.grad(y_ref, inputs, grad_out)):
        torch.testing.assert_close(got, want, **tol)


__all__ = ["DEVICES", "DTYPES", "HAS_CUDA", "HAS_TRITON", "assert_matches_reference", "compiled_cpu", "fastgen",
           "op_implementations", "tolerances"]


def assert_same_weights(a: dict, b: dict) -> None:
    """Two state dicts hold the same names and bit-identical tensors (an exact resume, a reload)."""
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


class FastgenOpLog(TorchDispatchMode):
    """Records the fastgen ops a block calls: ``names`` in order, ``calls`` as (name, args)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastgen":
            self.calls.append((func.__name__.split(".")[0], args))
        return func(*args, **(kwargs or {}))

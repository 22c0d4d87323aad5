"""``fastgen.info()``: versions and which implementation serves each op on this machine."""
from __future__ import annotations

import platform

import torch

import fastgen
from fastgen import _ext
from fastgen.ops._dispatch import implementations, triton_available


def info_text() -> str:
    lines = [
        f"fastgen {fastgen.__version__}",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda or 'none'} (available: {torch.cuda.is_available()})",
    ]
    if triton_available():
        import triton

        lines.append(f"triton {triton.__version__}")
    else:
        lines.append("triton not installed")
    lines.append("fastgen._C: " + ("loaded" if _ext.AVAILABLE else f"not available ({_ext.IMPORT_ERROR})"))
    lines.append("")
    table = implementations()
    width = max(len(op) for op in table)
    lines.append(f"{'op':<{width}}  {'CPU':<20}  CUDA")
    for op, served in sorted(table.items()):
        lines.append(f"{op:<{width}}  {served['CPU']:<20}  {served['CUDA']}")
    return "\n".join(lines)


def info() -> None:
    """Print versions and, for each op, which implementation serves CPU and CUDA here."""
    print(info_text())

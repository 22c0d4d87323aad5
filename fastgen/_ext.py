"""Loads the compiled extension ``fastgen._C`` if it was built.

Importing it registers the C++ (and, on CUDA builds, CUDA) kernels with the PyTorch dispatcher.
When it is missing, fastgen still works on its pure-PyTorch references; this says so once.

Environment: ``FASTGEN_DISABLE_EXT=1`` runs everything on the references (debugging);
``FASTGEN_EXT_PATH=/path/_C.so`` loads that build instead of the installed one (``make cuda-check``).
"""
from __future__ import annotations

import os
import warnings

AVAILABLE = False
IMPORT_ERROR: str | None = None
if os.environ.get("FASTGEN_DISABLE_EXT") == "1":
    IMPORT_ERROR = "disabled by FASTGEN_DISABLE_EXT=1"
elif os.environ.get("FASTGEN_EXT_PATH"):
    import torch

    torch.ops.load_library(os.environ["FASTGEN_EXT_PATH"])
    AVAILABLE = True
else:
    try:
        from fastgen import _C  # noqa: F401  (importing registers the kernels)

        AVAILABLE = True
    except ImportError as exc:  # not built (FASTGEN_NO_EXT=1) or built for another torch
        IMPORT_ERROR = str(exc)
if not AVAILABLE:
    warnings.warn(
        "fastgen._C is not available; fastgen runs on its pure-PyTorch reference implementations "
        f"(slower). Reason: {IMPORT_ERROR}",
        RuntimeWarning,
        stacklevel=2,
    )

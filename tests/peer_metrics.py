"""The peer packages whose metric definitions and feature network fastgen must reproduce:
torch-fidelity, pytorch-fid and prdc (test dependencies, installed by `make test`).

torch-fidelity and pytorch-fid import torchvision at package import, and the only torchvision
wheel these machines have is a CUDA build that cannot load next to the CPU torch. Their metric
functions and torch-fidelity's Inception extractor never use it, so when the real one cannot be
imported a stub stands in while they are imported: every attribute of it is a do-nothing class,
enough for their module-level ``class X(torchvision...)`` and ``from torchvision... import Y``
lines. The stub leaves sys.modules right after, so no other test sees a fake torchvision.
"""
from __future__ import annotations

import importlib
import sys
import types

_STUBBED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.models",
            "torchvision.models.inception", "torchvision.datasets", "torchvision.io", "torchvision.utils")


def _install_torchvision_stub() -> None:
    class _Dummy:
        def __init__(self, *args, **kwargs):
            pass

    def stub(name: str) -> types.ModuleType:
        module = types.ModuleType(name)

        def __getattr__(attr):
            if attr.startswith("__"):  # let the import machinery see a plain module
                raise AttributeError(attr)
            return type(attr, (_Dummy,), {})

        module.__getattr__ = __getattr__
        return module

    for name in _STUBBED:
        sys.modules[name] = stub(name)
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], leaf, sys.modules[name])
    sys.modules["torchvision"].__version__ = "0.0.0+stub"


def _real_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
        return True
    except Exception:  # missing, or the CUDA build whose ops fail to load
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False


def peer(module: str):
    """Import a module of a peer package (e.g. "torch_fidelity.metric_kid"), with the stub if needed."""
    if module in sys.modules or _real_torchvision():
        return importlib.import_module(module)
    _install_torchvision_stub()
    try:
        return importlib.import_module(module)
    finally:
        for name in _STUBBED:
            sys.modules.pop(name, None)

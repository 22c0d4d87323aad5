"""fastgen: generative image models for PyTorch with compiled hot paths."""
__version__ = "0.1.0"

from fastgen import nn, ops, reference  # noqa: E402
from fastgen.info import info  # noqa: E402
from fastgen.ops import use_reference  # noqa: E402

__all__ = ["info", "nn", "ops", "reference", "use_reference", "__version__"]

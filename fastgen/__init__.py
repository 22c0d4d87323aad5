"""fastgen: generative image models for PyTorch with compiled hot paths."""
__version__ = "0.1.0"

from fastgen import data, metrics, models, nn, ops, reference, sampling, train  # noqa: E402
from fastgen.info import info  # noqa: E402
from fastgen.ops import use_reference  # noqa: E402

__all__ = ["data", "info", "metrics", "models", "nn", "ops", "reference", "sampling", "train", "use_reference",
           "__version__"]

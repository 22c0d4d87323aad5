"""fastgen: generative image models for PyTorch with compiled hot paths."""
__version__ = "0.1.0"

from fastgen import data, latent, metrics, models, nn, ops, reference, sampling, train  # noqa: E402
from fastgen.info import info  # noqa: E402
from fastgen.ops import use_reference  # noqa: E402
from fastgen.train.checkpoint import model_from_checkpoint as load  # noqa: E402

__all__ = ["data", "info", "latent", "load", "metrics", "models", "nn", "ops", "reference", "sampling", "train",
           "use_reference", "__version__"]

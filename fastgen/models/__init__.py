"""Generative image models."""
from fastgen.models.autoregressive import AutoregressiveImageModel
from fastgen.models.gated_pixelcnn import GatedPixelCNN
from fastgen.models.pixelcnn import PixelCNN

__all__ = ["AutoregressiveImageModel", "GatedPixelCNN", "PixelCNN"]

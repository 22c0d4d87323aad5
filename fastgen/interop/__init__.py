"""Weights trained with other codes, loaded into fastgen's models.

- ``load_pixelcnnpp``: a PixelCNN++ trained with the PyTorch port pclucas14/pixel-cnn-pp (a
  ``state_dict`` or its ``.pth`` file) or with OpenAI's TensorFlow original openai/pixel-cnn (its
  checkpoint, read without TensorFlow), as a ``fastgen.models.PixelCNNpp`` whose forward gives the
  source network's mixture parameters.
- ``read_tf_checkpoint``: every tensor of a TensorFlow V2 checkpoint, by variable name.
"""
from fastgen.interop.pixelcnnpp import SOURCES, ConversionError, load_pixelcnnpp
from fastgen.interop.tf_checkpoint import TFCheckpointError, read_tf_checkpoint

__all__ = ["SOURCES", "ConversionError", "TFCheckpointError", "load_pixelcnnpp", "read_tf_checkpoint"]

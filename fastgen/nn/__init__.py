"""nn.Modules built on fastgen.ops."""
from fastgen.nn.gated import GatedActivation
from fastgen.nn.masked_conv import MaskedConv2d
from fastgen.nn.norm import InstanceNormAct
from fastgen.nn.spectral import spectral_normalize
from fastgen.nn.stack_conv import HorizontalStackConv2d, VerticalStackConv2d

__all__ = ["GatedActivation", "HorizontalStackConv2d", "InstanceNormAct", "MaskedConv2d", "VerticalStackConv2d",
           "spectral_normalize"]

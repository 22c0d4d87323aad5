"""nn.Modules built on fastgen.ops."""
from fastgen.nn.gated import GatedActivation
from fastgen.nn.masked_conv import MaskedConv2d

__all__ = ["GatedActivation", "MaskedConv2d"]

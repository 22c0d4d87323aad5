"""fastgen's ops. Each dispatches to C++ (CPU), Triton or CUDA (GPU), or its pure-PyTorch reference."""
from fastgen.ops import _lib  # noqa: F401  (schemas first)
from fastgen import _ext  # noqa: F401  (then the compiled kernels, if built)
from fastgen.ops._dispatch import implementations, use_reference
from fastgen.ops.cached_sampling import gated_pixelcnn_sample, pixelcnn_sample
from fastgen.ops.categorical_nll import categorical_nll
from fastgen.ops.gated_activation import gated_activation
from fastgen.ops.masked_conv2d import masked_conv2d

__all__ = ["categorical_nll", "gated_activation", "gated_pixelcnn_sample", "implementations", "masked_conv2d",
           "pixelcnn_sample", "use_reference"]

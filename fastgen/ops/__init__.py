"""fastgen's ops. Each dispatches to C++ (CPU), Triton or CUDA (GPU), or its pure-PyTorch reference."""
from fastgen.ops import _lib  # noqa: F401  (schemas first)
from fastgen import _ext  # noqa: F401  (then the compiled kernels, if built)
from fastgen.ops._dispatch import implementations, use_reference
from fastgen.ops.categorical_nll import categorical_nll
from fastgen.ops.dmol import dmol_nll, dmol_sample
from fastgen.ops.feature_stats import feature_stats_update
from fastgen.ops.gan_loss import gan_loss
from fastgen.ops.gated_activation import gated_activation
from fastgen.ops.gradient_penalty import gradient_penalty
from fastgen.ops.instance_norm_act import instance_norm_act
from fastgen.ops.masked_conv2d import masked_conv2d
from fastgen.ops.minibatch_stddev import minibatch_stddev
from fastgen.ops.pixel_norm import pixel_norm
from fastgen.ops.reparameterize import reparameterize
from fastgen.ops.sample_program import sample_program
from fastgen.ops.vae_nelbo import vae_nelbo

__all__ = ["categorical_nll", "dmol_nll", "dmol_sample", "feature_stats_update", "gan_loss", "gated_activation",
           "gradient_penalty", "implementations", "instance_norm_act", "masked_conv2d", "minibatch_stddev",
           "pixel_norm", "reparameterize", "sample_program", "use_reference", "vae_nelbo"]

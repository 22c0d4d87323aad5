"""Pure-PyTorch specifications of every fastgen op: the truth that tests and benchmarks compare to."""
from fastgen._core import causal_mask
from fastgen.reference.categorical_nll import (
    categorical_logsumexp_reference,
    categorical_nll_backward_reference,
    categorical_nll_reference,
)
from fastgen.reference.dmol import dmol_nll_reference, dmol_pixel_log_prob_reference, dmol_sample_reference
from fastgen.reference.feature_stats import feature_stats_update_reference, finish_covariance_reference
from fastgen.reference.gated_activation import gated_activation_backward_reference, gated_activation_reference
from fastgen.reference.instance_norm_act import (
    instance_norm_act_backward_reference,
    instance_norm_act_reference,
    instance_norm_stats_reference,
)
from fastgen.reference.masked_conv2d import (
    masked_conv2d_backward_reference,
    masked_conv2d_grad_input_reference,
    masked_conv2d_grad_weight_reference,
    masked_conv2d_reference,
)
from fastgen.reference.minibatch_stddev import minibatch_stddev_backward_reference, minibatch_stddev_reference
from fastgen.reference.pixel_norm import pixel_norm_backward_reference, pixel_norm_reference
from fastgen.reference.sample_program import run_program, sample_program_reference

__all__ = [
    "categorical_logsumexp_reference",
    "categorical_nll_backward_reference",
    "categorical_nll_reference",
    "causal_mask",
    "dmol_nll_reference",
    "dmol_pixel_log_prob_reference",
    "dmol_sample_reference",
    "feature_stats_update_reference",
    "finish_covariance_reference",
    "masked_conv2d_backward_reference",
    "gated_activation_backward_reference",
    "gated_activation_reference",
    "instance_norm_act_backward_reference",
    "instance_norm_act_reference",
    "instance_norm_stats_reference",
    "masked_conv2d_grad_input_reference",
    "masked_conv2d_grad_weight_reference",
    "masked_conv2d_reference",
    "minibatch_stddev_backward_reference",
    "minibatch_stddev_reference",
    "pixel_norm_backward_reference",
    "pixel_norm_reference",
    "run_program",
    "sample_program_reference",
]

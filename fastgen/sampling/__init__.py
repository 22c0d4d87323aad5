"""Autoregressive sampling: the one driver (``sample``), the naive loop and the shared noise.

The cached samplers are each model's ``sampling_program`` (``fastgen.program``) run by
``fastgen.ops.sample_program``.
"""
from fastgen._core import sample_from_logits
from fastgen.sampling.driver import eval_mode, sample
from fastgen.sampling.naive import draw_noise, naive_sample
from fastgen.sampling.partial import partial_image

__all__ = ["draw_noise", "eval_mode", "naive_sample", "partial_image", "sample", "sample_from_logits"]

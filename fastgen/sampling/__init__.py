"""Autoregressive samplers: the naive reference sampler and the noise it shares with faster ones."""
from fastgen.sampling.naive import draw_noise, naive_sample, partial_image, sample_from_logits

__all__ = ["draw_noise", "naive_sample", "partial_image", "sample_from_logits"]

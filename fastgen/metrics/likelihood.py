"""Likelihood units."""
from __future__ import annotations

import math

import torch


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Convert a negative log-likelihood per image in nats to bits per dimension (sub-pixel).

    >>> bits_per_dim(model.log_prob(x).neg().mean(), dims=x[0].numel())
    """
    if dims < 1:
        raise ValueError(f"dims must be a positive number of dimensions per image, got {dims}")
    return nll_nats / (dims * math.log(2.0))

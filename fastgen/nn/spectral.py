"""Spectral normalisation of a whole discriminator, the stabiliser of Miyato et al. (2018)."""
from __future__ import annotations

from torch import nn


def spectral_normalize(network: nn.Module, power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise every convolution, linear layer and label embedding of ``network`` in
    place and return it: each weight is divided by its largest singular value, estimated by
    ``power_iterations`` steps of power iteration per training forward pass (torch's
    ``parametrizations.spectral_norm``; the estimate's vectors are buffers, saved in checkpoints).
    Apply it after the weights are initialised: an initialisation written afterwards would go to a
    temporary normalised copy."""
    if isinstance(power_iterations, bool) or not isinstance(power_iterations, int) or power_iterations < 1:
        raise ValueError(f"power_iterations must be a positive integer, got {power_iterations!r}")
    for module in list(network.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(module, n_power_iterations=power_iterations)
    return network

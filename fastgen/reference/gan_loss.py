r"""Reference GAN losses, from discriminator (critic) outputs on real and generated images.

``d_real`` and ``d_fake`` are logits (scores for the Wasserstein and hinge losses) of any shape;
each loss is a mean over the elements of each tensor (the two may differ in size).

    kind            discriminator                                  generator
    minimax         E softplus(-D(x)) + E softplus(D(G(z)))        -E softplus(D(G(z)))   (= E log(1 - sigmoid))
    non_saturating  the same                                       E softplus(-D(G(z)))   (= -E log sigmoid)
    lsgan           E (D(x) - 1)^2 / 2 + E D(G(z))^2 / 2           E (D(G(z)) - 1)^2 / 2
    hinge           E relu(1 - D(x)) + E relu(1 + D(G(z)))         -E D(G(z))
    wasserstein     E D(G(z)) - E D(x)                             -E D(G(z))

The generator losses do not depend on ``d_real``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("minimax", "non_saturating", "lsgan", "hinge", "wasserstein")
TARGETS = ("discriminator", "generator")


def gan_loss_reference(d_real: torch.Tensor | None, d_fake: torch.Tensor, *, kind: str,
                       target: str = "discriminator") -> torch.Tensor:
    """The scalar loss of ``target`` (see the module docstring)."""
    if target == "generator":
        if kind == "minimax":
            return -F.softplus(d_fake).mean()
        if kind == "non_saturating":
            return F.softplus(-d_fake).mean()
        if kind == "lsgan":
            return 0.5 * ((d_fake - 1.0) ** 2).mean()
        if kind in ("hinge", "wasserstein"):
            return -d_fake.mean()
    elif target == "discriminator":
        if kind in ("minimax", "non_saturating"):
            return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if kind == "lsgan":
            return 0.5 * ((d_real - 1.0) ** 2).mean() + 0.5 * (d_fake ** 2).mean()
        if kind == "hinge":
            return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        if kind == "wasserstein":
            return d_fake.mean() - d_real.mean()
    else:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

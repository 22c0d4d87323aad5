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


def gan_loss_backward_reference(grad: torch.Tensor, d_real: torch.Tensor | None, d_fake: torch.Tensor, *, kind: str,
                                target: str = "discriminator") -> tuple[torch.Tensor | None, torch.Tensor]:
    """(d loss / d d_real, d loss / d d_fake) times ``grad``, written out (the kernels' backward;
    tested against autograd). d_real's gradient is None for the generator. The hinge's kink at
    +-1 takes the gradient 0, as torch.relu does, and a NaN input passes it (autograd of torch.relu
    does). The least-squares terms are written 0.5 * (2 (v - 1)), autograd's order of operations,
    so that this, autograd and the kernels overflow alike near float's max."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    f = d_fake
    if target == "generator":
        fake = {"minimax": -torch.sigmoid(f), "non_saturating": -torch.sigmoid(-f), "lsgan": 0.5 * (2.0 * (f - 1.0)),
                "hinge": -torch.ones_like(f), "wasserstein": -torch.ones_like(f)}[kind]
        return None, grad * fake / f.numel()
    r = d_real
    real, fake = {
        "minimax": (-torch.sigmoid(-r), torch.sigmoid(f)),
        "non_saturating": (-torch.sigmoid(-r), torch.sigmoid(f)),
        "lsgan": (0.5 * (2.0 * (r - 1.0)), 0.5 * (2.0 * f)),
        "hinge": (-(~(r >= 1.0)).to(r.dtype), (~(f <= -1.0)).to(f.dtype)),
        "wasserstein": (-torch.ones_like(r), torch.ones_like(f)),
    }[kind]
    return grad * real / r.numel(), grad * fake / f.numel()

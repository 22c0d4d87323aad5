r"""Reference categorical negative log-likelihood (softmax cross-entropy over levels).

For logits z of shape (N, L, C, H, W) and integer targets t of shape (N, C, H, W) in [0, L):

    nll[n] = sum_{c,h,w} ( logsumexp_l z[n, l, c, h, w] - z[n, t[n,c,h,w], c, h, w] )

in nats, one value per image. The gradient with respect to z is

    d nll[n] / d z[n, l, c, h, w] = softmax_l(z)[l] - [l == t]    (times the upstream grad of nll[n]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgen._core import accumulation_dtype


def categorical_nll_reference(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image NLL in nats: logsumexp over levels minus the target's logit, summed per image.
    (The formula itself rather than ``F.cross_entropy``, which gives NaN, not +inf, where another
    level's logit is +inf.)"""
    z = logits.to(accumulation_dtype(logits.dtype))
    losses = torch.logsumexp(z, dim=1) - z.gather(1, target.unsqueeze(1)).squeeze(1)
    return losses.flatten(1).sum(1).to(logits.dtype)


def categorical_logsumexp_reference(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over levels, (N, C, H, W), in float32 (float64 for float64 logits)."""
    return torch.logsumexp(logits.to(accumulation_dtype(logits.dtype)), dim=1)


def categorical_nll_backward_reference(
    grad: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, lse: torch.Tensor
) -> torch.Tensor:
    """dL/dlogits = grad[n] * (exp(z - lse) - onehot(t)), with ``lse`` the logsumexp over levels."""
    acc = accumulation_dtype(logits.dtype)
    probs = torch.exp(logits.to(acc) - lse.unsqueeze(1))
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(acc)
    return ((probs - onehot) * grad.to(acc).view(-1, 1, 1, 1, 1)).to(logits.dtype)

r"""Reference negative ELBO of a VAE with a diagonal Gaussian posterior and a N(0, I) prior.

Per example n, in nats:

    nelbo[n] = recon_nll[n] + beta * kl[n]
    kl[n]    = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)              (analytic KL(q || N(0, I)))
    recon_nll[n] = sum over the sub-pixels d of x[n] of -log p(x_d | recon[n])

The decoder output ``recon`` and the data ``x`` depend on the likelihood:

    bernoulli    recon (N, *S) logits, x (N, *S) float in [0, 1] (probabilities are allowed):
                 -log p = softplus(r) - x r
    categorical  recon (N, L, *S) logits over L levels, x (N, *S) int64 in [0, L):
                 -log p = logsumexp_l r_l - r_x
    gaussian     recon (N, 2, *S) = (mean m, log-scale s), x (N, *S) float:
                 -log p = log(2 pi) / 2 + s + (x - m)^2 exp(-2 s) / 2
    logistic     recon (N, 2, *S) = (mean m, log-scale s) on the [-1, 1] scale, x (N, *S) int64 in
                 [0, levels): the discretized logistic of PixelCNN++ with one component. Level k
                 sits at v = 2k / (levels - 1) - 1, its bin is v +- 1 / (levels - 1), and the end bins
                 reach -inf and +inf. With a = (v + 1/(levels-1) - m) e^-s and b = (v - 1/(levels-1) - m) e^-s,
                 p = sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), so
                 -log p = -logsigmoid(a) - logsigmoid(-b) - log(-expm1(b - a)), finite for any finite
                 input (the lowest bin drops the b terms, the highest the a terms).

Log-scales s are clamped to [-7, 7] (the gradient is zero outside): -7 as in PixelCNN++, and +7
keeps the bin probability of the logistic above float32's smallest normal number.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LIKELIHOODS = ("bernoulli", "categorical", "gaussian", "logistic")
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def parameter_planes(likelihood: str, levels: int) -> int | None:
    """Planes of decoder output per sub-pixel: None for bernoulli (recon is (N, *S)), else P of a
    (N, P, *S) recon: ``levels`` for categorical, 2 (mean, log-scale) for gaussian and logistic."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return {"bernoulli": None, "categorical": levels}.get(likelihood, 2)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _logistic_nll(mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    half_bin = 1.0 / (levels - 1)
    v = x.to(mean.dtype) * (2.0 * half_bin) - 1.0
    inv_scale = torch.exp(-log_scale)
    a = (v + half_bin - mean) * inv_scale
    b = (v - half_bin - mean) * inv_scale
    lowest, highest = x == 0, x == levels - 1
    upper = torch.where(highest, 0.0, F.logsigmoid(a))
    lower = torch.where(lowest, 0.0, F.logsigmoid(-b))
    # b - a = -2 half_bin / scale whatever v and m are; the end bins have no such term.
    width = torch.where(lowest | highest, 0.0, torch.log(-torch.expm1(-(2.0 * half_bin) * inv_scale)))
    return -(upper + lower + width)


def recon_nll_reference(recon: torch.Tensor, x: torch.Tensor, likelihood: str, levels: int = 256) -> torch.Tensor:
    """-log p(x | recon) summed per example, (N,)."""
    if likelihood == "bernoulli":
        # softplus(r) - x r = (1 - x) relu(r) + x relu(-r) + log1p(e^-|r|): a sum of non-negative
        # terms, so infinite logits give +inf (binary_cross_entropy_with_logits gives NaN, inf - inf
        # inside it) and autograd's gradients stay free of 0 * inf.
        x = x.to(recon.dtype)
        nll = (1 - x) * torch.relu(recon) + x * torch.relu(-recon) + torch.log1p(torch.exp(-recon.abs()))
    elif likelihood == "categorical":
        # The formula itself: F.cross_entropy gives NaN, not +inf, where another level's logit is +inf.
        nll = torch.logsumexp(recon, dim=1) - recon.gather(1, x.unsqueeze(1)).squeeze(1)
    elif likelihood == "gaussian":
        mean, log_scale = recon[:, 0], recon[:, 1].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        nll = _HALF_LOG_2PI + log_scale + 0.5 * (x - mean) ** 2 * torch.exp(-2.0 * log_scale)
    elif likelihood == "logistic":
        nll = _logistic_nll(recon[:, 0], recon[:, 1].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX), x, levels)
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return _flat(nll).sum(1)


def gaussian_kl_reference(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, (N,)."""
    return 0.5 * _flat(mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(1)


def vae_nelbo_reference(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *,
                        likelihood: str, beta: float = 1.0, levels: int = 256) -> torch.Tensor:
    """Per-example negative ELBO in nats, (N,)."""
    return recon_nll_reference(recon, x, likelihood, levels) + beta * gaussian_kl_reference(mu, logvar)


def recon_nll_grad_reference(recon: torch.Tensor, x: torch.Tensor, likelihood: str, levels: int = 256
                             ) -> torch.Tensor:
    """d recon_nll[n] / d recon, written out (the kernels' backward; tested against autograd):

        bernoulli    sigmoid(r) - x
        categorical  softmax(r) - onehot(x)
        gaussian     d/dm = -(x - m) e^-2s,  d/ds = 1 - (x - m)^2 e^-2s
        logistic     with A = sigmoid(-a) (0 in the top bin), B = sigmoid(b) (0 in the bottom bin) and
                     w = a - b = 2 e^-s / (levels - 1):
                     d/dm = e^-s (A - B),  d/ds = a A - b B + w / expm1(w) (inner bins only)

    d/ds is zero where the raw log-scale lies outside the clamp [-7, 7].
    """
    if likelihood == "bernoulli":
        return torch.sigmoid(recon) - x.to(recon.dtype)
    if likelihood == "categorical":
        softmax = torch.exp(recon - torch.logsumexp(recon, dim=1, keepdim=True))  # torch.softmax: NaN at +inf
        return softmax - F.one_hot(x, recon.shape[1]).movedim(-1, 1).to(recon.dtype)
    raw = recon[:, 1]
    inside = (raw >= LOG_SCALE_MIN) & (raw <= LOG_SCALE_MAX)
    log_scale = raw.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    mean = recon[:, 0]
    if likelihood == "gaussian":
        inv_var = torch.exp(-2.0 * log_scale)
        diff = x - mean
        return torch.stack([-diff * inv_var, torch.where(inside, 1.0 - diff * diff * inv_var, 0.0)], 1)
    if likelihood != "logistic":
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    half_bin = 1.0 / (levels - 1)
    v = x.to(recon.dtype) * (2.0 * half_bin) - 1.0
    inv = torch.exp(-log_scale)
    centre_a, centre_b = v + half_bin - mean, v - half_bin - mean
    a, b = centre_a * inv, centre_b * inv
    lowest, highest = x == 0, x == levels - 1
    upper = torch.where(highest, 0.0, torch.sigmoid(-a))
    lower = torch.where(lowest, 0.0, torch.sigmoid(b))
    width = 2.0 * half_bin * inv
    inner = torch.where(lowest | highest, 0.0, width / torch.expm1(width))
    # a A - b B as (A (a / e^-s) - B (b / e^-s)) e^-s, the products autograd of the loss forms, so
    # that both give the same inf or NaN for an infinite or huge mean.
    d_scale = (upper * centre_a - lower * centre_b) * inv + inner
    return torch.stack([inv * (upper - lower), torch.where(inside, d_scale, 0.0)], 1)


def gaussian_kl_grad_reference(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d kl / d mu, d kl / d logvar) = (mu, (exp(logvar) - 1) / 2)."""
    return mu, 0.5 * torch.expm1(logvar)

r"""Reference discretized logistic mixture (DMoL) likelihood and sampler of PixelCNN++.

Layout (the one of openai/pixel-cnn's ``discretized_mix_logistic_loss``, channels first): params
(N, K, H, W) holds, for ``nr_mix`` = M components,

    channels [0, M)                         mixture logits a_k
    then, for each colour c in 0..C-1, a block of 3M (C = 3) or 2M (C = 1) channels:
        [block, block + M)                  means m_{c,k}
        [block + M, block + 2M)             log-scales s_{c,k} (clamped below at -7)
        [block + 2M, block + 3M)            coupling coefficients (C = 3 only), through tanh

so K = 10 M for RGB and 3 M for one channel. The colours are coupled through the coefficients
(coefficient block of colour 0 couples G to R, block 1 couples B to R, block 2 couples B to G):

    mu_0 = m_0,   mu_1 = m_1 + tanh(q_0) x_0,   mu_2 = m_2 + tanh(q_1) x_0 + tanh(q_2) x_1.

x in [-1, 1] lies on a grid of ``levels`` values, bin half-width h = 1 / (levels - 1). With
inv = exp(-s), p = inv (x - mu + h), q = inv (x - mu - h), the log-probability of one sub-pixel is

    log sigmoid(p)                          x < -0.999   (the bottom bin reaches -inf)
    log(1 - sigmoid(q))                     x >  0.999   (the top bin reaches +inf)
    log(sigmoid(p) - sigmoid(q))            otherwise, if that difference exceeds 1e-5
    log pdf(x) + log(2h)                    otherwise (mid-bin density times the bin width)

and the per-pixel log-likelihood is logsumexp_k( log_softmax(a)_k + sum_c log p_{c,k} ).
``dmol_nll`` returns minus its sum over pixels, per image, in nats.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastgen._core import EDGE, LOG_SCALE_MIN, NOISE_EPS, SMALL_BIN


def split_params(params: torch.Tensor, channels: int, nr_mix: int):
    """(logits (N, M, H, W), means, log_scales (clamped), coeffs (tanh applied), each (N, C, M, H, W);
    coeffs is None for one channel)."""
    n, _, height, width = params.shape
    per = 3 if channels == 3 else 2
    blocks = params[:, nr_mix:].reshape(n, channels, per, nr_mix, height, width)
    coeffs = torch.tanh(blocks[:, :, 2]) if channels == 3 else None
    return params[:, :nr_mix], blocks[:, :, 0], blocks[:, :, 1].clamp(min=LOG_SCALE_MIN), coeffs


def dmol_nll_reference(x: torch.Tensor, params: torch.Tensor, nr_mix: int, levels: int = 256) -> torch.Tensor:
    """Per-image negative log-likelihood in nats, (N,): the formula of the module docstring."""
    return -dmol_pixel_log_prob_reference(x, params, nr_mix, levels).flatten(1).sum(1)


def dmol_pixel_log_prob_reference(x: torch.Tensor, params: torch.Tensor, nr_mix: int,
                                  levels: int = 256) -> torch.Tensor:
    """Per-pixel log-likelihood (N, H, W) in nats."""
    channels = x.shape[1]
    logits, means, log_scales, coeffs = split_params(params, channels, nr_mix)
    xk = x.unsqueeze(2)  # (N, C, 1, H, W) against (N, C, M, H, W)
    if channels == 3:
        mu = torch.stack([means[:, 0],
                          means[:, 1] + coeffs[:, 0] * xk[:, 0],
                          means[:, 2] + coeffs[:, 1] * xk[:, 0] + coeffs[:, 2] * xk[:, 1]], dim=1)
    else:
        mu = means
    half = 1.0 / (levels - 1)
    centered = xk - mu
    inv = torch.exp(-log_scales)
    plus_in = inv * (centered + half)
    min_in = inv * (centered - half)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    mid_in = inv * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in) + math.log(2 * half)
    interior = torch.where(cdf_delta > SMALL_BIN, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    log_probs = torch.where(xk < -EDGE, log_cdf_plus, torch.where(xk > EDGE, log_one_minus_cdf_min, interior))
    component = log_probs.sum(1) + torch.log_softmax(logits, dim=1)
    return torch.logsumexp(component, dim=1)


def dmol_sample_reference(params: torch.Tensor, nr_mix: int, noise: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """One draw per pixel, (N, C, H, W) in [-1, 1] on the grid of ``levels`` values.

    ``noise`` (N, M + C, H, W) is uniform in [0, 1): its first M channels pick the component by
    Gumbel-max (argmax of a_k - log(-log u_k)), the last C draw the logistic of each colour in
    turn (x = mu + exp(s) (log u - log(1 - u))). Each colour is clamped to [-1, 1] and rounded to
    the grid before it enters the coupling of the next, so every colour is conditioned on the
    value the image will hold, as in training.
    """
    channels = noise.shape[1] - nr_mix
    logits, means, log_scales, coeffs = split_params(params, channels, nr_mix)
    u = noise.to(params.dtype).clamp(NOISE_EPS, 1 - NOISE_EPS)
    choice = torch.argmax(logits - torch.log(-torch.log(u[:, :nr_mix])), dim=1, keepdim=True)  # (N, 1, H, W)

    def pick(t: torch.Tensor) -> torch.Tensor:  # (N, C, M, H, W) -> (N, C, H, W) at the chosen component
        return t.gather(2, choice.unsqueeze(1).expand(-1, channels, -1, -1, -1)).squeeze(2)

    mean, log_scale = pick(means), pick(log_scales)
    logistic = torch.log(u[:, nr_mix:]) - torch.log1p(-u[:, nr_mix:])
    steps = levels - 1
    out = []
    for c in range(channels):
        value = mean[:, c] + torch.exp(log_scale[:, c]) * logistic[:, c]
        if c > 0:
            coeff = pick(coeffs)
            value = value + (coeff[:, 0] * out[0] if c == 1 else coeff[:, 1] * out[0] + coeff[:, 2] * out[1])
        out.append((2 * torch.round((value.clamp(-1, 1) + 1) * (steps / 2)) - steps) / steps)
    return torch.stack(out, dim=1)

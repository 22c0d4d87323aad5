r"""Reference minibatch standard deviation (Karras et al., 2018, "Progressive Growing of GANs",
section 3): one extra feature map that tells the discriminator how varied its minibatch is.

For x (N, C, H, W) and group_size >= 1, let G be the largest divisor of N that is <= group_size
(so that any N works) and M = N / G. The groups are x viewed as (G, M, C, H, W) (the reshape of
the paper's code): group m holds the samples m, m + M, m + 2M, ... Per group m and (c, h, w):

    mean[m, c, h, w] = mean_g x[g, m, c, h, w]
    std[m, c, h, w]  = sqrt(mean_g (x[g, m, c, h, w] - mean)^2 + eps)      (population variance)
    s[m]             = mean_{c, h, w} std[m, c, h, w]
    y                = cat([x, s[n % M] broadcast to (N, 1, H, W)], dim=1)    (N, C + 1, H, W)

The statistics are computed in float32 (float64 for float64 x); y has x's dtype.

Backward, with gy = grad_y: the x part passes gy[:, :C] through; the extra channel's gradient
gs[m] = sum_{g, h, w} gy[g * M + m, C, h, w] flows back through s (the mean's own derivative
sums to zero over the group):

    d std[m, chw] / d x[g, m, chw] = (x[g, m, chw] - mean[m, chw]) / (G * std[m, chw])
    grad_x[g, m, chw] = gy[g, m, chw] + gs[m] / (C * H * W) * (x - mean) / (G * std)
"""
from __future__ import annotations

import torch


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def group_count(n: int, group_size: int) -> int:
    """G: the largest divisor of n that is <= group_size (1 <= G <= n)."""
    for g in range(min(group_size, n), 0, -1):
        if n % g == 0:
            return g
    return 1


def _group_stats(x: torch.Tensor, group_size: int, eps: float):
    """(xg - mean, std), xg the (G, M, C, H, W) view of x and std (M, C, H, W), in the accumulation dtype."""
    n = x.shape[0]
    g = group_count(n, group_size)
    xg = x.to(_acc(x)).reshape(g, n // g, *x.shape[1:])
    d = xg - xg.mean(dim=0, keepdim=True)
    return d, torch.sqrt(d.square().mean(dim=0) + eps)


def minibatch_stddev_reference(x: torch.Tensor, group_size: int = 4, *, eps: float = 1e-8) -> torch.Tensor:
    """``cat([x, s], 1)`` with s the mean over (c, h, w) of the group standard deviation; see the module docstring."""
    n, _, h, w = x.shape
    _, std = _group_stats(x, group_size, eps)
    s = std.mean(dim=(1, 2, 3))  # (M,)
    m = s.shape[0]
    channel = s.repeat(n // m).view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, channel.to(x.dtype)], dim=1)


def minibatch_stddev_backward_reference(grad_out: torch.Tensor, x: torch.Tensor, group_size: int,
                                        eps: float) -> torch.Tensor:
    """grad_x (N, C, H, W) from grad_out (N, C + 1, H, W), in x's dtype, in differentiable ops (the
    critic's double backward of WGAN-GP goes through it)."""
    n, c, h, w = x.shape
    d, std = _group_stats(x, group_size, eps)
    g = d.shape[0]
    grad = grad_out.to(d.dtype)
    gs = grad[:, c].sum(dim=(1, 2)).view(g, n // g).sum(dim=0)  # (M,)
    extra = (gs / (c * h * w)).view(1, -1, 1, 1, 1) * d / (g * std)
    return (grad[:, :c] + extra.reshape(n, c, h, w)).to(x.dtype)

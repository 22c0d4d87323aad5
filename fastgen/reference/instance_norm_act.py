r"""Reference instance normalisation followed by an activation (Ulyanov et al., 2016; the norm of
CycleGAN's and Pix2Pix's generators, followed there by a ReLU or a leaky ReLU).

For x (N, C, H, W), per plane (n, c), over its H * W pixels:

    mean = mean_hw(x),   var = mean_hw((x - mean)^2)   (biased),   rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    z    = xhat * weight[c] + bias[c]                  (weight 1, bias 0 where not given)
    y    = act(z),   act in {"relu": max(z, 0), "leaky_relu": z if z > 0 else slope * z, "none": z}

This is ``F.instance_norm(x, weight=weight, bias=bias, eps=eps)`` followed by the activation,
except that a plane of one pixel is allowed (var = 0: y = act(bias)). The statistics are computed
in float32 (float64 for float64 x) and returned in that dtype; y has x's dtype.

Backward, from the saved statistics (the forward's mean and rstd; z recomputed from x):

    g = grad_y * act'(z)                               (act' as autograd has it: relu' = 0 where
                                                        z <= 0, leaky_relu' = slope where z <= 0)
    grad_bias[c]   = sum_{n, hw} g
    grad_weight[c] = sum_{n, hw} g * xhat
    gx     = g * weight[c]
    grad_x = rstd * (gx - mean_hw(gx) - xhat * mean_hw(gx * xhat))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("relu", "leaky_relu", "none")


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _per_channel(t: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(acc)[None, :, None, None]


def _plane(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None]


def instance_norm_stats_reference(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, rstd), each (N, C), in float32 (float64 for float64 x)."""
    xf = x.to(_acc(x))
    mean = xf.mean(dim=(2, 3))
    var = (xf - _plane(mean)).square().mean(dim=(2, 3))
    return mean, torch.rsqrt(var + eps)


def activation_reference(z: torch.Tensor, act: str, negative_slope: float) -> torch.Tensor:
    if act == "relu":
        return torch.relu(z)
    if act == "leaky_relu":
        return F.leaky_relu(z, negative_slope)
    if act == "none":
        return z
    raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")


def _normalized(x, weight, bias, mean, rstd):
    """(xhat, z) in the statistics' dtype."""
    acc = mean.dtype
    xhat = (x.to(acc) - _plane(mean)) * _plane(rstd)
    z = xhat
    if weight is not None:
        z = z * _per_channel(weight, acc)
    if bias is not None:
        z = z + _per_channel(bias, acc)
    return xhat, z


def instance_norm_act_reference(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                                *, act: str = "relu", negative_slope: float = 0.2, eps: float = 1e-5) -> torch.Tensor:
    """``act(instance_norm(x) * weight + bias)``; see the module docstring."""
    mean, rstd = instance_norm_stats_reference(x, eps)
    _, z = _normalized(x, weight, bias, mean, rstd)
    return activation_reference(z, act, negative_slope).to(x.dtype)


def instance_norm_act_forward_reference(x, weight, bias, act, negative_slope, eps):
    """The forward op's three outputs: (y, mean, rstd)."""
    mean, rstd = instance_norm_stats_reference(x, eps)
    _, z = _normalized(x, weight, bias, mean, rstd)
    return activation_reference(z, act, negative_slope).to(x.dtype), mean, rstd


def instance_norm_act_backward_reference(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, rstd: torch.Tensor, act: str, negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight, grad_bias) from the saved (mean, rstd), in x's dtype. grad_weight and
    grad_bias are the gradients of a weight and a bias also where none was given (at 1 and 0)."""
    acc = mean.dtype
    xhat, z = _normalized(x, weight, bias, mean, rstd)
    grad = grad_out.to(acc)
    if act == "relu":
        g = torch.where(z <= 0, torch.zeros_like(grad), grad)
    elif act == "leaky_relu":
        g = torch.where(z > 0, grad, grad * negative_slope)
    elif act == "none":
        g = grad
    else:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    grad_bias = g.sum(dim=(0, 2, 3))
    grad_weight = (g * xhat).sum(dim=(0, 2, 3))
    gx = g if weight is None else g * _per_channel(weight, acc)
    grad_x = _plane(rstd) * (gx - gx.mean(dim=(2, 3), keepdim=True)
                             - xhat * (gx * xhat).mean(dim=(2, 3), keepdim=True))
    return grad_x.to(x.dtype), grad_weight.to(x.dtype), grad_bias.to(x.dtype)

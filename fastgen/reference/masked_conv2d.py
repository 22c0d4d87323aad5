r"""Reference PixelCNN masked convolution.

For a k x k kernel with centre ``p = k // 2``, output position (h, w) sees input position
(h + dy, w + dx) only if it comes before (h, w) in raster order:

    dy < 0                         (rows above: every column)
    dy == 0 and dx < 0             (same row: columns to the left)
    dy == 0 and dx == 0            (the centre) only for mask 'B' -- or, with colour groups,
                                   from input group g_in to output group g_out when
                                   g_in < g_out (mask 'A') or g_in <= g_out (mask 'B').

    y = conv2d(x, where(mask, weight, 0), bias, padding=p)

Masked weight entries are ignored whatever they hold (NaN and inf included: ``where``, not a
product with the mask, which would turn them into NaN) and get a zero gradient. Channels are split
into ``color_groups`` equal contiguous groups (R, G, B for 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgen._core import causal_mask


def masked_conv2d_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, mask_type: str,
    color_groups: int = 1,
) -> torch.Tensor:
    """``conv2d(x, where(mask, weight, 0), bias, padding=k // 2)`` with the PixelCNN causal mask."""
    return F.conv2d(x, _masked(weight, mask_type, color_groups), bias, padding=weight.shape[-1] // 2)


def _masked(weight: torch.Tensor, mask_type: str, color_groups: int) -> torch.Tensor:
    """weight with the entries the mask removes set to 0 (whatever they held)."""
    out_c, in_c, k, _ = weight.shape
    mask = causal_mask(out_c, in_c, k, mask_type, color_groups, dtype=torch.bool, device=weight.device)
    return torch.where(mask, weight, 0.0)


def masked_conv2d_grad_input_reference(
    grad_out: torch.Tensor, weight: torch.Tensor, *, mask_type: str, color_groups: int = 1
) -> torch.Tensor:
    """dL/dx = conv_transpose2d(dL/dy, where(mask, weight, 0), padding=k // 2)."""
    return F.conv_transpose2d(grad_out, _masked(weight, mask_type, color_groups), padding=weight.shape[-1] // 2)


def masked_conv2d_grad_weight_reference(
    grad_out: torch.Tensor, x: torch.Tensor, kernel_size: int, *, mask_type: str, color_groups: int = 1
) -> torch.Tensor:
    """dL/dweight = mask * (correlation of x with dL/dy); masked entries get exactly zero."""
    out_c, in_c = grad_out.shape[1], x.shape[1]
    shape = (out_c, in_c, kernel_size, kernel_size)
    grad = torch.nn.grad.conv2d_weight(x, shape, grad_out, padding=kernel_size // 2)
    mask = causal_mask(out_c, in_c, kernel_size, mask_type, color_groups, dtype=torch.bool, device=x.device)
    return torch.where(mask, grad, 0.0)


def masked_conv2d_backward_reference(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, *, mask_type: str, color_groups: int = 1,
    output_mask: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dx, dL/dweight, dL/dbias); an entry not asked for in ``output_mask`` is an empty tensor."""
    grad_x = (masked_conv2d_grad_input_reference(grad_out, weight, mask_type=mask_type, color_groups=color_groups)
              if output_mask[0] else x.new_empty(0))
    grad_w = (masked_conv2d_grad_weight_reference(grad_out, x, weight.shape[-1], mask_type=mask_type,
                                                  color_groups=color_groups) if output_mask[1] else x.new_empty(0))
    grad_b = grad_out.sum(dim=(0, 2, 3)) if output_mask[2] else x.new_empty(0)
    return grad_x, grad_w, grad_b

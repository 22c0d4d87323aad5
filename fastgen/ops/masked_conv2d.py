"""``fastgen.ops.masked_conv2d``: the PixelCNN masked convolution (types A and B, colour groups)."""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_same, check_tensor
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.masked_conv2d import (
    masked_conv2d_grad_input_reference,
    masked_conv2d_grad_weight_reference,
    masked_conv2d_reference,
)

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.masked_conv2d"

register_implementations(
    "masked_conv2d",
    lambda x, w, b, mask_type, groups: masked_conv2d_reference(x, w, b, mask_type=mask_type, color_groups=groups),
    (_TRITON, "masked_conv2d_triton"),
)
register_implementations(
    "masked_conv2d_grad_input",
    lambda g, w, mask_type, groups: masked_conv2d_grad_input_reference(g, w, mask_type=mask_type, color_groups=groups),
    (_TRITON, "masked_conv2d_grad_input_triton"),
)
register_implementations(
    "masked_conv2d_grad_weight",
    lambda g, x, k, mask_type, groups: masked_conv2d_grad_weight_reference(
        g, x, k, mask_type=mask_type, color_groups=groups
    ),
    (_TRITON, "masked_conv2d_grad_weight_triton"),
)


@torch.library.register_fake("fastgen::masked_conv2d")
def _(x, weight, bias, mask_type, color_groups):
    torch._check(x.dim() == 4 and weight.dim() == 4, lambda: "x and weight must be 4-D")
    torch._check(x.shape[1] == weight.shape[1], lambda: "x channels must match weight in_channels")
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2], x.shape[3])


@torch.library.register_fake("fastgen::masked_conv2d_grad_input")
def _(grad_out, weight, mask_type, color_groups):
    torch._check(grad_out.shape[1] == weight.shape[0], lambda: "grad_out channels must match weight out_channels")
    return grad_out.new_empty(grad_out.shape[0], weight.shape[1], grad_out.shape[2], grad_out.shape[3])


@torch.library.register_fake("fastgen::masked_conv2d_grad_weight")
def _(grad_out, x, kernel_size, mask_type, color_groups):
    return x.new_empty(grad_out.shape[1], x.shape[1], kernel_size, kernel_size)


def _setup_context(ctx, inputs, output):
    x, weight, bias, mask_type, color_groups = inputs
    needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
    # grad_x needs only the weight, grad_weight only x: save nothing else.
    ctx.save_for_backward(x if needs_w else None, weight if needs_x else None)
    ctx.kernel_size = weight.shape[-1]
    ctx.mask_type, ctx.color_groups = mask_type, color_groups


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
    grad_x = _ops.masked_conv2d_grad_input(grad, weight, ctx.mask_type, ctx.color_groups) if needs_x else None
    grad_w = (
        _ops.masked_conv2d_grad_weight(grad, x, ctx.kernel_size, ctx.mask_type, ctx.color_groups) if needs_w else None
    )
    grad_b = grad.sum(dim=(0, 2, 3)) if needs_b else None
    return grad_x, grad_w, grad_b, None, None


torch.library.register_autograd("fastgen::masked_conv2d", _backward, setup_context=_setup_context)


def check_masked_conv2d_args(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mask_type: str, color_groups: int
) -> None:
    """Raise a ValueError/TypeError naming the offending argument; used before any kernel runs."""
    check_tensor("x", x, dims=4, layout="(N, C_in, H, W)")
    check_tensor("weight", weight, dims=4, layout="(C_out, C_in, k, k)")
    out_c, in_c, kh, kw = weight.shape
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"weight must have an odd square kernel (k x k, k = 1, 3, 5, ...), got {kh}x{kw}")
    if x.shape[1] != in_c:
        raise ValueError(f"x has {x.shape[1]} channels but weight expects C_in = {in_c}")
    if bias is not None:
        check_tensor("bias", bias, dims=1, layout="(C_out,)")
        if bias.shape[0] != out_c:
            raise ValueError(f"bias must have C_out = {out_c} elements, got {bias.shape[0]}")
    check_same("x", x, weight=weight, bias=bias)
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if not isinstance(color_groups, int) or isinstance(color_groups, bool) or color_groups < 1:
        raise ValueError(f"color_groups must be a positive int, got {color_groups!r}")
    if in_c % color_groups or out_c % color_groups:
        raise ValueError(
            f"color_groups={color_groups} must divide both C_in={in_c} and C_out={out_c} "
            "(channels are split into equal contiguous colour groups)"
        )


def masked_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, mask_type: str,
    color_groups: int = 1,
) -> torch.Tensor:
    """y = conv2d(x, weight * causal_mask, bias, padding=k // 2) (PixelCNN mask 'A' or 'B').

    Args:
        x: (N, C_in, H, W) input.
        weight: (C_out, C_in, k, k) with k odd; masked entries are ignored and get zero gradient.
        bias: optional (C_out,).
        mask_type: 'A' excludes the centre position (first layer), 'B' includes it.
        color_groups: split channels into this many equal contiguous groups (3 for R, G, B): at the
            centre, output group g sees input groups < g ('A') or <= g ('B').

    Returns:
        (N, C_out, H, W).
    """
    check_masked_conv2d_args(x, weight, bias, mask_type, color_groups)
    if reference_forced():
        return masked_conv2d_reference(x, weight, bias, mask_type=mask_type, color_groups=color_groups)
    return _ops.masked_conv2d(x, weight, bias, mask_type, color_groups)

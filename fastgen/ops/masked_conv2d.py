"""``fastgen.ops.masked_conv2d``: the PixelCNN masked convolution (types A and B, colour groups)."""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from fastgen.ops._checks import check_output_mask, check_same, check_tensor, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.masked_conv2d import masked_conv2d_backward_reference, masked_conv2d_reference

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.masked_conv2d"


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(x, weight, bias, mask_type, groups):
    check_masked_conv2d_args(x, weight, bias, mask_type, groups)
    return masked_conv2d_reference(x, weight, bias, mask_type=mask_type, color_groups=groups)


def _reference_backward(grad_out, x, weight, mask_type, groups, output_mask):
    check_masked_conv2d_backward_args(grad_out, x, weight, mask_type, groups, output_mask)
    return masked_conv2d_backward_reference(grad_out, x, weight, mask_type=mask_type, color_groups=groups,
                                            output_mask=output_mask)


register_implementations("masked_conv2d", _reference_forward, (_TRITON, "masked_conv2d_triton"))
register_implementations("masked_conv2d_backward", _reference_backward, (_TRITON, "masked_conv2d_backward_triton"))


@torch.library.register_fake("fastgen::masked_conv2d")
def _(x, weight, bias, mask_type, color_groups):
    check_masked_conv2d_args(x, weight, bias, mask_type, color_groups)
    shape = (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
    # Implementations keep x's layout (channels-last in, channels-last out).
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))


@torch.library.register_fake("fastgen::masked_conv2d_backward")
def _(grad_out, x, weight, mask_type, color_groups, output_mask):
    check_masked_conv2d_backward_args(grad_out, x, weight, mask_type, color_groups, output_mask)
    # grad_x keeps x's layout, grad_weight the weight's.
    grad_x = torch.empty_like(x) if output_mask[0] else x.new_empty(0)
    grad_w = torch.empty_like(weight) if output_mask[1] else x.new_empty(0)
    grad_b = x.new_empty(weight.shape[0]) if output_mask[2] else x.new_empty(0)
    return grad_x, grad_w, grad_b


def _setup_context(ctx, inputs, output):
    x, weight, bias, mask_type, color_groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.mask_type, ctx.color_groups = mask_type, color_groups


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    output_mask = list(ctx.needs_input_grad[:3])
    if not any(output_mask):
        return None, None, None, None, None
    grads = _ops.masked_conv2d_backward(grad, x, weight, ctx.mask_type, ctx.color_groups, output_mask)
    return tuple(g if needed else None for g, needed in zip(grads, output_mask)) + (None, None)


torch.library.register_autograd("fastgen::masked_conv2d", _backward, setup_context=_setup_context)
register_autocast("masked_conv2d", torch.bfloat16)


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
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x must have at least one row and one column (H, W >= 1), got shape {tuple(x.shape)}")
    if in_c == 0 or out_c == 0:
        # Every implementation refuses this (the reference cannot build an empty mask).
        raise ValueError(f"x and weight need at least one channel each way (C_in, C_out >= 1), "
                         f"got weight of shape {tuple(weight.shape)}")
    if bias is not None:
        check_tensor("bias", bias, dims=1, layout="(C_out,)")
        if bias.shape[0] != out_c:
            raise ValueError(f"bias must have C_out = {out_c} elements, got {bias.shape[0]}")
    check_same("x", x, weight=weight, bias=bias)
    if not isinstance(mask_type, str) or mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if not isinstance(color_groups, int) or isinstance(color_groups, bool) or color_groups < 1:
        raise ValueError(f"color_groups must be a positive int, got {color_groups!r}")
    if in_c % color_groups or out_c % color_groups:
        raise ValueError(
            f"color_groups={color_groups} must divide both C_in={in_c} and C_out={out_c} "
            "(channels are split into equal contiguous colour groups)"
        )


def check_masked_conv2d_backward_args(grad_out, x, weight, mask_type, color_groups, output_mask) -> None:
    check_masked_conv2d_args(x, weight, None, mask_type, color_groups)
    check_tensor("grad_out", grad_out, dims=4, layout="(N, C_out, H, W)")
    expected = (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"grad_out must be (N, C_out, H, W) = {expected}, got {tuple(grad_out.shape)}")
    check_same("x", x, grad_out=grad_out)
    check_output_mask("output_mask", output_mask, 3)


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

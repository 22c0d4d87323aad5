"""Triton masked convolution: a direct convolution over only the taps the causal mask keeps.

All three passes are one of two kernels over an explicit tap list (dy, dx):

    forward      y[n, o, h, w]   = sum_t sum_i  x[n, i, h + dy_t, w + dx_t] * Wp[t, i, o]   (+ bias)
    grad_input   gx[n, i, h, w]  = sum_t sum_o  gy[n, o, h - dy_t, w - dx_t] * Wp[t, i, o]
                                   (the same kernel with taps negated and Wp transposed)
    grad_weight  gWp[t, i, o]    = sum_{n,h,w}  x[n, i, h + dy_t, w + dx_t] * gy[n, o, h, w]

Wp is the masked weight packed as (taps, C_in, C_out); out-of-image reads are zero (padding).
"""
from __future__ import annotations

import torch
import triton
from torch._prims_common import suggest_memory_format
import triton.language as tl

from fastgen._core import causal_mask
from ._common import (check_int, check_output_mask, check_same, check_shape, check_tensor, compute_dtype, dot_precision,
                      require)


@triton.jit
def _tap_conv_fwd_kernel(x_ptr, w_ptr, dy_ptr, dx_ptr, b_ptr, y_ptr, T, C_IN, C_OUT, H, W,
                         HAS_BIAS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr):
    HW = H * W
    n_pblocks = tl.cdiv(HW, BLOCK_P)
    n = tl.program_id(0) // n_pblocks
    offs_p = (tl.program_id(0) % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    p_ok = offs_p < HW
    co_ok = offs_co < C_OUT
    h = offs_p // W
    w = offs_p % W
    x_base = x_ptr + (n * C_IN).to(tl.int64) * HW
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=ACC)
    for t in range(0, T):
        hh = h + tl.load(dy_ptr + t)
        ww = w + tl.load(dx_ptr + t)
        in_ok = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        for ci0 in range(0, C_IN, BLOCK_CI):
            offs_ci = ci0 + tl.arange(0, BLOCK_CI)
            ci_ok = offs_ci < C_IN
            xv = tl.load(x_base + offs_ci[None, :] * HW + (hh * W + ww)[:, None],
                         mask=in_ok[:, None] & ci_ok[None, :], other=0.0)
            wv = tl.load(w_ptr + (t * C_IN + offs_ci[:, None]) * C_OUT + offs_co[None, :],
                         mask=ci_ok[:, None] & co_ok[None, :], other=0.0)
            acc += tl.dot(xv.to(ACC), wv.to(ACC), input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0.0).to(ACC)[None, :]
    y_base = y_ptr + (n * C_OUT).to(tl.int64) * HW
    tl.store(y_base + offs_co[None, :] * HW + offs_p[:, None], acc.to(y_ptr.dtype.element_ty),
             mask=p_ok[:, None] & co_ok[None, :])


@triton.jit
def _tap_conv_wgrad_kernel(x_ptr, g_ptr, dy_ptr, dx_ptr, gw_ptr, T, N, IMAGES_PER_SPLIT, C_IN, C_OUT, H, W,
                           ACC: tl.constexpr, PRECISION: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr):
    # Program (split * T + t, ci block, co block) sums images [split * IMAGES_PER_SPLIT, ...) into
    # its own slice of gw (splits, T, C_in, C_out); the launcher adds the slices (deterministic).
    t = tl.program_id(0) % T
    split = tl.program_id(0) // T
    offs_ci = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    offs_co = tl.program_id(2) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ci_ok = offs_ci < C_IN
    co_ok = offs_co < C_OUT
    dy = tl.load(dy_ptr + t)
    dx = tl.load(dx_ptr + t)
    HW = H * W
    acc = tl.zeros((BLOCK_CI, BLOCK_CO), dtype=ACC)
    n_end = tl.minimum(N, (split + 1) * IMAGES_PER_SPLIT)
    for n in range(split * IMAGES_PER_SPLIT, n_end):
        x_base = x_ptr + (n * C_IN).to(tl.int64) * HW
        g_base = g_ptr + (n * C_OUT).to(tl.int64) * HW
        for p0 in range(0, HW, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            p_ok = offs_p < HW
            hh = offs_p // W + dy
            ww = offs_p % W + dx
            in_ok = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            xv = tl.load(x_base + offs_ci[:, None] * HW + (hh * W + ww)[None, :],
                         mask=ci_ok[:, None] & in_ok[None, :], other=0.0)
            gv = tl.load(g_base + offs_co[None, :] * HW + offs_p[:, None],
                         mask=p_ok[:, None] & co_ok[None, :], other=0.0)
            acc += tl.dot(xv.to(ACC), gv.to(ACC), input_precision=PRECISION, out_dtype=ACC)
    gw_base = gw_ptr + ((split * T + t) * C_IN).to(tl.int64) * C_OUT
    tl.store(gw_base + offs_ci[:, None] * C_OUT + offs_co[None, :], acc.to(gw_ptr.dtype.element_ty),
             mask=ci_ok[:, None] & co_ok[None, :])


def _check_mask(op: str, in_c: int, out_c: int, mask_type: str, color_groups: int) -> None:
    require(in_c >= 1 and out_c >= 1, op, f"x and weight need at least one channel each way, got C_in = {in_c}, "
                                          f"C_out = {out_c}")
    require(mask_type in ("A", "B"), op, f"mask_type must be 'A' or 'B', got {mask_type!r}")
    check_int(op, "color_groups", color_groups, 1)
    require(in_c % color_groups == 0 and out_c % color_groups == 0, op,
            f"color_groups={color_groups} must divide both C_in={in_c} and C_out={out_c}")


def _check_weight(op: str, weight: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """weight (C_out, C_in, k, k) with k odd, of ``ref``'s dtype and device."""
    check_tensor(op, "weight", weight, dims=4)
    check_same(op, ref_name, ref, weight=weight)
    kh, kw = weight.shape[2:]
    require(kh == kw and kh % 2 == 1, op, f"weight must have an odd square kernel, got {kh}x{kw}")


def _check_conv(op: str, x: torch.Tensor, weight: torch.Tensor, mask_type: str, color_groups: int) -> None:
    """x (N, C_in, H, W) and weight (C_out, C_in, k, k), k odd, of one float dtype on the kernels' device."""
    check_tensor(op, "x", x, dims=4)
    _check_weight(op, weight, "x", x)
    require(x.shape[2] >= 1 and x.shape[3] >= 1, op, f"x must have at least one row and one column (H, W >= 1), "
                                                     f"got {tuple(x.shape)}")
    require(x.shape[1] == weight.shape[1], op, f"x has {x.shape[1]} channels but weight expects "
                                               f"C_in = {weight.shape[1]}")
    _check_mask(op, weight.shape[1], weight.shape[0], mask_type, color_groups)


def _blocks(device: torch.device) -> tuple[int, int, int]:
    """(positions, input channels, output channels) per program. tl.dot needs 16 or more in each;
    the interpreter (CPU tensors) runs fastest on the smallest tiles."""
    return (64, 32, 64) if device.type == "cuda" else (16, 16, 16)


def _taps(kernel_size: int, mask_type: str, color_groups: int) -> tuple[list[int], list[int]]:
    """(dy, dx) of every tap the mask can keep; the centre only for 'B' or colour groups."""
    p = kernel_size // 2
    use_centre = mask_type == "B" or color_groups > 1
    taps = [(dy, dx) for dy in range(-p, 1) for dx in range(-p, p + 1) if dy < 0 or dx < 0 or (dx == 0 and use_centre)]
    return [t[0] for t in taps], [t[1] for t in taps]


def _tap_tensors(dys: list[int], dxs: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(dys, dtype=torch.int32, device=device), torch.tensor(dxs, dtype=torch.int32, device=device))


def _kernel_positions(dys: list[int], dxs: list[int], p: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each tap in the k x k kernel, for indexing the weight."""
    return (torch.tensor([dy + p for dy in dys], device=device, dtype=torch.long),
            torch.tensor([dx + p for dx in dxs], device=device, dtype=torch.long))


def _packed_weight(weight: torch.Tensor, mask_type: str, color_groups: int) -> tuple[torch.Tensor, list, list]:
    """The masked weight as (taps, C_in, C_out) and its tap offsets."""
    out_c, in_c, k, _ = weight.shape
    p = k // 2
    dys, dxs = _taps(k, mask_type, color_groups)
    mask = causal_mask(out_c, in_c, k, mask_type, color_groups, dtype=torch.bool, device=weight.device)
    rows, cols = _kernel_positions(dys, dxs, p, weight.device)
    # where, not a product with the mask: a NaN or inf in a masked entry must not survive.
    packed = torch.where(mask, weight, 0.0)[:, :, rows, cols].permute(2, 1, 0).contiguous()
    return packed, dys, dxs


def _tap_conv(inp: torch.Tensor, packed: torch.Tensor, dys: list, dxs: list, bias: torch.Tensor | None) -> torch.Tensor:
    inp = inp.contiguous()
    n, c_in, h, w = inp.shape
    c_out = packed.shape[2]
    out = torch.empty(n, c_out, h, w, device=inp.device, dtype=inp.dtype)
    if len(dys) == 0:
        out.zero_()
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))
    dy_t, dx_t = _tap_tensors(dys, dxs, inp.device)
    block_p, block_ci, block_co = _blocks(inp.device)
    grid = (n * triton.cdiv(h * w, block_p), triton.cdiv(c_out, block_co))
    _tap_conv_fwd_kernel[grid](
        inp, packed, dy_t, dx_t, bias if bias is not None else packed, out, len(dys), c_in, c_out, h, w,
        HAS_BIAS=bias is not None, ACC=compute_dtype(inp.dtype), PRECISION=dot_precision(inp.device),
        BLOCK_P=block_p, BLOCK_CI=block_ci, BLOCK_CO=block_co,
    )
    return out


def masked_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mask_type: str,
                         color_groups: int) -> torch.Tensor:
    op = "masked_conv2d_triton"
    _check_conv(op, x, weight, mask_type, color_groups)
    if bias is not None:
        check_tensor(op, "bias", bias, dims=1)
        check_same(op, "x", x, bias=bias)
        require(bias.shape[0] == weight.shape[0], op, f"bias must have C_out = {weight.shape[0]} elements, "
                                                       f"got {bias.shape[0]}")
    packed, dys, dxs = _packed_weight(weight, mask_type, color_groups)
    out = _tap_conv(x, packed, dys, dxs, None if bias is None else bias.contiguous())
    return out.contiguous(memory_format=suggest_memory_format(x))  # outputs keep x's layout


def masked_conv2d_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask_type: str,
                                  color_groups: int, output_mask: list[bool]):
    """(grad_x, grad_weight, grad_bias); entries not asked for in output_mask are empty tensors."""
    op = "masked_conv2d_backward_triton"
    _check_conv(op, x, weight, mask_type, color_groups)
    check_tensor(op, "grad_out", grad_out, dims=4, incoming_grad=True)
    check_same(op, "x", x, grad_out=grad_out)
    check_shape(op, "grad_out", grad_out, (x.shape[0], weight.shape[0], *x.shape[2:]), "(N, C_out, H, W)")
    output_mask = check_output_mask(op, output_mask, 3)
    grad_x = (masked_conv2d_grad_input_triton(grad_out, weight, mask_type, color_groups)
              .contiguous(memory_format=suggest_memory_format(x)) if output_mask[0] else x.new_empty(0))
    grad_w = (masked_conv2d_grad_weight_triton(grad_out, x, weight.shape[-1], mask_type, color_groups)
              .contiguous(memory_format=suggest_memory_format(weight)) if output_mask[1] else x.new_empty(0))
    grad_b = grad_out.sum(dim=(0, 2, 3)) if output_mask[2] else x.new_empty(0)
    return grad_x, grad_w, grad_b


def masked_conv2d_grad_input_triton(grad_out: torch.Tensor, weight: torch.Tensor, mask_type: str,
                                    color_groups: int) -> torch.Tensor:
    op = "masked_conv2d_grad_input_triton"
    check_tensor(op, "grad_out", grad_out, dims=4, incoming_grad=True)
    _check_weight(op, weight, "grad_out", grad_out)
    require(grad_out.shape[1] == weight.shape[0], op, f"grad_out must have C_out = {weight.shape[0]} channels, "
                                                      f"got {grad_out.shape[1]}")
    _check_mask(op, weight.shape[1], weight.shape[0], mask_type, color_groups)
    packed, dys, dxs = _packed_weight(weight, mask_type, color_groups)
    return _tap_conv(grad_out, packed.transpose(1, 2).contiguous(), [-d for d in dys], [-d for d in dxs], None)


def masked_conv2d_grad_weight_triton(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: int, mask_type: str,
                                     color_groups: int) -> torch.Tensor:
    op = "masked_conv2d_grad_weight_triton"
    check_tensor(op, "x", x, dims=4)
    check_tensor(op, "grad_out", grad_out, dims=4, incoming_grad=True)
    check_same(op, "x", x, grad_out=grad_out)
    require(grad_out.shape[0] == x.shape[0] and grad_out.shape[2:] == x.shape[2:], op,
            f"grad_out must be (N, C_out, H, W) with x's N, H, W, got {tuple(grad_out.shape)} for x {tuple(x.shape)}")
    check_int(op, "kernel_size", kernel_size, 1)
    require(kernel_size % 2 == 1, op, f"kernel_size must be odd, got {kernel_size}")
    _check_mask(op, x.shape[1], grad_out.shape[1], mask_type, color_groups)
    x, grad_out = x.contiguous(), grad_out.contiguous()
    n, c_in, h, w = x.shape
    c_out = grad_out.shape[1]
    grad_w = torch.zeros(c_out, c_in, kernel_size, kernel_size, device=x.device, dtype=x.dtype)
    dys, dxs = _taps(kernel_size, mask_type, color_groups)
    if not dys:
        return grad_w
    dy_t, dx_t = _tap_tensors(dys, dxs, x.device)
    block_p, block_ci, block_co = _blocks(x.device)
    tiles = len(dys) * triton.cdiv(c_in, block_ci) * triton.cdiv(c_out, block_co)
    # Split the sum over images across programs until there are enough to fill a GPU (~512).
    splits = min(n, max(1, 512 // tiles)) if x.device.type == "cuda" else 1
    images_per_split = triton.cdiv(n, splits)
    splits = triton.cdiv(n, images_per_split)
    partial = torch.empty(splits, len(dys), c_in, c_out, device=x.device, dtype=x.dtype)
    grid = (splits * len(dys), triton.cdiv(c_in, block_ci), triton.cdiv(c_out, block_co))
    _tap_conv_wgrad_kernel[grid](
        x, grad_out, dy_t, dx_t, partial, len(dys), n, images_per_split, c_in, c_out, h, w,
        ACC=compute_dtype(x.dtype), PRECISION=dot_precision(x.device), BLOCK_P=block_p, BLOCK_CI=block_ci,
        BLOCK_CO=block_co,
    )
    rows, cols = _kernel_positions(dys, dxs, kernel_size // 2, x.device)
    grad_w[:, :, rows, cols] = partial.sum(dim=0).permute(2, 1, 0)
    mask = causal_mask(c_out, c_in, kernel_size, mask_type, color_groups, dtype=torch.bool, device=x.device)
    return torch.where(mask, grad_w, 0.0)

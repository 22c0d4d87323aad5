"""Triton streaming feature statistics, in place: d = features - shift; total += d.sum(0);
cross[i, j] += sum_b d[b, i] d[b, j] for i <= j (float64 accumulators).

One program per (I, J) tile pair of cross with I <= J (the programs below the diagonal exit at
once): it walks the B rows in steps of BLOCK_B, loads the two (BLOCK_B, BLOCK) tiles of features,
subtracts the shift and accumulates d_I^T d_J with tl.dot (float64 too: Triton lowers it to
the float64 MMA of sm_80 and later). For float32 the products of each chunk
of CHUNK (1024) rows are summed in float32, then added into a float64 tile, so the float32 rounding
does not grow with B; float64 features are accumulated in float64 throughout. The float64 tile is
added into cross at the end, only where row <= column: the strictly lower triangle of cross is
never read or written. The diagonal programs also accumulate total.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._common import check_tensor, require

CHUNK = 1024  # rows summed in float32 before each float64 add (as the C++ kernel)


def _precision(features: torch.Tensor) -> str:
    """TF32 only for float32 features where torch's own float32 matmuls use it (torch.cov then
    would): statistics want float32 products, and cuDNN's TF32 default, which the convolution
    kernels follow, is on. float64 products are always IEEE."""
    tf32 = features.dtype == torch.float32 and features.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def _blocks(device: torch.device) -> tuple[int, int]:
    """(BLOCK, BLOCK_B): 64 x 64 tiles over 32 rows at a time on GPUs; 16 x 16 under the
    interpreter, which runs every program in Python."""
    if device.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return 64, 32
    return 16, 16


@triton.jit
def _feature_stats_update_kernel(f_ptr, s_ptr, total_ptr, cross_ptr, B, D, s_fb, s_fd, s_s,
                                 ACC: tl.constexpr, PRECISION: tl.constexpr, CHUNK: tl.constexpr,
                                 BLOCK: tl.constexpr, BLOCK_B: tl.constexpr):
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    if pid_i > pid_j:  # below the diagonal: nothing to do
        return
    cols_i = pid_i * BLOCK + tl.arange(0, BLOCK)
    cols_j = pid_j * BLOCK + tl.arange(0, BLOCK)
    in_i = cols_i < D
    in_j = cols_j < D
    shift_i = tl.load(s_ptr + cols_i.to(tl.int64) * s_s, mask=in_i, other=0.0)
    shift_j = tl.load(s_ptr + cols_j.to(tl.int64) * s_s, mask=in_j, other=0.0)
    rows0 = tl.arange(0, BLOCK_B)
    acc64 = tl.zeros((BLOCK, BLOCK), dtype=tl.float64)
    sum64 = tl.zeros((BLOCK,), dtype=tl.float64)
    for c0 in range(0, B, CHUNK):
        acc = tl.zeros((BLOCK, BLOCK), dtype=ACC)
        for b0 in range(c0, tl.minimum(c0 + CHUNK, B), BLOCK_B):
            rows = b0 + rows0
            ok_rows = rows < B
            base = f_ptr + rows.to(tl.int64)[:, None] * s_fb
            m_i = ok_rows[:, None] & in_i[None, :]
            m_j = ok_rows[:, None] & in_j[None, :]
            x_i = tl.load(base + cols_i.to(tl.int64)[None, :] * s_fd, mask=m_i, other=0.0)
            x_j = tl.load(base + cols_j.to(tl.int64)[None, :] * s_fd, mask=m_j, other=0.0)
            # Rows past B (and columns past D) must contribute zero, not -shift.
            d_i = tl.where(m_i, x_i - shift_i[None, :], 0.0)
            d_j = tl.where(m_j, x_j - shift_j[None, :], 0.0)
            acc = tl.dot(tl.trans(d_i), d_j, acc, input_precision=PRECISION)
            if pid_i == pid_j:
                sum64 += tl.sum(d_j.to(tl.float64), axis=0)
        acc64 += acc.to(tl.float64)
    upper = (cols_i[:, None] <= cols_j[None, :]) & in_i[:, None] & in_j[None, :]
    offs = cols_i.to(tl.int64)[:, None] * D + cols_j[None, :]
    tl.store(cross_ptr + offs, tl.load(cross_ptr + offs, mask=upper, other=0.0) + acc64, mask=upper)
    if pid_i == pid_j:
        tl.store(total_ptr + cols_j, tl.load(total_ptr + cols_j, mask=in_j, other=0.0) + sum64, mask=in_j)


def feature_stats_update_triton(features: torch.Tensor, shift: torch.Tensor, total: torch.Tensor,
                                cross: torch.Tensor) -> None:
    op = "feature_stats_update_triton"
    check_tensor(op, "features", features, dims=2)
    check_tensor(op, "shift", shift, dims=1)
    check_tensor(op, "total", total, dims=1)
    check_tensor(op, "cross", cross, dims=2)
    b, d = features.shape
    require(features.dtype in (torch.float32, torch.float64), op,
            f"features must be float32 or float64, got dtype {features.dtype}")
    require(d >= 1, op, f"features must have at least one feature (D >= 1), got shape {tuple(features.shape)}")
    require(tuple(shift.shape) == (d,), op, f"shift must have shape ({d},), got {tuple(shift.shape)}")
    require(shift.dtype == features.dtype, op, f"shift must have features' dtype {features.dtype}, got {shift.dtype}")
    require(tuple(total.shape) == (d,), op, f"total must have shape ({d},), got {tuple(total.shape)}")
    require(tuple(cross.shape) == (d, d), op, f"cross must have shape ({d}, {d}), got {tuple(cross.shape)}")
    for name, t in (("shift", shift), ("total", total), ("cross", cross)):
        require(t.device == features.device, op, f"{name} is on {t.device} but features is on {features.device}")
    for name, t in (("total", total), ("cross", cross)):
        require(t.dtype == torch.float64, op, f"{name} must be float64, got {t.dtype}")
        require(t.is_contiguous(), op, f"{name} must be contiguous (it is updated in place), got strides {t.stride()}")
    # The programs read every input while others write the accumulators: no two may share storage.
    named = (("features", features), ("shift", shift), ("total", total), ("cross", cross))
    for i, (name_a, a) in enumerate(named):
        for name_b, b_ in named[i + 1:]:
            if name_a in ("total", "cross") or name_b in ("total", "cross"):
                require(a.numel() == 0 or b_.numel() == 0
                        or a.untyped_storage().data_ptr() != b_.untyped_storage().data_ptr(), op,
                        f"{name_a} and {name_b} share memory; the accumulators must be tensors of their own")
    if b == 0:
        return
    block, block_b = _blocks(features.device)
    acc = tl.float64 if features.dtype == torch.float64 else tl.float32
    grid = (triton.cdiv(d, block), triton.cdiv(d, block))
    _feature_stats_update_kernel[grid](
        features, shift, total, cross, b, d, features.stride(0), features.stride(1), shift.stride(0),
        ACC=acc, PRECISION=_precision(features), CHUNK=CHUNK, BLOCK=block, BLOCK_B=block_b)

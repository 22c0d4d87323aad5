// Argument checks shared by the CPU kernels. torch.ops.fastgen.* is public, so every kernel entry
// checks what it relies on (ranks, shapes, dtypes, devices, string and integer arguments) itself,
// before it touches memory, whatever the Python wrapper checked.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>

namespace fastgen {

// The most bytes a kernel spends on a dense copy of an input that repeats its memory (a stride-0
// view from expand: torch.ones(1, 1).expand(1, 2**27) holds 4 bytes and is 512 MiB dense). Such
// inputs are refused above it rather than materialised. fastgen/ops/_checks.py (MAX_OVERLAP_COPY_BYTES)
// and the Triton launchers (kernels/_common.py) apply the same limit.
constexpr int64_t kMaxOverlapCopyBytes = int64_t(1) << 28;  // 256 MiB

// A tensor of a floating dtype the kernels are compiled for (AT_DISPATCH_FLOATING_TYPES_AND2), on the CPU.
inline void check_float_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined one");
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
              " must be a float32, float64, float16 or bfloat16 tensor, got ", s);
}

// An int64 tensor (level indices, targets) on the CPU.
inline void check_index_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined one");
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be an int64 tensor, got ", t.scalar_type());
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                             const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
}

// Elements of memory t spans; fewer than t.numel() when elements share memory (stride 0).
inline int64_t memory_span(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span += (t.size(d) - 1) * std::abs(t.stride(d));
  return span;
}

// Refuses an input whose dense copy would exceed kMaxOverlapCopyBytes while it repeats its memory.
// A copy of any other input is no bigger than the memory the input already occupies.
inline void check_copy_size(const char* op, const char* name, const at::Tensor& t) {
  if (t.numel() <= memory_span(t)) return;
  const int64_t limit_elements = kMaxOverlapCopyBytes / static_cast<int64_t>(t.element_size());
  TORCH_CHECK(t.numel() <= limit_elements, op, ": ", name, " of shape ", t.sizes(), " and strides ", t.strides(),
              " repeats its memory (stride 0, as from expand); its dense copy would take ", t.numel(), " elements of ",
              t.element_size(), " bytes, more than the limit of ", kMaxOverlapCopyBytes,
              " bytes (256 MiB) on copies of such inputs; pass a smaller tensor or one that owns its memory");
}

// t in the dense layout the kernels read (a copy when needed, within check_copy_size's limit).
inline at::Tensor dense(const char* op, const char* name, const at::Tensor& t,
                        at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  if (t.is_contiguous(format)) return t;
  check_copy_size(op, name, t);
  return t.contiguous(format);
}

// The incoming gradient of a backward op, dense. Copied whatever its layout and size: autograd hands
// backward ops expanded gradients (the backward of .sum() is a stride-0 view), and the copy has the
// size of the forward's output, which the forward has already allocated.
inline at::Tensor dense_grad(const at::Tensor& g) { return g.contiguous(); }

}  // namespace fastgen

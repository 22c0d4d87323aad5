// Per-thread scratch buffers for padded copies (see scratch.h).
#include "scratch.h"

#include <array>
#include <vector>

namespace fastgen {

// A fresh multi-megabyte tensor per call costs a page fault per 4 KiB (the allocator hands large
// blocks back to the system), which measured as much as the skipped taps save; a reused buffer
// does not. Non-contiguous tensors, and ones over kMaxScratchBytes (bounding what a thread keeps),
// take a plain padded copy.
constexpr int64_t kMaxScratchBytes = int64_t(64) << 20;

at::Tensor padded_scratch(const at::Tensor& t, int64_t top, int64_t bottom, int64_t left, int64_t right, int slot) {
  const int64_t n = t.size(0), c = t.size(1), h = t.size(2), w = t.size(3);
  const std::vector<int64_t> sizes{n, c, h + top + bottom, w + left + right};
  const int64_t numel = sizes[0] * sizes[1] * sizes[2] * sizes[3];
  if (!t.is_contiguous() || numel * t.element_size() > kMaxScratchBytes) {
    return at::constant_pad_nd(t, {left, right, top, bottom});
  }
  thread_local std::array<at::Tensor, 3> scratch;
  auto& buf = scratch.at(slot);
  if (!buf.defined() || buf.numel() < numel || buf.scalar_type() != t.scalar_type()) {
    buf = at::empty({numel}, t.options());
  }
  auto out = buf.narrow(0, 0, numel).view(sizes);
  if (top > 0) out.narrow(2, 0, top).zero_();
  if (bottom > 0) out.narrow(2, top + h, bottom).zero_();
  if (left > 0) out.narrow(3, 0, left).zero_();
  if (right > 0) out.narrow(3, left + w, right).zero_();
  out.narrow(2, top, h).narrow(3, left, w).copy_(t);
  return out;
}

}  // namespace fastgen

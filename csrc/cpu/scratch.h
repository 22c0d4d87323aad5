// Reused scratch buffers for the padded copies the CPU kernels read.
#pragma once

#include <ATen/ATen.h>

namespace fastgen {

// A zero-padded copy of t (rows on top/bottom, columns left/right), in a per-thread scratch buffer
// that is reused across calls; `slot` (0 to 2) keeps buffers that are alive at the same time
// apart. The result is only valid until the next call with the same slot on this thread.
at::Tensor padded_scratch(const at::Tensor& t, int64_t top, int64_t bottom, int64_t left, int64_t right, int slot);

}  // namespace fastgen

// PixelCNN masked convolution on the CPU.
//
// A k x k causal mask (p = k / 2) zeroes every row below the centre, so those rows are never
// computed: the op runs a dense (p + 1) x k convolution over the rows at and above the centre,
// on x shifted down by p rows. The few masked taps left (the centre row right of the centre, the
// centre itself for type A, colour-group entries) are zeroed in the weight. That is 28 of 49
// taps for 7x7 and 6 of 9 for 3x3, run by ATen's convolution (oneDNN on x86) in the memory
// format the input comes in (converting NCHW to channels-last here costs more than oneDNN's own
// internal reorder saves).
//
//   forward    y = conv(shift(x), W[:, :, :p+1] * M)      shift: p zero rows on top, p zero columns
//                                                         each side; a valid (unpadded) convolution
//   grad_x     conv(pad_below(gy), flip(W[:, :, :p+1] * M)^T)   the adjoint, as a forward convolution
//   grad_W     grad_W[:, :, :p+1] = M * (weight gradient of the forward's convolution), 0 below
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <string_view>
#include <tuple>
#include <vector>

namespace fastgen {
namespace {

void check_mask_args(std::string_view mask_type, int64_t color_groups, int64_t kernel_size) {
  TORCH_CHECK(mask_type == "A" || mask_type == "B", "masked_conv2d: mask_type must be 'A' or 'B', got '",
              mask_type, "'");
  TORCH_CHECK(color_groups >= 1, "masked_conv2d: color_groups must be >= 1, got ", color_groups);
  TORCH_CHECK(kernel_size % 2 == 1, "masked_conv2d: kernel size must be odd, got ", kernel_size);
}

// Zeroes, in t = (out, in, p + 1, k) rows at and above the centre, the entries the causal mask
// removes: right of the centre in the centre row, and the centre itself for mask 'A' or, with
// colour groups, from input group g_in to output group g_out unless g_in < g_out ('A') or
// g_in <= g_out ('B').
void apply_upper_mask_(at::Tensor& t, std::string_view mask_type, int64_t groups) {
  const int64_t p = t.size(2) - 1, k = t.size(3), out_c = t.size(0), in_c = t.size(1);
  auto centre_row = t.select(2, p);
  centre_row.narrow(2, p + 1, k - p - 1).zero_();
  if (groups == 1) {
    if (mask_type == "A") centre_row.select(2, p).zero_();
    return;
  }
  auto g_out = at::arange(out_c, t.options().dtype(at::kLong)).floor_divide(out_c / groups).unsqueeze(1);
  auto g_in = at::arange(in_c, t.options().dtype(at::kLong)).floor_divide(in_c / groups).unsqueeze(0);
  centre_row.select(2, p).mul_((mask_type == "A" ? g_in.lt(g_out) : g_in.le(g_out)).to(t.scalar_type()));
}

// The rows of weight at and above the centre, masked, in the given memory format.
at::Tensor masked_upper_weight(const at::Tensor& weight, std::string_view mask_type, int64_t groups,
                               at::MemoryFormat format) {
  auto upper = weight.narrow(2, 0, weight.size(2) / 2 + 1).contiguous(format);
  if (upper.data_ptr() == weight.data_ptr()) upper = upper.clone();  // k = 1: never write into weight
  apply_upper_mask_(upper, mask_type, groups);
  return upper;
}

// Zero-padded copy of t (top/bottom rows, p columns each side) in a per-thread scratch buffer
// reused across calls. A fresh multi-megabyte tensor per call costs a page fault per 4 KiB (the
// allocator hands large blocks back to the system), which measured as much as the skipped taps
// save. `slot` keeps buffers that are alive at the same time apart. Other layouts, and tensors
// over kMaxScratchBytes (bounding what a thread keeps), take the plain path.
constexpr int64_t kMaxScratchBytes = int64_t(64) << 20;

at::Tensor padded(const at::Tensor& t, int64_t top, int64_t bottom, int64_t p, int slot) {
  const int64_t n = t.size(0), c = t.size(1), h = t.size(2), w = t.size(3);
  const std::vector<int64_t> sizes{n, c, h + top + bottom, w + 2 * p};
  const int64_t numel = sizes[0] * sizes[1] * sizes[2] * sizes[3];
  if (!t.is_contiguous() || numel * t.element_size() > kMaxScratchBytes) {
    return at::constant_pad_nd(t, {p, p, top, bottom});
  }
  thread_local std::array<at::Tensor, 2> scratch;
  auto& buf = scratch[slot];
  if (!buf.defined() || buf.numel() < numel || buf.options().dtype() != t.options().dtype()) {
    buf = at::empty({numel}, t.options());
  }
  auto out = buf.narrow(0, 0, numel).view(sizes);
  if (top > 0) out.narrow(2, 0, top).zero_();
  if (bottom > 0) out.narrow(2, top + h, bottom).zero_();
  if (p > 0) {
    out.narrow(3, 0, p).zero_();
    out.narrow(3, p + w, p).zero_();
  }
  out.narrow(2, top, h).narrow(3, p, w).copy_(t);
  return out;
}

// x with p zero rows on top and p zero columns each side: a valid convolution of it with the
// upper kernel rows is the masked convolution.
at::Tensor shift(const at::Tensor& x, int64_t p) { return padded(x, p, 0, p, /*slot=*/0); }

at::Tensor masked_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             std::string_view mask_type, int64_t color_groups) {
  TORCH_CHECK(x.dim() == 4, "masked_conv2d: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3),
              "masked_conv2d: weight must be (C_out, C_in, k, k), got ", weight.sizes());
  TORCH_CHECK(x.size(1) == weight.size(1), "masked_conv2d: x has ", x.size(1), " channels, weight expects ",
              weight.size(1));
  check_mask_args(mask_type, color_groups, weight.size(2));
  const int64_t p = weight.size(2) / 2;
  const auto format = x.suggest_memory_format();
  return at::conv2d(shift(x, p), masked_upper_weight(weight, mask_type, color_groups, format), bias)
      .contiguous(format);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward_cpu(const at::Tensor& grad_out,
                                                                      const at::Tensor& x, const at::Tensor& weight,
                                                                      std::string_view mask_type, int64_t color_groups,
                                                                      std::array<bool, 3> output_mask) {
  check_mask_args(mask_type, color_groups, weight.size(2));
  const int64_t p = weight.size(2) / 2, out_c = weight.size(0);
  const auto format = x.suggest_memory_format();
  const auto w_upper = masked_upper_weight(weight, mask_type, color_groups, format);
  // Gradients not asked for come back as distinct empty tensors (outputs must not alias).
  at::Tensor grad_x = x.new_empty({0}), grad_w = x.new_empty({0}), grad_b = x.new_empty({0});
  if (output_mask[0]) {
    // The adjoint as a forward convolution (oneDNN's fastest path; its backward-data is slower
    // for these short kernels): correlate grad_out, padded below, with the flipped, transposed kernel.
    const auto w_adjoint = w_upper.flip({2, 3}).transpose(0, 1).contiguous(format);
    grad_x = at::conv2d(padded(grad_out, 0, p, p, /*slot=*/1), w_adjoint).contiguous(format);
  }
  if (output_mask[1] || output_mask[2]) {
    auto [unused, gw_upper, gb] = at::convolution_backward(
        grad_out.contiguous(format), shift(x, p), w_upper, c10::IntArrayRef{out_c}, {1, 1}, {0, 0}, {1, 1}, false,
        {0, 0}, 1, {false, output_mask[1], output_mask[2]});
    if (output_mask[1]) {
      apply_upper_mask_(gw_upper, mask_type, color_groups);
      grad_w = at::zeros_like(weight);
      grad_w.narrow(2, 0, p + 1).copy_(gw_upper);
    }
    if (output_mask[2]) grad_b = gb;
  }
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("masked_conv2d", &masked_conv2d_cpu);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward_cpu);
}

}  // namespace fastgen

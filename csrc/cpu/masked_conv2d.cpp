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
//   forward      y  = conv(shift_up(x), W[:, :, :p+1] * M)             shift_up: pad p rows on top
//   grad_input   gx = conv(shift_down(gy), flip(W * M)^T)              the adjoint, as a forward
//                                                                      convolution (oneDNN's fastest)
//   grad_weight  gW[:, :, :p+1] = M * corr(shift_up(x), gy),  gW[:, :, p+1:] = 0
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string_view>

namespace fastgen {
namespace {

void check_mask_args(std::string_view mask_type, int64_t color_groups, int64_t kernel_size) {
  TORCH_CHECK(mask_type == "A" || mask_type == "B", "masked_conv2d: mask_type must be 'A' or 'B', got '",
              mask_type, "'");
  TORCH_CHECK(color_groups >= 1, "masked_conv2d: color_groups must be >= 1, got ", color_groups);
  TORCH_CHECK(kernel_size % 2 == 1, "masked_conv2d: kernel size must be odd, got ", kernel_size);
}

// The (out, in, p + 1, k) mask of the rows at and above the centre.
at::Tensor upper_mask(int64_t out_c, int64_t in_c, int64_t k, std::string_view mask_type, int64_t groups,
                      const at::TensorOptions& options) {
  const int64_t p = k / 2;
  auto mask = at::ones({out_c, in_c, p + 1, k}, options);
  mask.select(2, p).narrow(2, p, k - p).zero_();  // centre and right of it, in the centre row
  auto g_out = at::arange(out_c, options.dtype(at::kLong)).floor_divide(out_c / groups).unsqueeze(1);
  auto g_in = at::arange(in_c, options.dtype(at::kLong)).floor_divide(in_c / groups).unsqueeze(0);
  auto centre = mask_type == "A" ? g_in.lt(g_out) : g_in.le(g_out);
  mask.select(3, p).select(2, p).copy_(centre);
  return mask;
}

at::Tensor masked_upper_weight(const at::Tensor& weight, std::string_view mask_type, int64_t groups) {
  const int64_t k = weight.size(2), p = k / 2;
  return weight.narrow(2, 0, p + 1) * upper_mask(weight.size(0), weight.size(1), k, mask_type, groups, weight.options());
}

// p zero columns each side and p zero rows on top (up) or at the bottom (down).
at::Tensor shift_rows(const at::Tensor& t, int64_t p, bool up) {
  return at::constant_pad_nd(t, {p, p, up ? p : 0, up ? 0 : p});
}

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
  auto w = masked_upper_weight(weight, mask_type, color_groups).contiguous(format);
  return at::conv2d(shift_rows(x, p, /*up=*/true), w, bias).contiguous(format);
}

at::Tensor masked_conv2d_grad_input_cpu(const at::Tensor& grad_out, const at::Tensor& weight,
                                        std::string_view mask_type, int64_t color_groups) {
  check_mask_args(mask_type, color_groups, weight.size(2));
  const int64_t p = weight.size(2) / 2;
  // Correlating with the flipped, transposed kernel is the adjoint; the flipped taps look at
  // rows at and below the centre, hence the shift down.
  auto w_adj = masked_upper_weight(weight, mask_type, color_groups).flip({2, 3}).transpose(0, 1);
  const auto format = grad_out.suggest_memory_format();
  return at::conv2d(shift_rows(grad_out, p, /*up=*/false), w_adj.contiguous(format)).contiguous(format);
}

at::Tensor masked_conv2d_grad_weight_cpu(const at::Tensor& grad_out, const at::Tensor& x, int64_t kernel_size,
                                         std::string_view mask_type, int64_t color_groups) {
  check_mask_args(mask_type, color_groups, kernel_size);
  const int64_t p = kernel_size / 2, out_c = grad_out.size(1), in_c = x.size(1);
  auto shape_only = at::empty({out_c, in_c, p + 1, kernel_size}, x.options());
  auto g_upper = std::get<1>(at::convolution_backward(grad_out, shift_rows(x, p, /*up=*/true),
                                                      shape_only, std::nullopt, {1, 1}, {0, 0}, {1, 1}, false,
                                                      {0, 0}, 1, {false, true, false}));
  auto grad_w = at::zeros({out_c, in_c, kernel_size, kernel_size}, x.options());
  grad_w.narrow(2, 0, p + 1).copy_(g_upper * upper_mask(out_c, in_c, kernel_size, mask_type, color_groups,
                                                        x.options()));
  return grad_w;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("masked_conv2d", &masked_conv2d_cpu);
  m.impl("masked_conv2d_grad_input", &masked_conv2d_grad_input_cpu);
  m.impl("masked_conv2d_grad_weight", &masked_conv2d_grad_weight_cpu);
}

}  // namespace fastgen

// PixelCNN masked convolution on the CPU.
//
// A k x k causal mask (p = k / 2) keeps the rows above the centre and the left part of the
// centre row: 5 of 9 taps for 3x3 'B', 24 of 49 for 7x7 'A'. Two implementations:
//
//  * float32, contiguous NCHW, AVX-512 (tap_conv.cpp): a direct convolution over exactly the kept
//    taps, for the forward, for grad_x (the same kernel on the mirrored taps with in and out
//    swapped) and for grad_W. Every multiply-add it does is one the mask keeps.
//  * everything else: ATen's convolution (oneDNN on x86) over the densest rectangle that holds the
//    kept taps, the (p + 1) x k rows at and above the centre, with the few masked entries left in
//    it (centre row right of the centre, the centre for 'A', colour-group entries) zeroed:
//      forward   y  = conv(pad(x), W[:, :, :p+1] * M)           pad: p rows on top, p columns each side
//      grad_x    gx = conv(pad_below(gy), flip(W[:, :, :p+1] * M)^T)      the adjoint, as a forward
//                     convolution (oneDNN's backward-data path is slower for these short kernels)
//      grad_W    M * (weight gradient of the forward's convolution); rows below the centre get 0
//
// A 1x1 mask 'B' with one colour group masks nothing: it is a matrix product per image, and with
// contiguous NCHW tensors runs as one (batched) GEMM each way, with no layout change:
//      y[n] = W x[n] + b,   gx[n] = W^T gy[n],   gW = sum_n gy[n] x[n]^T,   x[n] = x[n] as (C_in, H W).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "scratch.h"
#include "tap_conv.h"

#include <array>
#include <string_view>
#include <tuple>
#include <vector>

namespace fastgen {
namespace {

// What both entries rely on: x (N, C_in, H, W) and weight (C_out, C_in, k, k) of one float dtype on
// the CPU, k odd, at least one channel each way, colour groups that divide both channel counts.
void check_conv_args(const char* op, const at::Tensor& x, const at::Tensor& weight, std::string_view mask_type,
                     int64_t color_groups) {
  check_float_cpu(op, "x", x);
  check_float_cpu(op, "weight", weight);
  check_same_dtype(op, "weight", weight, "x", x);
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N, C_in, H, W), got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 1 && x.size(3) >= 1, op, ": x must have at least one row and one column (H, W >= 1), got ",
              x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1, op,
              ": weight must be (C_out, C_in, k, k) with an odd square kernel, got ", weight.sizes());
  TORCH_CHECK(x.size(1) == weight.size(1), op, ": x has ", x.size(1), " channels but weight expects C_in = ",
              weight.size(1));
  TORCH_CHECK(weight.size(0) >= 1 && weight.size(1) >= 1, op,
              ": x and weight need at least one channel each way (C_in, C_out >= 1), got weight ", weight.sizes());
  TORCH_CHECK(mask_type == "A" || mask_type == "B", op, ": mask_type must be 'A' or 'B', got '", mask_type, "'");
  TORCH_CHECK(color_groups >= 1 && weight.size(1) % color_groups == 0 && weight.size(0) % color_groups == 0, op,
              ": color_groups must be a positive divisor of C_in = ", weight.size(1), " and C_out = ", weight.size(0),
              ", got ", color_groups);
  check_copy_size(op, "x", x);
  check_copy_size(op, "weight", weight);
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
  // masked_fill_, not a product with the mask: a NaN or inf in a masked entry must not survive.
  centre_row.select(2, p).masked_fill_(mask_type == "A" ? g_in.ge(g_out) : g_in.gt(g_out), 0);
}

// The rows of weight at and above the centre, masked, in the given memory format.
at::Tensor masked_upper_weight(const at::Tensor& weight, std::string_view mask_type, int64_t groups,
                               at::MemoryFormat format) {
  auto upper = weight.narrow(2, 0, weight.size(2) / 2 + 1).contiguous(format);
  if (upper.data_ptr() == weight.data_ptr()) upper = upper.clone();  // k = 1: never write into weight
  apply_upper_mask_(upper, mask_type, groups);
  return upper;
}

// x with p zero rows on top and p zero columns each side: a valid convolution of it with the
// upper kernel rows is the masked convolution.
at::Tensor shift(const at::Tensor& x, int64_t p) { return padded_scratch(x, p, 0, p, p, /*slot=*/0); }

// The taps a causal k x k mask keeps (the centre only for 'B' or colour groups), raster order.
std::vector<Tap> kept_taps(int64_t k, std::string_view mask_type, int64_t groups) {
  const int64_t p = k / 2;
  const bool centre = mask_type == "B" || groups > 1;
  std::vector<Tap> taps;
  for (int64_t dy = -p; dy <= 0; ++dy) {
    for (int64_t dx = -p; dx <= p; ++dx) {
      if (dy < 0 || dx < 0 || (dx == 0 && centre)) taps.push_back({dy, dx});
    }
  }
  return taps;
}

// Position of each tap in a flattened k x k kernel (row-major), as a tensor for index ops.
at::Tensor tap_index(const std::vector<Tap>& taps, int64_t k, const at::TensorOptions& options) {
  const int64_t p = k / 2;
  std::vector<int64_t> flat;
  for (const auto& t : taps) flat.push_back((t.dy + p) * k + (t.dx + p));
  return at::tensor(flat, options.dtype(at::kLong));
}

// A 1x1 mask 'B' with one colour group on contiguous NCHW tensors: a plain matrix product.
bool is_pointwise(const at::Tensor& x, const at::Tensor& weight, std::string_view mask_type, int64_t groups) {
  return weight.size(2) == 1 && mask_type == "B" && groups == 1 && x.is_contiguous();
}

// (N, C, H, W) contiguous as (N, C, H W).
at::Tensor as_matrices(const at::Tensor& t) { return t.view({t.size(0), t.size(1), t.size(2) * t.size(3)}); }

// The masked upper weight rows (out, in, p + 1, k) gathered at the kept taps: (out, in, taps).
at::Tensor gather_taps(const at::Tensor& w_upper, const std::vector<Tap>& taps) {
  return w_upper.reshape({w_upper.size(0), w_upper.size(1), -1})
      .index_select(2, tap_index(taps, w_upper.size(3), w_upper.options()));
}

at::Tensor masked_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             std::string_view mask_type, int64_t color_groups) {
  check_conv_args("masked_conv2d", x, weight, mask_type, color_groups);
  if (bias.has_value()) {
    check_float_cpu("masked_conv2d", "bias", *bias);
    check_same_dtype("masked_conv2d", "bias", *bias, "x", x);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "masked_conv2d: bias must have C_out = ",
                weight.size(0), " elements (C_out,), got shape ", bias->sizes());
    check_copy_size("masked_conv2d", "bias", *bias);
  }
  const int64_t p = weight.size(2) / 2;
  if (is_pointwise(x, weight, mask_type, color_groups)) {
    // bmm over the weight expanded (stride 0), not matmul: matmul copies an input that requires
    // grad into a folded layout first.
    const auto w = weight.reshape({weight.size(0), weight.size(1)});
    const auto w_batch = w.expand({x.size(0), w.size(0), w.size(1)});
    // baddbmm: the bias enters the product's accumulator (one rounding in bfloat16, not two).
    auto y = bias.has_value()
                 ? at::baddbmm(bias->view({1, -1, 1}).expand({x.size(0), w.size(0), x.size(2) * x.size(3)}), w_batch,
                               as_matrices(x))
                 : at::bmm(w_batch, as_matrices(x));
    // A layout no-op but where x's sizes make NCHW also read as channels-last (the fake's rule).
    return y.view({x.size(0), weight.size(0), x.size(2), x.size(3)}).contiguous(x.suggest_memory_format());
  }
  const auto format = x.suggest_memory_format();
  const auto w_upper = masked_upper_weight(weight, mask_type, color_groups, format);
  if (tap_conv_available(x)) {
    const auto taps = kept_taps(weight.size(2), mask_type, color_groups);
    // (out, in, taps) -> (taps, in, out)
    return tap_conv(x, gather_taps(w_upper, taps).permute({2, 1, 0}), bias.value_or(at::Tensor()), taps);
  }
  return at::conv2d(shift(x, p), w_upper, bias).contiguous(format);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward_cpu(const at::Tensor& grad_out,
                                                                      const at::Tensor& x, const at::Tensor& weight,
                                                                      std::string_view mask_type, int64_t color_groups,
                                                                      std::array<bool, 3> output_mask) {
  // output_mask's length is the schema's bool[3]: the dispatcher refuses any other.
  check_conv_args("masked_conv2d_backward", x, weight, mask_type, color_groups);
  check_float_cpu("masked_conv2d_backward", "grad_out", grad_out);
  check_same_dtype("masked_conv2d_backward", "grad_out", grad_out, "x", x);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == x.size(0) && grad_out.size(1) == weight.size(0) &&
                  grad_out.size(2) == x.size(2) && grad_out.size(3) == x.size(3),
              "masked_conv2d_backward: grad_out must be (N, C_out, H, W) = (", x.size(0), ", ", weight.size(0), ", ",
              x.size(2), ", ", x.size(3), ") for x ", x.sizes(), " and weight ", weight.sizes(), ", got ",
              grad_out.sizes());
  const int64_t k = weight.size(2), p = k / 2, out_c = weight.size(0);
  if (is_pointwise(x, weight, mask_type, color_groups) && grad_out.is_contiguous()) {
    const auto gy = as_matrices(grad_out), w = weight.reshape({out_c, weight.size(1)});
    at::Tensor grad_x = x.new_empty({0}), grad_w = x.new_empty({0}), grad_b = x.new_empty({0});
    if (output_mask[0]) {
      grad_x = at::bmm(w.t().expand({x.size(0), w.size(1), w.size(0)}), gy).view(x.sizes())
                   .contiguous(x.suggest_memory_format());
    }
    if (output_mask[1]) {
      // The per-image products and their sum in float32 at least: bfloat16 would round each of
      // them and then the sum of N of them.
      const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      grad_w = at::bmm(gy.to(acc), as_matrices(x).to(acc).transpose(1, 2)).sum(0).to(x.scalar_type())
                   .view(weight.sizes()).contiguous(weight.suggest_memory_format());
    }
    if (output_mask[2]) grad_b = grad_out.sum({0, 2, 3});
    return {grad_x, grad_w, grad_b};
  }
  const auto format = x.suggest_memory_format();
  const bool direct = tap_conv_available(x) && tap_conv_available(grad_out);
  const auto taps = kept_taps(k, mask_type, color_groups);
  // The masked weight rows feed grad_x and the oneDNN weight gradient, not the direct one.
  const auto w_upper = output_mask[0] || (output_mask[1] && !direct)
                           ? masked_upper_weight(weight, mask_type, color_groups, format)
                           : at::Tensor();
  // Gradients not asked for come back as distinct empty tensors (outputs must not alias).
  at::Tensor grad_x = x.new_empty({0}), grad_w = x.new_empty({0}), grad_b = x.new_empty({0});
  if (output_mask[0]) {
    if (direct) {
      // The adjoint is again a convolution over the kept taps, mirrored, with in and out swapped:
      // gx[i, q] = sum_t sum_o W[o, i, t] * gy[o, q - offset_t].
      std::vector<Tap> mirrored;
      for (const auto& t : taps) mirrored.push_back({-t.dy, -t.dx});
      grad_x = tap_conv(grad_out, gather_taps(w_upper, taps).permute({2, 0, 1}), at::Tensor(), mirrored)
                   .contiguous(format);
    } else {
      // oneDNN: the adjoint as a forward convolution (its backward-data path is slower for these
      // short kernels): correlate grad_out, padded below, with the flipped, transposed kernel.
      const auto w_adjoint = w_upper.flip({2, 3}).transpose(0, 1).contiguous(format);
      grad_x = at::conv2d(padded_scratch(grad_out, 0, p, p, p, /*slot=*/1), w_adjoint).contiguous(format);
    }
  }
  if (output_mask[1]) {
    auto full = at::zeros({out_c, weight.size(1), k, k}, weight.options());
    auto upper = full.narrow(2, 0, p + 1);
    if (direct) {
      full.view({out_c, weight.size(1), k * k})
          .index_copy_(2, tap_index(taps, k, x.options()), tap_conv_weight_grad(x, grad_out, taps).permute({2, 1, 0}));
    } else {
      upper.copy_(std::get<1>(at::convolution_backward(grad_out.contiguous(format), shift(x, p), w_upper,
                                                       std::nullopt, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1,
                                                       {false, true, false})));
    }
    apply_upper_mask_(upper, mask_type, color_groups);
    grad_w = full.contiguous(weight.suggest_memory_format());
  }
  if (output_mask[2]) grad_b = grad_out.sum({0, 2, 3});
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("masked_conv2d", &masked_conv2d_cpu);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward_cpu);
}

}  // namespace fastgen

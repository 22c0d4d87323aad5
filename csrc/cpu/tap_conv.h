// Direct convolution over an explicit list of taps, for the PixelCNN masked convolution.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fastgen {

struct Tap {
  int64_t dy, dx;  // offset of the input position read, relative to the output position
};

// Whether this machine and these tensors can use the AVX-512 kernel (float32, contiguous NCHW).
bool tap_conv_available(const at::Tensor& x);

// y[n, o, h, w] = bias[o] + sum_t sum_i weight[t, i, o] * x[n, i, h + dy_t, w + dx_t], reading
// zero outside the image. weight is (taps, C_in, C_out); bias may be undefined.
at::Tensor tap_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const std::vector<Tap>& taps);

// The weight gradient of tap_conv: gW[t, i, o] = sum_{n,h,w} x[n, i, h + dy_t, w + dx_t] * gy[n, o, h, w],
// as (taps, C_in, C_out). Same availability as tap_conv (for x and grad_out).
at::Tensor tap_conv_weight_grad(const at::Tensor& x, const at::Tensor& grad_out, const std::vector<Tap>& taps);

}  // namespace fastgen

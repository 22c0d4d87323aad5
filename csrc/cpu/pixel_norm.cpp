// ProGAN's pixel-wise feature normalisation, optionally after a leaky ReLU, on the CPU:
//   a = leaky_relu(x, slope) (or x),  rstd = 1 / sqrt(mean_c(a^2) + eps),  y = a * rstd
// at every position of x (N, C, *spatial), over its C channels.
//
// x is read as (N, C, S), S the product of the spatial sizes: the channels of one position lie S
// elements apart. Work is split into tiles of one sample and consecutive positions (whole samples
// where they fit in 1 MB): a pass over the C channel rows of the tile sums a^2 into
// one accumulator per position (the inner loop runs along the contiguous positions and
// vectorises), then a pass writes y; the second read of the tile comes from L2.
// Where S = 1 ((N, C) input, or 1x1 maps) a position's channels are contiguous and each row is
// summed in kLanes partial sums (lane_sum). The sums run in float (double for float64) in an order
// fixed by the shapes, whatever the threads. The loops are cloned for AVX2 and AVX-512.
//
// Backward, from x, grad_y = g and the saved rstd = r (a and y recomputed from x):
//   y_c = a_c r,  d r / d a_k = -r^3 a_k / C,  so  d y_c / d a_k = r delta_ck - a_c r^3 a_k / C and
//   grad_a_k = sum_c g_c d y_c / d a_k = r g_k - a_k r^3 sum_c(g_c a_c) / C
//            = r (g_k - y_k mean_c(g y))                       (the reference's form)
//   grad_x   = grad_a * (1 if x > 0 else slope)                (grad_a where there is no activation)
// One pass sums g * a over the channels of each position, one writes grad_x.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

constexpr int64_t kMaxTile = 4096;                // positions per tile, at most
constexpr int64_t kTileBytes = int64_t(1) << 20;  // of input per tile, re-read from L2

// Positions per tile: as many as keep the C rows of the tile's inputs within kTileBytes, at least
// 16. Whole samples where they fit (256 KB for a 256x16x16 float32 one): a task then reads contiguous
// memory, up to 2x faster than half-sample tiles of 1-4 KB row pieces on a 2-core AMD EPYC.
int64_t tile_size(int64_t channels, int64_t positions, int64_t element_size) {
  const int64_t fit = kTileBytes / std::max<int64_t>(channels * element_size, 1);
  return std::min(positions, std::clamp<int64_t>(fit, 16, kMaxTile));
}

// leaky_relu as torch has it (x > 0 ? x : x * slope; NaN stays NaN), or x.
template <bool kAct, typename acc_t>
FASTGEN_INLINE acc_t activate(acc_t x, acc_t slope) {
  if constexpr (kAct) {
    return x > acc_t(0) ? x : x * slope;
  } else {
    return x;
  }
}

// g * leaky_relu'(x) as autograd has it: g where x > 0, g * slope elsewhere (NaN x among them).
template <bool kAct, typename acc_t>
FASTGEN_INLINE acc_t act_backward(acc_t x, acc_t g, acc_t slope) {
  if constexpr (kAct) {
    return x > acc_t(0) ? g : g * slope;
  } else {
    return g;
  }
}

// One tile of len <= kMaxTile positions of one sample: x and y point at channel 0 of its first
// position, channel rows `stride` (= S) apart.
template <bool kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void forward_tile(const scalar_t* x, scalar_t* y, acc_t* rstd, int64_t channels, int64_t stride,
                                 int64_t len, acc_t eps, acc_t slope, acc_t* sum) {
  for (int64_t j = 0; j < len; ++j) sum[j] = acc_t(0);
  for (int64_t c = 0; c < channels; ++c) {
    const scalar_t* row = x + c * stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const acc_t a = activate<kAct>(static_cast<acc_t>(row[j]), slope);
      sum[j] += a * a;
    }
  }
  const acc_t count = static_cast<acc_t>(channels);
  for (int64_t j = 0; j < len; ++j) sum[j] = acc_t(1) / std::sqrt(sum[j] / count + eps);
  for (int64_t c = 0; c < channels; ++c) {
    const scalar_t* row = x + c * stride;
    scalar_t* out = y + c * stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      out[j] = static_cast<scalar_t>(activate<kAct>(static_cast<acc_t>(row[j]), slope) * sum[j]);
    }
  }
  for (int64_t j = 0; j < len; ++j) rstd[j] = sum[j];
}

// One position whose channels are contiguous (S = 1).
template <bool kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void forward_row(const scalar_t* x, scalar_t* y, acc_t* rstd, int64_t channels, acc_t eps,
                                acc_t slope) {
  const acc_t m2 = lane_sum<acc_t>(channels, [&](int64_t c) FASTGEN_INLINE_LAMBDA {
    const acc_t a = activate<kAct>(static_cast<acc_t>(x[c]), slope);
    return a * a;
  });
  const acc_t r = acc_t(1) / std::sqrt(m2 / static_cast<acc_t>(channels) + eps);
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    y[c] = static_cast<scalar_t>(activate<kAct>(static_cast<acc_t>(x[c]), slope) * r);
  }
  *rstd = r;
}

// grad_x = act'(x) * r * (g - y * mean_c(g * y)) with y = a * r: first sum_c(g * a) per position,
// then k = r^2 * sum_c(g * a) / C (so that y * mean_c(g * y) = a * k) and grad_x.
template <bool kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void backward_tile(const scalar_t* gy, const scalar_t* x, const acc_t* rstd, scalar_t* gx,
                                  int64_t channels, int64_t stride, int64_t len, acc_t slope, acc_t* dot) {
  for (int64_t j = 0; j < len; ++j) dot[j] = acc_t(0);
  for (int64_t c = 0; c < channels; ++c) {
    const scalar_t* xr = x + c * stride;
    const scalar_t* gr = gy + c * stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      dot[j] += static_cast<acc_t>(gr[j]) * activate<kAct>(static_cast<acc_t>(xr[j]), slope);
    }
  }
  const acc_t count = static_cast<acc_t>(channels);
  for (int64_t j = 0; j < len; ++j) dot[j] = rstd[j] * rstd[j] * dot[j] / count;
  for (int64_t c = 0; c < channels; ++c) {
    const scalar_t* xr = x + c * stride;
    const scalar_t* gr = gy + c * stride;
    scalar_t* out = gx + c * stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const acc_t xi = static_cast<acc_t>(xr[j]);
      const acc_t grad_a = rstd[j] * (static_cast<acc_t>(gr[j]) - activate<kAct>(xi, slope) * dot[j]);
      out[j] = static_cast<scalar_t>(act_backward<kAct>(xi, grad_a, slope));
    }
  }
}

template <bool kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void backward_row(const scalar_t* gy, const scalar_t* x, acc_t r, scalar_t* gx, int64_t channels,
                                 acc_t slope) {
  const acc_t dot = lane_sum<acc_t>(channels, [&](int64_t c) FASTGEN_INLINE_LAMBDA {
    return static_cast<acc_t>(gy[c]) * activate<kAct>(static_cast<acc_t>(x[c]), slope);
  });
  const acc_t k = r * r * dot / static_cast<acc_t>(channels);
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    const acc_t xi = static_cast<acc_t>(x[c]);
    const acc_t grad_a = r * (static_cast<acc_t>(gy[c]) - activate<kAct>(xi, slope) * k);
    gx[c] = static_cast<scalar_t>(act_backward<kAct>(xi, grad_a, slope));
  }
}

// What both entries rely on: x (N, C, *spatial), C >= 1, of a float dtype on the CPU; a finite slope where given.
void check_args(const char* op, const at::Tensor& x, const std::optional<double>& negative_slope) {
  check_float_cpu(op, "x", x);
  TORCH_CHECK(x.dim() >= 2, op, ": x must be (N, C) or (N, C, *spatial), got ", x.sizes());
  TORCH_CHECK(x.size(1) >= 1, op, ": x must have at least one channel (C >= 1), got ", x.sizes());
  check_copy_size(op, "x", x);
  if (negative_slope.has_value()) {
    const double s = *negative_slope;
    TORCH_CHECK(std::isfinite(s) && std::fabs(s) <= std::numeric_limits<float>::max(), op,
                ": negative_slope must be a finite number within float32's range, got ", s);
  }
}

at::ScalarType stat_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::vector<int64_t> rstd_shape(const at::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.erase(shape.begin() + 1);
  return shape;
}

// Calls fn(n, first position, positions, scratch) for every tile of every sample, in parallel;
// scratch holds one acc_t per position of the tile. (On the heap: the per-position sums in a
// stack array made the forward 1.6x slower on an AMD EPYC, whatever its alignment; 2026-12.)
template <typename acc_t, typename Fn>
void for_each_tile(int64_t n_batch, int64_t channels, int64_t positions, int64_t element_size, Fn&& fn) {
  const int64_t tile = tile_size(channels, positions, element_size);
  const int64_t tiles = (positions + tile - 1) / tile;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(channels * tile, 1));
  at::parallel_for(0, n_batch * tiles, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(tile);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / tiles, start = (i % tiles) * tile;
      fn(n, start, std::min(tile, positions - start), scratch.data());
    }
  });
}

template <typename Fn>
void with_act(bool act, Fn&& fn) {
  if (act) return fn(std::true_type());
  return fn(std::false_type());
}

std::tuple<at::Tensor, at::Tensor> pixel_norm_cpu(const at::Tensor& x_in, std::optional<double> negative_slope,
                                                  double eps) {
  constexpr const char* op = "pixel_norm";
  check_args(op, x_in, negative_slope);
  TORCH_CHECK(std::isfinite(eps) && eps > 0 && eps <= std::numeric_limits<float>::max(), op,
              ": eps must be a positive finite number within float32's range, got ", eps);
  const auto x = dense(op, "x", x_in);
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / std::max<int64_t>(N * C, 1);
  auto y = at::empty(x.sizes(), x.options());
  auto rstd = at::empty(rstd_shape(x), x.options().dtype(stat_type(x)));
  if (x.numel() == 0) return {y, rstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pixel_norm_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    static_assert(std::is_same_v<acc_t, float> || std::is_same_v<acc_t, double>);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* rp = rstd.mutable_data_ptr<acc_t>();
    const acc_t e = static_cast<acc_t>(eps), slope = static_cast<acc_t>(negative_slope.value_or(1.0));
    with_act(negative_slope.has_value(), [&](auto act) {
      constexpr bool kAct = decltype(act)::value;
      if (S == 1) {
        at::parallel_for(0, N, std::max<int64_t>(1, 32768 / C), [&](int64_t begin, int64_t end) {
          for (int64_t n = begin; n < end; ++n) forward_row<kAct, scalar_t, acc_t>(xp + n * C, yp + n * C, rp + n, C, e,
                                                                                    slope);
        });
        return;
      }
      for_each_tile<acc_t>(N, C, S, sizeof(scalar_t), [&](int64_t n, int64_t start, int64_t len, acc_t* scratch) {
        const int64_t base = n * C * S + start;
        forward_tile<kAct, scalar_t, acc_t>(xp + base, yp + base, rp + n * S + start, C, S, len, e, slope, scratch);
      });
    });
  });
  return {y, rstd};
}

at::Tensor pixel_norm_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& rstd_in,
                                   std::optional<double> negative_slope) {
  constexpr const char* op = "pixel_norm_backward";
  check_args(op, x_in, negative_slope);
  check_float_cpu(op, "grad_out", grad_out_in);
  check_same_dtype(op, "grad_out", grad_out_in, "x", x_in);
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes(), op, ": grad_out must have x's shape ", x_in.sizes(), ", got ",
              grad_out_in.sizes());
  TORCH_CHECK(rstd_in.defined(), op, ": rstd must be a tensor, got an undefined one");
  TORCH_CHECK(rstd_in.device().is_cpu(), op, ": rstd must be a CPU tensor, got one on ", rstd_in.device());
  TORCH_CHECK(rstd_in.scalar_type() == stat_type(x_in), op, ": rstd must have dtype ", stat_type(x_in),
              " (the forward's statistics of a ", x_in.scalar_type(), " x), got ", rstd_in.scalar_type());
  const auto expected = rstd_shape(x_in);
  TORCH_CHECK(rstd_in.sizes() == at::IntArrayRef(expected), op, ": rstd must be (N, *spatial) = ",
              at::IntArrayRef(expected), ", got ", rstd_in.sizes());
  check_copy_size(op, "rstd", rstd_in);
  const auto x = dense(op, "x", x_in);
  const auto grad_out = dense_grad(grad_out_in);
  const auto rstd = dense(op, "rstd", rstd_in);
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / std::max<int64_t>(N * C, 1);
  auto grad_x = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pixel_norm_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    const acc_t* rp = rstd.const_data_ptr<acc_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    const acc_t slope = static_cast<acc_t>(negative_slope.value_or(1.0));
    with_act(negative_slope.has_value(), [&](auto act) {
      constexpr bool kAct = decltype(act)::value;
      if (S == 1) {
        at::parallel_for(0, N, std::max<int64_t>(1, 32768 / C), [&](int64_t begin, int64_t end) {
          for (int64_t n = begin; n < end; ++n) {
            backward_row<kAct, scalar_t, acc_t>(gp + n * C, xp + n * C, rp[n], gxp + n * C, C, slope);
          }
        });
        return;
      }
      // Two inputs per tile here (x and grad_y).
      for_each_tile<acc_t>(N, C, S, 2 * sizeof(scalar_t), [&](int64_t n, int64_t start, int64_t len, acc_t* scratch) {
        const int64_t base = n * C * S + start;
        backward_tile<kAct, scalar_t, acc_t>(gp + base, xp + base, rp + n * S + start, gxp + base, C, S, len, slope,
                                             scratch);
      });
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("pixel_norm", &pixel_norm_cpu);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cpu);
}

}  // namespace fastgen

// ProGAN's minibatch standard deviation channel on the CPU: x (N, C, H, W) -> y (N, C + 1, H, W),
// y = cat([x, s]) with, for G = the largest divisor of N <= group_size, M = N / G, group m the
// samples m, m + M, ... (x viewed as (G, M, C, H, W)):
//   std[m, chw] = sqrt(mean_g (x[g, m, chw] - mean_g x[g, m, chw])^2 + eps),  s[m] = mean_chw std[m, chw]
// and sample n's extra channel s[n % M].
//
// Forward, one call: tasks of one group and kBlock consecutive (c, h, w) elements read the G
// members' rows twice (the sum, then the squared deviations from the mean: the reference's
// two-pass formula; the second read from cache), copy them into y on the first read and leave the
// block's sum of std in a buffer; the buffer is then summed per group in a fixed order
// (deterministic whatever the threads) and the extra channel written.
//
// Backward, one call: gs[m] = sum_{g, h, w} grad_y[g * M + m, C, h, w] (the stddev channel's
// gradient, per group), then the same tasks recompute mean and std and write
//   grad_x[g, m, chw] = grad_y[g, m, chw] + gs[m] / (C H W) * (x - mean) / (G * std)
// (d std / d x[g] = (x[g] - mean) / (G * std): the mean's own derivative sums to zero over the group).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

constexpr int64_t kBlock = 256;  // (c, h, w) elements per task

// G: the largest divisor of n that is <= group_size.
int64_t group_count(int64_t n, int64_t group_size) {
  for (int64_t g = std::min(group_size, n); g > 1; --g) {
    if (n % g == 0) return g;
  }
  return 1;
}

// One block of len <= kBlock elements of group m: x and y point at the block in member 0 (sample
// m); members lie x_stride (M C H W) and y_stride (M (C + 1) H W) apart; mean and m2 are kBlock
// elements of scratch each. Returns the block's sum of std.
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t forward_block(const scalar_t* x, scalar_t* y, int64_t members, int64_t x_stride, int64_t y_stride,
                                   int64_t len, acc_t eps, acc_t* mean, acc_t* m2) {
  for (int64_t j = 0; j < len; ++j) mean[j] = m2[j] = acc_t(0);
  for (int64_t g = 0; g < members; ++g) {
    const scalar_t* row = x + g * x_stride;
    scalar_t* out = y + g * y_stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      mean[j] += static_cast<acc_t>(row[j]);
      out[j] = row[j];
    }
  }
  const acc_t count = static_cast<acc_t>(members);
  for (int64_t j = 0; j < len; ++j) mean[j] /= count;
  for (int64_t g = 0; g < members; ++g) {
    const scalar_t* row = x + g * x_stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const acc_t d = static_cast<acc_t>(row[j]) - mean[j];
      m2[j] += d * d;
    }
  }
  return lane_sum<acc_t>(len, [&](int64_t j) FASTGEN_INLINE_LAMBDA { return std::sqrt(m2[j] / count + eps); });
}

// grad_x of one block: gy points at the block in member 0's grad_y (stride y_stride), gx and x at
// it in member 0 (stride x_stride); coef = gs[m] / (C H W G). mean and m2: kBlock elements of scratch each.
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void backward_block(const scalar_t* gy, const scalar_t* x, scalar_t* gx, int64_t members,
                                   int64_t x_stride, int64_t y_stride, int64_t len, acc_t eps, acc_t coef, acc_t* mean,
                                   acc_t* m2) {
  for (int64_t j = 0; j < len; ++j) mean[j] = m2[j] = acc_t(0);
  for (int64_t g = 0; g < members; ++g) {
    const scalar_t* row = x + g * x_stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) mean[j] += static_cast<acc_t>(row[j]);
  }
  const acc_t count = static_cast<acc_t>(members);
  for (int64_t j = 0; j < len; ++j) mean[j] /= count;
  for (int64_t g = 0; g < members; ++g) {
    const scalar_t* row = x + g * x_stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const acc_t d = static_cast<acc_t>(row[j]) - mean[j];
      m2[j] += d * d;
    }
  }
  // m2 becomes coef / std, the factor of (x - mean).
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) m2[j] = coef / std::sqrt(m2[j] / count + eps);
  for (int64_t g = 0; g < members; ++g) {
    const scalar_t* row = x + g * x_stride;
    const scalar_t* grow = gy + g * y_stride;
    scalar_t* out = gx + g * x_stride;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      out[j] = static_cast<scalar_t>(static_cast<acc_t>(grow[j]) + (static_cast<acc_t>(row[j]) - mean[j]) * m2[j]);
    }
  }
}

// What both entries rely on: x (N, C, H, W), every size >= 1, of a float dtype on the CPU;
// group_size >= 1; eps positive and finite.
void check_args(const char* op, const at::Tensor& x, int64_t group_size, double eps) {
  check_float_cpu(op, "x", x);
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.size(0) >= 1 && x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
              ": x must have at least one sample, channel and pixel (N, C, H, W >= 1), got ", x.sizes());
  check_copy_size(op, "x", x);
  TORCH_CHECK(group_size >= 1, op, ": group_size must be >= 1, got ", group_size);
  TORCH_CHECK(std::isfinite(eps) && eps > 0 && eps <= std::numeric_limits<float>::max(), op,
              ": eps must be a positive finite number within float32's range, got ", eps);
}

// Calls fn(m, first element, elements, task index, scratch) for every block of every group, in
// parallel; scratch holds 2 * kBlock acc_t. (On the heap: per-element sums in stack arrays made
// pixel_norm's CPU kernel 1.6x slower on an AMD EPYC; 2026-12.)
template <typename acc_t, typename Fn>
void for_each_block(int64_t groups, int64_t members, int64_t chw, Fn&& fn) {
  const int64_t blocks = (chw + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / (members * std::min(chw, kBlock)));
  at::parallel_for(0, groups * blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(2 * kBlock);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t m = i / blocks, start = (i % blocks) * kBlock;
      fn(m, start, std::min(kBlock, chw - start), i, scratch.data());
    }
  });
}

at::Tensor minibatch_stddev_cpu(const at::Tensor& x_in, int64_t group_size, double eps) {
  constexpr const char* op = "minibatch_stddev";
  check_args(op, x_in, group_size, eps);
  const auto x = dense(op, "x", x_in);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W, CHW = C * HW;
  const int64_t G = group_count(N, group_size), M = N / G, blocks = (CHW + kBlock - 1) / kBlock;
  auto y = at::empty({N, C + 1, H, W}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "minibatch_stddev_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    static_assert(std::is_same_v<acc_t, float> || std::is_same_v<acc_t, double>);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t e = static_cast<acc_t>(eps);
    std::vector<acc_t> partial(M * blocks);
    for_each_block<acc_t>(M, G, CHW, [&](int64_t m, int64_t start, int64_t len, int64_t task, acc_t* scratch) {
      partial[task] = forward_block<scalar_t, acc_t>(xp + m * CHW + start, yp + m * (CHW + HW) + start, G, M * CHW,
                                                     M * (CHW + HW), len, e, scratch, scratch + kBlock);
    });
    std::vector<acc_t> s(M);
    for (int64_t m = 0; m < M; ++m) {
      acc_t total = 0;
      for (int64_t b = 0; b < blocks; ++b) total += partial[m * blocks + b];
      s[m] = total / static_cast<acc_t>(CHW);
    }
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t v = static_cast<scalar_t>(s[n % M]);
      scalar_t* out = yp + n * (CHW + HW) + CHW;
      for (int64_t i = 0; i < HW; ++i) out[i] = v;
    }
  });
  return y;
}

at::Tensor minibatch_stddev_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in, int64_t group_size,
                                         double eps) {
  constexpr const char* op = "minibatch_stddev_backward";
  check_args(op, x_in, group_size, eps);
  check_float_cpu(op, "grad_out", grad_out_in);
  check_same_dtype(op, "grad_out", grad_out_in, "x", x_in);
  const auto& g = grad_out_in;
  TORCH_CHECK(g.dim() == 4 && g.size(0) == x_in.size(0) && g.size(1) == x_in.size(1) + 1 && g.size(2) == x_in.size(2) &&
                  g.size(3) == x_in.size(3),
              op, ": grad_out must be (N, C + 1, H, W) = (", x_in.size(0), ", ", x_in.size(1) + 1, ", ", x_in.size(2),
              ", ", x_in.size(3), "), got ", grad_out_in.sizes());
  const auto x = dense(op, "x", x_in);
  const auto grad_out = dense_grad(grad_out_in);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W, CHW = C * HW;
  const int64_t G = group_count(N, group_size), M = N / G;
  auto grad_x = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "minibatch_stddev_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    const acc_t e = static_cast<acc_t>(eps);
    // coef[m] = gs[m] / (C H W G), gs[m] the stddev channel's gradient summed over group m.
    std::vector<acc_t> coef(M);
    for (int64_t m = 0; m < M; ++m) {
      acc_t gs = 0;
      for (int64_t g = 0; g < G; ++g) {
        const scalar_t* channel = gp + (g * M + m) * (CHW + HW) + CHW;
        gs += lane_sum<acc_t>(HW, [&](int64_t i) FASTGEN_INLINE_LAMBDA { return static_cast<acc_t>(channel[i]); });
      }
      coef[m] = gs / static_cast<acc_t>(CHW) / static_cast<acc_t>(G);
    }
    for_each_block<acc_t>(M, G, CHW, [&](int64_t m, int64_t start, int64_t len, int64_t, acc_t* scratch) {
      backward_block<scalar_t, acc_t>(gp + m * (CHW + HW) + start, xp + m * CHW + start, gxp + m * CHW + start, G,
                                      M * CHW, M * (CHW + HW), len, e, coef[m], scratch, scratch + kBlock);
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("minibatch_stddev", &minibatch_stddev_cpu);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_cpu);
}

}  // namespace fastgen

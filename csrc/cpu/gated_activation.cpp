// Gated activation y = tanh(a + ca) * sigmoid(b + cb), a = x[:, :C], b = x[:, C:], on the CPU.
//
// One pass over x forward; one pass over (x, grad_out) backward that recomputes the gates
// (nothing is saved but the inputs) and also reduces grad_x over H and W, which is the gradient
// of an (N, 2C) cond. Work is split over the N * C channel planes; the per-plane loops are plain
// arithmetic that the compiler vectorises, cloned for AVX2 and AVX-512 and picked at run time.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

// The gate inputs at element i of a plane: u = a + ca, v = b + cb, where the cond is a per-pixel
// plane (kSpatial: spatial cond) or a scalar per plane (global cond, or 0 without cond).
template <bool kSpatial, typename scalar_t, typename acc_t>
struct PlaneInputs {
  const scalar_t *a, *b, *ca, *cb;
  acc_t sa, sb;
  FASTGEN_INLINE acc_t u(int64_t i) const {
    return static_cast<acc_t>(a[i]) + (kSpatial ? static_cast<acc_t>(ca[i]) : sa);
  }
  FASTGEN_INLINE acc_t v(int64_t i) const {
    return static_cast<acc_t>(b[i]) + (kSpatial ? static_cast<acc_t>(cb[i]) : sb);
  }
};

template <bool kSpatial, typename scalar_t, typename acc_t>
FASTGEN_CLONES void gated_forward_plane(PlaneInputs<kSpatial, scalar_t, acc_t> in, scalar_t* y, int64_t len) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    y[i] = static_cast<scalar_t>(tanh_fast(in.u(i)) * sigmoid_fast(in.v(i)));
  }
}

// d tanh(u) = 1 - tanh(u)^2,  d sigmoid(v) = s (1 - s):
//   grad_a = g * s * (1 - t^2),   grad_b = g * t * s * (1 - s).
// Writes grad_a, grad_b and returns their sums over the plane.
template <bool kSpatial, typename scalar_t, typename acc_t>
FASTGEN_CLONES void gated_backward_plane(PlaneInputs<kSpatial, scalar_t, acc_t> in, const scalar_t* g, scalar_t* ga,
                                         scalar_t* gb, int64_t len, acc_t* sum_a, acc_t* sum_b) {
  acc_t acc_a = 0, acc_b = 0;
#pragma omp simd reduction(+ : acc_a, acc_b)
  for (int64_t i = 0; i < len; ++i) {
    const acc_t t = tanh_fast(in.u(i));
    const acc_t s = sigmoid_fast(in.v(i));
    const acc_t gi = static_cast<acc_t>(g[i]);
    const acc_t da = gi * s * (acc_t(1) - t * t);
    const acc_t db = gi * t * s * (acc_t(1) - s);
    ga[i] = static_cast<scalar_t>(da);
    gb[i] = static_cast<scalar_t>(db);
    acc_a += da;
    acc_b += db;
  }
  *sum_a = acc_a;
  *sum_b = acc_b;
}

void check_gated_args(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& cond) {
  check_float_cpu(op, "x", x);
  TORCH_CHECK(x.dim() == 4 && x.size(1) % 2 == 0, op, ": x must be (N, 2C, H, W) with an even channel count, got ",
              x.sizes());
  check_copy_size(op, "x", x);
  if (cond.has_value()) {
    const auto& c = *cond;
    check_float_cpu(op, "cond", c);
    check_same_dtype(op, "cond", c, "x", x);
    const bool global = c.dim() == 2 && c.size(0) == x.size(0) && c.size(1) == x.size(1);
    TORCH_CHECK(global || c.sizes() == x.sizes(), op, ": cond must be (N, 2C) or (N, 2C, H, W) = ", x.sizes(),
                ", got ", c.sizes());
    check_copy_size(op, "cond", c);
  }
}

// Calls fn(n, c) for every output channel plane, in parallel.
template <typename Fn>
void for_each_plane(int64_t n_batch, int64_t channels, int64_t plane, Fn&& fn) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(plane, 1));
  at::parallel_for(0, n_batch * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(i / channels, i % channels);
  });
}

at::Tensor gated_activation_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& cond_in) {
  check_gated_args("gated_activation", x_in, cond_in);
  const auto x = dense("gated_activation", "x", x_in);
  const at::Tensor cond = cond_in.has_value() ? dense("gated_activation", "cond", *cond_in) : at::Tensor();
  const int64_t N = x.size(0), C = x.size(1) / 2, HW = x.size(2) * x.size(3);
  auto y = at::empty({N, C, x.size(2), x.size(3)}, x.options());
  const bool spatial = cond.defined() && cond.dim() == 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gated_activation_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* cp = cond.defined() ? cond.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    for_each_plane(N, C, HW, [&](int64_t n, int64_t c) {
      const int64_t ia = n * 2 * C + c, ib = ia + C;
      scalar_t* out = yp + (n * C + c) * HW;
      if (spatial) {
        gated_forward_plane<true, scalar_t, acc_t>({xp + ia * HW, xp + ib * HW, cp + ia * HW, cp + ib * HW, 0, 0}, out, HW);
      } else {
        const acc_t sa = cp != nullptr ? static_cast<acc_t>(cp[ia]) : acc_t(0);
        const acc_t sb = cp != nullptr ? static_cast<acc_t>(cp[ib]) : acc_t(0);
        gated_forward_plane<false, scalar_t, acc_t>({xp + ia * HW, xp + ib * HW, nullptr, nullptr, sa, sb}, out, HW);
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> gated_activation_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                                 const std::optional<at::Tensor>& cond_in) {
  check_gated_args("gated_activation_backward", x_in, cond_in);
  const int64_t N = x_in.size(0), C = x_in.size(1) / 2, HW = x_in.size(2) * x_in.size(3);
  check_float_cpu("gated_activation_backward", "grad_out", grad_out_in);
  check_same_dtype("gated_activation_backward", "grad_out", grad_out_in, "x", x_in);
  TORCH_CHECK(grad_out_in.dim() == 4 && grad_out_in.size(0) == N && grad_out_in.size(1) == C &&
                  grad_out_in.size(2) == x_in.size(2) && grad_out_in.size(3) == x_in.size(3),
              "gated_activation_backward: grad_out must be (N, C, H, W) = (", N, ", ", C, ", ", x_in.size(2), ", ",
              x_in.size(3), ") for x of shape ", x_in.sizes(), ", got ", grad_out_in.sizes());
  const auto x = dense("gated_activation_backward", "x", x_in);
  const auto grad_out = dense_grad(grad_out_in);
  const at::Tensor cond = cond_in.has_value() ? dense("gated_activation_backward", "cond", *cond_in) : at::Tensor();
  auto grad_x = at::empty_like(x);
  auto grad_sum = at::empty({N, 2 * C}, x.options());
  const bool spatial = cond.defined() && cond.dim() == 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gated_activation_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* cp = cond.defined() ? cond.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    scalar_t* gsp = grad_sum.mutable_data_ptr<scalar_t>();
    for_each_plane(N, C, HW, [&](int64_t n, int64_t c) {
      const int64_t ia = n * 2 * C + c, ib = ia + C;
      const scalar_t* g = gp + (n * C + c) * HW;
      acc_t sum_a, sum_b;
      if (spatial) {
        gated_backward_plane<true, scalar_t, acc_t>({xp + ia * HW, xp + ib * HW, cp + ia * HW, cp + ib * HW, 0, 0}, g,
                                                    gxp + ia * HW, gxp + ib * HW, HW, &sum_a, &sum_b);
      } else {
        const acc_t sa = cp != nullptr ? static_cast<acc_t>(cp[ia]) : acc_t(0);
        const acc_t sb = cp != nullptr ? static_cast<acc_t>(cp[ib]) : acc_t(0);
        gated_backward_plane<false, scalar_t, acc_t>({xp + ia * HW, xp + ib * HW, nullptr, nullptr, sa, sb}, g,
                                                     gxp + ia * HW, gxp + ib * HW, HW, &sum_a, &sum_b);
      }
      gsp[ia] = static_cast<scalar_t>(sum_a);
      gsp[ib] = static_cast<scalar_t>(sum_b);
    });
  });
  return {grad_x, grad_sum};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("gated_activation", &gated_activation_cpu);
  m.impl("gated_activation_backward", &gated_activation_backward_cpu);
}

}  // namespace fastgen

// WGAN-GP gradient penalty on the CPU (the maths: fastgen/reference/gradient_penalty.py).
//
// grad (N, D) read contiguous. Forward: one pass per sample for ||g_n||, kept as the op's second
// output; penalty = weight / N * sum_n (||g_n|| - 1)^2. Backward: one pass writing
// grad_out * weight * 2 / N * (||g_n|| - 1) / ||g_n|| * g (zero where ||g_n|| = 0).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "fast_math.h"

namespace fastgen {
namespace {

template <typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t sum_of_squares(const scalar_t* g, int64_t D) {
  return lane_sum<acc_t>(D, [&](int64_t d) FASTGEN_INLINE_LAMBDA { return static_cast<acc_t>(g[d]) * static_cast<acc_t>(g[d]); });
}

template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void scale_row(const scalar_t* g, scalar_t* out, int64_t D, acc_t scale) {
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(scale * static_cast<acc_t>(g[d]));
}

void check_grad(const at::Tensor& grad) {
  TORCH_CHECK(grad.dim() >= 1 && grad.size(0) >= 1, "gradient_penalty: grad must be (N, ...) with N >= 1, got ",
              grad.sizes());
}

int64_t grain_for(int64_t D) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, D)); }

std::tuple<at::Tensor, at::Tensor> gradient_penalty_cpu(const at::Tensor& grad_in, double weight) {
  check_grad(grad_in);
  const at::Tensor grad = grad_in.contiguous();
  const int64_t N = grad.size(0), D = grad.numel() / N;
  const auto acc_type = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto norms = at::empty({N}, grad.options().dtype(acc_type));
  auto penalty = at::empty({}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(), "gradient_penalty_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    acc_t* np = norms.mutable_data_ptr<acc_t>();
    at::parallel_for(0, N, grain_for(D), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) np[n] = std::sqrt(sum_of_squares<scalar_t, acc_t>(gp + n * D, D));
    });
    acc_t total = 0;
    for (int64_t n = 0; n < N; ++n) total += (np[n] - 1) * (np[n] - 1);
    *penalty.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(static_cast<acc_t>(weight) * total / N);
  });
  return {penalty, norms.to(grad.scalar_type())};
}

at::Tensor gradient_penalty_backward_cpu(const at::Tensor& grad_out, const at::Tensor& grad_in, const at::Tensor& norms_in,
                                         double weight) {
  check_grad(grad_in);
  const at::Tensor grad = grad_in.contiguous();
  const int64_t N = grad.size(0), D = grad.numel() / N;
  TORCH_CHECK(norms_in.dim() == 1 && norms_in.size(0) == N, "gradient_penalty_backward: norms must be (N,) = (", N,
              ",), got ", norms_in.sizes());
  TORCH_CHECK(grad_out.numel() == 1, "gradient_penalty_backward: grad_out must be a scalar, got ", grad_out.sizes());
  auto out = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(), "gradient_penalty_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor norms = norms_in.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const acc_t* np = norms.const_data_ptr<acc_t>();
    const acc_t g = grad_out.item<acc_t>() * static_cast<acc_t>(2 * weight) / static_cast<acc_t>(N);
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, grain_for(D), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const acc_t scale = np[n] > 0 ? g * (np[n] - 1) / np[n] : acc_t(0);
        scale_row<scalar_t, acc_t>(gp + n * D, op + n * D, D, scale);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("gradient_penalty", &gradient_penalty_cpu);
  m.impl("gradient_penalty_backward", &gradient_penalty_backward_cpu);
}

}  // namespace fastgen

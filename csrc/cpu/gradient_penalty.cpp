// WGAN-GP gradient penalty on the CPU (the maths: fastgen/reference/gradient_penalty.py).
//
// grad (N, D) read contiguous. Forward: one pass per sample for ||g_n|| (squares summed in double), kept as the op's second
// output; penalty = weight / N * sum_n (||g_n|| - 1)^2. Backward: one pass writing
// grad_out * weight * 2 / N * (||g_n|| - 1) / ||g_n|| * g (zero where ||g_n|| = 0, NaN where it is NaN).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

// In double whatever the input, as ATen's CPU vector_norm accumulates: a float32 gradient with
// entries above ~1.8e19 has a finite norm whose square overflows float32.
template <typename scalar_t>
FASTGEN_CLONES double sum_of_squares(const scalar_t* g, int64_t D) {
  return lane_sum<double>(D, [&](int64_t d) FASTGEN_INLINE_LAMBDA {
    const double v = static_cast<double>(g[d]);
    return v * v;
  });
}

// out = d_norm * (g / norm), computed in U: the unit vector first (|g_d| <= norm, so it cannot
// overflow where 1 / norm would).
template <typename scalar_t, typename U>
FASTGEN_CLONES void scale_row(const scalar_t* g, scalar_t* out, int64_t D, U d_norm, U norm) {
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(d_norm * (static_cast<U>(g[d]) / norm));
}

void check_grad(const char* op, const at::Tensor& grad, double weight) {
  check_float_cpu(op, "grad", grad);
  TORCH_CHECK(std::isfinite(weight) && std::fabs(weight) <= std::numeric_limits<float>::max(), op,
              ": weight must be a finite number within float32's range, got ", weight);
  TORCH_CHECK(grad.dim() >= 1 && grad.size(0) >= 1, op, ": grad must be (N, ...) with N >= 1, got ", grad.sizes());
  check_copy_size(op, "grad", grad);
}

int64_t grain_for(int64_t D) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, D)); }

std::tuple<at::Tensor, at::Tensor> gradient_penalty_cpu(const at::Tensor& grad_in, double weight) {
  check_grad("gradient_penalty", grad_in, weight);
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
      for (int64_t n = begin; n < end; ++n) np[n] = static_cast<acc_t>(std::sqrt(sum_of_squares<scalar_t>(gp + n * D, D)));
    });
    acc_t total = 0;
    for (int64_t n = 0; n < N; ++n) total += (np[n] - 1) * (np[n] - 1);
    *penalty.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(static_cast<acc_t>(weight) * total / N);
  });
  return {penalty, norms.to(grad.scalar_type())};
}

at::Tensor gradient_penalty_backward_cpu(const at::Tensor& grad_out, const at::Tensor& grad_in, const at::Tensor& norms_in,
                                         double weight) {
  constexpr const char* op = "gradient_penalty_backward";
  check_grad(op, grad_in, weight);
  check_float_cpu(op, "norms", norms_in);
  check_float_cpu(op, "grad_out", grad_out);
  const int64_t N = grad_in.size(0), D = grad_in.numel() / N;
  TORCH_CHECK(norms_in.dim() == 1 && norms_in.size(0) == N, op, ": norms must be (N,) = (", N, ",), got ",
              norms_in.sizes());
  TORCH_CHECK(grad_out.numel() == 1, op, ": grad_out must be a scalar, got ", grad_out.sizes());
  const at::Tensor grad = grad_in.contiguous();
  auto out = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(), "gradient_penalty_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor norms = norms_in.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const acc_t* np = norms.const_data_ptr<acc_t>();
    // d penalty / d norm_n times g_n / ||g_n||, in the reference's order of operations (that of
    // autograd of the penalty), so that all overflow alike. Zero where the norm is 0; NaN where it
    // is NaN or inf.
    const acc_t per_sample = grad_out.item<acc_t>() * static_cast<acc_t>(weight) / static_cast<acc_t>(N);
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, grain_for(D), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const acc_t norm = np[n];
        const bool zero = norm == 0;
        const acc_t d_norm = zero ? acc_t(0) : per_sample * (acc_t(2) * (norm - 1));
        if (std::isfinite(norm)) {
          scale_row<scalar_t, acc_t>(gp + n * D, op + n * D, D, d_norm, zero ? acc_t(1) : norm);
        } else {
          // The norm overflowed (or is NaN): the unit vector from the norm in double, as the
          // reference's, whose squares are summed in float64.
          const double exact = std::sqrt(sum_of_squares<scalar_t>(gp + n * D, D));
          scale_row<scalar_t, double>(gp + n * D, op + n * D, D, static_cast<double>(d_norm), exact);
        }
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

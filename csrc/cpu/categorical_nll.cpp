// Categorical NLL (softmax cross-entropy over levels) on the CPU, fused.
//
// logits (N, L, C, H, W) with H, W dense (any N, L, C strides: a model's (N, C*L, H, W) head
// output viewed as (N, L, C, H, W) needs no copy); target (N, C, H, W) int64.
//
// Forward, per block of kChunk contiguous pixels of one (n, c) plane: pass 1 takes the max over
// the L level rows, pass 2 sums exp(z - max); the block (L * kChunk values) stays in L1/L2
// between the passes. It writes the per-pixel logsumexp (saved for the backward, 1/L of the
// logits' size) and per-block partial sums of lse - z[t], which are added per image in a fixed
// order (deterministic for any thread count). No softmax or log-softmax tensor is ever formed.
//
// Backward: one pass, grad_z = (exp(z - lse) - [l == t]) * g[n]. grad_logits has the logits' strides.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <tuple>
#include <vector>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

constexpr int64_t kChunk = 64;

// Strides of a (N, L, C, H*W) view whose pixel dimension is contiguous.
struct Layout {
  int64_t N, L, C, HW, sN, sL, sC;
};

// The logits as the kernels read them: kept as they are when dense with contiguous pixels
// (grad_logits then gets the same strides), else a contiguous copy.
at::Tensor kernel_layout(const at::Tensor& t) {
  const bool pixels_dense = (t.size(4) == 1 || t.stride(4) == 1) && (t.size(3) == 1 || t.stride(3) == t.size(4));
  return pixels_dense && t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

Layout layout_of(const at::Tensor& logits) {
  return {logits.size(0), logits.size(1), logits.size(2), logits.size(3) * logits.size(4),
          logits.stride(0), logits.stride(1), logits.stride(2)};
}

void check_args(const char* op, const at::Tensor& logits, const at::Tensor& target) {
  check_float_cpu(op, "logits", logits);
  check_index_cpu(op, "target", target);
  TORCH_CHECK(logits.dim() == 5, op, ": logits must be (N, L, C, H, W), got ", logits.sizes());
  TORCH_CHECK(target.dim() == 4 && target.size(0) == logits.size(0) && target.size(1) == logits.size(2) &&
                  target.size(2) == logits.size(3) && target.size(3) == logits.size(4),
              op, ": target must be (N, C, H, W) matching logits ", logits.sizes(), ", got ", target.sizes());
  TORCH_CHECK(logits.size(1) >= 1, op, ": logits need at least one level (L = logits.shape[1] >= 1)");
  check_copy_size(op, "logits", logits);
  check_copy_size(op, "target", target);
}

// lse and nll = lse - z[t] of `len` pixels; returns the sum of nll, or -1 in *bad for a target
// outside [0, L).
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t nll_block(const scalar_t* z, int64_t sL, int64_t L, int64_t len, const int64_t* t, acc_t* lse,
                               bool* bad) {
  acc_t m[kChunk], s[kChunk];
  for (int64_t i = 0; i < len; ++i) m[i] = static_cast<acc_t>(z[i]);
  for (int64_t l = 1; l < L; ++l) {
    const scalar_t* row = z + l * sL;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t v = static_cast<acc_t>(row[i]);
      m[i] = v > m[i] ? v : m[i];
    }
  }
  for (int64_t i = 0; i < len; ++i) {
    s[i] = 0;
    m[i] = lse_shift(m[i]);
  }
  for (int64_t l = 0; l < L; ++l) {
    const scalar_t* row = z + l * sL;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) s[i] += exp_fast(static_cast<acc_t>(row[i]) - m[i]);
  }
  acc_t total = 0;
  for (int64_t i = 0; i < len; ++i) {
    lse[i] = m[i] + std::log(s[i]);
    int64_t ti = t[i];
    if (ti < 0 || ti >= L) {
      *bad = true;
      ti = 0;
    }
    total += lse[i] - static_cast<acc_t>(z[ti * sL + i]);
  }
  return total;
}

// (softmax - onehot) * g, in the reference's order of operations (an infinite g gives +-inf, not
// the NaN of g * p - g).
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void grad_block(const scalar_t* z, scalar_t* gz, int64_t sL, int64_t L, int64_t len, const int64_t* t,
                               const acc_t* lse, acc_t g) {
  for (int64_t l = 0; l < L; ++l) {
    const scalar_t* row = z + l * sL;
    scalar_t* out = gz + l * sL;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t onehot = t[i] == l ? acc_t(1) : acc_t(0);
      out[i] = static_cast<scalar_t>((exp_fast(static_cast<acc_t>(row[i]) - lse[i]) - onehot) * g);
    }
  }
}

// Calls fn(n, c, p0, len) for every block of pixels, in parallel.
template <typename Fn>
void for_each_block(const Layout& d, Fn&& fn) {
  const int64_t blocks = (d.HW + kChunk - 1) / kChunk;
  const int64_t grain = std::max<int64_t>(1, 256 / std::max<int64_t>(d.L, 1));
  at::parallel_for(0, d.N * d.C * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % blocks, nc = task / blocks;
      const int64_t p0 = b * kChunk;
      fn(nc / d.C, nc % d.C, p0, std::min(kChunk, d.HW - p0), task);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> categorical_nll_cpu(const at::Tensor& logits_in, const at::Tensor& target_in) {
  check_args("categorical_nll", logits_in, target_in);
  const at::Tensor logits = kernel_layout(logits_in);
  const at::Tensor target = target_in.contiguous();
  const Layout d = layout_of(logits);
  const auto acc_type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto lse = at::empty({d.N, d.C, logits.size(3), logits.size(4)}, logits.options().dtype(acc_type));
  auto nll = at::empty({d.N}, logits.options());
  const int64_t blocks = (d.HW + kChunk - 1) / kChunk;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "categorical_nll_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* zp = logits.const_data_ptr<scalar_t>();
    const int64_t* tp = target.const_data_ptr<int64_t>();
    acc_t* lp = lse.mutable_data_ptr<acc_t>();
    std::vector<acc_t> partial(d.N * d.C * blocks);
    std::atomic<bool> any_bad{false};
    for_each_block(d, [&](int64_t n, int64_t c, int64_t p0, int64_t len, int64_t task) {
      const int64_t pix = (n * d.C + c) * d.HW + p0;
      bool bad = false;
      partial[task] = nll_block<scalar_t, acc_t>(zp + n * d.sN + c * d.sC + p0, d.sL, d.L, len, tp + pix, lp + pix, &bad);
      if (bad) any_bad = true;
    });
    TORCH_CHECK(!any_bad, "categorical_nll: target values must lie in [0, ", d.L, ") (L = logits.shape[1])");
    scalar_t* np = nll.mutable_data_ptr<scalar_t>();
    const int64_t per_image = d.C * blocks;
    for (int64_t n = 0; n < d.N; ++n) {
      acc_t sum = 0;
      for (int64_t j = 0; j < per_image; ++j) sum += partial[n * per_image + j];
      np[n] = static_cast<scalar_t>(sum);
    }
  });
  return {nll, lse};
}

at::Tensor categorical_nll_backward_cpu(const at::Tensor& grad_in, const at::Tensor& logits_in,
                                        const at::Tensor& target_in, const at::Tensor& lse_in) {
  constexpr const char* op = "categorical_nll_backward";
  check_args(op, logits_in, target_in);
  check_float_cpu(op, "grad", grad_in);
  check_float_cpu(op, "lse", lse_in);
  const auto acc_type = logits_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(grad_in.dim() == 1 && grad_in.size(0) == logits_in.size(0), op, ": grad must be (N,) = (",
              logits_in.size(0), ",), got ", grad_in.sizes());
  TORCH_CHECK(lse_in.sizes() == target_in.sizes() && lse_in.scalar_type() == acc_type,
              "categorical_nll_backward: lse must be (N, C, H, W) in ", acc_type, ", got ", lse_in.sizes(), " ",
              lse_in.scalar_type());
  check_copy_size(op, "lse", lse_in);
  const at::Tensor logits = kernel_layout(logits_in);
  const at::Tensor target = target_in.contiguous();
  const Layout d = layout_of(logits);
  const at::Tensor grad = grad_in.to(acc_type).contiguous();
  const at::Tensor lse = lse_in.contiguous();
  // empty_like keeps the strides of a dense logits tensor, so grad_logits matches its layout.
  auto grad_logits = at::empty_like(logits);
  const Layout o = layout_of(grad_logits);
  TORCH_CHECK(o.sL == d.sL && o.sC == d.sC && o.sN == d.sN, "categorical_nll_backward: unexpected output layout");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "categorical_nll_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* zp = logits.const_data_ptr<scalar_t>();
    scalar_t* gzp = grad_logits.mutable_data_ptr<scalar_t>();
    const int64_t* tp = target.const_data_ptr<int64_t>();
    const acc_t* lp = lse.const_data_ptr<acc_t>();
    const acc_t* gp = grad.const_data_ptr<acc_t>();
    std::atomic<bool> any_bad{false};
    for_each_block(d, [&](int64_t n, int64_t c, int64_t p0, int64_t len, int64_t) {
      const int64_t pix = (n * d.C + c) * d.HW + p0;
      for (int64_t i = 0; i < len; ++i) {
        if (tp[pix + i] < 0 || tp[pix + i] >= d.L) {
          any_bad = true;
          return;
        }
      }
      const int64_t off = n * d.sN + c * d.sC + p0;
      grad_block<scalar_t, acc_t>(zp + off, gzp + off, d.sL, d.L, len, tp + pix, lp + pix, gp[n]);
    });
    TORCH_CHECK(!any_bad, "categorical_nll_backward: target values must lie in [0, ", d.L, ")");
  });
  return grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("categorical_nll", &categorical_nll_cpu);
  m.impl("categorical_nll_backward", &categorical_nll_backward_cpu);
}

}  // namespace fastgen

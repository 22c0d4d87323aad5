// VAE negative ELBO on the CPU, fused (the maths: fastgen/reference/vae_nelbo.py).
//
// recon (N, P, D) with P = 1 (bernoulli), L (categorical) or 2 (gaussian, logistic: mean and
// log-scale planes), x (N, D), mu and logvar (N, Z), all read contiguous. One task per block of
// examples. The forward is one pass over each example's recon and x that sums the reconstruction
// NLL, plus a pass over its Z latents for the KL. When recon needs a gradient (keep_grad) the same
// pass also writes d recon_nll / d recon, which shares the loss's exponentials (and, categorical,
// its logsumexp); the backward then scales it by the upstream gradient, one memory-bound pass.
// Without it, the backward computes the gradient itself.
//
// Per-element gradients (g the upstream gradient of nelbo[n]):
// (each derivative is computed first and then scaled by g, as in the reference, so that the two
// overflow alike):
//   bernoulli   d/dr = g (sigmoid(r) - x)
//   categorical d/dr_l = g (softmax(r)_l - [l == x])
//   gaussian    d/dm = -g (x - m) e^-2s,  d/ds = g (1 - (x - m)^2 e^-2s)           (s clamped)
//   logistic    with A = sigmoid(-a) (0 in the top bin), B = sigmoid(b) (0 in the bottom bin),
//               d = (a - b) = 2 e^-s / (levels - 1):
//               d/dm = g e^-s (A - B),  d/ds = g (a A - b B + d / expm1(d))       (the last term
//               only for inner bins; s clamped)
//   KL          d/dmu = g beta mu,  d/dlogvar = g beta (e^logvar - 1) / 2
//   x (float data: bernoulli, gaussian; see VaeNelboBackward)   d/dx = -g r (bernoulli), -d/dm (gaussian)
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd_node.h"
#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

enum class Likelihood { kBernoulli, kCategorical, kGaussian, kLogistic };

Likelihood parse_likelihood(c10::string_view name) {
  if (name == "bernoulli") return Likelihood::kBernoulli;
  if (name == "categorical") return Likelihood::kCategorical;
  if (name == "gaussian") return Likelihood::kGaussian;
  if (name == "logistic") return Likelihood::kLogistic;
  TORCH_CHECK(false, "vae_nelbo: likelihood must be bernoulli, categorical, gaussian or logistic, got ", name);
}

constexpr double kHalfLog2Pi = 0.91893853320467274178;
constexpr int64_t kChunk = 64;  // pixels per categorical block (the L planes of a block stay in cache)

template <typename acc_t>
FASTGEN_INLINE acc_t clamp_log_scale(acc_t s) {
  return s < acc_t(-7) ? acc_t(-7) : (s > acc_t(7) ? acc_t(7) : s);
}

template <typename acc_t>
FASTGEN_INLINE bool in_clamp(acc_t s) {
  return s >= acc_t(-7) && s <= acc_t(7);
}

struct Shape {
  int64_t N, P, D, Z;
};

// ---- one example: its reconstruction NLL (kValue) and/or g times its gradient (kGrad) --------
// The value and the gradient share their exponentials, so with both the forward is one pass.

template <bool kValue, bool kGrad, typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t bernoulli_row(const scalar_t* r, const scalar_t* x, int64_t D, acc_t g, scalar_t* gr) {
  return lane_sum<acc_t>(D, [&](int64_t d) FASTGEN_INLINE_LAMBDA {
    const acc_t rv = static_cast<acc_t>(r[d]), xv = static_cast<acc_t>(x[d]);
    const acc_t e = exp_fast(-std::fabs(rv));  // softplus(r) = max(r, 0) + log1p(e); sigmoid from e too
    if constexpr (kGrad) {
      const acc_t inv = 1 / (1 + e);
      const acc_t sig = rv >= 0 ? inv : e * inv;
      gr[d] = static_cast<scalar_t>((sig - xv) * g);
    }
    // softplus(r) - x r = (1 - x) relu(r) + x relu(-r) + log1p(e), as the reference: an infinite r
    // gives +inf, not inf - inf; the relus pass NaN, as torch.relu.
    if constexpr (kValue) {
      const acc_t pos = rv <= 0 ? acc_t(0) : rv, neg = rv >= 0 ? acc_t(0) : -rv;
      return (1 - xv) * pos + xv * neg + log1p_unit(e);
    }
    return acc_t(0);
  });
}

template <bool kValue, bool kGrad, typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t gaussian_row(const scalar_t* r, const scalar_t* x, int64_t D, acc_t g, scalar_t* gr) {
  return lane_sum<acc_t>(D, [&](int64_t d) FASTGEN_INLINE_LAMBDA {
    const acc_t raw = static_cast<acc_t>(r[D + d]);
    const acc_t s = clamp_log_scale(raw);
    const acc_t inv_var = exp_fast(acc_t(-2) * s);
    const acc_t diff = static_cast<acc_t>(x[d]) - static_cast<acc_t>(r[d]);
    if constexpr (kGrad) {
      const acc_t grad_s = (1 - diff * diff * inv_var) * g;
      gr[d] = static_cast<scalar_t>(-diff * inv_var * g);
      gr[D + d] = static_cast<scalar_t>(in_clamp(raw) ? grad_s : acc_t(0));
    }
    if constexpr (kValue) return acc_t(kHalfLog2Pi) + s + acc_t(0.5) * diff * diff * inv_var;
    return acc_t(0);
  });
}

template <bool kValue, bool kGrad, typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t logistic_row(const scalar_t* r, const int64_t* x, int64_t D, int64_t levels, acc_t g,
                                  scalar_t* gr) {
  const acc_t half_bin = acc_t(1) / static_cast<acc_t>(levels - 1);
  const int64_t top = levels - 1;
  return lane_sum<acc_t>(D, [&](int64_t d) FASTGEN_INLINE_LAMBDA {
    const int64_t k = x[d];
    const acc_t v = static_cast<acc_t>(k) * (2 * half_bin) - 1;
    const acc_t m = static_cast<acc_t>(r[d]);
    const acc_t raw = static_cast<acc_t>(r[D + d]);
    const acc_t inv = exp_fast(-clamp_log_scale(raw));
    const acc_t centre_a = v + half_bin - m, centre_b = v - half_bin - m;
    const acc_t a = centre_a * inv, b = centre_b * inv;
    const acc_t width = 2 * half_bin * inv;
    // Every term is computed, then the end bins drop theirs: selects, not branches (vectorised).
    if constexpr (kGrad) {
      const acc_t sig_a = sigmoid_fast(-a), sig_b = sigmoid_fast(b);
      const acc_t ratio = width / expm1_fast(width);
      const acc_t A = k == top ? acc_t(0) : sig_a;
      const acc_t B = k == 0 ? acc_t(0) : sig_b;
      const acc_t inner = (k == 0 || k == top) ? acc_t(0) : ratio;
      // a A - b B as (A centre_a - B centre_b) e^-s, the reference's (and autograd's) products, so
      // that an infinite or huge mean gives the same inf or NaN.
      const acc_t grad_s = ((A * centre_a - B * centre_b) * inv + inner) * g;
      gr[d] = static_cast<scalar_t>(inv * (A - B) * g);
      gr[D + d] = static_cast<scalar_t>(in_clamp(raw) ? grad_s : acc_t(0));
    }
    if constexpr (kValue) {
      const acc_t upper = softplus_fast(-a);  // -logsigmoid(a)
      const acc_t lower = softplus_fast(b);   // -logsigmoid(-b)
      const acc_t mass = -log_fast(one_minus_exp_neg(width));
      return (k == top ? acc_t(0) : upper) + (k == 0 ? acc_t(0) : lower) + ((k == 0 || k == top) ? acc_t(0) : mass);
    }
    return acc_t(0);
  });
}

// logsumexp over the L planes (stride D) of `len` pixels into lse.
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void plane_logsumexp(const scalar_t* r, int64_t D, int64_t L, int64_t len, acc_t* lse) {
  acc_t m[kChunk], s[kChunk];
  for (int64_t i = 0; i < len; ++i) m[i] = static_cast<acc_t>(r[i]);
  for (int64_t l = 1; l < L; ++l) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t v = static_cast<acc_t>(r[l * D + i]);
      m[i] = v > m[i] ? v : m[i];
    }
  }
  for (int64_t i = 0; i < len; ++i) {
    s[i] = 0;
    m[i] = lse_shift(m[i]);
  }
  for (int64_t l = 0; l < L; ++l) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) s[i] += exp_fast(static_cast<acc_t>(r[l * D + i]) - m[i]);
  }
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) lse[i] = m[i] + log_fast(s[i]);
}

// (softmax - onehot) * g of `len` pixels into gr (L planes of stride D).
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void softmax_grad(const scalar_t* r, const int64_t* x, int64_t D, int64_t L, int64_t len,
                                 const acc_t* lse, acc_t g, scalar_t* gr) {
  for (int64_t l = 0; l < L; ++l) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t onehot = x[i] == l ? acc_t(1) : acc_t(0);
      gr[l * D + i] = static_cast<scalar_t>((exp_fast(static_cast<acc_t>(r[l * D + i]) - lse[i]) - onehot) * g);
    }
  }
}

template <bool kValue, bool kGrad, typename scalar_t, typename acc_t>
acc_t categorical_row(const scalar_t* r, const int64_t* x, int64_t D, int64_t L, acc_t g, scalar_t* gr) {
  acc_t lse[kChunk];
  acc_t total = 0;
  for (int64_t p0 = 0; p0 < D; p0 += kChunk) {
    const int64_t len = std::min(kChunk, D - p0);
    plane_logsumexp<scalar_t, acc_t>(r + p0, D, L, len, lse);
    if constexpr (kValue)
      for (int64_t i = 0; i < len; ++i) total += lse[i] - static_cast<acc_t>(r[x[p0 + i] * D + p0 + i]);
    if constexpr (kGrad) softmax_grad<scalar_t, acc_t>(r + p0, x + p0, D, L, len, lse, g, gr + p0);
  }
  return total;
}

// The reconstruction NLL of example n (when kValue) and g times its gradient into gr (when kGrad).
template <bool kValue, bool kGrad, typename scalar_t, typename acc_t>
acc_t recon_row(Likelihood kind, const scalar_t* r, const at::Tensor& x, int64_t n, int64_t D, int64_t P,
                int64_t levels, acc_t g, scalar_t* gr) {
  switch (kind) {
    case Likelihood::kBernoulli:
      return bernoulli_row<kValue, kGrad, scalar_t, acc_t>(r, x.const_data_ptr<scalar_t>() + n * D, D, g, gr);
    case Likelihood::kGaussian:
      return gaussian_row<kValue, kGrad, scalar_t, acc_t>(r, x.const_data_ptr<scalar_t>() + n * D, D, g, gr);
    case Likelihood::kLogistic:
      return logistic_row<kValue, kGrad, scalar_t, acc_t>(r, x.const_data_ptr<int64_t>() + n * D, D, levels, g, gr);
    default:
      return categorical_row<kValue, kGrad, scalar_t, acc_t>(r, x.const_data_ptr<int64_t>() + n * D, D, P, g, gr);
  }
}

template <typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t gaussian_kl(const scalar_t* mu, const scalar_t* logvar, int64_t Z) {
  return acc_t(0.5) * lane_sum<acc_t>(Z, [&](int64_t j) FASTGEN_INLINE_LAMBDA {
    const acc_t m = static_cast<acc_t>(mu[j]), lv = static_cast<acc_t>(logvar[j]);
    return m * m + exp_fast(lv) - 1 - lv;
  });
}

// (mu, (e^logvar - 1) / 2) * beta * g of one example's latents, each when its pointer is set (the
// reference's order of products, so that both overflow alike).
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void gaussian_kl_grad(const scalar_t* mu, const scalar_t* logvar, int64_t Z, acc_t beta, acc_t g,
                                     scalar_t* g_mu, scalar_t* g_logvar) {
  if (g_mu) {
#pragma omp simd
    for (int64_t j = 0; j < Z; ++j) g_mu[j] = static_cast<scalar_t>(static_cast<acc_t>(mu[j]) * beta * g);
  }
  if (g_logvar) {
#pragma omp simd
    for (int64_t j = 0; j < Z; ++j)
      g_logvar[j] = static_cast<scalar_t>(acc_t(0.5) * (exp_fast(static_cast<acc_t>(logvar[j])) - 1) * beta * g);
  }
}

template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void scale_row(const scalar_t* in, scalar_t* out, int64_t len, acc_t g) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) out[i] = static_cast<scalar_t>(g * static_cast<acc_t>(in[i]));
}

// ---- ops -------------------------------------------------------------------------------------

// What every entry relies on (the layouts: fastgen/reference/vae_nelbo.py): recon (N, P, *S) of a
// float dtype (N, *S for bernoulli), x (N, *S) of recon's dtype (bernoulli, gaussian) or int64
// (categorical, logistic), mu and logvar (N, latent...) of recon's dtype, all on the CPU.
Shape check_args(const char* op, const at::Tensor& recon, const at::Tensor& x, const at::Tensor& mu,
                 const at::Tensor& logvar, Likelihood kind, int64_t levels, double beta) {
  check_float_cpu(op, "recon", recon);
  check_float_cpu(op, "mu", mu);
  check_float_cpu(op, "logvar", logvar);
  check_same_dtype(op, "mu", mu, "recon", recon);
  check_same_dtype(op, "logvar", logvar, "recon", recon);
  TORCH_CHECK(recon.dim() >= 2, op, ": recon must be (N, ...) with at least 2 dimensions, got ", recon.sizes());
  TORCH_CHECK(mu.dim() >= 2 && mu.sizes() == logvar.sizes() && mu.size(0) == recon.size(0), op,
              ": mu and logvar must be (N, latent...) of one shape with recon's N = ", recon.size(0), ", got ",
              mu.sizes(), " and ", logvar.sizes());
  const bool integer = kind == Likelihood::kCategorical || kind == Likelihood::kLogistic;
  if (integer) {
    check_index_cpu(op, "x", x);
  } else {
    check_float_cpu(op, "x", x);
    check_same_dtype(op, "x", x, "recon", recon);
  }
  const int64_t N = recon.size(0);
  const int64_t P = kind == Likelihood::kBernoulli ? 1 : recon.size(1);
  if (kind == Likelihood::kGaussian || kind == Likelihood::kLogistic)
    TORCH_CHECK(P == 2, op, ": recon must be (N, 2, ...) = (mean, log-scale), got ", recon.sizes());
  TORCH_CHECK(P >= 1, op, ": recon must hold at least one level (recon.shape[1] >= 1), got ", recon.sizes());
  // x is recon's shape (bernoulli) or recon's shape without its plane dimension 1.
  auto expected = recon.sizes().vec();
  if (kind != Likelihood::kBernoulli) expected.erase(expected.begin() + 1);
  TORCH_CHECK(x.sizes() == at::IntArrayRef(expected), op, ": x must be ", at::IntArrayRef(expected), " for recon ",
              recon.sizes(), ", got ", x.sizes());
  TORCH_CHECK(kind != Likelihood::kLogistic || levels >= 2, op, ": levels must be at least 2, got ", levels);
  TORCH_CHECK(std::isfinite(beta) && std::fabs(beta) <= std::numeric_limits<float>::max(), op,
              ": beta must be a finite number within float32's range, got ", beta);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"recon", &recon}, {"x", &x},
                                {"mu", &mu}, {"logvar", &logvar}})
    check_copy_size(op, name, *t);
  const int64_t D = N * P == 0 ? 0 : recon.numel() / (N * P);
  return {N, P, D, N == 0 ? 0 : mu.numel() / N};
}

// Smallest and largest of n values, 16 lanes at a time (vectorised), and whether any is NaN (the
// comparisons skip NaN).
template <typename T>
struct Range {
  T lo, hi;
  bool nan;
};

template <typename T>
FASTGEN_CLONES Range<T> span_range(const T* p, int64_t n) {
  constexpr int kLanes = 16;
  T lo[kLanes], hi[kLanes];
  int nan[kLanes] = {};
  for (int j = 0; j < kLanes; ++j) lo[j] = hi[j] = p[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      lo[j] = p[i + j] < lo[j] ? p[i + j] : lo[j];
      hi[j] = p[i + j] > hi[j] ? p[i + j] : hi[j];
      nan[j] |= p[i + j] != p[i + j];
    }
  }
  for (; i < n; ++i) {
    lo[0] = p[i] < lo[0] ? p[i] : lo[0];
    hi[0] = p[i] > hi[0] ? p[i] : hi[0];
    nan[0] |= p[i] != p[i];
  }
  for (int j = 1; j < kLanes; ++j) {
    lo[0] = lo[j] < lo[0] ? lo[j] : lo[0];
    hi[0] = hi[j] > hi[0] ? hi[j] : hi[0];
    nan[0] |= nan[j];
  }
  return {lo[0], hi[0], nan[0] != 0 || p[0] != p[0]};
}

// The data must lie in its likelihood's range: [0, 1] (bernoulli), levels [0, L) (categorical)
// or [0, levels) (logistic), NaN refused. Raises a ValueError worded as the Python-side check.
template <typename T>
void check_range(const at::Tensor& x, double low, double high, const char* what, c10::string_view likelihood) {
  const T* p = x.const_data_ptr<T>();
  const int64_t n = x.numel(), chunk = 1 << 15, chunks = (n + chunk - 1) / chunk;
  if (n == 0) return;
  std::vector<Range<T>> ranges(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) ranges[c] = span_range<T>(p + c * chunk, std::min(chunk, n - c * chunk));
  });
  T lo = ranges[0].lo, hi = ranges[0].hi;
  bool nan = false;
  for (const auto& r : ranges) {
    lo = r.lo < lo ? r.lo : lo;
    hi = r.hi > hi ? r.hi : hi;
    nan = nan || r.nan;
  }
  TORCH_CHECK_VALUE(!nan, "x must hold ", what, " in [", low, ", ", high, "] for the ", likelihood,
                    " likelihood, got NaN");
  TORCH_CHECK_VALUE(static_cast<double>(lo) >= low && static_cast<double>(hi) <= high, "x must hold ", what, " in [",
                    low, ", ", high, "] for the ", likelihood, " likelihood, got values in [", lo, ", ", hi, "]");
}

void check_data(const at::Tensor& x, Likelihood kind, int64_t P, int64_t levels, c10::string_view likelihood) {
  if (kind == Likelihood::kCategorical || kind == Likelihood::kLogistic) {
    const int64_t high = (kind == Likelihood::kCategorical ? P : levels) - 1;
    check_range<int64_t>(x, 0, static_cast<double>(high), "integers", likelihood);
  } else if (kind == Likelihood::kBernoulli) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vae_nelbo_check", [&] {
      check_range<scalar_t>(x, 0.0, 1.0, "values", likelihood);
    });
  }
}

int64_t grain_for(const Shape& s) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, s.P * s.D)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vae_nelbo_cpu(
    const at::Tensor& recon_in, const at::Tensor& x_in, const at::Tensor& mu_in, const at::Tensor& logvar_in,
    c10::string_view likelihood, double beta, int64_t levels, bool keep_grad) {
  const Likelihood kind = parse_likelihood(likelihood);
  const Shape s = check_args("vae_nelbo", recon_in, x_in, mu_in, logvar_in, kind, levels, beta);
  const at::Tensor recon = recon_in.contiguous(), x = x_in.contiguous(), mu = mu_in.contiguous(),
                   logvar = logvar_in.contiguous();
  check_data(x, kind, s.P, levels, likelihood);
  auto nelbo = at::empty({s.N}, recon.options()), nll = at::empty({s.N}, recon.options()),
       kl = at::empty({s.N}, recon.options());
  auto recon_grad = keep_grad ? at::empty_like(recon) : recon.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, recon.scalar_type(), "vae_nelbo_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* rp = recon.const_data_ptr<scalar_t>();
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* lp = logvar.const_data_ptr<scalar_t>();
    scalar_t* gp = keep_grad ? recon_grad.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t *ep = nelbo.mutable_data_ptr<scalar_t>(), *np = nll.mutable_data_ptr<scalar_t>(),
             *kp = kl.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, s.N, grain_for(s), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const int64_t row = n * s.P * s.D;
        const acc_t recon_nll =
            keep_grad ? recon_row<true, true, scalar_t, acc_t>(kind, rp + row, x, n, s.D, s.P, levels, 1, gp + row)
                      : recon_row<true, false, scalar_t, acc_t>(kind, rp + row, x, n, s.D, s.P, levels, 1, nullptr);
        const acc_t k = gaussian_kl<scalar_t, acc_t>(mp + n * s.Z, lp + n * s.Z, s.Z);
        np[n] = static_cast<scalar_t>(recon_nll);
        kp[n] = static_cast<scalar_t>(k);
        ep[n] = static_cast<scalar_t>(recon_nll + static_cast<acc_t>(beta) * k);
      }
    });
  });
  return {nelbo, nll, kl, recon_grad};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> vae_nelbo_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& recon_in, const at::Tensor& x_in, const at::Tensor& mu_in,
    const at::Tensor& logvar_in, const std::optional<at::Tensor>& recon_grad_in, c10::string_view likelihood,
    double beta, int64_t levels, std::array<bool, 3> output_mask) {
  constexpr const char* op = "vae_nelbo_backward";
  const Likelihood kind = parse_likelihood(likelihood);
  const Shape s = check_args(op, recon_in, x_in, mu_in, logvar_in, kind, levels, beta);
  check_float_cpu(op, "grad", grad_in);
  TORCH_CHECK(grad_in.dim() == 1 && grad_in.size(0) == s.N, op, ": grad must be (N,) = (", s.N, ",), got ",
              grad_in.sizes());
  const bool kept = recon_grad_in.has_value() && recon_grad_in->numel() > 0;
  if (kept) {
    check_float_cpu(op, "recon_grad", *recon_grad_in);
    TORCH_CHECK(recon_grad_in->sizes() == recon_in.sizes(), op, ": recon_grad must have recon's shape ",
                recon_in.sizes(), " (or be empty), got ", recon_grad_in->sizes());
    check_copy_size(op, "recon_grad", *recon_grad_in);
  }
  const at::Tensor recon = recon_in.contiguous(), x = x_in.contiguous(), mu = mu_in.contiguous(),
                   logvar = logvar_in.contiguous();
  const at::Tensor recon_grad = kept ? recon_grad_in->to(recon.scalar_type()).contiguous() : at::Tensor();
  // x's values matter only where the gradient of recon is computed from them (none kept).
  if (!kept && output_mask[0]) check_data(x, kind, s.P, levels, likelihood);
  const auto acc_type = recon.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor grad = grad_in.to(acc_type).contiguous();
  auto grad_recon = output_mask[0] ? at::empty_like(recon) : recon.new_empty({0});
  auto grad_mu = output_mask[1] ? at::empty_like(mu) : mu.new_empty({0});
  auto grad_logvar = output_mask[2] ? at::empty_like(logvar) : logvar.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, recon.scalar_type(), "vae_nelbo_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* rp = recon.const_data_ptr<scalar_t>();
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* lp = logvar.const_data_ptr<scalar_t>();
    const acc_t* gp = grad.const_data_ptr<acc_t>();
    const scalar_t* kept_p = kept ? recon_grad.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* out_p = output_mask[0] ? grad_recon.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* mu_out = output_mask[1] ? grad_mu.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* lv_out = output_mask[2] ? grad_logvar.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, s.N, grain_for(s), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const acc_t g = gp[n];
        const int64_t row = n * s.P * s.D;
        if (out_p && kept_p)
          scale_row<scalar_t, acc_t>(kept_p + row, out_p + row, s.P * s.D, g);
        else if (out_p)
          recon_row<false, true, scalar_t, acc_t>(kind, rp + row, x, n, s.D, s.P, levels, g, out_p + row);
        const int64_t latents = n * s.Z;
        gaussian_kl_grad<scalar_t, acc_t>(mp + latents, lp + latents, s.Z, static_cast<acc_t>(beta), g,
                                          mu_out ? mu_out + latents : nullptr, lv_out ? lv_out + latents : nullptr);
      }
    });
  });
  return {grad_recon, grad_mu, grad_logvar};
}

// ---- autograd (every device: the node calls the ops, which dispatch by device) ----------------
// A plain C++ Node, as for gan_loss: at VAE batch sizes a Python autograd.Function costs as much
// as the loss itself, and torch::autograd::Function's context a few microseconds more.

struct VaeNelboBackward final : public torch::autograd::Node {
  torch::autograd::SavedVariable recon, x, mu, logvar, recon_grad;
  bool kept = false;
  std::string likelihood;
  double beta = 1.0;
  int64_t levels = 256;

  // One gradient per next edge: recon, mu, logvar, x. x is float data only for the bernoulli and
  // gaussian likelihoods (int64 levels otherwise, which cannot require grad); its gradient comes
  // from the others: d/dx (softplus(r) - x r) = -r, and the gaussian's d/dx = -d/dm.
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgen::vae_nelbo_backward", "")
                         .typed<decltype(vae_nelbo_backward_cpu)>();
    torch::autograd::variable_list out(4);
    const bool want_x = task_should_compute_output(3), gaussian = likelihood == "gaussian";
    const std::array<bool, 3> mask = {task_should_compute_output(0) || (want_x && gaussian),
                                      task_should_compute_output(1), task_should_compute_output(2)};
    if (!(mask[0] || mask[1] || mask[2] || want_x) || !grads[0].defined()) return out;
    const at::Tensor r = recon.unpack();
    if (mask[0] || mask[1] || mask[2]) {
      const std::optional<at::Tensor> kept_grad = kept ? std::optional<at::Tensor>(recon_grad.unpack()) : std::nullopt;
      auto [g_recon, g_mu, g_logvar] = op.call(grads[0], r, x.unpack(), mu.unpack(), logvar.unpack(), kept_grad,
                                               likelihood, beta, levels, mask);
      if (task_should_compute_output(0)) out[0] = g_recon;
      if (mask[1]) out[1] = g_mu;
      if (mask[2]) out[2] = g_logvar;
      if (want_x && gaussian) out[3] = -g_recon.select(1, 0);
    }
    if (want_x && !gaussian) {  // bernoulli
      std::vector<int64_t> per_example(r.dim(), 1);
      per_example[0] = r.size(0);
      out[3] = -(grads[0].reshape(per_example) * r);
    }
    return out;
  }
  void release_variables() override {
    for (auto* v : {&recon, &x, &mu, &logvar, &recon_grad}) v->reset_data();
  }
  std::string name() const override { return "VaeNelboBackward"; }
};

// Only nelbo is differentiable; nll, kl and the kept gradient come back without a grad_fn.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vae_nelbo_autograd(
    const at::Tensor& recon, const at::Tensor& x, const at::Tensor& mu, const at::Tensor& logvar,
    c10::string_view likelihood, double beta, int64_t levels, bool keep_grad) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fastgen::vae_nelbo", "").typed<decltype(vae_nelbo_cpu)>();
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> out;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    out = op.call(recon, x, mu, logvar, likelihood, beta, levels, keep_grad);
  }
  if (!torch::autograd::compute_requires_grad(recon, mu, logvar, x)) return out;
  auto node = make_node<VaeNelboBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(recon, mu, logvar, x));
  node->recon = torch::autograd::SavedVariable(recon, false);
  node->x = torch::autograd::SavedVariable(x, false);
  node->mu = torch::autograd::SavedVariable(mu, false);
  node->logvar = torch::autograd::SavedVariable(logvar, false);
  node->recon_grad = torch::autograd::SavedVariable(std::get<3>(out), false);
  node->kept = keep_grad;
  node->likelihood = std::string(likelihood);
  node->beta = beta;
  node->levels = levels;
  torch::autograd::set_history(std::get<0>(out), node);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, Autograd, m) { m.impl("vae_nelbo", &vae_nelbo_autograd); }

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("vae_nelbo", &vae_nelbo_cpu);
  m.impl("vae_nelbo_backward", &vae_nelbo_backward_cpu);
}

}  // namespace fastgen

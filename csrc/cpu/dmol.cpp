// Discretized logistic mixture (PixelCNN++) likelihood and sampler on the CPU, fused
// (the maths and the parameter layout: fastgen/reference/dmol.py).
//
// x (N, C, H, W) and params (N, K, H, W) are read contiguous; one task per block of kChunk
// pixels of one image, every loop over the block's pixels vectorised. A block reads K planes at
// once, K streams for the hardware prefetchers: 256 pixels (1 KiB per plane) keep them on it,
// where 64 left a cold read of params latency-bound (bench/NOTES.md). The forward computes each (colour, component) bin log-probability once and
// keeps nothing but the per-pixel log-likelihood T (1/K of params) for the backward; the
// backward recomputes the bins in one pass and writes all K gradient planes.
//
// One bin, with inv = e^-s, p = inv (x - mu + h), q = inv (x - mu - h), mid = inv (x - mu):
//   bottom  lp = log sigmoid(p)         dlp/dp = sigmoid(-p)
//   top     lp = log(1 - sigmoid(q))    dlp/dq = -sigmoid(q)
//   inner   lp = log(sigmoid(p) - sigmoid(q)) = log delta,   dlp/dp = sigmoid'(p) / delta,
//           dlp/dq = -sigmoid'(q) / delta
//   small   lp = mid - s - 2 softplus(mid) + log(2h)   dlp/dmid = -tanh(mid / 2), plus -1 in dlp/ds
// and dlp/dmu = -inv (dlp/dp + dlp/dq), dlp/ds = -(p dlp/dp + q dlp/dq) (zero where s < -7 or NaN).
// delta is computed without the cancellation of sigmoid(p) - sigmoid(q) when both are near 0 or 1:
// with e_p = e^-|p|, for q >= 0 it is e_q (1 - e^-(p-q)) / ((1 + e_p)(1 + e_q)), symmetric for p < 0.
//
// Per pixel, with r_k = exp(log_softmax(a)_k + sum_c lp_ck - T) the posterior of component k and
// g the upstream gradient of nll[n]:
//   d nll / d a_k = g (softmax(a)_k - r_k),   d nll / d m_ck = -g r_k dlp_ck/dmu,
//   d nll / d s_ck = -g r_k dlp_ck/ds,   d nll / d q_0k = (d nll / d m_1k) x_0 (1 - tanh^2 q_0k), ...
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <tuple>
#include <vector>

#include "checks.h"
#include "dmol.h"
#include "fast_math.h"

namespace fastgen {
namespace {

constexpr int64_t kChunk = 256;

struct Shape {
  int64_t N, C, M, HW;
};

// 1 - e^-(p - q) for p > q. float: the ratio of the two exponentials already computed, or a
// series where p - q is small; double (gradcheck): libm.
FASTGEN_INLINE float one_minus_exp_gap(float ep, float eq, float p, float q) {
  const float gap = p - q;
  const float series = gap * (1.0f - gap * (0.5f - gap * (1.0f / 6.0f - gap * (1.0f / 24.0f - gap * (1.0f / 120.0f)))));
  const float ratio = q >= 0.0f ? ep / eq : eq / ep;  // e^-(p - q) when p and q share a sign
  return gap < 0.1f ? series : 1.0f - ratio;
}
FASTGEN_INLINE double one_minus_exp_gap(double, double, double p, double q) { return -std::expm1(q - p); }

// e^-|mid| with mid = (p + q) / 2. float, without a third exponential: sqrt(e_p e_q) when p and q
// share a sign; otherwise |mid| <= (p - q) / 2, and the value only matters in the small-bin case,
// where p - q < 1e-4, so a short series is exact to float precision there.
FASTGEN_INLINE float exp_neg_abs_mid(float ep, float eq, float p, float q, float mid) {
  const float am = std::fabs(mid);
  const float same_sign = std::sqrt(ep * eq), series = 1.0f - am * (1.0f - am * (0.5f - am * (1.0f / 6.0f)));
  return q >= 0.0f ? same_sign : (p < 0.0f ? same_sign : series);
}
FASTGEN_INLINE double exp_neg_abs_mid(double, double, double, double, double mid) { return std::exp(-std::fabs(mid)); }

// The log-probability of x's bin under one logistic (mean mu, raw log-scale s) and, when kGrad,
// its derivatives in mu and s. Branch-free: every case is computed and one selected.
template <typename T, bool kGrad>
FASTGEN_INLINE T logistic_bin(T x, T mu, T s_raw, T half, T log_bin, T* dmu, T* ds) {
  const T s = s_raw < T(kDmolLogScaleMin) ? T(kDmolLogScaleMin) : s_raw;
  const T inv = exp_fast(-s);
  const T cen = x - mu;
  const T p = inv * (cen + half), q = inv * (cen - half), mid = inv * cen;
  const T ep = exp_fast(-std::fabs(p)), eq = exp_fast(-std::fabs(q));
  const T em = exp_neg_abs_mid(ep, eq, p, q, mid);
  const T rp = T(1) / (T(1) + ep), rq = T(1) / (T(1) + eq), rm = T(1) / (T(1) + em);
  const T sig_p = p >= T(0) ? rp : ep * rp, sig_q = q >= T(0) ? rq : eq * rq;
  // Single comparisons feeding selects (no && or ||), so that the loops calling this vectorise.
  // Same signs: delta = e_far (1 - e^-(p - q)) / ((1 + e_p)(1 + e_q)), no cancellation.
  const T tail = (q >= T(0) ? eq : ep) * one_minus_exp_gap(ep, eq, p, q) * rp * rq;
  const T delta = q >= T(0) ? tail : (p < T(0) ? tail : sig_p - sig_q);
  enum : int { kBottom, kTop, kInner, kSmall };
  const int which = x < T(-kDmolEdge) ? kBottom : (x > T(kDmolEdge) ? kTop : (delta > T(kDmolSmallBin) ? kInner : kSmall));
  // lp = base + coef * log(arg): one logarithm per bin whichever case holds.
  const T base = which == kBottom ? (p < T(0) ? p : T(0))
               : which == kTop    ? -(q > T(0) ? q : T(0))
               : which == kInner  ? T(0)
                                  : mid - s - T(2) * (mid > T(0) ? mid : T(0)) + log_bin;
  const T arg = which == kBottom ? T(1) + ep : (which == kTop ? T(1) + eq : (which == kInner ? delta : T(1) + em));
  const T coef = which == kInner ? T(1) : (which == kSmall ? T(-2) : T(-1));
  const T lp = base + coef * log_fast(arg);
  if constexpr (kGrad) {
    const T inv_delta = T(1) / (which == kInner ? delta : T(1));
    const T dp = which == kBottom ? (p >= T(0) ? ep * rp : rp) : (which == kInner ? ep * rp * rp * inv_delta : T(0));
    const T dq = which == kTop ? -sig_q : (which == kInner ? -eq * rq * rq * inv_delta : T(0));
    const T dmid = which == kSmall ? (mid >= T(0) ? em - T(1) : T(1) - em) * rm : T(0);  // -tanh(mid / 2)
    *dmu = -inv * (dp + dq + dmid);
    const T d = -(p * dp + q * dq + mid * dmid) - (which == kSmall ? T(1) : T(0));
    *ds = d;  // the caller zeroes it below the clamp (after scaling: autograd's where, not a product)
  }
  return lp;
}

// Pointers to one block of kChunk pixels: x's C planes, params' K planes.
template <typename scalar_t>
struct Block {
  const scalar_t* x;
  const scalar_t* params;
  int64_t HW, len;
  const scalar_t* plane(int64_t k) const { return params + k * HW; }
  const scalar_t* x_plane(int64_t c) const { return x + c * HW; }
};

// Channel of component k's mean (what 0), log-scale (1) or coefficient (2) for colour c.
FASTGEN_INLINE int64_t param_channel(const Shape& d, int64_t c, int64_t what, int64_t k) {
  return dmol_param_channel(d.C, d.M, c, what, k);
}

// Per-pixel log-normaliser of the mixture logits.
template <typename scalar_t, typename acc_t>
FASTGEN_INLINE void logit_lse(const Shape& d, const Block<scalar_t>& b, acc_t* lse) {
  const int64_t len = b.len;
  for (int64_t i = 0; i < len; ++i) lse[i] = static_cast<acc_t>(b.plane(0)[i]);
  for (int64_t k = 1; k < d.M; ++k) {
    const scalar_t* a = b.plane(k);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t v = static_cast<acc_t>(a[i]);
      lse[i] = v > lse[i] ? v : lse[i];
    }
  }
  acc_t sum[kChunk] = {};
  for (int64_t k = 0; k < d.M; ++k) {
    const scalar_t* a = b.plane(k);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) sum[i] += exp_fast(static_cast<acc_t>(a[i]) - lse[i]);
  }
  for (int64_t i = 0; i < len; ++i) lse[i] += log_fast(sum[i]);
}

// Component k's mean of colour c at every pixel of the block, after the coupling (into mu), and
// the tanh of the coefficients used (into tq[0..2] when C = 3).
template <typename scalar_t, typename acc_t>
FASTGEN_INLINE void coupled_mean(const Shape& d, const Block<scalar_t>& b, const acc_t (*xv)[kChunk], int64_t c,
                                 int64_t k, acc_t* mu, acc_t (*tq)[kChunk]) {
  const scalar_t* m = b.plane(param_channel(d, c, 0, k));
  const int64_t len = b.len;
  if (c == 0 || d.C == 1) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) mu[i] = static_cast<acc_t>(m[i]);
  } else if (c == 1) {
    const scalar_t* q0 = b.plane(param_channel(d, 0, 2, k));
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      tq[0][i] = tanh_fast(static_cast<acc_t>(q0[i]));
      mu[i] = static_cast<acc_t>(m[i]) + tq[0][i] * xv[0][i];
    }
  } else {
    const scalar_t* q1 = b.plane(param_channel(d, 1, 2, k));
    const scalar_t* q2 = b.plane(param_channel(d, 2, 2, k));
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      tq[1][i] = tanh_fast(static_cast<acc_t>(q1[i]));
      tq[2][i] = tanh_fast(static_cast<acc_t>(q2[i]));
      mu[i] = static_cast<acc_t>(m[i]) + tq[1][i] * xv[0][i] + tq[2][i] * xv[1][i];
    }
  }
}

template <typename scalar_t, typename acc_t>
FASTGEN_INLINE bool load_x(const Shape& d, const Block<scalar_t>& b, acc_t (*xv)[kChunk]) {
  bool ok = true;
  for (int64_t c = 0; c < d.C; ++c) {
    for (int64_t i = 0; i < b.len; ++i) {
      xv[c][i] = static_cast<acc_t>(b.x_plane(c)[i]);
      ok = ok && xv[c][i] >= acc_t(-1) && xv[c][i] <= acc_t(1);
    }
  }
  return ok;
}

// Forward of one block: writes the per-pixel log-likelihood and returns its sum (false in *ok
// for x outside [-1, 1]).
template <typename scalar_t, typename acc_t, int kC>
FASTGEN_CLONES acc_t forward_block(const Shape& d, const Block<scalar_t>& b, acc_t half, acc_t log_bin, acc_t* out,
                                   std::vector<acc_t>& comp, bool* ok) {
  acc_t xv[3][kChunk], lse[kChunk], mu[kChunk], tq[3][kChunk];
  const int64_t len = b.len;
  *ok = load_x(d, b, xv);
  logit_lse(d, b, lse);
  comp.resize(d.M * kChunk);
  for (int64_t k = 0; k < d.M; ++k) {
    acc_t* ck = comp.data() + k * kChunk;
    const scalar_t* a = b.plane(k);
    for (int64_t i = 0; i < len; ++i) ck[i] = static_cast<acc_t>(a[i]) - lse[i];
    for (int64_t c = 0; c < kC; ++c) {
      coupled_mean(d, b, xv, c, k, mu, tq);
      const scalar_t* s = b.plane(param_channel(d, c, 1, k));
      const acc_t* xc = xv[c];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i)
        ck[i] += logistic_bin<acc_t, false>(xc[i], mu[i], static_cast<acc_t>(s[i]), half, log_bin, nullptr, nullptr);
    }
  }
  acc_t best[kChunk], sum[kChunk] = {};
  for (int64_t i = 0; i < len; ++i) best[i] = comp[i];
  for (int64_t k = 1; k < d.M; ++k) {
    const acc_t* ck = comp.data() + k * kChunk;
    for (int64_t i = 0; i < len; ++i) best[i] = ck[i] > best[i] ? ck[i] : best[i];
  }
  for (int64_t i = 0; i < len; ++i) best[i] = lse_shift(best[i]);  // every component -inf: -inf, not NaN
  for (int64_t k = 0; k < d.M; ++k) {
    const acc_t* ck = comp.data() + k * kChunk;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) sum[i] += exp_fast(ck[i] - best[i]);
  }
  acc_t total = 0;
  for (int64_t i = 0; i < len; ++i) {
    out[i] = best[i] + log_fast(sum[i]);
    total += out[i];
  }
  return total;
}

// Backward of one block: every gradient plane of the block, scaled by g (false in *ok for x
// outside [-1, 1]).
template <typename scalar_t, typename acc_t, int kC>
FASTGEN_CLONES void backward_block(const Shape& d, const Block<scalar_t>& b, acc_t half, acc_t log_bin,
                                   const acc_t* pixel_lp, acc_t g, scalar_t* grad, bool* ok) {
  acc_t xv[3][kChunk], lse[kChunk], mu[kChunk], tq[3][kChunk];
  acc_t lp[3][kChunk], dmu[3][kChunk], ds[3][kChunk], r[kChunk];
  const int64_t len = b.len, HW = b.HW;
  *ok = load_x(d, b, xv);
  logit_lse(d, b, lse);
  for (int64_t k = 0; k < d.M; ++k) {
    for (int64_t c = 0; c < kC; ++c) {
      coupled_mean(d, b, xv, c, k, mu, tq);  // colour 1 fills tq[0], colour 2 tq[1] and tq[2]
      const scalar_t* s = b.plane(param_channel(d, c, 1, k));
      const acc_t* xc = xv[c];
      acc_t *l = lp[c], *dm = dmu[c], *dsc = ds[c];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i)
        l[i] = logistic_bin<acc_t, true>(xc[i], mu[i], static_cast<acc_t>(s[i]), half, log_bin, dm + i, dsc + i);
    }
    const scalar_t* a = b.plane(k);
    scalar_t* ga = grad + k * HW;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      // Summed in the forward's order, so that comp - pixel_lp is exactly 0 for a lone component.
      acc_t comp = static_cast<acc_t>(a[i]) - lse[i];
      comp += lp[0][i];
      if constexpr (kC == 3) {
        comp += lp[1][i];
        comp += lp[2][i];
      }
      r[i] = exp_fast(comp - pixel_lp[i]);
      ga[i] = static_cast<scalar_t>((exp_fast(static_cast<acc_t>(a[i]) - lse[i]) - r[i]) * g);
    }
    // Each derivative first, then times g, as the reference scales its Jacobian rows: an upstream
    // gradient near float's max overflows alike.
    for (int64_t c = 0; c < kC; ++c) {
      scalar_t* gm = grad + param_channel(d, c, 0, k) * HW;
      scalar_t* gs = grad + param_channel(d, c, 1, k) * HW;
      const scalar_t* sc = b.plane(param_channel(d, c, 1, k));
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        gm[i] = static_cast<scalar_t>(-r[i] * dmu[c][i] * g);
        // Zero below the clamp and at a NaN log-scale, whatever the rest holds, as autograd of clamp.
        gs[i] = static_cast<scalar_t>(static_cast<acc_t>(sc[i]) >= acc_t(kDmolLogScaleMin) ? -r[i] * ds[c][i] * g
                                                                                         : acc_t(0));
      }
    }
    if constexpr (kC == 3) {
      scalar_t* g0 = grad + param_channel(d, 0, 2, k) * HW;
      scalar_t* g1 = grad + param_channel(d, 1, 2, k) * HW;
      scalar_t* g2 = grad + param_channel(d, 2, 2, k) * HW;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t dm1 = -r[i] * dmu[1][i], dm2 = -r[i] * dmu[2][i];
        g0[i] = static_cast<scalar_t>(dm1 * xv[0][i] * (acc_t(1) - tq[0][i] * tq[0][i]) * g);
        g1[i] = static_cast<scalar_t>(dm2 * xv[0][i] * (acc_t(1) - tq[1][i] * tq[1][i]) * g);
        g2[i] = static_cast<scalar_t>(dm2 * xv[1][i] * (acc_t(1) - tq[2][i] * tq[2][i]) * g);
      }
    }
  }
}

// params (N, K, H, W) of a float dtype on the CPU, K = (C == 3 ? 10 : 3) * nr_mix, for C colours and
// images N x H x W; nr_mix and levels in range. Written without products of nr_mix, which may be
// any int64.
void check_params(const char* op, const at::Tensor& params, int64_t N, int64_t C, int64_t H, int64_t W,
                  int64_t nr_mix, int64_t levels) {
  check_float_cpu(op, "params", params);
  TORCH_CHECK(nr_mix >= 1, op, ": nr_mix must be >= 1, got ", nr_mix);
  TORCH_CHECK(levels >= 2, op, ": levels must be >= 2, got ", levels);
  const int64_t per = C == 3 ? 10 : 3;
  TORCH_CHECK(params.dim() == 4 && params.size(0) == N && params.size(1) % per == 0 && params.size(1) / per == nr_mix &&
                  params.size(2) == H && params.size(3) == W,
              op, ": params must be (N, K, H, W) = (", N, ", ", per, " * nr_mix, ", H, ", ", W, ") for C = ", C,
              " colours and nr_mix = ", nr_mix, ", got ", params.sizes());
  check_copy_size(op, "params", params);
}

Shape check_args(const char* op, const at::Tensor& x, const at::Tensor& params, int64_t nr_mix, int64_t levels) {
  check_float_cpu(op, "x", x);
  TORCH_CHECK(x.dim() == 4 && (x.size(1) == 1 || x.size(1) == 3), op, ": x must be (N, C, H, W) with C = 1 or 3, got ",
              x.sizes());
  check_params(op, params, x.size(0), x.size(1), x.size(2), x.size(3), nr_mix, levels);
  check_same_dtype(op, "params", params, "x", x);
  check_copy_size(op, "x", x);
  return {x.size(0), x.size(1), nr_mix, x.size(2) * x.size(3)};
}

template <typename Fn>
void for_each_block(const Shape& d, Fn&& fn) {
  const int64_t blocks = (d.HW + kChunk - 1) / kChunk;
  at::parallel_for(0, d.N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kChunk;
      fn(n, p0, std::min(kChunk, d.HW - p0), task);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> dmol_nll_cpu(const at::Tensor& x_in, const at::Tensor& params_in, int64_t nr_mix,
                                                 int64_t levels) {
  const Shape d = check_args("dmol_nll", x_in, params_in, nr_mix, levels);
  const at::Tensor x = x_in.contiguous(), params = params_in.contiguous();
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto pixel_lp = at::empty({d.N, x.size(2), x.size(3)}, x.options().dtype(acc_type));
  auto nll = at::empty({d.N}, x.options());
  const int64_t blocks = (d.HW + kChunk - 1) / kChunk;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dmol_nll_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t half = acc_t(1) / acc_t(levels - 1), log_bin = std::log(acc_t(2) / acc_t(levels - 1));
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *pp = params.const_data_ptr<scalar_t>();
    acc_t* out = pixel_lp.mutable_data_ptr<acc_t>();
    std::vector<acc_t> partial(d.N * blocks);
    std::atomic<bool> all_ok{true};
    for_each_block(d, [&](int64_t n, int64_t p0, int64_t len, int64_t task) {
      thread_local std::vector<acc_t> comp;
      const Block<scalar_t> b{xp + n * d.C * d.HW + p0, pp + n * params.size(1) * d.HW + p0, d.HW, len};
      bool ok = true;
      acc_t* o = out + n * d.HW + p0;
      partial[task] = d.C == 3 ? forward_block<scalar_t, acc_t, 3>(d, b, half, log_bin, o, comp, &ok)
                               : forward_block<scalar_t, acc_t, 1>(d, b, half, log_bin, o, comp, &ok);
      if (!ok) all_ok = false;
    });
    TORCH_CHECK(all_ok, "dmol_nll: x must lie in [-1, 1]");
    scalar_t* np = nll.mutable_data_ptr<scalar_t>();
    for (int64_t n = 0; n < d.N; ++n) {
      acc_t sum = 0;
      for (int64_t j = 0; j < blocks; ++j) sum += partial[n * blocks + j];
      np[n] = static_cast<scalar_t>(-sum);
    }
  });
  return {nll, pixel_lp};
}

at::Tensor dmol_nll_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& params_in,
                                 const at::Tensor& pixel_lp_in, int64_t nr_mix, int64_t levels) {
  constexpr const char* op = "dmol_nll_backward";
  const Shape d = check_args(op, x_in, params_in, nr_mix, levels);
  const auto acc_type = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_float_cpu(op, "grad", grad_in);
  TORCH_CHECK(grad_in.dim() == 1 && grad_in.size(0) == d.N, op, ": grad must be (N,) = (", d.N, ",), got ",
              grad_in.sizes());
  check_float_cpu(op, "pixel_log_prob", pixel_lp_in);
  TORCH_CHECK(pixel_lp_in.dim() == 3 && pixel_lp_in.size(0) == d.N && pixel_lp_in.size(1) == x_in.size(2) &&
                  pixel_lp_in.size(2) == x_in.size(3) && pixel_lp_in.scalar_type() == acc_type,
              op, ": pixel_log_prob must be (N, H, W) = (", d.N, ", ", x_in.size(2), ", ", x_in.size(3), ") in ",
              acc_type, ", got ", pixel_lp_in.sizes(), " in ", pixel_lp_in.scalar_type());
  check_copy_size(op, "pixel_log_prob", pixel_lp_in);
  const at::Tensor x = x_in.contiguous(), params = params_in.contiguous();
  const at::Tensor grad = grad_in.to(acc_type).contiguous(), pixel_lp = pixel_lp_in.contiguous();
  auto grad_params = at::empty_like(params);
  const int64_t K = params.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dmol_nll_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t half = acc_t(1) / acc_t(levels - 1), log_bin = std::log(acc_t(2) / acc_t(levels - 1));
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *pp = params.const_data_ptr<scalar_t>();
    const acc_t *lp = pixel_lp.const_data_ptr<acc_t>(), *gp = grad.const_data_ptr<acc_t>();
    scalar_t* gout = grad_params.mutable_data_ptr<scalar_t>();
    std::atomic<bool> all_ok{true};
    for_each_block(d, [&](int64_t n, int64_t p0, int64_t len, int64_t) {
      const Block<scalar_t> b{xp + n * d.C * d.HW + p0, pp + n * K * d.HW + p0, d.HW, len};
      const acc_t* t = lp + n * d.HW + p0;
      scalar_t* g = gout + n * K * d.HW + p0;
      bool ok = true;
      if (d.C == 3) {
        backward_block<scalar_t, acc_t, 3>(d, b, half, log_bin, t, gp[n], g, &ok);
      } else {
        backward_block<scalar_t, acc_t, 1>(d, b, half, log_bin, t, gp[n], g, &ok);
      }
      if (!ok) all_ok = false;
    });
    TORCH_CHECK(all_ok, "dmol_nll_backward: x must lie in [-1, 1]");
  });
  return grad_params;
}

at::Tensor dmol_sample_cpu(const at::Tensor& params_in, const at::Tensor& noise_in, int64_t nr_mix, int64_t levels) {
  // Noise is checked for dtype and shape here; its range, [0, 1), by fastgen.ops.dmol_sample (a
  // pass over it through _core.check_uniform_noise): out-of-range noise is clamped to [1e-5, 1 - 1e-5]
  // here, as in the reference, and cannot make the kernel read or write out of bounds.
  constexpr const char* op = "dmol_sample";
  check_float_cpu(op, "noise", noise_in);
  TORCH_CHECK(nr_mix >= 1, op, ": nr_mix must be >= 1, got ", nr_mix);
  TORCH_CHECK(noise_in.dim() == 4 && noise_in.size(1) > nr_mix &&
                  (noise_in.size(1) - nr_mix == 1 || noise_in.size(1) - nr_mix == 3),
              op, ": noise must be (N, nr_mix + C, H, W) with C = 1 or 3 and nr_mix = ", nr_mix, ", got ",
              noise_in.sizes());
  const int64_t C = noise_in.size(1) - nr_mix;
  check_params(op, params_in, noise_in.size(0), C, noise_in.size(2), noise_in.size(3), nr_mix, levels);
  check_copy_size(op, "noise", noise_in);
  const Shape d{noise_in.size(0), C, nr_mix, noise_in.size(2) * noise_in.size(3)};
  const at::Tensor params = params_in.contiguous(), noise = noise_in.to(params.scalar_type()).contiguous();
  auto out = at::empty({d.N, C, noise_in.size(2), noise_in.size(3)}, params.options());
  const int64_t K = params.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, params.scalar_type(), "dmol_sample_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pp = params.const_data_ptr<scalar_t>(), *up = noise.const_data_ptr<scalar_t>();
    scalar_t* outp = out.mutable_data_ptr<scalar_t>();
    const int64_t blocks = (d.HW + kDmolDrawChunk - 1) / kDmolDrawChunk;
    at::parallel_for(0, d.N * blocks, 4, [&](int64_t begin, int64_t end) {
      acc_t value[3][kDmolDrawChunk];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / blocks, p0 = (t % blocks) * kDmolDrawChunk, len = std::min(kDmolDrawChunk, d.HW - p0);
        dmol_draw_block<scalar_t, acc_t>(C, nr_mix, pp + n * K * d.HW + p0, d.HW, up + n * (nr_mix + C) * d.HW + p0,
                                         d.HW, len, levels, value);
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < len; ++i) outp[(n * C + c) * d.HW + p0 + i] = static_cast<scalar_t>(value[c][i]);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("dmol_nll", &dmol_nll_cpu);
  m.impl("dmol_nll_backward", &dmol_nll_backward_cpu);
  m.impl("dmol_sample", &dmol_sample_cpu);
}

}  // namespace fastgen

// Branch-free float exp / log / tanh / sigmoid / softplus that compilers vectorise (no libm calls in the loop).
// Accuracy: a few ulp on [-87.3, 88.7]. Below it exp saturates at ~1e-38 for finite input (which
// keeps ratios of two small exponentials finite and tanh and sigmoid exact at their limits); above
// log(FLT_MAX) it overflows to inf; exp(-inf) = 0 and NaN gives NaN, as std::exp. log gives std::log's values at 0, inf, NaN and
// below 0, so that the kernels agree with their PyTorch references on non-finite input.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Forced inline so each caller's target clone (AVX2, AVX-512) gets its own vectorised copy.
#if defined(__GNUC__)
#define FASTGEN_INLINE inline __attribute__((always_inline))
#else
#define FASTGEN_INLINE inline
#endif

// For the lambdas handed to lane_sum: inlined whatever their size, so that the loop vectorises.
#if defined(__GNUC__)
#define FASTGEN_INLINE_LAMBDA __attribute__((always_inline))
#else
#define FASTGEN_INLINE_LAMBDA
#endif

// Loops marked FASTGEN_CLONES are compiled for baseline x86-64, AVX2 and AVX-512 and the best
// one is picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTGEN_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define FASTGEN_CLONES
#endif

namespace fastgen {

FASTGEN_INLINE float exp_fast(float x) {
  // Comparisons rather than std::fmin/fmax, whose NaN rules keep them from vectorising. NaN maps
  // to the low end here (the integer conversion below never sees it) and is restored at the end.
  const float c = x > -87.3f ? (x < 88.75f ? x : 88.75f) : -87.3f;
  // exp(c) = 2^n * exp(r), n = round(c / ln 2) at most 127, |r| <= ln(2) / 2 but up to 0.7 at the
  // top, where the polynomial is still accurate and e * 2^127 overflows to inf above log(FLT_MAX).
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in plain arithmetic.
  const float rounded = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float n = rounded < 127.0f ? rounded : 127.0f;
  const float r = c - n * 0.693359375f + n * 2.12194440e-4f;
  // Minimax polynomial of exp(r) on [-ln2/2, ln2/2] (Cephes expf coefficients).
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  const float e = q * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  // exp(-inf) = 0 exactly (finite x below -87.3 keep the saturated ~1e-38).
  return x != x ? x : (x == -std::numeric_limits<float>::infinity() ? 0.0f : e * scale);
}

FASTGEN_INLINE float tanh_fast(float x) {
  const float t = exp_fast(-2.0f * std::fabs(x));
  return std::copysign((1.0f - t) / (1.0f + t), x);
}

FASTGEN_INLINE float sigmoid_fast(float x) { return 1.0f / (1.0f + exp_fast(-x)); }

// log(x) for positive normal x (Cephes logf polynomial): x = m * 2^e with m in [sqrt(1/2), sqrt(2)).
FASTGEN_INLINE float log_fast(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const int32_t e = ((bits >> 23) & 0xff) - 126;  // x = m * 2^e with m in [0.5, 1)
  bits = (bits & 0x007fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  // Selects of computed values, not branches, so that loops calling this vectorise.
  const float small = m < 0.707106781186547524f ? 1.0f : 0.0f;
  const float f = m + small * m - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float fe = static_cast<float>(e) - small;
  y += -2.12194440e-4f * fe - 0.5f * z;
  const float result = f + y + 0.693359375f * fe;
  // std::log at the ends: -inf at 0, inf at inf, NaN below 0 and for NaN (nested selects, no &&,
  // so that loops calling this still vectorise).
  const float inf = std::numeric_limits<float>::infinity();
  const float special = x == 0.0f ? -inf : (x == inf ? inf : std::numeric_limits<float>::quiet_NaN());
  return x > 0.0f ? (x < inf ? result : special) : special;
}

// log(1 + t) for t in [0, 1]: t * q(t), q the degree-8 least-squares fit of log1p(t) / t on 4000
// Chebyshev nodes; relative error below 2e-7 over [0, 1] in float32. No division, no bit tricks.
FASTGEN_INLINE float log1p_unit(float t) {
  float q = 5.253457929939032e-3f;
  q = q * t - 2.958850748836994e-2f;
  q = q * t + 7.836166769266129e-2f;
  q = q * t - 1.3674770295619965e-1f;
  q = q * t + 1.9111430644989014e-1f;
  q = q * t - 2.4844369292259216e-1f;
  q = q * t + 3.3319270610809326e-1f;
  q = q * t - 4.9999502301216125e-1f;
  q = q * t + 1.0f;
  return t * q;
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), finite for any finite x.
FASTGEN_INLINE float softplus_fast(float x) { return (x > 0.0f ? x : 0.0f) + log1p_unit(exp_fast(-std::fabs(x))); }

// 1 - e^-d for d >= 0 without cancellation at small d (series below 0.1, error < 2e-8 relative).
FASTGEN_INLINE float one_minus_exp_neg(float d) {
  const float series = d * (1.0f - d * (0.5f - d * (1.0f / 6.0f - d * (1.0f / 24.0f - d * (1.0f / 120.0f)))));
  const float direct = 1.0f - exp_fast(-d);
  return d < 0.1f ? series : direct;
}

// e^d - 1 for d >= 0, the same way.
FASTGEN_INLINE float expm1_fast(float d) {
  const float series = d * (1.0f + d * (0.5f + d * (1.0f / 6.0f + d * (1.0f / 24.0f + d * (1.0f / 120.0f)))));
  const float direct = exp_fast(d) - 1.0f;
  return d < 0.1f ? series : direct;
}

// The shift a logsumexp subtracts before exponentiating: the maximum m, or 0 where m is +-inf, as
// torch.logsumexp does (logsumexp of a +inf entry is +inf, of all -inf entries -inf, not NaN).
template <typename T>
FASTGEN_INLINE T lse_shift(T m) {
  return (m - m) == (m - m) ? m : T(0);  // m - m is NaN for +-inf (and for NaN m, whose sum is NaN anyway)
}

// The sum of f(i) for i in [0, n), vectorised: kLanes independent partial sums (a fixed order,
// so the result does not depend on the machine) added at the end; f is a FASTGEN_INLINE_LAMBDA.
// GCC 12 left the loss kernels' `#pragma omp simd reduction` loops scalar; this form it vectorises.
template <typename acc_t, typename F>
FASTGEN_INLINE acc_t lane_sum(int64_t n, F&& f) {
  constexpr int kLanes = 16;
  acc_t part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) part[j] += f(i + j);
  }
  acc_t total = 0;
  for (; i < n; ++i) total += f(i);
  for (int j = 0; j < kLanes; ++j) total += part[j];
  return total;
}

// Double precision (gradcheck, debugging) uses libm: exactness matters there, not speed.
FASTGEN_INLINE double exp_fast(double x) { return std::exp(x); }
FASTGEN_INLINE double tanh_fast(double x) { return std::tanh(x); }
FASTGEN_INLINE double sigmoid_fast(double x) { return 1.0 / (1.0 + std::exp(-x)); }
FASTGEN_INLINE double log_fast(double x) { return std::log(x); }
FASTGEN_INLINE double log1p_unit(double t) { return std::log1p(t); }
FASTGEN_INLINE double softplus_fast(double x) { return (x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))); }
FASTGEN_INLINE double one_minus_exp_neg(double d) { return -std::expm1(-d); }
FASTGEN_INLINE double expm1_fast(double d) { return std::expm1(d); }

}  // namespace fastgen

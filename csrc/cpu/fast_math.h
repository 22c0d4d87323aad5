// Branch-free float exp / tanh / sigmoid that compilers vectorise (no libm calls in the loop).
// Accuracy: a few ulp on [-87, 88]; exp saturates to ~1e-38 / ~2e38 outside it, which keeps
// tanh and sigmoid exact at their limits (+-1, 0, 1) and never produces NaN for finite input.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Forced inline so each caller's target clone (AVX2, AVX-512) gets its own vectorised copy.
#if defined(__GNUC__)
#define FASTGEN_INLINE inline __attribute__((always_inline))
#else
#define FASTGEN_INLINE inline
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
  // Comparisons rather than std::fmin/fmax, whose NaN rules keep them from vectorising.
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  // exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2) / 2 (Cody-Waite split of ln 2).
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in plain arithmetic.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
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
  return e * scale;
}

FASTGEN_INLINE float tanh_fast(float x) {
  const float t = exp_fast(-2.0f * std::fabs(x));
  return std::copysign((1.0f - t) / (1.0f + t), x);
}

FASTGEN_INLINE float sigmoid_fast(float x) { return 1.0f / (1.0f + exp_fast(-x)); }

// Double precision (gradcheck, debugging) uses libm: exactness matters there, not speed.
FASTGEN_INLINE double exp_fast(double x) { return std::exp(x); }
FASTGEN_INLINE double tanh_fast(double x) { return std::tanh(x); }
FASTGEN_INLINE double sigmoid_fast(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace fastgen

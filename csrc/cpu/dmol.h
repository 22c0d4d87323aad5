// The discretized logistic mixture of PixelCNN++ (fastgen/reference/dmol.py): parameter layout,
// constants and the per-pixel draw, shared by the dmol kernels and the PixelCNN++ sampler.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "fast_math.h"

namespace fastgen {

constexpr double kDmolLogScaleMin = -7.0;
constexpr double kDmolEdge = 0.999;
constexpr double kDmolSmallBin = 1e-5;
constexpr double kDmolNoiseEps = 1e-5;

// Channel of component k's mean (what 0), log-scale (1) or coefficient (2) for colour c, with
// C colours and M components: the logits first, then one block per colour.
inline int64_t dmol_param_channel(int64_t C, int64_t M, int64_t c, int64_t what, int64_t k) {
  return M + c * (C == 3 ? 3 : 2) * M + what * M + k;
}

// log(1 - u) for u in [1e-5, 1 - 1e-5]: float vectorisable, double exact (libm).
FASTGEN_INLINE float log_one_minus(float u) { return log_fast(1.0f - u); }
FASTGEN_INLINE double log_one_minus(double u) { return std::log1p(-u); }

template <typename acc_t>
FASTGEN_INLINE acc_t clamp_noise(acc_t u) {
  return u < acc_t(kDmolNoiseEps) ? acc_t(kDmolNoiseEps) : (u > acc_t(1 - kDmolNoiseEps) ? acc_t(1 - kDmolNoiseEps) : u);
}

constexpr int64_t kDmolDrawChunk = 64;

// The draws of `len` <= kDmolDrawChunk consecutive pixels: Gumbel-max over the logits picks each
// pixel's component, then each colour in turn is drawn from its logistic, coupled to the colours
// before it, clamped to [-1, 1] and rounded to the grid of `levels` values. Pixel i's parameter
// channel k is params[k * p_stride + i] and its noise channel k is noise[k * u_stride + i];
// value[c][i] receives the image values in [-1, 1].
template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void dmol_draw_block(int64_t C, int64_t M, const scalar_t* params, int64_t p_stride,
                                    const scalar_t* noise, int64_t u_stride, int64_t len, int64_t levels,
                                    acc_t (*value)[kDmolDrawChunk]) {
  acc_t best[kDmolDrawChunk];
  int64_t choice[kDmolDrawChunk];
  for (int64_t k = 0; k < M; ++k) {
    const scalar_t* a = params + k * p_stride;
    const scalar_t* u = noise + k * u_stride;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t score = static_cast<acc_t>(a[i]) - log_fast(-log_fast(clamp_noise(static_cast<acc_t>(u[i]))));
      // As torch.argmax: ties keep the first, and a NaN score beats any number (the first NaN wins).
      const bool first_nan = score != score ? best[i] == best[i] : false;
      const bool better = k == 0 ? true : (score > best[i] ? true : first_nan);
      best[i] = better ? score : best[i];
      choice[i] = better ? k : choice[i];
    }
  }
  acc_t mean[kDmolDrawChunk], log_scale[kDmolDrawChunk], coef[3][kDmolDrawChunk];
  const acc_t steps = static_cast<acc_t>(levels - 1);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < len; ++i) {  // the chosen component's parameters (a gather)
      mean[i] = static_cast<acc_t>(params[dmol_param_channel(C, M, c, 0, choice[i]) * p_stride + i]);
      log_scale[i] = static_cast<acc_t>(params[dmol_param_channel(C, M, c, 1, choice[i]) * p_stride + i]);
      if (C == 3) coef[c][i] = static_cast<acc_t>(params[dmol_param_channel(C, M, c, 2, choice[i]) * p_stride + i]);
    }
    const scalar_t* u = noise + (M + c) * u_stride;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t uc = clamp_noise(static_cast<acc_t>(u[i]));
      const acc_t s = log_scale[i] < acc_t(kDmolLogScaleMin) ? acc_t(kDmolLogScaleMin) : log_scale[i];
      acc_t v = mean[i] + exp_fast(s) * (log_fast(uc) - log_one_minus(uc));
      if (c == 1) v += tanh_fast(coef[0][i]) * value[0][i];
      if (c == 2) v += tanh_fast(coef[1][i]) * value[0][i] + tanh_fast(coef[2][i]) * value[1][i];
      v = v < acc_t(-1) ? acc_t(-1) : (v > acc_t(1) ? acc_t(1) : v);
      // (2k - steps) / steps: exactly -1 and 1 at the ends, whatever the rounding of the product.
      value[c][i] = (acc_t(2) * std::nearbyint((v + acc_t(1)) * (steps / acc_t(2))) - steps) / steps;
    }
  }
}

}  // namespace fastgen

// The discretized logistic mixture of PixelCNN++ (fastgen/reference/dmol.py): parameter layout,
// constants and the per-pixel draw, shared by the dmol kernels and the PixelCNN++ sampler.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

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

// One pixel's draw: Gumbel-max over the logits picks the component, then each colour in turn is
// drawn from its logistic, coupled to the colours before it, clamped to [-1, 1] and rounded to
// the grid of `levels` values. params and noise are read `p_stride` and `u_stride` apart per
// channel; value[0..C) receives the image values in [-1, 1].
template <typename scalar_t, typename acc_t>
void dmol_draw_pixel(int64_t C, int64_t M, const scalar_t* params, int64_t p_stride, const scalar_t* noise,
                     int64_t u_stride, int64_t levels, acc_t* value) {
  auto u_at = [&](int64_t ch) {
    const acc_t u = static_cast<acc_t>(noise[ch * u_stride]);
    return u < acc_t(kDmolNoiseEps) ? acc_t(kDmolNoiseEps) : (u > acc_t(1 - kDmolNoiseEps) ? acc_t(1 - kDmolNoiseEps) : u);
  };
  int64_t best = 0;
  acc_t best_score = 0;
  for (int64_t k = 0; k < M; ++k) {
    const acc_t score = static_cast<acc_t>(params[k * p_stride]) - std::log(-std::log(u_at(k)));
    if (k == 0 || score > best_score) best = k, best_score = score;
  }
  auto at_ch = [&](int64_t c, int64_t what) {
    return static_cast<acc_t>(params[dmol_param_channel(C, M, c, what, best) * p_stride]);
  };
  const acc_t steps = static_cast<acc_t>(levels - 1);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t u = u_at(M + c);
    const acc_t s = std::max(at_ch(c, 1), acc_t(kDmolLogScaleMin));
    acc_t v = at_ch(c, 0) + std::exp(s) * (std::log(u) - std::log1p(-u));
    if (c == 1) v += std::tanh(at_ch(0, 2)) * value[0];
    if (c == 2) v += std::tanh(at_ch(1, 2)) * value[0] + std::tanh(at_ch(2, 2)) * value[1];
    v = std::min(std::max(v, acc_t(-1)), acc_t(1));
    value[c] = std::nearbyint((v + acc_t(1)) * (steps / acc_t(2))) * (acc_t(2) / steps) - acc_t(1);
  }
}

}  // namespace fastgen

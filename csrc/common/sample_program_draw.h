// The categorical draw of the sampling program, shared by the C++ and CUDA interpreters: the
// inverse-CDF draw of fastgen._core.sample_from_logits, in float64 whatever the logits' dtype.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define FASTGEN_HD __host__ __device__
#else
#define FASTGEN_HD
#endif

namespace fastgen {
namespace program {

// The smallest level whose cumulative probability exceeds u (the last level if none does);
// logits[l * stride] is level l's logit.
template <typename T>
FASTGEN_HD inline int64_t categorical_draw(const T* logits, int64_t stride, int64_t levels, double u) {
  double top = static_cast<double>(logits[0]);
  for (int64_t l = 1; l < levels; ++l) {
    const double x = static_cast<double>(logits[l * stride]);
    top = x > top ? x : top;
  }
  double sum = 0.0;
  for (int64_t l = 0; l < levels; ++l) sum += exp(static_cast<double>(logits[l * stride]) - top);
  double cdf = 0.0;
  int64_t below = 0;
  for (int64_t l = 0; l < levels; ++l) {
    cdf += exp(static_cast<double>(logits[l * stride]) - top) / sum;
    below += cdf < u;
  }
  return below < levels - 1 ? below : levels - 1;
}

// The mixture draw of one pixel (fastgen.reference.dmol.dmol_sample_reference), for the block
// interpreter: params[k * stride] is parameter channel k, noise[k * u_stride] noise channel k
// (nr_mix Gumbel numbers, then one logistic number per colour); value[c] receives colour c in
// [-1, 1] on the grid of `levels` values.
template <typename T>
FASTGEN_HD inline void mixture_draw(int64_t C, int64_t M, const T* params, int64_t stride, const T* noise,
                                    int64_t u_stride, int64_t levels, T* value) {
  const T lo = T(1e-5), hi = T(1) - T(1e-5);
  auto clamp_u = [&](T u) { return u < lo ? lo : (u > hi ? hi : u); };
  int64_t choice = 0;
  T best = T(0);
  for (int64_t k = 0; k < M; ++k) {
    const T score = params[k * stride] - log(-log(clamp_u(noise[k * u_stride])));
    if (k == 0 || score > best) {  // ties keep the first, as argmax does
      best = score;
      choice = k;
    }
  }
  const int64_t per = C == 3 ? 3 : 2;
  const T steps = static_cast<T>(levels - 1);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t block = M + c * per * M;
    const T mean = params[(block + choice) * stride];
    T log_scale = params[(block + M + choice) * stride];
    log_scale = log_scale < T(-7) ? T(-7) : log_scale;
    const T u = clamp_u(noise[(M + c) * u_stride]);
    T v = mean + exp(log_scale) * (log(u) - log1p(-u));
    if (C == 3 && c == 1) v += tanh(params[(M + 2 * M + choice) * stride]) * value[0];
    if (C == 3 && c == 2)
      v += tanh(params[(M + 3 * M + 2 * M + choice) * stride]) * value[0] +
           tanh(params[(M + 6 * M + 2 * M + choice) * stride]) * value[1];
    v = v < T(-1) ? T(-1) : (v > T(1) ? T(1) : v);
    value[c] = (T(2) * nearbyint((v + T(1)) * (steps / T(2))) - steps) / steps;
  }
}

}  // namespace program
}  // namespace fastgen

// Instance normalisation + per-channel affine + activation on the CPU:
//   y = act((x - mean) * rstd * w[c] + b[c]),  mean, rstd over the H * W pixels of each (n, c) plane.
//
// Work is split over the N * C planes. Forward, per plane: two reads for the statistics (the sum,
// then the sum of squared deviations from the mean: the reference's two-pass formula, so that the
// sums overflow, or not, where its do; the second read comes from cache, a plane of 64 x 64 float32
// pixels being 16 KB) and one pass that writes y. Backward, per plane: one pass of the two sums
// that grad_x, grad_weight and grad_bias need and one pass that writes grad_x, both recomputing z
// from x and the saved mean and rstd (nothing else is kept). The sums run in float (double for
// float64) in kLanes independent partial sums, a fixed order, so that the loops vectorise and the
// result does not depend on the machine; the loops are cloned for AVX2 and AVX-512.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

enum class Act { kRelu, kLeakyRelu, kNone };

Act parse_act(const char* op, std::string_view act) {
  if (act == "relu") return Act::kRelu;
  if (act == "leaky_relu") return Act::kLeakyRelu;
  if (act == "none") return Act::kNone;
  TORCH_CHECK(false, op, ": act must be relu, leaky_relu or none, got '", act, "'");
}

// Calls fn(std::integral_constant<Act, a>) for the run-time activation a, so that each loop is
// compiled branch-free for one activation.
template <typename Fn>
void with_act(Act act, Fn&& fn) {
  switch (act) {
    case Act::kRelu: return fn(std::integral_constant<Act, Act::kRelu>());
    case Act::kLeakyRelu: return fn(std::integral_constant<Act, Act::kLeakyRelu>());
    case Act::kNone: return fn(std::integral_constant<Act, Act::kNone>());
  }
}

// The activations as torch has them; comparisons that are false for NaN, so NaN stays NaN.
template <Act kAct, typename acc_t>
FASTGEN_INLINE acc_t activate(acc_t z, acc_t slope) {
  if constexpr (kAct == Act::kRelu) {
    return z < acc_t(0) ? acc_t(0) : z;
  } else if constexpr (kAct == Act::kLeakyRelu) {
    return z < acc_t(0) ? z * slope : z;
  } else {
    return z;
  }
}

// g * act'(z) as autograd computes it: relu passes g where z > 0 (and where z is NaN), leaky_relu
// scales it by the slope where z <= 0.
template <Act kAct, typename acc_t>
FASTGEN_INLINE acc_t act_backward(acc_t z, acc_t g, acc_t slope) {
  if constexpr (kAct == Act::kRelu) {
    return z <= acc_t(0) ? acc_t(0) : g;
  } else if constexpr (kAct == Act::kLeakyRelu) {
    return z > acc_t(0) ? g : g * slope;
  } else {
    return g;
  }
}

// One plane's affine parameters and statistics.
template <typename acc_t>
struct Plane {
  acc_t mean, rstd, w, b;
  // z as both directions compute it (one expression, so act' sees the sign the forward saw).
  FASTGEN_INLINE acc_t z(acc_t x) const { return (x - mean) * (rstd * w) + b; }
};

// mean and rstd of a plane of len >= 1 pixels, then y = act(z).
template <Act kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void forward_plane(const scalar_t* x, scalar_t* y, int64_t len, acc_t w, acc_t b, acc_t eps,
                                  acc_t slope, acc_t* mean_out, acc_t* rstd_out) {
  const acc_t count = static_cast<acc_t>(len);
  const acc_t mean = lane_sum<acc_t>(len, [&](int64_t i) FASTGEN_INLINE_LAMBDA { return static_cast<acc_t>(x[i]); }) /
                     count;
  const acc_t m2 = lane_sum<acc_t>(len, [&](int64_t i) FASTGEN_INLINE_LAMBDA {
    const acc_t d = static_cast<acc_t>(x[i]) - mean;
    return d * d;
  });
  const acc_t rstd = acc_t(1) / std::sqrt(m2 / count + eps);
  const Plane<acc_t> p{mean, rstd, w, b};
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    y[i] = static_cast<scalar_t>(activate<kAct>(p.z(static_cast<acc_t>(x[i])), slope));
  }
  *mean_out = mean;
  *rstd_out = rstd;
}

// The plane's sums sum(g) and sum(g * xhat), g = grad_y * act'(z), in kLanes partial sums each
// (the two-sum form of lane_sum in fast_math.h).
template <Act kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void backward_sums(const scalar_t* x, const scalar_t* gy, int64_t len, Plane<acc_t> p, acc_t slope,
                                  acc_t* sum_g_out, acc_t* sum_gxhat_out) {
  constexpr int kLanes = 16;
  acc_t part_g[kLanes] = {}, part_gx[kLanes] = {};
  auto term = [&](int64_t i, acc_t& g, acc_t& gxhat) FASTGEN_INLINE_LAMBDA {
    const acc_t xi = static_cast<acc_t>(x[i]);
    g = act_backward<kAct>(p.z(xi), static_cast<acc_t>(gy[i]), slope);
    gxhat = g * ((xi - p.mean) * p.rstd);
  };
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      acc_t g, gxhat;
      term(i + j, g, gxhat);
      part_g[j] += g;
      part_gx[j] += gxhat;
    }
  }
  acc_t sum_g = 0, sum_gx = 0;
  for (; i < len; ++i) {
    acc_t g, gxhat;
    term(i, g, gxhat);
    sum_g += g;
    sum_gx += gxhat;
  }
  for (int j = 0; j < kLanes; ++j) {
    sum_g += part_g[j];
    sum_gx += part_gx[j];
  }
  *sum_g_out = sum_g;
  *sum_gxhat_out = sum_gx;
}

// grad_x = rstd * (gx - mean_hw(gx) - xhat * mean_hw(gx * xhat)) with gx = g * w, that is
// rstd * w * (g - sum_g / len - xhat * sum_gxhat / len).
template <Act kAct, typename scalar_t, typename acc_t>
FASTGEN_CLONES void backward_grad_x(const scalar_t* x, const scalar_t* gy, scalar_t* gx, int64_t len, Plane<acc_t> p,
                                    acc_t slope, acc_t sum_g, acc_t sum_gxhat) {
  const acc_t count = static_cast<acc_t>(len);
  const acc_t mean_g = sum_g / count, mean_gxhat = sum_gxhat / count, scale = p.rstd * p.w;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const acc_t xi = static_cast<acc_t>(x[i]);
    const acc_t g = act_backward<kAct>(p.z(xi), static_cast<acc_t>(gy[i]), slope);
    const acc_t xhat = (xi - p.mean) * p.rstd;
    gx[i] = static_cast<scalar_t>(scale * (g - mean_g - xhat * mean_gxhat));
  }
}

// What both entries rely on: x (N, C, H, W), H, W >= 1, of a float dtype on the CPU; weight and
// bias, where given, (C,) of x's dtype on the CPU; a known activation; a finite slope.
void check_args(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& weight,
                const std::optional<at::Tensor>& bias, std::string_view act, double negative_slope) {
  check_float_cpu(op, "x", x);
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 1 && x.size(3) >= 1, op, ": x must have at least one pixel per plane (H, W >= 1), got ",
              x.sizes());
  check_copy_size(op, "x", x);
  for (const auto& [name, t] : {std::pair<const char*, const std::optional<at::Tensor>&>{"weight", weight},
                                {"bias", bias}}) {
    if (!t.has_value() || !t->defined()) continue;
    check_float_cpu(op, name, *t);
    check_same_dtype(op, name, *t, "x", x);
    TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(1), op, ": ", name, " must be (C,) = (", x.size(1),
                ",) for x of shape ", x.sizes(), ", got ", t->sizes());
    check_copy_size(op, name, *t);
  }
  parse_act(op, act);
  TORCH_CHECK(std::isfinite(negative_slope) && std::fabs(negative_slope) <= std::numeric_limits<float>::max(), op,
              ": negative_slope must be a finite number within float32's range, got ", negative_slope);
}

at::ScalarType stat_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::optional<at::Tensor> dense_optional(const char* op, const char* name, const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return dense(op, name, *t);
}

template <typename scalar_t>
const scalar_t* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

// weight[c] or bias[c], or the value standing for a missing one (1 or 0).
template <typename scalar_t, typename acc_t>
FASTGEN_INLINE acc_t channel_value(const scalar_t* t, int64_t c, acc_t absent) {
  return t != nullptr ? static_cast<acc_t>(t[c]) : absent;
}

// Calls fn(n, c, plane index) for every plane, in parallel (several planes per task where planes are small).
template <typename Fn>
void for_each_plane(int64_t n_batch, int64_t channels, int64_t plane, Fn&& fn) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(plane, 1));
  at::parallel_for(0, n_batch * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(i / channels, i % channels, i);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_cpu(const at::Tensor& x_in,
                                                                     const std::optional<at::Tensor>& weight_in,
                                                                     const std::optional<at::Tensor>& bias_in,
                                                                     std::string_view act, double negative_slope,
                                                                     double eps) {
  constexpr const char* op = "instance_norm_act";
  check_args(op, x_in, weight_in, bias_in, act, negative_slope);
  TORCH_CHECK(std::isfinite(eps) && eps > 0 && eps <= std::numeric_limits<float>::max(), op,
              ": eps must be a positive finite number within float32's range, got ", eps);
  const auto x = dense(op, "x", x_in);
  const auto weight = dense_optional(op, "weight", weight_in);
  const auto bias = dense_optional(op, "bias", bias_in);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto y = at::empty(x.sizes(), x.options());
  auto mean = at::empty({N, C}, x.options().dtype(stat_type(x)));
  auto rstd = at::empty({N, C}, x.options().dtype(stat_type(x)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    static_assert(std::is_same_v<acc_t, float> || std::is_same_v<acc_t, double>);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* mp = mean.mutable_data_ptr<acc_t>();
    acc_t* rp = rstd.mutable_data_ptr<acc_t>();
    const scalar_t* wp = data_or_null<scalar_t>(weight);
    const scalar_t* bp = data_or_null<scalar_t>(bias);
    const acc_t e = static_cast<acc_t>(eps), slope = static_cast<acc_t>(negative_slope);
    with_act(parse_act(op, act), [&](auto kind) {
      constexpr Act kAct = decltype(kind)::value;
      for_each_plane(N, C, HW, [&](int64_t, int64_t c, int64_t i) {
        const acc_t w = channel_value(wp, c, acc_t(1)), b = channel_value(bp, c, acc_t(0));
        forward_plane<kAct, scalar_t, acc_t>(xp + i * HW, yp + i * HW, HW, w, b, e, slope, mp + i, rp + i);
      });
    });
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const std::optional<at::Tensor>& weight_in,
    const std::optional<at::Tensor>& bias_in, const at::Tensor& mean_in, const at::Tensor& rstd_in,
    std::string_view act, double negative_slope, std::array<bool, 3> output_mask) {
  // output_mask's length is the schema's bool[3]: the dispatcher refuses any other.
  constexpr const char* op = "instance_norm_act_backward";
  check_args(op, x_in, weight_in, bias_in, act, negative_slope);
  check_float_cpu(op, "grad_out", grad_out_in);
  check_same_dtype(op, "grad_out", grad_out_in, "x", x_in);
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes(), op, ": grad_out must have x's shape ", x_in.sizes(), ", got ",
              grad_out_in.sizes());
  const int64_t N = x_in.size(0), C = x_in.size(1), HW = x_in.size(2) * x_in.size(3);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"mean", mean_in}, {"rstd", rstd_in}}) {
    TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined one");
    TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
    TORCH_CHECK(t.scalar_type() == stat_type(x_in), op, ": ", name, " must have dtype ", stat_type(x_in),
                " (the forward's statistics of a ", x_in.scalar_type(), " x), got ", t.scalar_type());
    TORCH_CHECK(t.dim() == 2 && t.size(0) == N && t.size(1) == C, op, ": ", name, " must be (N, C) = (", N, ", ", C,
                "), got ", t.sizes());
    check_copy_size(op, name, t);
  }
  const auto x = dense(op, "x", x_in);
  const auto grad_out = dense_grad(grad_out_in);
  const auto weight = dense_optional(op, "weight", weight_in);
  const auto bias = dense_optional(op, "bias", bias_in);
  const auto mean = dense(op, "mean", mean_in);
  const auto rstd = dense(op, "rstd", rstd_in);
  // Gradients not asked for come back as distinct empty tensors (outputs must not alias).
  at::Tensor grad_x = output_mask[0] ? at::empty(x.sizes(), x.options()) : x.new_empty({0});
  at::Tensor grad_w = x.new_empty({output_mask[1] ? C : 0});
  at::Tensor grad_b = x.new_empty({output_mask[2] ? C : 0});
  const bool want_params = output_mask[1] || output_mask[2];
  if (!(output_mask[0] || want_params)) return {grad_x, grad_w, grad_b};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    const acc_t* mp = mean.const_data_ptr<acc_t>();
    const acc_t* rp = rstd.const_data_ptr<acc_t>();
    const scalar_t* wp = data_or_null<scalar_t>(weight);
    const scalar_t* bp = data_or_null<scalar_t>(bias);
    scalar_t* gxp = output_mask[0] ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t slope = static_cast<acc_t>(negative_slope);
    // Per-plane sums (N, C), reduced over N below in a fixed order: deterministic whatever the threads.
    std::vector<acc_t> sums_g(want_params ? N * C : 0), sums_gxhat(want_params ? N * C : 0);
    with_act(parse_act(op, act), [&](auto kind) {
      constexpr Act kAct = decltype(kind)::value;
      for_each_plane(N, C, HW, [&](int64_t, int64_t c, int64_t i) {
        const Plane<acc_t> p{mp[i], rp[i], channel_value(wp, c, acc_t(1)), channel_value(bp, c, acc_t(0))};
        acc_t sum_g, sum_gxhat;
        backward_sums<kAct, scalar_t, acc_t>(xp + i * HW, gp + i * HW, HW, p, slope, &sum_g, &sum_gxhat);
        if (want_params) {
          sums_g[i] = sum_g;
          sums_gxhat[i] = sum_gxhat;
        }
        if (gxp != nullptr) {
          backward_grad_x<kAct, scalar_t, acc_t>(xp + i * HW, gp + i * HW, gxp + i * HW, HW, p, slope, sum_g,
                                                 sum_gxhat);
        }
      });
    });
    // grad_bias[c] = sum_n sum_hw g,  grad_weight[c] = sum_n sum_hw g * xhat.
    scalar_t* gwp = output_mask[1] ? grad_w.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gbp = output_mask[2] ? grad_b.mutable_data_ptr<scalar_t>() : nullptr;
    for (int64_t c = 0; c < C && want_params; ++c) {
      acc_t total_g = 0, total_gxhat = 0;
      for (int64_t n = 0; n < N; ++n) {
        total_g += sums_g[n * C + c];
        total_gxhat += sums_gxhat[n * C + c];
      }
      if (gwp != nullptr) gwp[c] = static_cast<scalar_t>(total_gxhat);
      if (gbp != nullptr) gbp[c] = static_cast<scalar_t>(total_g);
    }
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("instance_norm_act", &instance_norm_act_cpu);
  m.impl("instance_norm_act_backward", &instance_norm_act_backward_cpu);
}

}  // namespace fastgen

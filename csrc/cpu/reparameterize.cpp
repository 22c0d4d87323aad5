// Reparameterisation z = mu + exp(logvar / 2) * eps on the CPU, one element-wise pass each way.
// Backward: grad_logvar = g * exp(logvar / 2) * eps / 2, grad_eps = g * exp(logvar / 2).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <tuple>

#include "autograd_node.h"
#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

constexpr int64_t kGrain = 1 << 15;

// b must be a float CPU tensor of a's shape and dtype.
void check_like(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  check_float_cpu(op, b_name, b);
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": ", b_name, " must have ", a_name, "'s shape ", a.sizes(), ", got ",
              b.sizes());
  check_same_dtype(op, b_name, b, a_name, a);
}

template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void forward_span(const scalar_t* mu, const scalar_t* lv, const scalar_t* eps, scalar_t* z, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    z[i] = static_cast<scalar_t>(static_cast<acc_t>(mu[i]) +
                                 exp_fast(acc_t(0.5) * static_cast<acc_t>(lv[i])) * static_cast<acc_t>(eps[i]));
}

template <typename scalar_t, typename acc_t>
FASTGEN_CLONES void backward_span(const scalar_t* g, const scalar_t* lv, const scalar_t* eps, scalar_t* g_lv,
                                  scalar_t* g_eps, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const acc_t std = exp_fast(acc_t(0.5) * static_cast<acc_t>(lv[i])), grad = static_cast<acc_t>(g[i]);
    // Autograd's order of products through the reference's forward (grad * eps * std * 0.5), so
    // that both overflow alike near float's max.
    if (g_lv) g_lv[i] = static_cast<scalar_t>(grad * static_cast<acc_t>(eps[i]) * std * acc_t(0.5));
    if (g_eps) g_eps[i] = static_cast<scalar_t>(grad * std);
  }
}

at::Tensor reparameterize_cpu(const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& eps_in) {
  constexpr const char* op = "reparameterize";
  check_float_cpu(op, "mu", mu_in);
  check_like(op, mu_in, "mu", logvar_in, "logvar");
  check_like(op, mu_in, "mu", eps_in, "eps");
  check_copy_size(op, "mu", mu_in);
  check_copy_size(op, "logvar", logvar_in);
  check_copy_size(op, "eps", eps_in);
  const at::Tensor mu = mu_in.contiguous(), logvar = logvar_in.contiguous(), eps = eps_in.contiguous();
  auto z = at::empty_like(mu);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, mu.scalar_type(), "reparameterize_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *mp = mu.const_data_ptr<scalar_t>(), *lp = logvar.const_data_ptr<scalar_t>(),
                   *ep = eps.const_data_ptr<scalar_t>();
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, mu.numel(), kGrain, [&](int64_t begin, int64_t end) {
      forward_span<scalar_t, acc_t>(mp + begin, lp + begin, ep + begin, zp + begin, end - begin);
    });
  });
  return z;
}

std::tuple<at::Tensor, at::Tensor> reparameterize_backward_cpu(const at::Tensor& grad_in, const at::Tensor& logvar_in,
                                                               const at::Tensor& eps_in,
                                                               std::array<bool, 2> output_mask) {
  constexpr const char* op = "reparameterize_backward";
  check_float_cpu(op, "logvar", logvar_in);
  check_like(op, logvar_in, "logvar", grad_in, "grad");
  check_like(op, logvar_in, "logvar", eps_in, "eps");
  check_copy_size(op, "logvar", logvar_in);
  check_copy_size(op, "eps", eps_in);
  const at::Tensor grad = dense_grad(grad_in), logvar = logvar_in.contiguous(), eps = eps_in.contiguous();
  auto grad_logvar = output_mask[0] ? at::empty_like(logvar) : logvar.new_empty({0});
  auto grad_eps = output_mask[1] ? at::empty_like(eps) : eps.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(), "reparameterize_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *gp = grad.const_data_ptr<scalar_t>(), *lp = logvar.const_data_ptr<scalar_t>(),
                   *ep = eps.const_data_ptr<scalar_t>();
    scalar_t* glp = output_mask[0] ? grad_logvar.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gep = output_mask[1] ? grad_eps.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, grad.numel(), kGrain, [&](int64_t begin, int64_t end) {
      backward_span<scalar_t, acc_t>(gp + begin, lp + begin, ep + begin, glp ? glp + begin : nullptr,
                                     gep ? gep + begin : nullptr, end - begin);
    });
  });
  return {grad_logvar, grad_eps};
}

// ---- autograd (every device): a plain C++ Node, since a Python autograd.Function costs more than
// the op at VAE latent sizes (thousands of elements).

struct ReparameterizeBackward final : public torch::autograd::Node {
  torch::autograd::SavedVariable logvar, eps;

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgen::reparameterize_backward", "")
                         .typed<decltype(reparameterize_backward_cpu)>();
    torch::autograd::variable_list out(3);
    if (!grads[0].defined()) return out;
    const bool want_logvar = task_should_compute_output(1), want_eps = task_should_compute_output(2);
    if (task_should_compute_output(0)) out[0] = grads[0];
    if (want_logvar || want_eps) {
      auto [grad_logvar, grad_eps] = op.call(grads[0], logvar.unpack(), eps.unpack(), {want_logvar, want_eps});
      if (want_logvar) out[1] = grad_logvar;
      if (want_eps) out[2] = grad_eps;
    }
    return out;
  }
  void release_variables() override {
    logvar.reset_data();
    eps.reset_data();
  }
  std::string name() const override { return "ReparameterizeBackward"; }
};

at::Tensor reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fastgen::reparameterize", "").typed<decltype(reparameterize_cpu)>();
  at::Tensor z;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    z = op.call(mu, logvar, eps);
  }
  if (!torch::autograd::compute_requires_grad(mu, logvar, eps)) return z;
  auto node = make_node<ReparameterizeBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(mu, logvar, eps));
  node->logvar = torch::autograd::SavedVariable(logvar, false);
  node->eps = torch::autograd::SavedVariable(eps, false);
  torch::autograd::set_history(z, node);
  return z;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, Autograd, m) { m.impl("reparameterize", &reparameterize_autograd); }

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("reparameterize", &reparameterize_cpu);
  m.impl("reparameterize_backward", &reparameterize_backward_cpu);
}

}  // namespace fastgen

// GAN losses on the CPU, fused (the table: fastgen/reference/gan_loss.py), and the C++ autograd
// node of fastgen::gan_loss for every device.
//
// Each loss is a sum of at most two means, one per input, of an element-wise term of the
// discriminator's outputs. The forward is one pass per input summing the term; the backward is
// one pass writing g / n * term'(v). At the sizes GANs train at (a few thousand logits) the work
// is microseconds, so what matters is the per-call overhead: a single kernel each way, and an
// autograd node in C++ (registered for the Autograd key below) instead of a Python one.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "autograd_node.h"
#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

// The element-wise term of one input and its derivative.
enum class Term {
  kSoftplus,      // softplus(v)            (sigmoid(v))
  kSoftplusNeg,   // softplus(-v)           (-sigmoid(-v))
  kNegSoftplus,   // -softplus(v)           (-sigmoid(v))
  kSquareToOne,   // (v - 1)^2 / 2          (v - 1)
  kSquareToZero,  // v^2 / 2                (v)
  kHingeReal,     // relu(1 - v)            (-[v < 1]; -1 at NaN, as autograd of torch.relu)
  kHingeFake,     // relu(1 + v)            ([v > -1]; 1 at NaN)
  kPlus,          // v                      (1)
  kMinus,         // -v                     (-1)
};

struct Terms {
  Term real, fake;
};

Terms terms_of(c10::string_view kind, bool generator) {
  if (generator) {
    if (kind == "minimax") return {Term::kPlus, Term::kNegSoftplus};
    if (kind == "non_saturating") return {Term::kPlus, Term::kSoftplusNeg};
    if (kind == "lsgan") return {Term::kPlus, Term::kSquareToOne};
    if (kind == "hinge" || kind == "wasserstein") return {Term::kPlus, Term::kMinus};
  } else {
    if (kind == "minimax" || kind == "non_saturating") return {Term::kSoftplusNeg, Term::kSoftplus};
    if (kind == "lsgan") return {Term::kSquareToOne, Term::kSquareToZero};
    if (kind == "hinge") return {Term::kHingeReal, Term::kHingeFake};
    if (kind == "wasserstein") return {Term::kMinus, Term::kPlus};
  }
  TORCH_CHECK(false, "gan_loss: kind must be minimax, non_saturating, lsgan, hinge or wasserstein, got ", kind);
}

template <Term kTerm, typename acc_t>
FASTGEN_INLINE acc_t term_value(acc_t v) {
  if constexpr (kTerm == Term::kSoftplus) return softplus_fast(v);
  if constexpr (kTerm == Term::kSoftplusNeg) return softplus_fast(-v);
  if constexpr (kTerm == Term::kNegSoftplus) return -softplus_fast(v);
  if constexpr (kTerm == Term::kSquareToOne) return acc_t(0.5) * (v - 1) * (v - 1);
  if constexpr (kTerm == Term::kSquareToZero) return acc_t(0.5) * v * v;
  // relu as torch.relu: a NaN input gives NaN, not 0.
  if constexpr (kTerm == Term::kHingeReal) return v >= 1 ? acc_t(0) : 1 - v;
  if constexpr (kTerm == Term::kHingeFake) return v <= -1 ? acc_t(0) : 1 + v;
  if constexpr (kTerm == Term::kPlus) return v;
  if constexpr (kTerm == Term::kMinus) return -v;
}

template <Term kTerm, typename acc_t>
FASTGEN_INLINE acc_t term_derivative(acc_t v) {
  if constexpr (kTerm == Term::kSoftplus) return sigmoid_fast(v);
  if constexpr (kTerm == Term::kSoftplusNeg) return -sigmoid_fast(-v);
  if constexpr (kTerm == Term::kNegSoftplus) return -sigmoid_fast(v);
  // 0.5 * (2 (v - 1)), not v - 1: autograd's order, so that both overflow alike near float's max.
  if constexpr (kTerm == Term::kSquareToOne) return acc_t(0.5) * (acc_t(2) * (v - 1));
  if constexpr (kTerm == Term::kSquareToZero) return acc_t(0.5) * (acc_t(2) * v);
  if constexpr (kTerm == Term::kHingeReal) return v >= 1 ? acc_t(0) : acc_t(-1);
  if constexpr (kTerm == Term::kHingeFake) return v <= -1 ? acc_t(0) : acc_t(1);
  if constexpr (kTerm == Term::kPlus) return acc_t(1);
  if constexpr (kTerm == Term::kMinus) return acc_t(-1);
}

template <Term kTerm, typename scalar_t, typename acc_t>
FASTGEN_CLONES acc_t sum_span(const scalar_t* v, int64_t n) {
  return lane_sum<acc_t>(n, [&](int64_t i) FASTGEN_INLINE_LAMBDA { return term_value<kTerm, acc_t>(static_cast<acc_t>(v[i])); });
}

template <Term kTerm, typename scalar_t, typename acc_t>
FASTGEN_CLONES void grad_span(const scalar_t* v, scalar_t* out, int64_t n, acc_t scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(scale * term_derivative<kTerm, acc_t>(static_cast<acc_t>(v[i])));
}

// Calls fn.template operator()<kTerm>() with the term as a compile-time constant.
template <typename Fn>
auto with_term(Term term, Fn&& fn) {
  switch (term) {
    case Term::kSoftplus: return fn(std::integral_constant<Term, Term::kSoftplus>{});
    case Term::kSoftplusNeg: return fn(std::integral_constant<Term, Term::kSoftplusNeg>{});
    case Term::kNegSoftplus: return fn(std::integral_constant<Term, Term::kNegSoftplus>{});
    case Term::kSquareToOne: return fn(std::integral_constant<Term, Term::kSquareToOne>{});
    case Term::kSquareToZero: return fn(std::integral_constant<Term, Term::kSquareToZero>{});
    case Term::kHingeReal: return fn(std::integral_constant<Term, Term::kHingeReal>{});
    case Term::kHingeFake: return fn(std::integral_constant<Term, Term::kHingeFake>{});
    case Term::kPlus: return fn(std::integral_constant<Term, Term::kPlus>{});
    default: return fn(std::integral_constant<Term, Term::kMinus>{});
  }
}

// Below this many elements a single thread does it: forking the pool costs more than the work.
constexpr int64_t kChunk = 1 << 15;

// Mean of the term over t, summed in fixed chunks (the same result for any thread count).
template <typename scalar_t, typename acc_t>
acc_t mean_of(Term term, const at::Tensor& t) {
  const scalar_t* p = t.const_data_ptr<scalar_t>();
  const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
  std::vector<acc_t> partial(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t len = std::min(kChunk, n - c * kChunk);
      partial[c] = with_term(term, [&](auto k) { return sum_span<decltype(k)::value, scalar_t, acc_t>(p + c * kChunk, len); });
    }
  });
  acc_t total = 0;
  for (acc_t v : partial) total += v;
  return total / static_cast<acc_t>(n);
}

template <typename scalar_t, typename acc_t>
at::Tensor grad_of(Term term, const at::Tensor& t, acc_t g) {
  auto out = at::empty_like(t);
  const scalar_t* p = t.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  const acc_t scale = g / static_cast<acc_t>(t.numel());
  at::parallel_for(0, t.numel(), kChunk, [&](int64_t begin, int64_t end) {
    with_term(term, [&](auto k) { grad_span<decltype(k)::value, scalar_t, acc_t>(p + begin, o + begin, end - begin, scale); });
  });
  return out;
}

// d_fake (and d_real for the discriminator) non-empty float tensors of one dtype on the CPU.
// The generator losses ignore d_real's values (a given d_real must still be on d_fake's device).
void check_args(const char* op, const std::optional<at::Tensor>& d_real, const at::Tensor& d_fake, bool generator) {
  check_float_cpu(op, "d_fake", d_fake);
  TORCH_CHECK(d_fake.numel() > 0, op, ": d_fake must hold at least one discriminator output, got shape ",
              d_fake.sizes());
  check_copy_size(op, "d_fake", d_fake);
  if (d_real.has_value() && d_real->defined())
    TORCH_CHECK(d_real->device() == d_fake.device(), op, ": d_real is on ", d_real->device(), " but d_fake is on ",
                d_fake.device());
  if (generator) return;
  TORCH_CHECK(d_real.has_value() && d_real->defined(), op, ": the discriminator loss needs d_real");
  check_float_cpu(op, "d_real", *d_real);
  check_same_dtype(op, "d_real", *d_real, "d_fake", d_fake);
  TORCH_CHECK(d_real->numel() > 0, op, ": d_real must hold at least one discriminator output, got shape ",
              d_real->sizes());
  check_copy_size(op, "d_real", *d_real);
}

at::Tensor gan_loss_cpu(const std::optional<at::Tensor>& d_real_in, const at::Tensor& d_fake_in,
                        c10::string_view kind, bool generator) {
  check_args("gan_loss", d_real_in, d_fake_in, generator);
  const Terms terms = terms_of(kind, generator);
  const at::Tensor d_fake = d_fake_in.contiguous();
  auto loss = at::empty({}, d_fake.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, d_fake.scalar_type(), "gan_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t total = mean_of<scalar_t, acc_t>(terms.fake, d_fake);
    if (!generator) total += mean_of<scalar_t, acc_t>(terms.real, d_real_in->contiguous());
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total);
  });
  return loss;
}

std::tuple<at::Tensor, at::Tensor> gan_loss_backward_cpu(const at::Tensor& grad, const std::optional<at::Tensor>& d_real_in,
                                                         const at::Tensor& d_fake_in, c10::string_view kind,
                                                         bool generator) {
  check_args("gan_loss_backward", d_real_in, d_fake_in, generator);
  check_float_cpu("gan_loss_backward", "grad", grad);
  TORCH_CHECK(grad.numel() == 1, "gan_loss_backward: grad must be a scalar, got ", grad.sizes());
  const Terms terms = terms_of(kind, generator);
  const at::Tensor d_fake = d_fake_in.contiguous();
  at::Tensor grad_real = d_fake.new_empty({0}), grad_fake;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, d_fake.scalar_type(), "gan_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Read in place when the dtype matches: item() is a dispatcher call, a tenth of this op's time.
    const acc_t g = grad.scalar_type() == d_fake.scalar_type() ? static_cast<acc_t>(*grad.const_data_ptr<scalar_t>())
                                                                : grad.item<acc_t>();
    grad_fake = grad_of<scalar_t, acc_t>(terms.fake, d_fake, g);
    if (!generator) grad_real = grad_of<scalar_t, acc_t>(terms.real, d_real_in->contiguous(), g);
  });
  return {grad_real, grad_fake};
}

// ---- autograd (every device: the node calls the ops, which dispatch by device) ----------------
// A plain autograd Node rather than torch::autograd::Function: at these sizes the Function's
// bookkeeping (a context, a dictionary of saved values) costs as much as the kernels.

const auto& backward_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgen::gan_loss_backward", "")
                       .typed<decltype(gan_loss_backward_cpu)>();
  return op;
}

struct GanLossBackward final : public torch::autograd::Node {
  torch::autograd::SavedVariable real, fake;
  bool with_real = false, generator = false;
  std::string kind;

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    if (!grads[0].defined()) return torch::autograd::variable_list(with_real ? 2 : 1);  // no gradient flows
    const std::optional<at::Tensor> r = with_real ? std::optional<at::Tensor>(real.unpack()) : std::nullopt;
    auto [grad_real, grad_fake] = backward_op().call(grads[0], r, fake.unpack(), kind, generator);
    if (with_real) return {grad_real, grad_fake};  // one gradient per next edge
    return {grad_fake};
  }
  void release_variables() override {
    real.reset_data();
    fake.reset_data();
  }
  std::string name() const override { return "GanLossBackward"; }
};

at::Tensor gan_loss_autograd(const std::optional<at::Tensor>& d_real, const at::Tensor& d_fake, c10::string_view kind,
                             bool generator) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fastgen::gan_loss", "").typed<decltype(gan_loss_cpu)>();
  at::Tensor loss;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    loss = op.call(d_real, d_fake, kind, generator);
  }
  const bool with_real = !generator && d_real.has_value() && d_real->defined();
  if (!torch::autograd::compute_requires_grad(d_fake) &&
      !(with_real && torch::autograd::compute_requires_grad(*d_real)))
    return loss;
  auto node = make_node<GanLossBackward>();
  node->set_next_edges(with_real ? torch::autograd::collect_next_edges(*d_real, d_fake)
                                 : torch::autograd::collect_next_edges(d_fake));
  if (with_real) node->real = torch::autograd::SavedVariable(*d_real, false);
  node->fake = torch::autograd::SavedVariable(d_fake, false);
  node->with_real = with_real;
  node->generator = generator;
  node->kind = std::string(kind);
  torch::autograd::set_history(loss, node);
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) {
  m.impl("gan_loss", &gan_loss_cpu);
  m.impl("gan_loss_backward", &gan_loss_backward_cpu);
}

TORCH_LIBRARY_IMPL(fastgen, Autograd, m) { m.impl("gan_loss", &gan_loss_autograd); }

}  // namespace fastgen

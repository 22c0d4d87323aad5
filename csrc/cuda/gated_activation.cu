// Gated activation y = tanh(a + ca) * sigmoid(b + cb) on CUDA.
//
// Memory-bound: the forward reads 2 values (plus cond) and writes 1 per output element; the
// backward reads x, grad_out (and cond) once and writes grad_x once, and reduces grad_x over each
// channel plane (the gradient of an (N, 2C) cond) inside the same pass, one block per plane, so
// nothing is re-read and no atomics make the sum nondeterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../cpu/checks.h"

namespace fastgen {
namespace {

constexpr int kCondNone = 0, kCondGlobal = 1, kCondSpatial = 2;

template <typename acc_t>
__device__ __forceinline__ acc_t gate_tanh(acc_t u) {
  return tanh(u);
}

template <typename acc_t>
__device__ __forceinline__ acc_t gate_sigmoid(acc_t v) {
  const acc_t e = exp(-fabs(v));  // in (0, 1]: no overflow for any finite v
  return v >= acc_t(0) ? acc_t(1) / (acc_t(1) + e) : e / (acc_t(1) + e);
}

// u = a + ca, v = b + cb for element i of plane (n, c), with a = x[n, c], b = x[n, C + c].
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void gate_inputs(const scalar_t* __restrict__ x, const scalar_t* __restrict__ cond,
                                            int cond_kind, int64_t ia, int64_t ib, int64_t hw, int64_t i, acc_t& u,
                                            acc_t& v) {
  u = static_cast<acc_t>(x[ia * hw + i]);
  v = static_cast<acc_t>(x[ib * hw + i]);
  if (cond_kind == kCondGlobal) {
    u += static_cast<acc_t>(cond[ia]);
    v += static_cast<acc_t>(cond[ib]);
  } else if (cond_kind == kCondSpatial) {
    u += static_cast<acc_t>(cond[ia * hw + i]);
    v += static_cast<acc_t>(cond[ib * hw + i]);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void gated_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ cond,
                                     scalar_t* __restrict__ y, int cond_kind, int64_t channels, int64_t hw,
                                     int64_t total) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = idx / hw, i = idx - plane * hw;
    const int64_t ia = (plane / channels) * 2 * channels + plane % channels;
    acc_t u, v;
    gate_inputs<scalar_t, acc_t>(x, cond, cond_kind, ia, ia + channels, hw, i, u, v);
    y[idx] = static_cast<scalar_t>(gate_tanh(u) * gate_sigmoid(v));
  }
}

template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffff, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  value = threadIdx.x < warps ? shared[threadIdx.x] : acc_t(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffff, value, offset);
  }
  __syncthreads();  // shared is reused by the next call
  return value;
}

// d tanh(u) = 1 - t^2, d sigmoid(v) = s (1 - s):  ga = g s (1 - t^2),  gb = g t s (1 - s).
template <typename scalar_t, typename acc_t>
__global__ void gated_backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                      const scalar_t* __restrict__ cond, scalar_t* __restrict__ grad_x,
                                      scalar_t* __restrict__ grad_sum, int cond_kind, int64_t channels, int64_t hw) {
  __shared__ acc_t shared[32];
  const int64_t plane = blockIdx.x;
  const int64_t ia = (plane / channels) * 2 * channels + plane % channels, ib = ia + channels;
  acc_t sum_a = 0, sum_b = 0;
  for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) {
    acc_t u, v;
    gate_inputs<scalar_t, acc_t>(x, cond, cond_kind, ia, ib, hw, i, u, v);
    const acc_t t = gate_tanh(u), s = gate_sigmoid(v);
    const acc_t g = static_cast<acc_t>(grad_out[plane * hw + i]);
    const acc_t da = g * s * (acc_t(1) - t * t);
    const acc_t db = g * t * s * (acc_t(1) - s);
    grad_x[ia * hw + i] = static_cast<scalar_t>(da);
    grad_x[ib * hw + i] = static_cast<scalar_t>(db);
    sum_a += da;
    sum_b += db;
  }
  sum_a = block_sum(sum_a, shared);
  sum_b = block_sum(sum_b, shared);
  if (threadIdx.x == 0) {
    grad_sum[ia] = static_cast<scalar_t>(sum_a);
    grad_sum[ib] = static_cast<scalar_t>(sum_b);
  }
}

int cond_kind_of(const std::optional<at::Tensor>& cond) {
  if (!cond.has_value()) return kCondNone;
  return cond->dim() == 2 ? kCondGlobal : kCondSpatial;
}

void check_inputs(const at::Tensor& x, const std::optional<at::Tensor>& cond) {
  TORCH_CHECK(x.is_cuda(), "gated_activation (CUDA): x must be a CUDA tensor");
  const auto s = x.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16,
              "gated_activation: x must be a float32, float64, float16 or bfloat16 tensor, got ", s);
  TORCH_CHECK(x.dim() == 4 && x.size(1) % 2 == 0, "gated_activation: x must be (N, 2C, H, W), got ", x.sizes());
  if (cond.has_value()) {
    const bool global = cond->dim() == 2 && cond->size(0) == x.size(0) && cond->size(1) == x.size(1);
    TORCH_CHECK(global || cond->sizes() == x.sizes(), "gated_activation: cond must be (N, 2C) or (N, 2C, H, W) = ",
                x.sizes(), ", got ", cond->sizes());
    TORCH_CHECK(cond->device() == x.device() && cond->scalar_type() == x.scalar_type(),
                "gated_activation: cond must match x in dtype and device");
    check_copy_size("gated_activation", "cond", *cond);
  }
  check_copy_size("gated_activation", "x", x);
}

at::Tensor gated_activation_cuda(const at::Tensor& x_in, const std::optional<at::Tensor>& cond_in) {
  check_inputs(x_in, cond_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const at::Tensor cond = cond_in.has_value() ? cond_in->contiguous() : at::Tensor();
  const int64_t channels = x.size(1) / 2, hw = x.size(2) * x.size(3);
  auto y = at::empty({x.size(0), channels, x.size(2), x.size(3)}, x.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535LL * 8);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gated_activation_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gated_forward_kernel<scalar_t, acc_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), cond.defined() ? cond.const_data_ptr<scalar_t>() : nullptr,
        y.mutable_data_ptr<scalar_t>(), cond_kind_of(cond_in), channels, hw, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> gated_activation_backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                                  const std::optional<at::Tensor>& cond_in) {
  check_inputs(x_in, cond_in);
  // The kernel reads grad_out as x's type on x's device: anything else would read out of bounds.
  TORCH_CHECK(grad_out_in.device() == x_in.device() && grad_out_in.scalar_type() == x_in.scalar_type(),
              "gated_activation_backward: grad_out must match x in dtype and device, got ", grad_out_in.scalar_type(),
              " on ", grad_out_in.device());
  TORCH_CHECK(grad_out_in.dim() == 4 && grad_out_in.size(0) == x_in.size(0) && grad_out_in.size(1) == x_in.size(1) / 2 &&
                  grad_out_in.size(2) == x_in.size(2) && grad_out_in.size(3) == x_in.size(3),
              "gated_activation_backward: grad_out must be (N, C, H, W) for x of shape ", x_in.sizes(), ", got ",
              grad_out_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const auto grad_out = grad_out_in.contiguous();
  const at::Tensor cond = cond_in.has_value() ? cond_in->contiguous() : at::Tensor();
  const int64_t channels = x.size(1) / 2, hw = x.size(2) * x.size(3);
  auto grad_x = at::empty_like(x);
  auto grad_sum = at::empty({x.size(0), 2 * channels}, x.options());
  const int64_t planes = x.size(0) * channels;
  if (planes == 0) return {grad_x, grad_sum.zero_()};
  const int threads = hw >= 512 ? 256 : 128;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gated_activation_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gated_backward_kernel<scalar_t, acc_t><<<planes, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        cond.defined() ? cond.const_data_ptr<scalar_t>() : nullptr, grad_x.mutable_data_ptr<scalar_t>(),
        grad_sum.mutable_data_ptr<scalar_t>(), cond_kind_of(cond_in), channels, hw);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_sum};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("gated_activation", &gated_activation_cuda);
  m.impl("gated_activation_backward", &gated_activation_backward_cuda);
}

}  // namespace fastgen

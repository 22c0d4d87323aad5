// Cached sampling on CUDA: the block sampler (block_sampler.cuh) as a persistent kernel, one
// thread block per image, which loops over rows, pixels and colours itself; sampling a batch is one
// launch. Threads of a block split every product's outputs and meet at __syncthreads(); caches
// live in a per-image global-memory workspace (mostly L2-resident), weights are read from global
// memory (shared by all blocks through L2).
//
// Cost model: per pixel, a block runs every layer's current-row and 1x1 products (outputs spread
// over its threads, each a dot product over the layer's inputs, reading the layer's weights from
// L2 once) and about four barriers per layer; per row, the rows-above taps for the whole row, in
// tiles of 16 columns (each weight read once per tile). One image keeps one SM busy, so a
// batch fills the GPU from about one image per SM; at batch 1 the pixel steps are bound by
// latency and by one SM's share of L2 bandwidth (bench/NOTES.md).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "block_sampler_host.h"

namespace fastgen {
namespace {

using namespace block_sampler;

struct BlockBarrier {
  __device__ void operator()() const { __syncthreads(); }
};

constexpr int kThreads = 256;

template <bool kGated>
__global__ void __launch_bounds__(kThreads) block_sample_kernel(PixelCNNDims pixelcnn, GatedDims gated,
                                                                const float* const* table, const float* cond,
                                                                int64_t cond_per_image, int64_t cond_hc, int64_t cond_wc,
                                                                Canvas canvas, int64_t plane, float* workspace,
                                                                int64_t workspace_per_image) {
  const int64_t b = blockIdx.x;
  canvas.image += b * plane;
  canvas.known += b * plane;
  canvas.noise += b * plane;
  if (canvas.logits) canvas.logits += b * canvas.L * plane;
  const float* cond_b = cond ? cond + b * cond_per_image : nullptr;
  float* ws = workspace + b * workspace_per_image;
  const Threads threads{threadIdx.x, blockDim.x};
  if constexpr (kGated) {
    gated_program(gated, table, cond_b, cond_hc, cond_wc, canvas, ws, threads, BlockBarrier{});
  } else {
    pixelcnn_program(pixelcnn, table, cond_b, cond_hc, cond_wc, canvas, ws, threads, BlockBarrier{});
  }
}

std::tuple<at::Tensor, at::Tensor> block_sample_cuda(const std::string& model, at::TensorList plan,
                                                     const std::optional<at::Tensor>& cond, const at::Tensor& image,
                                                     const at::Tensor& known, const at::Tensor& noise, int64_t levels,
                                                     bool return_logits) {
  const c10::cuda::CUDAGuard guard(image.device());
  Launch run = prepare(model, plan, cond, image, known, noise, levels, return_logits);
  if (run.n() == 0) return {run.out.image, run.out.logits};
  Canvas canvas = run.canvas(0);
  const int64_t plane = run.out.image[0].numel();
  const auto* table = reinterpret_cast<const float* const*>(run.pointers.data_ptr<int64_t>());
  const float* cond_ptr = run.cond.defined() ? run.cond.data_ptr<float>() : nullptr;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (run.gated) {
    block_sample_kernel<true><<<run.n(), kThreads, 0, stream>>>(run.pixelcnn, run.gated_dims, table, cond_ptr,
                                                                run.cond_per_image, run.cond_hc, run.cond_wc, canvas,
                                                                plane, run.workspace.data_ptr<float>(),
                                                                run.workspace_per_image);
  } else {
    block_sample_kernel<false><<<run.n(), kThreads, 0, stream>>>(run.pixelcnn, run.gated_dims, table, cond_ptr,
                                                                 run.cond_per_image, run.cond_hc, run.cond_wc, canvas,
                                                                 plane, run.workspace.data_ptr<float>(),
                                                                 run.workspace_per_image);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {run.out.image, run.out.logits};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) { m.impl("block_sample", &block_sample_cuda); }

}  // namespace fastgen

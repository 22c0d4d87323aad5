// The GPU block sampler's program (csrc/cuda/block_sampler.cuh) run on the CPU with one thread per
// image and no-op barriers: the CPU implementation of fastgen::block_sample. It exists so that
// tests check the GPU program's arithmetic and indexing against the reference without a GPU;
// samplers on the CPU use the fused kernel of cached_sampling.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../cuda/block_sampler_host.h"

namespace fastgen {
namespace {

struct NoBarrier {
  void operator()() const {}
};

std::tuple<at::Tensor, at::Tensor> block_sample_cpu(const std::string& model, at::TensorList plan,
                                                    const std::optional<at::Tensor>& cond, const at::Tensor& image,
                                                    const at::Tensor& known, const at::Tensor& noise, int64_t levels,
                                                    bool return_logits) {
  using namespace block_sampler;
  Launch run = prepare(model, plan, cond, image, known, noise, levels, return_logits);
  const auto* table = reinterpret_cast<const float* const*>(run.pointers.data_ptr<int64_t>());
  at::parallel_for(0, run.n(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* cond_b = run.cond.defined() ? run.cond.data_ptr<float>() + b * run.cond_per_image : nullptr;
      float* ws = run.workspace.data_ptr<float>() + b * run.workspace_per_image;
      if (run.gated) {
        gated_program(run.gated_dims, table, cond_b, run.cond_hc, run.cond_wc, canvas_of(run, b), ws, Threads{0, 1},
                      NoBarrier{});
      } else {
        pixelcnn_program(run.pixelcnn, table, cond_b, run.cond_hc, run.cond_wc, canvas_of(run, b), ws, Threads{0, 1},
                         NoBarrier{});
      }
    }
  });
  return {run.image, run.logits};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("block_sample", &block_sample_cpu); }

}  // namespace fastgen

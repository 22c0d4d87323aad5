// The sampling program on CUDA: the block interpreter (sample_program_block.cuh) as a persistent
// kernel, one thread block per image, which loops over rows, pixels and colours itself; sampling a
// batch is one launch. Threads of a block share every node's outputs and meet at __syncthreads();
// the values' rings live in a per-image global-memory workspace (mostly L2-resident), weights are
// read from global memory (shared by all blocks through L2).
//
// Cost model: per pixel, a block runs every node's current-row taps (outputs spread over its
// threads, each a dot product over the node's inputs, reading the node's weights from L2 once) and
// one barrier per node; per row, the rows-above taps for the whole row, in tiles of 16 columns
// (each weight read once per tile). One image keeps one SM busy, so a batch fills the GPU from
// about one image per SM; at batch 1 the pixel steps are bound by latency and by one SM's share
// of L2 bandwidth (bench/NOTES.md).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "sample_program_block_host.h"

namespace fastgen {
namespace {

using namespace program;
using namespace program::block;

struct BlockBarrier {
  __device__ void operator()() const { __syncthreads(); }
};

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) sample_program_kernel(Program<T> program, Image<T> first, int64_t plane,
                                                                  int64_t noise_plane, int64_t draw_plane) {
  const int64_t b = blockIdx.x;
  Image<T> im = first;
  im.image += b * plane;
  im.known += b * plane;
  im.noise += b * noise_plane;
  if (im.draw_inputs) im.draw_inputs += b * draw_plane;
  im.ws += b * program.workspace;
  im.n = b;
  Interpreter<T>{program, im, Threads{threadIdx.x, blockDim.x}}.run(BlockBarrier{});
}

std::tuple<at::Tensor, at::Tensor> sample_program_cuda(at::TensorList tensors, at::IntArrayRef ints,
                                                       const at::Tensor& image, const at::Tensor& known,
                                                       const at::Tensor& noise, bool return_draw_inputs) {
  const ProgramSpec spec = read_program(tensors, ints, "sample_program");
  check_sample_args(spec, tensors, image, known, noise, "sample_program");
  const c10::cuda::CUDAGuard guard(image.device());
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(spec.dtype, "sample_program_cuda", [&] {
    Launch<scalar_t> run = prepare<scalar_t>(spec, tensors, image, known, noise, return_draw_inputs);
    if (run.n > 0) {
      const int64_t HW = spec.H * spec.W;
      sample_program_kernel<scalar_t><<<run.n, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          run.program, run.image_of(0), spec.C * HW, spec.noise_channels * HW, spec.draw_channels * HW);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    result = {run.image, run.draw_inputs};
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CUDA, m) {
  m.impl("sample_program", &sample_program_cuda);
  m.impl("sample_program_block", &sample_program_cuda);
}

}  // namespace fastgen

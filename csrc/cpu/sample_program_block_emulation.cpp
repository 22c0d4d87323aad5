// The GPU block interpreter (csrc/cuda/sample_program_block.cuh) run on the CPU: the CPU
// implementation of fastgen::sample_program_block. Each image gets a "block" of threads
// (block_threads) that meet at a barrier where the GPU has __syncthreads(). It exists so that
// tests check the GPU program's arithmetic, indexing and its split of work between threads against
// the reference without a GPU (a missing barrier shows up as a race); samplers on the CPU use the
// C++ interpreter of sample_program.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "../cuda/sample_program_block_host.h"

namespace fastgen {
namespace {

using namespace program;
using namespace program::block;

// Threads for image b. Odd counts, so that no node's outputs divide evenly between the threads;
// every other image gets more threads than most of the tests' nodes have outputs, so that threads
// with nothing to compute still meet every barrier, as most of a GPU block's threads do.
int64_t block_threads(int64_t b) { return b % 2 ? 37 : 3; }

// A reusable barrier for `count` threads (std::barrier needs C++20, which older torch builds
// do not compile with).
class Barrier {
 public:
  explicit Barrier(int64_t count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t phase = phase_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++phase_;
      all_arrived_.notify_all();
    } else {
      all_arrived_.wait(lock, [&] { return phase_ != phase; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable all_arrived_;
  const int64_t count_;
  int64_t arrived_ = 0, phase_ = 0;
};

struct BlockBarrier {
  Barrier* barrier;
  void operator()() const { barrier->arrive_and_wait(); }
};

std::tuple<at::Tensor, at::Tensor> sample_program_block_cpu(at::TensorList tensors, at::IntArrayRef ints,
                                                            const at::Tensor& image, const at::Tensor& known,
                                                            const at::Tensor& noise, bool return_draw_inputs) {
  const ProgramSpec spec = read_program(tensors, ints, "sample_program_block");
  check_sample_args(spec, tensors, image, known, noise, "sample_program_block");
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(spec.dtype, "sample_program_block", [&] {
    Launch<scalar_t> run = prepare<scalar_t>(spec, tensors, image, known, noise, return_draw_inputs);
    for (int64_t b = 0; b < run.n; ++b) {
      const int64_t count = block_threads(b);
      Barrier barrier(count);
      std::vector<std::thread> block;
      for (int64_t t = 0; t < count; ++t) {
        block.emplace_back([&, t] {
          Interpreter<scalar_t>{run.program, run.image_of(b), Threads{t, count}}.run(BlockBarrier{&barrier});
        });
      }
      for (auto& thread : block) thread.join();
    }
    result = {run.image, run.draw_inputs};
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("sample_program_block", &sample_program_block_cpu); }

}  // namespace fastgen

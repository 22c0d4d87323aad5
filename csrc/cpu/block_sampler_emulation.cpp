// The GPU block sampler's program (csrc/cuda/block_sampler.cuh) run on the CPU: the CPU
// implementation of fastgen::block_sample. Each image gets a "block" of threads (block_threads)
// that meet at a barrier where the GPU has __syncthreads(). It exists so that tests check the
// GPU program's arithmetic, indexing and its split of work between threads against the reference
// without a GPU (a missing barrier shows up as a race); samplers on the CPU use the fused kernel of
// cached_sampling.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "../cuda/block_sampler_host.h"

namespace fastgen {
namespace {

// Threads for image b. Odd counts, so that no product divides evenly between the threads; every
// other image gets more threads than most of the tests' products have outputs, so that threads
// with nothing to compute still meet every barrier, as most of a GPU block's threads do in the
// smaller products.
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

std::tuple<at::Tensor, at::Tensor> block_sample_cpu(const std::string& model, at::TensorList plan,
                                                    const std::optional<at::Tensor>& cond, const at::Tensor& image,
                                                    const at::Tensor& known, const at::Tensor& noise, int64_t levels,
                                                    bool return_logits) {
  using namespace block_sampler;
  Launch run = prepare(model, plan, cond, image, known, noise, levels, return_logits);
  const auto* table = reinterpret_cast<const float* const*>(run.pointers.data_ptr<int64_t>());
  for (int64_t b = 0; b < run.n(); ++b) {
    const float* cond_b = run.cond.defined() ? run.cond.data_ptr<float>() + b * run.cond_per_image : nullptr;
    float* ws = run.workspace.data_ptr<float>() + b * run.workspace_per_image;
    const int64_t count = block_threads(b);
    Barrier barrier(count);
    std::vector<std::thread> block;
    for (int64_t t = 0; t < count; ++t) {
      block.emplace_back([&, t] {
        const Threads threads{t, count};
        if (run.gated) {
          gated_program(run.gated_dims, table, cond_b, run.cond_hc, run.cond_wc, run.canvas(b), ws, threads,
                        BlockBarrier{&barrier});
        } else {
          pixelcnn_program(run.pixelcnn, table, cond_b, run.cond_hc, run.cond_wc, run.canvas(b), ws, threads,
                           BlockBarrier{&barrier});
        }
      });
    }
    for (auto& thread : block) thread.join();
  }
  return {run.out.image, run.out.logits};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("block_sample", &block_sample_cpu); }

}  // namespace fastgen

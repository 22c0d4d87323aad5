// Building blocks of the fused cached samplers: weights packed in 16-wide output panels, a small
// matrix-product kernel over them, and a team of threads that each own a fixed set of panels.
//
// Why not BLAS: the per-pixel products are tiny (batch rows x a few hundred inputs x a few hundred
// outputs), tens of thousands of them per image, so a library call's overhead (a few microseconds
// through ATen) would cost more than the arithmetic. Each thread owns the same output panels of
// every layer for the whole run, so at batch 1 its share of the weights stays in its own L2 cache
// and every pixel streams them from there.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <new>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "fast_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastgen {

constexpr int64_t kPanel = 16;  // outputs per panel: one AVX-512 vector of floats

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Cache-line aligned storage. A panel of 16 floats is one 64-byte line, so with aligned buffers
// the panels that two threads own never share a line (no false sharing between their writes),
// and every vector load and store stays within one line.
template <typename T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAligned() = default;
  template <typename U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};
template <typename T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

// Where channel c of a tensor with `channels` channels lives in a padded channels-last row. With
// parts > 1 (the halves a | b of a gate input, the four quarters of an LSTM's gates, the x | -x
// halves of concat_elu) each part is padded separately, so that channel d of every part sits in the
// same panel position and one thread combines the parts of its own channels.
struct ChannelLayout {
  int64_t channels = 0;
  int64_t parts = 1;
  bool padded = true;  // false: the image, which is only ever read, keeps its 1 to 4 channels
  int64_t part_channels() const { return channels / parts; }
  int64_t part_stride() const { return padded ? round_up(part_channels(), kPanel) : part_channels(); }
  int64_t stride() const { return parts * part_stride(); }
  int64_t part_panels() const { return part_stride() / kPanel; }
  int64_t pos(int64_t c) const {
    return parts == 1 ? c : (c / part_channels()) * part_stride() + c % part_channels();
  }
  static ChannelLayout unpadded(int64_t c) { return {c, 1, false}; }
};

// Weights of "out[o] += sum_k in[k] * w(o, k)" packed as panels of kPanel outputs:
// data[(panel * K + k) * kPanel + lane]. The input index k runs over `taps` consecutive
// positions of `in_stride` channels each (a window of a channels-last row).
template <typename T>
struct PanelsOf {
  AlignedVector<T> data;
  int64_t K = 0, panels = 0;

  // w(o, c, t): weight from input channel c at tap t to output o (unpadded indices).
  template <typename F>
  static PanelsOf pack(const ChannelLayout& out, const ChannelLayout& in, int64_t in_stride, int64_t taps, F w) {
    PanelsOf p;
    p.K = taps * in_stride;
    p.panels = out.stride() / kPanel;
    p.data.assign(static_cast<size_t>(p.panels * p.K * kPanel), T(0));
    for (int64_t o = 0; o < out.channels; ++o) {
      const int64_t po = out.pos(o);
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < in.channels; ++c) {
          const int64_t k = t * in_stride + in.pos(c);
          p.data[static_cast<size_t>(((po / kPanel) * p.K + k) * kPanel + po % kPanel)] = w(o, c, t);
        }
    }
    return p;
  }
};
using Panels = PanelsOf<float>;

// C[m, panel lanes] += sum_k A[m * lda + k] * panel[k, lane] for rows [0, M) and panels
// [p0, p1). A row's K inputs are contiguous; C rows are ldc apart, panel q at column q * kPanel.
void panel_gemm(const Panels& w, const float* A, int64_t lda, int64_t M, float* C, int64_t ldc, int64_t p0, int64_t p1);
// The same in float64 (checks of the samplers in double precision; not tuned).
void panel_gemm(const PanelsOf<double>& w, const double* A, int64_t lda, int64_t M, double* C, int64_t ldc, int64_t p0,
                int64_t p1);

// Threads that run one function together and meet at barriers. Each has a fixed id, so it can own
// the same share of every layer's panels for the whole run. The threads are PyTorch's own OpenMP
// threads (the extension shares torch's libgomp): extra threads of our own would compete with
// them for the cores.
class Team {
 public:
  // A team of at most `threads` threads (0: as many as OpenMP gives a parallel region).
  explicit Team(int threads = 0) : asked_(threads) {}
  int size() const { return size_; }

  // Runs body(thread_id) on every thread of an OpenMP team (one thread when called from inside a
  // parallel region) and returns when all are done. The team's size is read inside the region,
  // so a smaller team than asked for cannot leave a barrier waiting for a thread that never comes.
  template <typename Body>
  void run(Body body) {
#ifdef _OPENMP
    std::exception_ptr error;
    std::atomic_flag failed = ATOMIC_FLAG_INIT;
#pragma omp parallel num_threads(asked_ > 0 ? asked_ : omp_get_max_threads())
    {
#pragma omp single
      size_ = omp_get_num_threads();  // the implicit barrier after `single` publishes it
      try {
        body(omp_get_thread_num());
      } catch (...) {
        if (!failed.test_and_set()) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
#else
    size_ = 1;
    body(0);
#endif
  }

  // Sense-reversing spin barrier: the per-pixel steps are a few microseconds, far shorter than a
  // futex wake-up. After a long spin it yields, so an oversubscribed machine still progresses.
  void barrier() {
    if (size_ == 1) return;
    const int sense = sense_.load(std::memory_order_relaxed);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == size_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      sense_.store(1 - sense, std::memory_order_release);
      return;
    }
    for (int spins = 0; sense_.load(std::memory_order_acquire) == sense; ++spins) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      if (spins > 4096) std::this_thread::yield();
    }
  }

  // This thread's share [begin, end) of `total` items.
  std::pair<int64_t, int64_t> share(int64_t total, int t) const {
    return {total * t / size_, total * (t + 1) / size_};
  }

 private:
  int asked_ = 0, size_ = 1;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> sense_{0};
};


}  // namespace fastgen

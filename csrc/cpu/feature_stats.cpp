// Streaming feature statistics on the CPU (FID's mean and covariance), in place:
//   d = features - shift;  total += d.sum(0) (float64);  cross[i, j] += sum_b d[b, i] d[b, j] for i <= j.
// The strictly lower triangle of cross is never read or written (the caller symmetrises once).
//
// The work is the product d^T d, of which only the upper triangle is wanted: half the
// multiply-adds of torch.cov's full product. Two paths form it:
// - float32 on AVX-512 CPUs: a register-tiled kernel over exactly the tiles that reach the upper
//   triangle (update_float32_avx512, below), its float32 tile sums added straight into cross;
// - otherwise (float64, other CPUs): ATen's GEMM (MKL) by block rows of kBlock rows of cross, each
//   (kBlock x rows) x (rows x (D - s)) into a scratch, added into cross while it is in cache.
// For float32 features each chunk of at most kChunk rows is summed in float32 before the float64
// add, so the float32 rounding does not grow with the number of rows (the reference's rule).
// Measurements behind the choices: bench/NOTES.md, "feature_stats_update".
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "checks.h"
#include "fast_math.h"

namespace fastgen {
namespace {

constexpr int64_t kChunk = 1024;  // rows whose products are summed in the features' dtype
constexpr int64_t kBlock = 128;   // rows of cross per GEMM: thinner ones waste less on the diagonal

// Whether a and b touch a common byte of one storage.
bool overlaps(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.storage().is_alias_of(b.storage())) return false;
  auto range = [](const at::Tensor& t) {
    const int64_t start = t.storage_offset() * t.element_size();
    return std::make_pair(start, start + memory_span(t) * t.element_size());
  };
  const auto [a0, a1] = range(a);
  const auto [b0, b1] = range(b);
  return a0 < b1 && b0 < a1;
}

void check_args(const at::Tensor& features, const at::Tensor& shift, const at::Tensor& total,
                const at::Tensor& cross) {
  constexpr const char* op = "feature_stats_update";
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"features", features}, {"shift", shift},
                                {"total", total}, {"cross", cross}}) {
    TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined one");
    TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  }
  TORCH_CHECK(features.dim() == 2, op, ": features must be a (B, D) tensor, got shape ", features.sizes());
  TORCH_CHECK(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble, op,
              ": features must be float32 or float64, got ", features.scalar_type(),
              at::isFloatingType(features.scalar_type()) ? "; cast it with .float()" : "");
  const int64_t D = features.size(1);
  TORCH_CHECK(D >= 1, op, ": features must have at least one feature (D >= 1), got shape ", features.sizes());
  TORCH_CHECK(shift.dim() == 1 && shift.size(0) == D, op, ": shift must have shape (", D, ",), got ", shift.sizes());
  TORCH_CHECK(shift.scalar_type() == features.scalar_type(), op, ": shift must have features' dtype ",
              features.scalar_type(), ", got ", shift.scalar_type());
  TORCH_CHECK(total.dim() == 1 && total.size(0) == D, op, ": total must have shape (", D, ",), got ", total.sizes());
  TORCH_CHECK(cross.dim() == 2 && cross.size(0) == D && cross.size(1) == D, op, ": cross must have shape (", D, ", ",
              D, "), got ", cross.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"total", total}, {"cross", cross}}) {
    TORCH_CHECK(t.scalar_type() == at::kDouble, op, ": ", name, " must be float64, got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (it is updated in place), got strides ",
                t.strides());
  }
  check_copy_size(op, "features", features);
  check_copy_size(op, "shift", shift);
  TORCH_CHECK(!overlaps(total, cross), op, ": total shares memory with cross; the accumulators must be tensors of "
              "their own");
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"features", features}, {"shift", shift}}) {
    TORCH_CHECK(!overlaps(total, t) && !overlaps(cross, t), op, ": ", name,
                " shares memory with an accumulator (total or cross); the accumulators must be tensors of their own");
  }
}

// total[j] += sum_r d[r, j] in float64, for a dense (rows, D) chunk d. Threads split the columns.
template <typename scalar_t>
void add_column_sums(const scalar_t* d, int64_t rows, int64_t D, double* total) {
  at::parallel_for(0, D, 256, [&](int64_t j0, int64_t j1) {
    std::vector<double> acc(static_cast<size_t>(j1 - j0), 0.0);
    double* a = acc.data();
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* row = d + r * D + j0;
#pragma omp simd
      for (int64_t j = 0; j < j1 - j0; ++j) a[j] += static_cast<double>(row[j]);
    }
    for (int64_t j = j0; j < j1; ++j) total[j] += a[j - j0];
  });
}

// cross[s + r, s + c] += prod[r, c] for c >= r, rows r in [r0, r1): the upper part of a (t, w)
// block row whose first column is cross's column s, so its diagonal starts at (0, 0).
template <typename scalar_t>
FASTGEN_CLONES void add_block_row(const scalar_t* prod, int64_t w, int64_t r0, int64_t r1, int64_t s, int64_t D,
                                  double* cross) {
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* src = prod + r * w + r;
    double* dst = cross + (s + r) * D + (s + r);
    const int64_t n = w - r;
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) dst[c] += static_cast<double>(src[c]);
  }
}

// The general path (float64 features, CPUs without AVX-512): ATen's GEMM by block rows.
template <typename scalar_t>
void update_gemm(const at::Tensor& features, const at::Tensor& shift, double* total, double* cross) {
  const int64_t B = features.size(0), D = features.size(1);
  const int64_t block = std::min(kBlock, D);
  at::Tensor d = at::empty({std::min(B, kChunk), D}, features.options());
  at::Tensor scratch = at::empty({block * D}, features.options());
  for (int64_t c0 = 0; c0 < B; c0 += kChunk) {
    const int64_t rows = std::min(kChunk, B - c0);
    at::Tensor dc = d.narrow(0, 0, rows);
    at::sub_out(dc, features.narrow(0, c0, rows), shift);  // in the features' dtype, as the reference
    add_column_sums(dc.const_data_ptr<scalar_t>(), rows, D, total);
    for (int64_t s = 0; s < D; s += block) {
      const int64_t t = std::min(block, D - s), w = D - s;
      at::Tensor prod = scratch.narrow(0, 0, t * w).view({t, w});
      at::mm_out(prod, dc.narrow(1, s, t).t(), dc.narrow(1, s, w));
      const scalar_t* pp = prod.const_data_ptr<scalar_t>();
      at::parallel_for(0, t, 16, [&](int64_t r0, int64_t r1) {
        add_block_row(pp, w, r0, r1, s, D, cross);
      });
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTGEN_FEATURE_STATS_AVX512 1
// ---- float32 on AVX-512: a register-tiled kernel over the upper triangle only -------------------
//
// Each chunk of d (K rows x D) is packed once into column panels 48 floats wide,
// P[p][k][c] = d[k, 48p + c] (zeros past D), the shift subtracted and the column sums taken on the
// way. A tile is 8 rows x 48 columns of cross: per row k of d, 3 vector loads of the panel and 8
// broadcasts of d[k, i .. i + 8] (which lie in the panel holding column i, as 8 divides 48) feed 24
// FMAs into 24 register accumulators. In isolation this loop runs at about 175 GFLOP/s per core
// here, MKL's speed on a large square sgemm (on the thin block-row GEMMs MKL gets about 75% of
// that). Only tiles that reach the upper triangle are computed (about 2% waste along the diagonal
// at D = 2048, against 6 to 12% for GEMMs by block rows of 128 to 256), and the finished tile goes
// from a 1.5 KB buffer into the float64 rows of cross, its part below the diagonal skipped. What
// is left besides the FMAs is the float64 read-modify-write of cross (its upper half, 17 MB at
// D = 2048, every call) and the packing.
constexpr int kTileRows = 8;
constexpr int kPanelVecs = 3;
constexpr int64_t kPanelW = 16 * kPanelVecs;
constexpr int64_t kBandRows = 64;  // rows of cross per unit of work (8 tiles)
constexpr int64_t kSlice = 128;    // rows of d per pass over a tile: a 24 KB slice of a panel, in L1

typedef float vf16 __attribute__((vector_size(64)));

// Packs rows [k0, k1) of the chunk into the panels, subtracting the shift, and adds their column
// sums to sums[0 .. D). Row by row, so that the features are read as they lie in memory.
FASTGEN_CLONES void pack_rows(const float* f, int64_t ld, const float* shift, int64_t K, int64_t k0, int64_t k1,
                              int64_t D, float* P, double* sums) {
  const int64_t panels = (D + kPanelW - 1) / kPanelW;
  for (int64_t k = k0; k < k1; ++k) {
    const float* src = f + k * ld;
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t j0 = p * kPanelW, n = std::min<int64_t>(kPanelW, D - j0);
      float* dst = P + (p * K + k) * kPanelW;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        const float v = src[j0 + c] - shift[j0 + c];  // in float32, as the reference's features - shift
        dst[c] = v;
        sums[j0 + c] += static_cast<double>(v);
      }
      for (int64_t c = n; c < kPanelW; ++c) dst[c] = 0.0f;
    }
  }
}

// tile[r][c] (+)= sum_k A[k * 48 + r] * Bp[k * 48 + c] over K rows: A points at row block i's
// 8 columns inside their panel, Bp at the panel of the tile's columns.
__attribute__((target("arch=x86-64-v4"))) void tile_8x48(const float* A, const float* Bp, int64_t K, float* tile,
                                                         bool accumulate) {
  vf16 acc[kTileRows][kPanelVecs];
  for (int r = 0; r < kTileRows; ++r)
    for (int q = 0; q < kPanelVecs; ++q)
      acc[r][q] = accumulate ? *reinterpret_cast<const vf16*>(tile + r * kPanelW + 16 * q) : vf16{};
  for (int64_t k = 0; k < K; ++k) {
    const float* b = Bp + k * kPanelW;
    const float* a = A + k * kPanelW;
    vf16 w[kPanelVecs];
    for (int q = 0; q < kPanelVecs; ++q) w[q] = *reinterpret_cast<const vf16*>(b + 16 * q);
    for (int r = 0; r < kTileRows; ++r) {
      const float ar = a[r];
      for (int q = 0; q < kPanelVecs; ++q) acc[r][q] += ar * w[q];
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int q = 0; q < kPanelVecs; ++q) *reinterpret_cast<vf16*>(tile + r * kPanelW + 16 * q) = acc[r][q];
}

// cross[i0 + r, j0 + c] += tile[r][c] where i0 + r <= j0 + c < D and i0 + r < D.
__attribute__((target("arch=x86-64-v4"))) void add_tile(const float* tile, int64_t i0, int64_t j0, int64_t D,
                                                        double* cross) {
  const int64_t c_end = std::min<int64_t>(kPanelW, D - j0);
  for (int r = 0; r < kTileRows && i0 + r < D; ++r) {
    const int64_t c_begin = std::max<int64_t>(0, i0 + r - j0);
    double* dst = cross + (i0 + r) * D + j0;
    const float* src = tile + r * kPanelW;
#pragma omp simd
    for (int64_t c = c_begin; c < c_end; ++c) dst[c] += static_cast<double>(src[c]);
  }
}

// One band of rows [b0 * 8, b1 * 8) of cross, panel by panel from the diagonal rightwards. A slice
// of the panel (kSlice rows of d, 24 KB) stays in L1 while the band's 8 tiles use it, and the
// band's own columns of d (A, about 200 KB at 500 rows) stay in L2. The finished tiles go into
// cross left to right, row segment after row segment (panel by panel over all rows instead, each
// row of cross would be a TLB miss). Meanwhile the rows of cross that the next panel's tiles will
// be added into are prefetched (for writing, into L2), a few lines before each tile: 64 rows are
// more streams than the hardware prefetcher follows. Even so the float64 adds cost about 12% of
// the time at D = 2048 (bench/NOTES.md).
__attribute__((target("arch=x86-64-v4,prfchw"))) void band(const float* P, int64_t K, int64_t D, int64_t b0,
                                                           int64_t b1, double* cross) {
  const int64_t panels = (D + kPanelW - 1) / kPanelW;
  constexpr int64_t kLinesPerRow = kPanelW / 8;  // 8 doubles per cache line
  alignas(64) float tiles[kBandRows / kTileRows][kTileRows * kPanelW];
  for (int64_t p = b0 * kTileRows / kPanelW; p < panels; ++p) {
    const int64_t j0 = p * kPanelW;
    // The band's row blocks that reach the upper triangle in this panel (first row <= last column).
    const int64_t last = std::min(b1, (j0 + kPanelW - 1) / kTileRows + 1);
    const int64_t rows_next = p + 1 < panels ? std::min(b1 * kTileRows, D) - b0 * kTileRows : 0;
    const int64_t lines = rows_next * kLinesPerRow;
    const int64_t calls = (K + kSlice - 1) / kSlice * (last - b0);
    const int64_t per_call = calls > 0 ? (lines + calls - 1) / calls : 0;
    const double* next = cross + b0 * kTileRows * D + j0 + kPanelW;
    int64_t line = 0;
    for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
      const int64_t kc = std::min(kSlice, K - k0);
      for (int64_t ib = b0; ib < last; ++ib) {
        for (const int64_t end = std::min(lines, line + per_call); line < end; ++line)
          __builtin_prefetch(next + (line / kLinesPerRow) * D + (line % kLinesPerRow) * 8, 1, 2);
        const int64_t i0 = ib * kTileRows;
        tile_8x48(P + ((i0 / kPanelW) * K + k0) * kPanelW + i0 % kPanelW, P + (p * K + k0) * kPanelW, kc,
                  tiles[ib - b0], k0 > 0);
      }
    }
    for (int64_t ib = b0; ib < last; ++ib) add_tile(tiles[ib - b0], ib * kTileRows, j0, D, cross);
  }
}

void update_float32_avx512(const at::Tensor& features, const at::Tensor& shift, double* total, double* cross) {
  const int64_t B = features.size(0), D = features.size(1);
  const int64_t panels = (D + kPanelW - 1) / kPanelW, row_blocks = (D + kTileRows - 1) / kTileRows;
  const int64_t bands = (D + kBandRows - 1) / kBandRows;
  const at::Tensor sh = shift.contiguous();
  at::Tensor packed = at::empty({panels * std::min(B, kChunk) * kPanelW}, features.options());
  float* P = packed.mutable_data_ptr<float>();
  const int threads = at::get_num_threads();
  std::vector<double> sums(static_cast<size_t>(threads * D));
  for (int64_t c0 = 0; c0 < B; c0 += kChunk) {
    const int64_t K = std::min(kChunk, B - c0);
    // A copy only where the chunk's rows are not unit-stride (a transposed or expanded input).
    at::Tensor chunk = features.narrow(0, c0, K);
    if (chunk.stride(1) != 1) chunk = chunk.contiguous();
    const float* f = chunk.const_data_ptr<float>();
    const int64_t ld = chunk.stride(0);
    std::fill(sums.begin(), sums.end(), 0.0);
    at::parallel_for(0, K, 16, [&](int64_t k0, int64_t k1) {
      pack_rows(f, ld, sh.const_data_ptr<float>(), K, k0, k1, D, P, sums.data() + at::get_thread_num() * D);
    });
    for (int t = 0; t < threads; ++t)
      for (int64_t j = 0; j < D; ++j) total[j] += sums[t * D + j];
    // Bands widest (top) first, to whichever thread is free: the work per band shrinks downwards.
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, std::min<int>(threads, bands)))
    for (int64_t b = 0; b < bands; ++b) {
      const int64_t b0 = b * (kBandRows / kTileRows);
      band(P, K, D, b0, std::min(row_blocks, b0 + kBandRows / kTileRows), cross);
    }
  }
}
#endif

// Whether float32 features take the AVX-512 tile kernel. FASTGEN_FEATURE_STATS_KERNEL overrides
// the choice: "tiles" (that kernel; an error where the CPU lacks AVX-512), "gemm" (ATen's GEMM by
// block rows, the path of float64 and of other CPUs) or "auto" (tiles where available). Tests use
// it to check both paths on one machine.
bool use_tiles() {
#ifdef FASTGEN_FEATURE_STATS_AVX512
  // The tile code is compiled for x86-64-v4, which assumes all of these.
  static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                                __builtin_cpu_supports("avx512cd");
#else
  const bool available = false;
#endif
  const char* v = std::getenv("FASTGEN_FEATURE_STATS_KERNEL");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return available;
  if (std::strcmp(v, "gemm") == 0) return false;
  TORCH_CHECK_VALUE(std::strcmp(v, "tiles") == 0,
                    "feature_stats_update: FASTGEN_FEATURE_STATS_KERNEL must be auto, tiles or gemm, got '", v, "'");
  TORCH_CHECK(available, "feature_stats_update: FASTGEN_FEATURE_STATS_KERNEL=tiles needs a CPU with AVX-512");
  return true;
}

void feature_stats_update_cpu(const at::Tensor& features, const at::Tensor& shift, const at::Tensor& total,
                              const at::Tensor& cross) {
  check_args(features, shift, total, cross);
  if (features.size(0) == 0) return;
  double* tp = total.mutable_data_ptr<double>();
  double* cp = cross.mutable_data_ptr<double>();
#ifdef FASTGEN_FEATURE_STATS_AVX512
  if (features.scalar_type() == at::kFloat && use_tiles()) {
    update_float32_avx512(features, shift, tp, cp);
    return;
  }
#else
  use_tiles();  // the override's checks
#endif
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "feature_stats_update_cpu",
                             [&] { update_gemm<scalar_t>(features, shift, tp, cp); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("feature_stats_update", &feature_stats_update_cpu); }

}  // namespace fastgen

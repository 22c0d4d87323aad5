// The panel matrix product of panel_gemm.h: a register tile of MR rows x NP panels accumulated
// over K, written with GCC vector types so that each target clone (AVX2, AVX-512) gets its own
// vector code. At least 8 independent accumulators hide the FMA latency: 4 rows x 2 panels for
// batches of 4 rows or more; for a single row (batch 1, where the kernel streams weights) up to 8
// panels, the rest made up by partial sums over k.
#include "panel_gemm.h"

namespace fastgen {
namespace {

typedef float vec16 __attribute__((vector_size(64)));
typedef float vec16u __attribute__((vector_size(64), aligned(4)));  // unaligned loads and stores

// KU independent partial sums over k (summed at the end) keep enough FMA chains in flight when
// MR x NP alone is small (a single row over one or two panels).
template <int MR, int NP, int KU = 1>
FASTGEN_INLINE void tile(const float* A, int64_t lda, const float* P, int64_t K, float* C, int64_t ldc) {
  vec16 acc[KU][MR][NP];
  for (int u = 0; u < KU; ++u)
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NP; ++q)
        acc[u][r][q] = u == 0 ? *reinterpret_cast<const vec16u*>(C + r * ldc + q * kPanel) : vec16{};
  const int64_t panel_size = K * kPanel;
  auto step = [&](int u, int64_t k) {
    vec16 w[NP];
    for (int q = 0; q < NP; ++q) w[q] = *reinterpret_cast<const vec16u*>(P + q * panel_size + k * kPanel);
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
      for (int q = 0; q < NP; ++q) acc[u][r][q] += a * w[q];
    }
  };
  int64_t k = 0;
  for (; k + KU <= K; k += KU)
    for (int u = 0; u < KU; ++u) step(u, k + u);
  for (; k < K; ++k) step(0, k);
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) {
      vec16 sum = acc[0][r][q];
      for (int u = 1; u < KU; ++u) sum += acc[u][r][q];
      *reinterpret_cast<vec16u*>(C + r * ldc + q * kPanel) = sum;
    }
}

// Rows [0, M) in tiles of MR (then the remainder), for NP panels starting at panel `p`.
template <int MR, int NP, int KU = 1>
FASTGEN_INLINE void rows(const Panels& w, const float* A, int64_t lda, int64_t M, float* C, int64_t ldc, int64_t p) {
  const float* P = w.data.data() + p * w.K * kPanel;
  float* Cp = C + p * kPanel;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<MR, NP, KU>(A + m * lda, lda, P, w.K, Cp + m * ldc, ldc);
  for (; m < M; ++m) tile<1, NP, (8 + NP - 1) / NP>(A + m * lda, lda, P, w.K, Cp + m * ldc, ldc);
}

}  // namespace

FASTGEN_CLONES void panel_gemm(const Panels& w, const float* A, int64_t lda, int64_t M, float* C, int64_t ldc,
                               int64_t p0, int64_t p1) {
  int64_t p = p0;
  if (M < 4) {
    for (; p + 8 <= p1; p += 8) rows<1, 8, 1>(w, A, lda, M, C, ldc, p);
    for (; p + 4 <= p1; p += 4) rows<1, 4, 2>(w, A, lda, M, C, ldc, p);
    for (; p + 2 <= p1; p += 2) rows<1, 2, 4>(w, A, lda, M, C, ldc, p);
    for (; p < p1; ++p) rows<1, 1, 8>(w, A, lda, M, C, ldc, p);
    return;
  }
  for (; p + 2 <= p1; p += 2) rows<4, 2>(w, A, lda, M, C, ldc, p);
  for (; p < p1; ++p) rows<4, 1>(w, A, lda, M, C, ldc, p);
}

FASTGEN_CLONES void panel_gemm(const PanelsOf<double>& w, const double* A, int64_t lda, int64_t M, double* C,
                               int64_t ldc, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const double* P = w.data.data() + p * w.K * kPanel;
    for (int64_t m = 0; m < M; ++m) {
      double* c = C + m * ldc + p * kPanel;
      const double* a = A + m * lda;
      for (int64_t k = 0; k < w.K; ++k) {
#pragma omp simd
        for (int64_t lane = 0; lane < kPanel; ++lane) c[lane] += a[k] * P[k * kPanel + lane];
      }
    }
  }
}

}  // namespace fastgen

// AVX-512 direct convolution over an explicit tap list (see tap_conv.h).
//
// Why not oneDNN: a causal mask keeps 5 of 9 taps (3x3 'B') or 24 of 49 (7x7 'A'), in a shape no
// dense kernel covers; the densest rectangle oneDNN can run wastes taps and needs a padded copy of
// the input per call. This kernel computes exactly the kept taps, on NCHW directly, without padding:
// pixels are flattened (q = h * W + w) into vectors of 16, and each (vector, tap) has a lane mask
// that zeroes reads falling outside the image (above, below, or across a row edge), so
// out-of-image lanes are never loaded.
//
// Register tile: NV pixel vectors x 8 output channels = up to 24 zmm accumulators. Per input
// channel and tap it issues NV masked loads and 8 weight broadcasts for NV * 8 FMAs, so the FMA
// units, not the loads, set the pace. Work items are (image, group of vectors, block of 8 output
// channels), output channels innermost so the input rows stay in L1/L2 across blocks.
// Cost: exactly 2 * N * H * W * C_in * C_out * taps FLOPs (output channels padded to 8).
#include "tap_conv.h"

#include "scratch.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTGEN_HAVE_AVX512_PATH 1
#endif

namespace fastgen {

#ifdef FASTGEN_HAVE_AVX512_PATH
namespace {

constexpr int64_t kLanes = 16;  // floats per zmm
constexpr int64_t kOutBlock = 8;

// Lane masks [vector][tap]: lane l of vector v reads x at q + dy * W + dx, q = 16 v + l.
std::vector<uint16_t> lane_masks(int64_t H, int64_t W, const std::vector<Tap>& taps) {
  const int64_t hw = H * W, vectors = (hw + kLanes - 1) / kLanes, n_taps = taps.size();
  std::vector<uint16_t> masks(vectors * n_taps, 0);
  for (int64_t v = 0; v < vectors; ++v) {
    for (int64_t t = 0; t < n_taps; ++t) {
      uint16_t m = 0;
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t q = v * kLanes + l, h = q / W + taps[t].dy, w = q % W + taps[t].dx;
        if (q < hw && h >= 0 && h < H && w >= 0 && w < W) m |= uint16_t(1u << l);
      }
      masks[v * n_taps + t] = m;
    }
  }
  return masks;
}

// One tile: NV consecutive pixel vectors starting at v0, output channels [ob * 8, ob * 8 + 8).
template <int NV>
__attribute__((target("avx512f"))) void tile(const float* x, const float* wpack, const float* bias, float* y,
                                             int64_t c_in, int64_t c_out, int64_t hw, int64_t v0, int64_t ob,
                                             const int64_t* offsets, const uint16_t* masks, int64_t n_taps) {
  // Every loop over the tile is fully unrolled (no early exit), so the accumulators stay in
  // registers instead of round-tripping through the stack.
  __m512 acc[NV][kOutBlock];
#pragma GCC unroll 8
  for (int j = 0; j < kOutBlock; ++j) {
    const int64_t o = ob * kOutBlock + j;
    const __m512 b = _mm512_set1_ps(bias != nullptr && o < c_out ? bias[o] : 0.0f);
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) acc[k][j] = b;
  }
  const float* w = wpack + ob * c_in * n_taps * kOutBlock;  // [i][t][j] for this block
  for (int64_t i = 0; i < c_in; ++i) {
    const float* xi = x + i * hw + v0 * kLanes;
    for (int64_t t = 0; t < n_taps; ++t, w += kOutBlock) {
      __m512 xv[NV];
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k) {
        xv[k] = _mm512_maskz_loadu_ps(masks[(v0 + k) * n_taps + t], xi + k * kLanes + offsets[t]);
      }
#pragma GCC unroll 8
      for (int j = 0; j < kOutBlock; ++j) {
        const __m512 wj = _mm512_set1_ps(w[j]);
#pragma GCC unroll 4
        for (int k = 0; k < NV; ++k) acc[k][j] = _mm512_fmadd_ps(xv[k], wj, acc[k][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kOutBlock; ++j) {
    const int64_t o = ob * kOutBlock + j;
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) {
      const int64_t q0 = (v0 + k) * kLanes;
      const __mmask16 valid = q0 + kLanes <= hw ? __mmask16(0xFFFF) : __mmask16((1u << (hw - q0)) - 1);
      if (o < c_out) _mm512_mask_storeu_ps(y + o * hw + q0, valid, acc[k][j]);
    }
  }
}

}  // namespace

bool tap_conv_available(const at::Tensor& x) {
  static const bool cpu_ok = __builtin_cpu_supports("avx512f");
  return cpu_ok && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu();
}

// The shapes the tile loops index by; masked_conv2d checks its own arguments, these guard the
// kernel against any other caller.
static void check_tap_conv_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                const std::vector<Tap>& taps) {
  TORCH_CHECK(tap_conv_available(x) && x.dim() == 4,
              "tap_conv: x must be a contiguous float32 (N, C_in, H, W) CPU tensor");
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == static_cast<int64_t>(taps.size()) && weight.size(1) == x.size(1) &&
                  weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "tap_conv: weight must be float32 (taps, C_in, C_out) = (", taps.size(), ", ", x.size(1),
              ", C_out), got ", weight.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(2) &&
                                  bias.scalar_type() == at::kFloat && bias.device().is_cpu()),
              "tap_conv: bias must be float32 (C_out,) = (", weight.size(2), ",), got ", bias.sizes());
}

at::Tensor tap_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const std::vector<Tap>& taps) {
  check_tap_conv_args(x, weight, bias, taps);
  const int64_t n = x.size(0), c_in = x.size(1), H = x.size(2), W = x.size(3), hw = H * W;
  const int64_t c_out = weight.size(2), n_taps = taps.size();
  auto y = at::empty({n, c_out, H, W}, x.options());
  if (y.numel() == 0) return y;
  const int64_t blocks = (c_out + kOutBlock - 1) / kOutBlock;
  // [block][i][t][j]: the 8 weights one FMA group broadcasts are adjacent; padded channels are 0.
  auto wpack = at::zeros({blocks * kOutBlock, c_in, n_taps}, x.options());
  wpack.narrow(0, 0, c_out).copy_(weight.permute({2, 1, 0}));
  wpack = wpack.view({blocks, kOutBlock, c_in, n_taps}).permute({0, 2, 3, 1}).contiguous();
  const auto masks = lane_masks(H, W, taps);
  std::vector<int64_t> offsets(n_taps);
  for (int64_t t = 0; t < n_taps; ++t) offsets[t] = taps[t].dy * W + taps[t].dx;
  const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();

  constexpr int64_t kGroup = 3;  // vectors per tile
  const int64_t vectors = (hw + kLanes - 1) / kLanes, groups = (vectors + kGroup - 1) / kGroup;
  const float* xp = x.const_data_ptr<float>();
  const float* wp = wpack.const_data_ptr<float>();
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* yp = y.mutable_data_ptr<float>();
  at::parallel_for(0, n * groups * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t ob = item % blocks, g = (item / blocks) % groups, img = item / (blocks * groups);
      const int64_t v0 = g * kGroup, nv = std::min(kGroup, vectors - v0);
      const float* xi = xp + img * c_in * hw;
      float* yi = yp + img * c_out * hw;
      if (nv == 3) {
        tile<3>(xi, wp, bp, yi, c_in, c_out, hw, v0, ob, offsets.data(), masks.data(), n_taps);
      } else if (nv == 2) {
        tile<2>(xi, wp, bp, yi, c_in, c_out, hw, v0, ob, offsets.data(), masks.data(), n_taps);
      } else {
        tile<1>(xi, wp, bp, yi, c_in, c_out, hw, v0, ob, offsets.data(), masks.data(), n_taps);
      }
    }
  });
  return y;
}

namespace {

// Weight gradient tile: kPairs (input channel, tap) pairs x 32 output channels, accumulated over
// the pixels of images [img0, img1) onto gw. Vectorised over output channels (grad_out in NHWC),
// so each pixel costs 2 vector loads of gy, kPairs broadcasts of x (read from a zero-padded copy:
// no masks) and 2 * kPairs FMAs, and the accumulators are the sums themselves (no horizontal
// reductions). Callers walk a few images at a time through many tiles, so the grad_out slice
// and the x rows a tile reads stay in L2 rather than streaming from L3 once per tile.
constexpr int kPairs = 10;
constexpr int64_t kOutTile = 32;

__attribute__((target("avx512f"))) void wgrad_tile(const float* xpad, const float* gy_nhwc, float* gw,
                                                   const int64_t* pair_in, const int64_t* pair_offset,
                                                   const int64_t* pair_out_index, int n_pairs, int64_t img0,
                                                   int64_t img1, int64_t c_in, int64_t c_out, int64_t H, int64_t W,
                                                   int64_t padded_h, int64_t padded_w, int64_t top, int64_t left,
                                                   int64_t o0) {
  const int64_t valid = std::min<int64_t>(kOutTile, c_out - o0);
  const __mmask16 m0 = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
  const __mmask16 m1 = valid >= 32 ? __mmask16(0xFFFF) : valid > 16 ? __mmask16((1u << (valid - 16)) - 1) : 0;
  __m512 acc[kPairs][2];
#pragma GCC unroll 10
  for (int j = 0; j < kPairs; ++j) {  // pairs past n_pairs repeat pair 0 and are never stored
    const float* sum = gw + pair_out_index[j < n_pairs ? j : 0] * c_out + o0;
    acc[j][0] = _mm512_maskz_loadu_ps(m0, sum);
    acc[j][1] = _mm512_maskz_loadu_ps(m1, sum + 16);
  }
  for (int64_t img = img0; img < img1; ++img) {
    for (int64_t h = 0; h < H; ++h) {
      const float* g = gy_nhwc + ((img * H + h) * W) * c_out + o0;
      const float* src[kPairs];
#pragma GCC unroll 10
      for (int j = 0; j < kPairs; ++j) {
        src[j] = xpad + ((img * c_in + pair_in[j]) * padded_h + h + top) * padded_w + left + pair_offset[j];
      }
      for (int64_t w = 0; w < W; ++w, g += c_out) {
        const __m512 g0 = _mm512_maskz_loadu_ps(m0, g), g1 = _mm512_maskz_loadu_ps(m1, g + 16);
#pragma GCC unroll 10
        for (int j = 0; j < kPairs; ++j) {
          const __m512 xs = _mm512_set1_ps(src[j][w]);
          acc[j][0] = _mm512_fmadd_ps(g0, xs, acc[j][0]);
          acc[j][1] = _mm512_fmadd_ps(g1, xs, acc[j][1]);
        }
      }
    }
  }
#pragma GCC unroll 10
  for (int j = 0; j < kPairs; ++j) {
    if (j < n_pairs) {
      _mm512_mask_storeu_ps(gw + pair_out_index[j] * c_out + o0, m0, acc[j][0]);
      _mm512_mask_storeu_ps(gw + pair_out_index[j] * c_out + o0 + 16, m1, acc[j][1]);
    }
  }
}

}  // namespace

at::Tensor tap_conv_weight_grad(const at::Tensor& x, const at::Tensor& grad_out, const std::vector<Tap>& taps) {
  TORCH_CHECK(tap_conv_available(x) && tap_conv_available(grad_out) && x.dim() == 4 && grad_out.dim() == 4 &&
                  grad_out.size(0) == x.size(0) && grad_out.size(2) == x.size(2) && grad_out.size(3) == x.size(3),
              "tap_conv_weight_grad: x and grad_out must be contiguous float32 CPU tensors (N, C, H, W) with one N, H "
              "and W, got ", x.sizes(), " and ", grad_out.sizes());
  const int64_t n = x.size(0), c_in = x.size(1), H = x.size(2), W = x.size(3), c_out = grad_out.size(1);
  const int64_t n_taps = taps.size();
  auto gw = at::zeros({n_taps, c_in, c_out}, x.options());
  if (n_taps == 0 || x.numel() == 0 || grad_out.numel() == 0) return gw;
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  for (const auto& t : taps) {
    top = std::max(top, -t.dy), bottom = std::max(bottom, t.dy);
    left = std::max(left, -t.dx), right = std::max(right, t.dx);
  }
  const auto xpad = padded_scratch(x, top, bottom, left, right, /*slot=*/2);
  const auto gy_nhwc = grad_out.permute({0, 2, 3, 1}).contiguous();
  const int64_t padded_h = H + top + bottom, padded_w = W + left + right;
  // Pairs (input channel, tap) in groups of kPairs; a short last group repeats its first pair
  // (computed, never stored).
  const int64_t n_all = c_in * n_taps, groups = (n_all + kPairs - 1) / kPairs;
  std::vector<int64_t> pair_in(groups * kPairs), pair_offset(groups * kPairs), pair_out(groups * kPairs);
  for (int64_t k = 0; k < groups * kPairs; ++k) {
    const int64_t pair = k < n_all ? k : (k / kPairs) * kPairs;
    const int64_t i = pair / n_taps, t = pair % n_taps;
    pair_in[k] = i;
    pair_offset[k] = taps[t].dy * padded_w + taps[t].dx;
    pair_out[k] = t * c_in + i;
  }
  // Work items (output tile, block of pair groups) write disjoint parts of gw; each walks all
  // images a chunk at a time (about 1500 pixels: the chunk's grad_out slice is ~200 KB).
  constexpr int64_t kGroupsPerItem = 8;
  const int64_t out_tiles = (c_out + kOutTile - 1) / kOutTile;
  const int64_t blocks = (groups + kGroupsPerItem - 1) / kGroupsPerItem;
  const int64_t images_per_chunk = std::max<int64_t>(1, 1536 / (H * W));
  const float* xp = xpad.const_data_ptr<float>();
  const float* gp = gy_nhwc.const_data_ptr<float>();
  float* out = gw.mutable_data_ptr<float>();
  at::parallel_for(0, out_tiles * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t block = item % blocks, o0 = (item / blocks) * kOutTile;
      const int64_t g_end = std::min(groups, (block + 1) * kGroupsPerItem);
      for (int64_t img0 = 0; img0 < n; img0 += images_per_chunk) {
        const int64_t img1 = std::min(n, img0 + images_per_chunk);
        for (int64_t group = block * kGroupsPerItem; group < g_end; ++group) {
          const int64_t first = group * kPairs;
          const int count = static_cast<int>(std::min<int64_t>(kPairs, n_all - first));
          wgrad_tile(xp, gp, out, pair_in.data() + first, pair_offset.data() + first, pair_out.data() + first, count,
                     img0, img1, c_in, c_out, H, W, padded_h, padded_w, top, left, o0);
        }
      }
    }
  });
  return gw;
}

#else

bool tap_conv_available(const at::Tensor&) { return false; }

at::Tensor tap_conv(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::vector<Tap>&) {
  TORCH_CHECK(false, "fastgen: tap_conv needs x86-64 with AVX-512");
}

at::Tensor tap_conv_weight_grad(const at::Tensor&, const at::Tensor&, const std::vector<Tap>&) {
  TORCH_CHECK(false, "fastgen: tap_conv needs x86-64 with AVX-512");
}

#endif

}  // namespace fastgen

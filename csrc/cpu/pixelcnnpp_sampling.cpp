// The pixel stream of PixelCNN++'s cached sampler on the CPU: every ul-stream layer at every
// resolution, the output head and the draw, for all pixels of one image row, in one call
// (the algorithm: fastgen/sampling/pixelcnnpp.py; the row stream stays in Python, where it is
// row-sized convolutions).
//
// Caches are the Python sampler's: (N, C, H_s + 1, W_s + 2) per layer output, NCHW, zero-padded
// by one row on top and one column each side, position (a, b) at [a + 1, b + 1]; caches[0] is
// the network input (encoded image and a channel of ones). The program lists the pixel layers
// in forward order, kProgramFields ints each (see Kind and Node). A layer at scale s runs at the
// pixels whose row and column are multiples of 2^s.
//
// Images are independent, so each thread takes a share of the batch and runs the whole row for
// it with no synchronisation; a product reads each weight once for all of its images. Weights
// come transposed, (K, O) row-major with K in the order of the gathered window (input channel,
// then tap), so that the inner loop runs over contiguous outputs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "dmol.h"
#include "fast_math.h"

namespace fastgen {
namespace {

enum Kind : int64_t { kUlInit = 0, kResnet = 1, kStrided = 2, kUpsample = 3, kHead = 4 };
// kind, scale, out, src, mid, skip0, skip1, first weight, cond weight (-1: none)
constexpr int64_t kProgramFields = 9;

struct Node {
  int64_t kind, scale, out, src, mid, skip0, skip1, weight, cond;
};

// elu(x) = x for x > 0, e^x - 1 otherwise (float: vectorisable; double: libm).
FASTGEN_INLINE float elu(float x) { return x > 0.0f ? x : -one_minus_exp_neg(-x); }
FASTGEN_INLINE double elu(double x) { return x > 0.0 ? x : std::expm1(x); }

// One cached map: (N, C, Hp, Wp) contiguous.
template <typename T>
struct Map {
  T* data;
  int64_t C, Hp, Wp;
  T* at(int64_t n, int64_t c, int64_t a, int64_t b) const { return data + ((n * C + c) * Hp + a + 1) * Wp + b + 1; }
};

// out[m, o] (+)= sum_k v[m, k] w[k, o] + bias[o] for m < M (M <= 4 rows at once, so that each
// weight is loaded once for all of them); rows of v and out are K and ldo apart.
template <typename T, int MR>
FASTGEN_INLINE void linear_tile(const T* w, const T* bias, int64_t K, int64_t O, const T* v, T* out, int64_t ldo,
                                bool accumulate) {
  constexpr int64_t kBlock = 64 / sizeof(T) * 4;  // four vector registers of outputs per row
  for (int64_t o0 = 0; o0 < O; o0 += kBlock) {
    const int64_t len = std::min(kBlock, O - o0);
    T acc[MR][kBlock];
    for (int m = 0; m < MR; ++m)
      for (int64_t t = 0; t < len; ++t) acc[m][t] = (accumulate ? out[m * ldo + o0 + t] : T(0)) + (bias ? bias[o0 + t] : T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T* wk = w + k * O + o0;
      for (int m = 0; m < MR; ++m) {
        const T a = v[m * K + k];
        if (len == kBlock) {
#pragma omp simd
          for (int64_t t = 0; t < kBlock; ++t) acc[m][t] += a * wk[t];
        } else {
#pragma omp simd
          for (int64_t t = 0; t < len; ++t) acc[m][t] += a * wk[t];
        }
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int64_t t = 0; t < len; ++t) out[m * ldo + o0 + t] = acc[m][t];
  }
}

template <typename T>
FASTGEN_CLONES void linear(const at::Tensor& w, const at::Tensor* bias, const T* v, int64_t M, T* out, int64_t ldo,
                           bool accumulate) {
  const int64_t K = w.size(0), O = w.size(1);
  const T* wp = w.const_data_ptr<T>();
  const T* bp = bias ? bias->const_data_ptr<T>() : nullptr;
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) linear_tile<T, 4>(wp, bp, K, O, v + m * K, out + m * ldo, ldo, accumulate);
  for (; m + 2 <= M; m += 2) linear_tile<T, 2>(wp, bp, K, O, v + m * K, out + m * ldo, ldo, accumulate);
  for (; m < M; ++m) linear_tile<T, 1>(wp, bp, K, O, v + m * K, out + m * ldo, ldo, accumulate);
}

// The window rows r0..r0+kh-1, columns c0..c0+kw-1 of map images [n0, n0 + M), one row of
// C * kh * kw values per image (channel, then tap: a conv weight's flatten(1) order); with
// celu, each row is followed by its negation and both go through elu (concat_elu).
template <typename T>
FASTGEN_CLONES void gather(const Map<T>& map, int64_t n0, int64_t M, int64_t r0, int64_t kh, int64_t c0, int64_t kw,
                           bool celu, T* v) {
  const int64_t taps = kh * kw, K = map.C * taps * (celu ? 2 : 1);
  for (int64_t m = 0; m < M; ++m) {
    T* row = v + m * K;
    for (int64_t c = 0; c < map.C; ++c)
      for (int64_t dy = 0; dy < kh; ++dy)
        for (int64_t dx = 0; dx < kw; ++dx) row[c * taps + dy * kw + dx] = *map.at(n0 + m, c, r0 + dy, c0 + dx);
    if (celu) {
      const int64_t half = map.C * taps;
#pragma omp simd
      for (int64_t k = 0; k < half; ++k) {
        const T x = row[k];
        row[half + k] = elu(-x);
        row[k] = elu(x);
      }
    }
  }
}

template <typename T>
void scatter(const Map<T>& map, int64_t n0, int64_t M, int64_t a, int64_t b, const T* values, int64_t ld) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < map.C; ++c) *map.at(n0 + m, c, a, b) = values[m * ld + c];
}

template <typename T>
struct RowSampler {
  std::vector<Map<T>> maps;
  const std::vector<at::Tensor>& w;
  std::vector<Node> program;
  int64_t nr_mix, levels, colours;

  // Runs one pixel layer at (a, b) for images [n0, n0 + M); v, h, t are scratch rows.
  void run(const Node& nd, int64_t n0, int64_t M, int64_t a, int64_t b, std::vector<T>& v, std::vector<T>& h,
           std::vector<T>& t) const {
    const Map<T>& out = maps[nd.out];
    const Map<T>& src = maps[nd.src];
    const int64_t O = out.C;
    auto fit = [&](std::vector<T>& buf, int64_t size) { if (static_cast<int64_t>(buf.size()) < size) buf.resize(size); };
    switch (nd.kind) {
      case kUlInit: {  // down_shift(conv (1, 3))(x) + right_shift(conv (2, 1))(x); zero at (0, 0)
        fit(h, M * O);
        std::fill(h.begin(), h.begin() + M * O, T(0));
        if (a == 0 && b == 0) break;
        if (a > 0) {
          fit(v, M * w[nd.weight].size(0));
          gather(src, n0, M, a - 1, 1, b - 1, 3, false, v.data());
          linear<T>(w[nd.weight], &w[nd.weight + 1], v.data(), M, h.data(), O, true);
        }
        if (b > 0) {
          fit(v, M * w[nd.weight + 2].size(0));
          gather(src, n0, M, a - 1, 2, b - 1, 1, false, v.data());
          linear<T>(w[nd.weight + 2], &w[nd.weight + 3], v.data(), M, h.data(), O, true);
        }
        scatter(out, n0, M, a, b, h.data(), O);
        break;
      }
      case kResnet: {
        const Map<T>& mid = maps[nd.mid];
        const at::Tensor& w_in = w[nd.weight];
        fit(v, M * std::max<int64_t>(w_in.size(0), 4 * src.C * 2));
        fit(h, M * mid.C);
        gather(src, n0, M, a - 1, 2, b - 1, 2, true, v.data());
        linear<T>(w_in, &w[nd.weight + 1], v.data(), M, h.data(), mid.C, false);
        int64_t next = nd.weight + 2;
        if (nd.skip0 >= 0) {  // nin(concat_elu(cat(skips))) at (a, b)
          const Map<T>& s0 = maps[nd.skip0];
          const int64_t c1 = nd.skip1 >= 0 ? maps[nd.skip1].C : 0, width = s0.C + c1;
          fit(t, M * 2 * width);
          for (int64_t m = 0; m < M; ++m) {
            T* row = t.data() + m * 2 * width;
            for (int64_t c = 0; c < s0.C; ++c) row[c] = *s0.at(n0 + m, c, a, b);
            for (int64_t c = 0; c < c1; ++c) row[s0.C + c] = *maps[nd.skip1].at(n0 + m, c, a, b);
            for (int64_t c = 0; c < width; ++c) {
              row[width + c] = elu(-row[c]);
              row[c] = elu(row[c]);
            }
          }
          linear<T>(w[next], &w[next + 1], t.data(), M, h.data(), mid.C, true);
          next += 2;
        }
        scatter(mid, n0, M, a, b, h.data(), mid.C);
        const at::Tensor& w_out = w[next];
        fit(v, M * w_out.size(0));
        fit(t, M * w_out.size(1));
        gather(mid, n0, M, a - 1, 2, b - 1, 2, true, v.data());
        linear<T>(w_out, &w[next + 1], v.data(), M, t.data(), w_out.size(1), false);
        const T* cond = nd.cond >= 0 ? w[nd.cond].const_data_ptr<T>() : nullptr;
        for (int64_t m = 0; m < M; ++m) {
          T* row = t.data() + m * 2 * O;
          if (cond)
            for (int64_t c = 0; c < 2 * O; ++c) row[c] += cond[(n0 + m) * 2 * O + c];
          for (int64_t c = 0; c < O; ++c) row[c] = *src.at(n0 + m, c, a, b) + row[c] * sigmoid_fast(row[O + c]);
        }
        scatter(out, n0, M, a, b, t.data(), 2 * O);
        break;
      }
      case kStrided: {  // stride-2 down-right-shifted (2, 2) convolution
        fit(v, M * w[nd.weight].size(0));
        fit(h, M * O);
        gather(src, n0, M, 2 * a - 1, 2, 2 * b - 1, 2, false, v.data());
        linear<T>(w[nd.weight], &w[nd.weight + 1], v.data(), M, h.data(), O, false);
        scatter(out, n0, M, a, b, h.data(), O);
        break;
      }
      case kUpsample: {  // transposed (2, 2) stride 2: input (a / 2, b / 2) through tap (a % 2, b % 2)
        fit(v, M * src.C);
        fit(h, M * O);
        gather(src, n0, M, a / 2, 1, b / 2, 1, false, v.data());
        linear<T>(w[nd.weight + 2 * (a % 2) + b % 2], &w[nd.weight + 4], v.data(), M, h.data(), O, false);
        scatter(out, n0, M, a, b, h.data(), O);
        break;
      }
      default:
        TORCH_CHECK(false, "pixelcnnpp_sample_row: unknown program kind ", nd.kind);
    }
  }

  // The head (1x1 over elu of the last layer) and the draw at pixel (i, j) of images [n0, n0 + M).
  void draw(const Node& nd, int64_t n0, int64_t M, int64_t i, int64_t j, const bool* known, const T* noise,
            int64_t* image, int64_t H, int64_t W, std::vector<T>& v, std::vector<T>& h) const {
    const Map<T>& src = maps[nd.src];
    const at::Tensor& head = w[nd.weight];
    v.resize(std::max<size_t>(v.size(), M * src.C));
    h.resize(std::max<size_t>(h.size(), M * head.size(1)));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = 0; c < src.C; ++c) v[m * src.C + c] = elu(*src.at(n0 + m, c, i, j));
    linear<T>(head, &w[nd.weight + 1], v.data(), M, h.data(), head.size(1), false);
    const Map<T>& x = maps[0];
    const int64_t HW = H * W;
    const T steps = static_cast<T>(levels - 1);
    for (int64_t m = 0; m < M; ++m) {
      const int64_t n = n0 + m;
      if (known[n * HW + i * W + j]) continue;
      T value[3][kDmolDrawChunk];
      dmol_draw_block<T, T>(colours, nr_mix, h.data() + m * head.size(1), 1,
                            noise + n * (nr_mix + colours) * HW + i * W + j, HW, 1, levels, value);
      for (int64_t c = 0; c < colours; ++c) {
        const int64_t level = static_cast<int64_t>(std::nearbyint((value[c][0] + T(1)) * (steps / T(2))));
        image[(n * colours + c) * HW + i * W + j] = level;
        *x.at(n, c, i, j) = static_cast<T>(level) * static_cast<T>(2.0 / (levels - 1)) - T(1);
      }
    }
  }
};

// Every index of a program node in range and every shape what its kernel will read, so that a
// wrong program fails here with a message instead of reading outside a cache.
void check_node(const Node& nd, size_t index, at::TensorList caches, at::TensorList weights, int64_t H, int64_t W,
                int64_t nr_mix, int64_t colours) {
  const auto fail = [&](const std::string& what) {
    TORCH_CHECK(false, "pixelcnnpp_sample_row: program node ", index, " (kind ", nd.kind, "): ", what);
  };
  if (nd.kind < kUlInit || nd.kind > kHead) fail("unknown kind");
  const int64_t n_caches = static_cast<int64_t>(caches.size()), n_weights = static_cast<int64_t>(weights.size());
  // The cache at `scale` for the image size: (N, C, (H >> scale) + 1, (W >> scale) + 2).
  auto cache = [&](int64_t i, int64_t scale, const char* role) -> const at::Tensor& {
    if (i < 0 || i >= n_caches) fail(std::string(role) + " cache index out of range");
    const at::Tensor& c = caches[i];
    if (scale < 0 || c.size(2) != (H >> scale) + 1 || c.size(3) != (W >> scale) + 2)
      fail(std::string(role) + " cache does not have the size of its scale");
    return c;
  };
  const int64_t count = nd.kind == kUlInit ? 4 : nd.kind == kUpsample ? 5 : nd.kind == kResnet ? 6 : 2;
  if (nd.weight < 0 || nd.weight + count > n_weights) fail("weights index out of range");
  auto expect = [&](int64_t i, std::initializer_list<int64_t> shape, const char* what) {
    if (weights[nd.weight + i].sizes() != at::IntArrayRef(shape)) fail(std::string(what) + " has the wrong shape");
  };
  const int64_t s = nd.scale;
  if (nd.kind == kHead) {
    const int64_t C = cache(nd.src, s, "source").size(1), K = nr_mix * (colours == 3 ? 10 : 3);
    expect(0, {C, K}, "head weight");
    expect(1, {K}, "head bias");
    return;
  }
  const int64_t O = cache(nd.out, s, "output").size(1);
  if (nd.kind == kUlInit) {
    const int64_t C = cache(nd.src, s, "source").size(1);
    expect(0, {3 * C, O}, "down-shifted weight");
    expect(1, {O}, "down-shifted bias");
    expect(2, {2 * C, O}, "right-shifted weight");
    expect(3, {O}, "right-shifted bias");
  } else if (nd.kind == kStrided) {
    expect(0, {4 * cache(nd.src, s - 1, "source").size(1), O}, "weight");
    expect(1, {O}, "bias");
  } else if (nd.kind == kUpsample) {
    const int64_t C = cache(nd.src, s + 1, "source").size(1);
    for (int64_t t = 0; t < 4; ++t) expect(t, {C, O}, "tap weight");
    expect(4, {O}, "bias");
  } else {
    if (cache(nd.src, s, "source").size(1) != O) fail("source and output channels differ (a residual block)");
    const int64_t mid = cache(nd.mid, s, "inner").size(1);
    int64_t skip = nd.skip0 >= 0 ? cache(nd.skip0, s, "shortcut").size(1) : 0;
    skip += nd.skip1 >= 0 ? cache(nd.skip1, s, "shortcut").size(1) : 0;
    if (skip == 0) fail("a gated resnet of the ul stream needs a shortcut input");
    expect(0, {8 * O, mid}, "input conv weight");
    expect(1, {mid}, "input conv bias");
    expect(2, {2 * skip, mid}, "shortcut weight");
    expect(3, {mid}, "shortcut bias");
    expect(4, {8 * mid, 2 * O}, "output conv weight");
    expect(5, {2 * O}, "output conv bias");
    if (nd.cond >= 0 && (nd.cond >= n_weights || weights[nd.cond].sizes() != at::IntArrayRef({caches[0].size(0), 2 * O})))
      fail("class term must be (N, 2C)");
  }
}

void pixelcnnpp_sample_row_cpu(at::TensorList caches, at::TensorList weights, at::IntArrayRef program,
                               const at::Tensor& image, const at::Tensor& known, const at::Tensor& noise, int64_t row,
                               int64_t nr_mix, int64_t levels) {
  TORCH_CHECK(!caches.empty() && program.size() % kProgramFields == 0, "pixelcnnpp_sample_row: bad program");
  TORCH_CHECK(image.dim() == 4 && image.scalar_type() == at::kLong && image.is_contiguous(),
              "pixelcnnpp_sample_row: image must be a contiguous (N, C, H, W) int64 tensor");
  const int64_t N = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  TORCH_CHECK(known.sizes() == at::IntArrayRef({N, H, W}) && known.scalar_type() == at::kBool && known.is_contiguous(),
              "pixelcnnpp_sample_row: known must be a contiguous (N, H, W) bool tensor");
  TORCH_CHECK(noise.sizes() == at::IntArrayRef({N, nr_mix + C, H, W}) && noise.is_contiguous(),
              "pixelcnnpp_sample_row: noise must be a contiguous (N, nr_mix + C, H, W) tensor");
  TORCH_CHECK(row >= 0 && row < H, "pixelcnnpp_sample_row: row ", row, " outside [0, ", H, ")");
  const auto dtype = caches[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "pixelcnnpp_sample_row: float32 or float64 caches");
  for (const auto& c : caches)
    TORCH_CHECK(c.dim() == 4 && c.size(0) == N && c.is_contiguous() && c.scalar_type() == dtype,
                "pixelcnnpp_sample_row: caches must be contiguous (N, C, H_s + 1, W_s + 2) of one dtype");
  for (const auto& t : weights)
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == dtype, "pixelcnnpp_sample_row: weights must be contiguous ",
                dtype);
  TORCH_CHECK(noise.scalar_type() == dtype, "pixelcnnpp_sample_row: noise must have the caches' dtype");
  const std::vector<at::Tensor> w(weights.begin(), weights.end());
  AT_DISPATCH_FLOATING_TYPES(dtype, "pixelcnnpp_sample_row", [&] {
    using T = scalar_t;
    RowSampler<T> sampler{{}, w, {}, nr_mix, levels, C};
    for (const auto& c : caches) sampler.maps.push_back({c.data_ptr<T>(), c.size(1), c.size(2), c.size(3)});
    for (size_t p = 0; p < program.size(); p += kProgramFields) {
      const int64_t* f = program.data() + p;
      sampler.program.push_back({f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]});
      check_node(sampler.program.back(), p / kProgramFields, caches, weights, H, W, nr_mix, C);
    }
    TORCH_CHECK(sampler.program.back().kind == kHead, "pixelcnnpp_sample_row: the program must end with the head");
    const bool* kp = known.const_data_ptr<bool>();
    const T* up = noise.const_data_ptr<T>();
    int64_t* ip = image.mutable_data_ptr<int64_t>();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<T> v, h, t;
      const int64_t M = n1 - n0;
      for (int64_t j = 0; j < W; ++j) {
        for (size_t q = 0; q + 1 < sampler.program.size(); ++q) {
          const Node& nd = sampler.program[q];
          const int64_t step = int64_t{1} << nd.scale;
          if (row % step == 0 && j % step == 0) sampler.run(nd, n0, M, row >> nd.scale, j >> nd.scale, v, h, t);
        }
        sampler.draw(sampler.program.back(), n0, M, row, j, kp, up, ip, H, W, v, h);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("pixelcnnpp_sample_row", &pixelcnnpp_sample_row_cpu); }

}  // namespace fastgen

// Cached sampling of PixelCNN and Gated PixelCNN as a program for one block of threads and one
// image (fastgen/reference/cached_sampling.py has the algorithm).
//
// On the GPU, one thread block runs it per image (csrc/cuda/cached_sampling.cu): a persistent
// kernel that loops over rows, pixels and colours itself, so sampling an image is one launch. The
// threads of a block share each product's outputs and meet at __syncthreads().
// The CPU build compiles the same source and runs it with a few threads per image meeting at a
// barrier (csrc/cpu/block_sampler_emulation.cpp), so that the tests check this program's
// arithmetic, indexing and barriers against the reference on machines without a GPU.
//
// Weights come as the block plan of fastgen/ops/cached_sampling.py (`block_plan`): every linear
// map as a (K, O) row-major matrix, K ordered (tap row, tap column, input channel) to match the
// channels-last caches. The rows-above taps of each causal kernel, and the vertical stack, are
// evaluated once per row for the whole row; the current-row taps and the 1x1 layers per pixel.
//
// Per-image workspace (floats, channels last; sizes in the Workspace structs below): the encoded
// image with zero padding, each causal input's last p + 1 rows as a ring (row r in slot
// r mod (p + 1), rows above the image read as zero), each layer's row terms, the current row of
// each horizontal-stack input, and the pixel temporaries.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define FASTGEN_HD __host__ __device__
#define FASTGEN_UNROLL _Pragma("unroll")
#else
#define FASTGEN_HD
#define FASTGEN_UNROLL
#endif

namespace fastgen {
namespace block_sampler {

// What the program needs of its block: its thread id, the block size, and a barrier.
struct Threads {
  int64_t id, count;
};

// The image being filled, for one batch element.
struct Canvas {
  int64_t* image;          // (C, H, W) levels, updated in place
  const bool* known;       // (C, H, W)
  const double* noise;     // (C, H, W)
  float* logits;           // (L, C, H, W) of this image, or null
  float* map;              // (H + pad, W + 2 pad, C) encoded image
  int64_t C, H, W, L, pad;
  float scale;             // 2 / (L - 1)

  FASTGEN_HD float* at(int64_t row, int64_t col) { return map + ((row + pad) * (W + 2 * pad) + col + pad) * C; }
  FASTGEN_HD void encode(int64_t c, int64_t i, int64_t j) {
    at(i, j)[c] = static_cast<float>(image[(c * H + i) * W + j]) * scale - 1.0f;
  }
  FASTGEN_HD void encode_all() {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) encode(c, i, j);
  }
  // The inverse-CDF draw of colour c at (i, j) from `head` (the C * L head outputs), in float64
  // as fastgen.sampling.sample_from_logits; one thread calls it.
  FASTGEN_HD void draw(const float* head, int64_t c, int64_t i, int64_t j) {
    const float* lg = head + c * L;
    const int64_t at_ = (c * H + i) * W + j;
    if (logits)
      for (int64_t l = 0; l < L; ++l) logits[((l * C + c) * H + i) * W + j] = lg[l];
    if (!known[at_]) {
      double top = lg[0];
      for (int64_t l = 1; l < L; ++l) top = lg[l] > top ? lg[l] : top;
      double sum = 0.0;
      for (int64_t l = 0; l < L; ++l) sum += exp(static_cast<double>(lg[l]) - top);
      double cdf = 0.0;
      int64_t below = 0;
      for (int64_t l = 0; l < L; ++l) {
        cdf += exp(static_cast<double>(lg[l]) - top) / sum;
        below += cdf < noise[at_];
      }
      image[at_] = below < L - 1 ? below : L - 1;
    }
    encode(c, i, j);
  }
};

FASTGEN_HD inline float relu(float x) { return x > 0.0f ? x : 0.0f; }
FASTGEN_HD inline float gate(float a, float b) { return tanhf(a) * (1.0f / (1.0f + expf(-b))); }

// Rows r of a ring of `slots` rows (each `row` floats): null above the image.
FASTGEN_HD inline const float* ring_row(const float* ring, int64_t slots, int64_t row_size, int64_t r) {
  return r < 0 ? nullptr : ring + (r % slots) * row_size;
}

// sum_k in(k) * w[k * O + o] over a window of n_rows rows x `taps` columns, starting at column
// `col0` of rows with `ch` channels per column; row(r) is the r-th row (null: a row of zeros).
template <typename RowFn>
FASTGEN_HD inline float window_dot(RowFn row, int64_t n_rows, int64_t taps, int64_t col0, int64_t ch, const float* w,
                                   int64_t O, int64_t o) {
  float acc = 0.0f;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* base = row(r);
    if (!base) continue;
    const float* src = base + col0 * ch;
    const float* wr = w + r * taps * ch * O;
    for (int64_t t = 0; t < taps * ch; ++t) acc += src[t] * wr[t * O + o];
  }
  return acc;
}

// The row part's products: for every column j < W of a row and output o < O, store(j, o, sum)
// with sum over the window of column j, as window_dot. A thread takes one output and a tile of
// up to kRowTile columns, so each weight it reads serves the whole tile: a layer's weights stream
// from L2 once per tile rather than once per column. The sums add in window_dot's order.
constexpr int64_t kRowTile = 16;

template <typename RowFn, typename Store>
FASTGEN_HD inline void row_products(RowFn row, int64_t n_rows, int64_t taps, int64_t ch, const float* w, int64_t O,
                                    int64_t W, Threads th, Store store) {
  const int64_t tiles = (W + kRowTile - 1) / kRowTile;
  for (int64_t idx = th.id; idx < tiles * O; idx += th.count) {
    const int64_t j0 = idx / O * kRowTile, o = idx % O, n = W - j0 < kRowTile ? W - j0 : kRowTile;
    // Registers, so indexed by unrolled loops only.
    float acc[kRowTile];
    FASTGEN_UNROLL
    for (int64_t jj = 0; jj < kRowTile; ++jj) acc[jj] = 0.0f;
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* base = row(r);
      if (!base) continue;
      const float* src = base + j0 * ch;
      const float* wr = w + r * taps * ch * O;
      for (int64_t t = 0; t < taps * ch; ++t) {
        const float wt = wr[t * O + o];
        const float* x = src + t;  // column j0 + jj's input at x[jj * ch]
        FASTGEN_UNROLL
        for (int64_t jj = 0; jj < kRowTile; ++jj, x += ch)
          if (jj < n) acc[jj] += *x * wt;
      }
    }
    FASTGEN_UNROLL
    for (int64_t jj = 0; jj < kRowTile; ++jj)
      if (jj < n) store(j0 + jj, o, acc[jj]);
  }
}

FASTGEN_HD inline float vec_dot(const float* x, int64_t K, const float* w, int64_t O, int64_t o, bool relu_input) {
  float acc = 0.0f;
  for (int64_t k = 0; k < K; ++k) acc += (relu_input ? relu(x[k]) : x[k]) * w[k * O + o];
  return acc;
}

// The end of a pixel step: the head (head1, head1_b, head2, head2_b) on relu(x), x of `K` values,
// into `hidden` and `out`, then the draw of colour c at (i, j) by thread 0.
template <typename Sync>
FASTGEN_HD void head_and_draw(const float* const* head, const float* x, int64_t K, int64_t width, float* hidden,
                              float* out, Canvas& canvas, int64_t c, int64_t i, int64_t j, Threads th, Sync sync) {
  for (int64_t o = th.id; o < width; o += th.count) hidden[o] = relu(head[1][o] + vec_dot(x, K, head[0], width, o, true));
  sync();
  const int64_t outs = canvas.C * canvas.L;
  for (int64_t o = th.id; o < outs; o += th.count) out[o] = head[3][o] + vec_dot(hidden, width, head[2], outs, o, false);
  sync();
  if (th.id == 0) canvas.draw(out, c, i, j);
  sync();
}

// ---------------------------------------------------------------------------------------------
// PixelCNN. Block plan: in_above (q*kin*C, hid), in_row ((q+1)*C, hid), in_b; per block
// reduce (hid, half), reduce_b, conv_above (p*k*half, half), conv_row ((p+1)*half, half), conv_b,
// expand (half, hid), expand_b; head1 (hid, head), head1_b, head2 (head, C*L), head2_b.
struct PixelCNNDims {
  int64_t blocks, C, H, W, L, kin, hidden, half, k, head;
  FASTGEN_HD int64_t q() const { return kin / 2; }
  FASTGEN_HD int64_t p() const { return k / 2; }
};

struct PixelCNNWorkspace {
  int64_t map, windows, window_size, in_rows, conv_rows, h, conv_out, head_hidden, head_out, total;
  FASTGEN_HD explicit PixelCNNWorkspace(const PixelCNNDims& d) {
    const int64_t p = d.p();
    map = 0;
    windows = map + (d.H + d.q()) * (d.W + 2 * d.q()) * d.C;
    window_size = (p + 1) * (d.W + 2 * p) * d.half;
    in_rows = windows + d.blocks * window_size;
    conv_rows = in_rows + d.W * d.hidden;
    h = conv_rows + d.blocks * d.W * d.half;
    conv_out = h + d.hidden;
    head_hidden = conv_out + d.half;
    head_out = head_hidden + d.head;
    total = head_out + d.C * d.L;
  }
};

// cond: this image's terms, (blocks, Hc, Wc, half) with the strides given, or null.
template <typename Sync>
FASTGEN_HD void pixelcnn_program(const PixelCNNDims& d, const float* const* w, const float* cond, int64_t cond_hc,
                                 int64_t cond_wc, Canvas canvas, float* ws, Threads th, Sync sync) {
  const PixelCNNWorkspace L(d);
  const int64_t q = d.q(), p = d.p(), W = d.W, hid = d.hidden, half = d.half, win_row = (d.W + 2 * p) * half;
  const float *in_above = w[0], *in_row = w[1], *in_b = w[2];
  const float* const* blk = w + 3;
  const float* const* head = w + 3 + 7 * d.blocks;
  float* h = ws + L.h;
  canvas.map = ws + L.map;
  if (th.id == 0) canvas.encode_all();
  sync();
  auto window = [&](int64_t b) { return ws + L.windows + b * L.window_size; };
  // The window row of image row r (its padded column 0), or null above the image.
  auto window_row = [&](int64_t b, int64_t r) -> float* {
    return r < 0 ? nullptr : window(b) + (r % (p + 1)) * win_row;
  };

  for (int64_t i = 0; i < d.H; ++i) {
    // Row part: taps on the rows above, for every column of the row.
    auto image_rows = [&](int64_t r) -> const float* { return canvas.at(i - q + r, -q); };
    row_products(image_rows, q, d.kin, d.C, in_above, hid, W, th,
                 [&](int64_t j, int64_t o, float sum) { ws[L.in_rows + j * hid + o] = in_b[o] + sum; });
    for (int64_t b = 0; b < d.blocks; ++b) {
      auto rows = [&](int64_t r) -> const float* { return window_row(b, i - p + r); };
      float* out = ws + L.conv_rows + b * W * half;
      const float* bias = blk[7 * b + 4];
      row_products(rows, p, d.k, half, blk[7 * b + 2], half, W, th,
                   [&](int64_t j, int64_t o, float sum) { out[j * half + o] = bias[o] + sum; });
    }
    sync();
    // Pixel part, once per colour.
    for (int64_t j = 0; j < W; ++j) {
      for (int64_t c = 0; c < d.C; ++c) {
        auto cur = [&](int64_t) -> const float* { return canvas.at(i, -q); };
        for (int64_t o = th.id; o < hid; o += th.count)
          h[o] = ws[L.in_rows + j * hid + o] + window_dot(cur, 1, q + 1, j, d.C, in_row, hid, o);
        sync();
        for (int64_t b = 0; b < d.blocks; ++b) {
          const float* const* f = blk + 7 * b;
          float* slot = window_row(b, i) + (j + p) * half;
          const float* term = cond ? cond + ((b * cond_hc + (cond_hc > 1 ? i : 0)) * cond_wc + (cond_wc > 1 ? j : 0)) * half
                                   : nullptr;
          for (int64_t o = th.id; o < half; o += th.count)
            slot[o] = relu(f[1][o] + (term ? term[o] : 0.0f) + vec_dot(h, hid, f[0], half, o, true));
          sync();
          auto row = [&](int64_t) -> const float* { return window_row(b, i); };
          for (int64_t o = th.id; o < half; o += th.count)
            ws[L.conv_out + o] = relu(ws[L.conv_rows + (b * W + j) * half + o] +
                                      window_dot(row, 1, p + 1, j, half, f[3], half, o));
          sync();
          for (int64_t o = th.id; o < hid; o += th.count) h[o] += f[6][o] + vec_dot(ws + L.conv_out, half, f[5], hid, o, false);
          sync();
        }
        head_and_draw(head, h, hid, d.head, ws + L.head_hidden, ws + L.head_out, canvas, c, i, j, th, sync);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gated PixelCNN. Block plan per layer: v (rows*k*in, 2D), v_b, v_to_h (2D, 2D), v_to_h_b (with
// the horizontal bias), h ((p+1)*in, 2D), h_out (D, D), h_out_b, skip (D, S); then the summed
// skip biases (S,); head1 (S, head), head1_b, head2 (head, C*L), head2_b.
struct GatedDims {
  int64_t layers, C, H, W, L, k, D, S, head;
  FASTGEN_HD int64_t p() const { return k / 2; }
};

struct GatedWorkspace {
  int64_t map, v_windows, v_window_size, v_pre, v_to_h, v_to_h_size, h_rows, h_row_size, x, g, skip, head_hidden,
      head_out, total;
  FASTGEN_HD explicit GatedWorkspace(const GatedDims& d) {
    const int64_t p = d.p();
    map = 0;
    v_windows = map + (d.H + p) * (d.W + 2 * p) * d.C;
    v_window_size = (p + 1) * (d.W + 2 * p) * d.D;
    v_pre = v_windows + d.layers * v_window_size;
    v_to_h = v_pre + d.W * 2 * d.D;
    v_to_h_size = d.W * 2 * d.D;
    h_rows = v_to_h + d.layers * v_to_h_size;
    h_row_size = (d.W + p) * d.D;
    x = h_rows + d.layers * h_row_size;
    g = x + 2 * d.D;
    skip = g + d.D;
    head_hidden = skip + d.S;
    head_out = head_hidden + d.head;
    total = head_out + d.C * d.L;
  }
};

// cond: this image's terms, (layers, Hc, Wc, 4D) (vertical 2D, then horizontal 2D), or null.
template <typename Sync>
FASTGEN_HD void gated_program(const GatedDims& d, const float* const* w, const float* cond, int64_t cond_hc,
                              int64_t cond_wc, Canvas canvas, float* ws, Threads th, Sync sync) {
  const GatedWorkspace L(d);
  const int64_t p = d.p(), W = d.W, D = d.D, D2 = 2 * d.D, win_row = (W + 2 * p) * D;
  const float* const* head = w + 8 * d.layers + 1;
  const float* skip_bias = w[8 * d.layers];
  canvas.map = ws + L.map;
  if (th.id == 0) canvas.encode_all();
  sync();
  // Layer l's vertical input rows (l >= 1: the previous layer's gated vertical output).
  auto v_row = [&](int64_t l, int64_t r) -> float* {
    return r < 0 ? nullptr : ws + L.v_windows + l * L.v_window_size + (r % (p + 1)) * win_row;
  };
  auto cond_term = [&](int64_t l, int64_t i, int64_t j) -> const float* {
    return cond ? cond + ((l * cond_hc + (cond_hc > 1 ? i : 0)) * cond_wc + (cond_wc > 1 ? j : 0)) * 2 * D2 : nullptr;
  };

  for (int64_t i = 0; i < d.H; ++i) {
    // Row part: the vertical stack and its link to the horizontal stack, layer by layer.
    for (int64_t l = 0; l < d.layers; ++l) {
      const float* const* f = w + 8 * l;
      // The first layer reads the image rows i-p .. i-1, later ones the previous layer's vertical
      // output, rows i-p .. i.
      const int64_t n_rows = l == 0 ? p : p + 1, in_ch = l == 0 ? d.C : D;
      auto rows = [&](int64_t r) -> const float* { return l == 0 ? canvas.at(i - p + r, -p) : v_row(l, i - p + r); };
      float* v_pre = ws + L.v_pre;
      row_products(rows, n_rows, d.k, in_ch, f[0], D2, W, th,
                   [&](int64_t j, int64_t o, float sum) { v_pre[j * D2 + o] = f[1][o] + sum; });
      sync();
      // The link to the horizontal stack: a 1x1 product, so a window of one tap over v_pre's row.
      float* v_to_h = ws + L.v_to_h + l * L.v_to_h_size;
      row_products([&](int64_t) -> const float* { return v_pre; }, 1, 1, D2, f[2], D2, W, th,
                   [&](int64_t j, int64_t o, float sum) {
                     const float* term = cond_term(l, i, j);
                     v_to_h[j * D2 + o] = f[3][o] + sum + (term ? term[D2 + o] : 0.0f);
                   });
      if (l + 1 < d.layers) {
        float* next = v_row(l + 1, i);
        for (int64_t idx = th.id; idx < W * D; idx += th.count) {
          const int64_t j = idx / D, o = idx % D;
          const float* pre = ws + L.v_pre + j * D2;
          const float* term = cond_term(l, i, j);
          next[(j + p) * D + o] = gate(pre[o] + (term ? term[o] : 0.0f), pre[D + o] + (term ? term[D + o] : 0.0f));
        }
      }
      sync();
    }
    // Pixel part, once per colour.
    for (int64_t j = 0; j < W; ++j) {
      for (int64_t c = 0; c < d.C; ++c) {
        for (int64_t o = th.id; o < d.S; o += th.count) ws[L.skip + o] = skip_bias[o];
        for (int64_t l = 0; l < d.layers; ++l) {
          const float* const* f = w + 8 * l;
          float* h_in = ws + L.h_rows + l * L.h_row_size;  // (W + p, D): the previous layer's row
          auto row = [&](int64_t) -> const float* { return l == 0 ? canvas.at(i, -p) : h_in; };
          const int64_t in_ch = l == 0 ? d.C : D;
          for (int64_t o = th.id; o < D2; o += th.count)
            ws[L.x + o] = ws[L.v_to_h + l * L.v_to_h_size + j * D2 + o] + window_dot(row, 1, p + 1, j, in_ch, f[4], D2, o);
          sync();
          for (int64_t o = th.id; o < D; o += th.count) ws[L.g + o] = gate(ws[L.x + o], ws[L.x + D + o]);
          sync();
          float* h_out = ws + L.h_rows + (l + 1) * L.h_row_size;
          for (int64_t o = th.id; o < D + d.S; o += th.count) {
            if (o < D) {
              if (l + 1 < d.layers) {
                const float out = f[6][o] + vec_dot(ws + L.g, D, f[5], D, o, false);
                h_out[(j + p) * D + o] = out + (l > 0 ? h_in[(j + p) * D + o] : 0.0f);
              }
            } else {
              ws[L.skip + o - D] += vec_dot(ws + L.g, D, f[7], d.S, o - D, false);
            }
          }
          sync();
        }
        head_and_draw(head, ws + L.skip, d.S, d.head, ws + L.head_hidden, ws + L.head_out, canvas, c, i, j, th, sync);
      }
    }
  }
}

}  // namespace block_sampler
}  // namespace fastgen

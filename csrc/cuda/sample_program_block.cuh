// The block interpreter of a sampling program (fastgen/program.py; specification:
// fastgen/reference/sample_program.py): one block of threads samples one image.
//
// On the GPU one thread block runs it per image (csrc/cuda/sample_program_block.cu), a persistent
// kernel that loops over rows, pixels and colours itself, so sampling a batch is one launch. The
// CPU build compiles the same source and runs it with a few threads per image meeting at a barrier
// (csrc/cpu/sample_program_block_emulation.cpp), so that tests check this program's arithmetic,
// indexing and barriers against the reference on machines without a GPU.
//
// Work split: at each node the block's threads share the outputs: per pixel, thread t computes
// outputs t, t + count, ... each as a dot product over the node's current-row taps (a gated conv's
// thread computes both halves of its channels, so no barrier separates the product from the gate);
// per row, a thread takes one output and a tile of up to kRowTile columns, so that each weight it
// reads serves the whole tile. Nodes are separated by one barrier.
//
// Weights come transposed by the host (sample_program_block_host.h): each term's rows-above part
// as a (row_taps * kw * C_in, O) row-major matrix, its current-row part as (current_taps * C_in, O),
// K ordered (tap row, tap column, input channel) like a channels-last window, so that consecutive
// threads read consecutive weights. Per-image workspace (T, channels last, unpadded channels): a
// ring of rows per value with zero columns left and right, each node's row terms, scratch.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/sample_program_draw.h"
#include "../common/sample_program_layout.h"

#ifdef __CUDACC__
#define FASTGEN_UNROLL _Pragma("unroll")
#else
#define FASTGEN_UNROLL
#endif

namespace fastgen {
namespace program {
namespace block {

// What the program needs of its block: its thread id and the block size (and a barrier, passed
// separately).
struct Threads {
  int64_t id, count;
};

struct Value {
  int64_t channels, stream, rows, width, pad_l, wp, offset;  // offset: of the ring in the workspace
};

template <typename T>
struct Term {
  int64_t src, top, left, stride, shift_rows, shift_cols, kw, row_taps, current_taps;
  const T* w_rows;     // (row_taps * kw * C_in, O) or null
  const T* w_current;  // (current_taps * C_in, O) or null
  const T* bias;       // (O,) or null
};

template <typename T>
struct Node {
  int64_t kind, out, src, act, residual, term0, n_terms, pre;
  int64_t rowbuf;   // offset of the row terms (width * pre) in the workspace, or -1
  int64_t scratch;  // offset of pre channels of scratch, or -1
  int64_t h, c, gates, carry, nr_mix, first_column, up_kw;
  const T* up_w;  // upsample: (2, kw, C_in, O)
  const T* up_bias;
  const T* cond;  // this node's conditioning tensor (N, Hc, Wc, K) or null
  int64_t cond_hc, cond_wc, cond_k, cond_offset;
};

template <typename T>
struct Program {
  int64_t C, L, H, W, ones, passes, categorical, draw_src, nr_mix, draw_channels, noise_channels;
  int64_t n_values, n_nodes, workspace;
  const Value* values;
  const Term<T>* terms;
  const Node<T>* nodes;
};

// The call's tensors for one image.
template <typename T>
struct Image {
  int64_t* image;      // (C, H, W)
  const bool* known;   // (C, H, W)
  const T* noise;      // (noise channels, H, W)
  T* draw_inputs;      // (draw channels, H, W) or null
  T* ws;               // the workspace
  int64_t n;           // the image's index in the batch (for the conditioning tensors)
};

constexpr int64_t kRowTile = 16;

template <typename T>
struct Interpreter {
  const Program<T>& p;
  Image<T> im;
  Threads th;

  FASTGEN_HD const Value& value(int64_t v) const { return p.values[v]; }
  // Position (r, b) of value v (b may reach into the padding); null above the image.
  FASTGEN_HD T* at(int64_t v, int64_t r, int64_t b) const {
    const Value& x = p.values[v];
    if (r < 0) return nullptr;
    return im.ws + x.offset + ((r % x.rows) * x.wp + x.pad_l + b) * x.channels;
  }
  FASTGEN_HD const T* cond_at(const Node<T>& nd, int64_t a, int64_t b) const {
    if (!nd.cond) return nullptr;
    return nd.cond + ((im.n * nd.cond_hc + (nd.cond_hc > 1 ? a : 0)) * nd.cond_wc + (nd.cond_wc > 1 ? b : 0)) * nd.cond_k +
           nd.cond_offset;
  }
  FASTGEN_HD static T sigmoid(T x) { return T(1) / (T(1) + exp(-x)); }
  FASTGEN_HD static T elu(T x) { return x > T(0) ? x : expm1(x); }
  FASTGEN_HD static T relu(T x) { return x > T(0) ? x : T(0); }

  // The biases of a node's terms at (a, b): all of them, the shifted ones where active.
  FASTGEN_HD T biases(const Node<T>& nd, int64_t o, int64_t a, int64_t b) const {
    T sum = T(0);
    for (int64_t k = 0; k < nd.n_terms; ++k) {
      const Term<T>& t = p.terms[nd.term0 + k];
      if (t.bias && a >= t.shift_rows && b >= t.shift_cols) sum += t.bias[o];
    }
    return sum;
  }

  // Output o of a node's current-row taps at (a, b), plus `init`.
  FASTGEN_HD T current_taps(const Node<T>& nd, int64_t o, int64_t a, int64_t b, T init) const {
    T acc = init;
    for (int64_t k = 0; k < nd.n_terms; ++k) {
      const Term<T>& t = p.terms[nd.term0 + k];
      if (!t.w_current || a < t.shift_rows || b < t.shift_cols) continue;
      const T* x = at(t.src, t.stride * a, t.stride * b - t.left);
      const int64_t K = t.current_taps * value(t.src).channels;
      for (int64_t i = 0; i < K; ++i) acc += x[i] * t.w_current[i * nd.pre + o];
    }
    return acc;
  }

  // act(pre + cond) + residual for output channel c of a conv, from its pre-activation(s).
  FASTGEN_HD T finish(const Node<T>& nd, int64_t c, T x, T y, const T* cond, const T* residual) const {
    const int64_t C = value(nd.out).channels;
    if (cond) {
      x += cond[c];
      if (nd.act == kActTanhGate || nd.act == kActSigmoidGate) y += cond[C + c];
    }
    T out = x;
    if (nd.act == kActRelu) out = relu(x);
    if (nd.act == kActTanhGate) out = tanh(x) * sigmoid(y);
    if (nd.act == kActSigmoidGate) out = x * sigmoid(y);
    return out + (residual ? residual[c] : T(0));
  }

  // -- the row phase --------------------------------------------------------------------------
  // The rows-above part of a conv (its whole product for a ROW conv) for row a into the node's row
  // terms, biases included.
  FASTGEN_HD void conv_rows(const Node<T>& nd, int64_t a) const {
    const int64_t W = value(nd.out).width, O = nd.pre, tiles = (W + kRowTile - 1) / kRowTile;
    T* out = im.ws + nd.rowbuf;
    for (int64_t idx = th.id; idx < tiles * O; idx += th.count) {
      const int64_t j0 = idx / O * kRowTile, o = idx % O, n = W - j0 < kRowTile ? W - j0 : kRowTile;
      T acc[kRowTile];  // registers, so indexed by unrolled loops only
      FASTGEN_UNROLL
      for (int64_t jj = 0; jj < kRowTile; ++jj) acc[jj] = jj < n ? biases(nd, o, a, j0 + jj) : T(0);
      for (int64_t k = 0; k < nd.n_terms; ++k) {
        const Term<T>& t = p.terms[nd.term0 + k];
        if (!t.w_rows || a < t.shift_rows) continue;
        const int64_t ch = value(t.src).channels, span = t.kw * ch;
        for (int64_t ty = 0; ty < t.row_taps; ++ty) {
          const T* row = at(t.src, t.stride * a - t.top + ty, 0);
          if (!row) continue;
          const T* w = t.w_rows + ty * span * O;
          for (int64_t q = 0; q < span; ++q) {
            const T wt = w[q * O + o];
            const int64_t tx = q / ch, c = q % ch;
            FASTGEN_UNROLL
            for (int64_t jj = 0; jj < kRowTile; ++jj) {
              const int64_t b = j0 + jj;
              if (jj < n && b >= t.shift_cols) acc[jj] += row[(t.stride * b - t.left + tx) * ch + c] * wt;
            }
          }
        }
      }
      FASTGEN_UNROLL
      for (int64_t jj = 0; jj < kRowTile; ++jj)
        if (jj < n) out[(j0 + jj) * O + o] = acc[jj];
    }
  }

  // A ROW conv's or upsample's epilogue: from the row terms into row a of the output.
  FASTGEN_HD void finish_row(const Node<T>& nd, int64_t a) const {
    const int64_t W = value(nd.out).width, C = value(nd.out).channels;
    const T* pre = im.ws + nd.rowbuf;
    for (int64_t idx = th.id; idx < W * C; idx += th.count) {
      const int64_t b = idx / C, c = idx % C;
      const T* res = nd.residual >= 0 ? at(nd.residual, a, b) : nullptr;
      const T y = (nd.act == kActTanhGate || nd.act == kActSigmoidGate) ? pre[b * nd.pre + C + c] : T(0);
      at(nd.out, a, b)[c] = finish(nd, c, pre[b * nd.pre + c], y, cond_at(nd, a, b), res);
    }
  }

  FASTGEN_HD void upsample_row(const Node<T>& nd, int64_t a) const {
    const Value& src = value(nd.src);
    const int64_t W = value(nd.out).width, O = nd.pre, ch = src.channels;
    T* out = im.ws + nd.rowbuf;
    for (int64_t idx = th.id; idx < W * O; idx += th.count) {
      const int64_t c = idx / O, o = idx % O;
      T acc = nd.up_bias ? nd.up_bias[o] : T(0);
      for (int64_t tx = 0; tx < nd.up_kw; ++tx) {
        const int64_t shifted = c + nd.first_column - tx;
        if (shifted < 0 || shifted % 2 || shifted / 2 >= src.width) continue;
        const T* x = at(nd.src, a / 2, shifted / 2);
        const T* w = nd.up_w + ((a % 2) * nd.up_kw + tx) * ch * O;
        for (int64_t i = 0; i < ch; ++i) acc += x[i] * w[i * O + o];
      }
      out[c * O + o] = acc;
    }
  }

  FASTGEN_HD void pointwise(const Node<T>& nd, int64_t a, int64_t b) const {
    const int64_t C = value(nd.src).channels;
    const T* x = at(nd.src, a, b);
    T* y = at(nd.out, a, b);
    const T* cond = cond_at(nd, a, b);
    auto in = [&](int64_t c) { return x[c] + (cond ? cond[c] : T(0)); };
    if (nd.act == kActTanhGate || nd.act == kActSigmoidGate) {
      for (int64_t c = th.id; c < C / 2; c += th.count)
        y[c] = (nd.act == kActTanhGate ? tanh(in(c)) : in(c)) * sigmoid(in(C / 2 + c));
    } else if (nd.act == kActConcatElu) {
      for (int64_t c = th.id; c < C; c += th.count) {
        y[c] = elu(in(c));
        y[C + c] = elu(-in(c));
      }
    } else {
      for (int64_t c = th.id; c < C; c += th.count) y[c] = nd.act == kActRelu ? relu(in(c)) : elu(in(c));
    }
  }

  // -- the pixel phase ------------------------------------------------------------------------
  FASTGEN_HD void conv_pixel(const Node<T>& nd, int64_t a, int64_t b) const {
    const int64_t C = value(nd.out).channels;
    const bool gate = nd.act == kActTanhGate || nd.act == kActSigmoidGate;
    const T* row = nd.rowbuf >= 0 ? im.ws + nd.rowbuf + b * nd.pre : nullptr;
    const T* cond = cond_at(nd, a, b);
    const T* res = nd.residual >= 0 ? at(nd.residual, a, b) : nullptr;
    T* out = at(nd.out, a, b);
    for (int64_t c = th.id; c < C; c += th.count) {
      const T x = current_taps(nd, c, a, b, row ? row[c] : biases(nd, c, a, b));
      const T y = gate ? current_taps(nd, C + c, a, b, row ? row[C + c] : biases(nd, C + c, a, b)) : T(0);
      out[c] = finish(nd, c, x, y, cond, res);
    }
  }

  FASTGEN_HD void upsample_pixel(const Node<T>& nd, int64_t a, int64_t b) const {
    const int64_t O = nd.pre, ch = value(nd.src).channels;
    const T* x = at(nd.src, a / 2, b / 2);
    const T* w = nd.up_w + ((a % 2) * 2 + b % 2) * ch * O;
    T* out = at(nd.out, a, b);
    for (int64_t o = th.id; o < O; o += th.count) {
      T acc = nd.up_bias ? nd.up_bias[o] : T(0);
      for (int64_t i = 0; i < ch; ++i) acc += x[i] * w[i * O + o];
      out[o] = acc;
    }
  }

  // An LSTM cell at (a, b), in two steps with a barrier between: its gates (the gates value and
  // the recurrent terms over the cell's own h, whole kernels) into scratch, then c and h.
  template <typename Sync>
  FASTGEN_HD void lstm(const Node<T>& nd, int64_t a, int64_t b, Sync sync) const {
    const int64_t G = nd.pre, Hc = G / 4, ch = value(nd.h).channels;
    T* gates = im.ws + nd.scratch;
    const T* g_in = at(nd.gates, a, b);
    for (int64_t o = th.id; o < G; o += th.count) {
      T acc = g_in[o] + biases(nd, o, a, b);
      for (int64_t k = 0; k < nd.n_terms; ++k) {
        const Term<T>& t = p.terms[nd.term0 + k];
        if (a < t.shift_rows || b < t.shift_cols) continue;
        const int64_t span = t.kw * ch;
        for (int64_t ty = 0; ty < t.row_taps; ++ty) {
          const T* x = at(nd.h, a - t.top + ty, b - t.left);
          if (!x) continue;
          for (int64_t q = 0; q < span; ++q) acc += x[q] * t.w_rows[(ty * span + q) * G + o];
        }
      }
      gates[o] = acc;
    }
    sync();
    const int64_t pa = nd.carry == kCarryAbove ? a - 1 : a;
    const int64_t pb = nd.carry == kCarryLeft ? b - 1 : nd.carry == kCarryRight ? b + 1 : b;
    const T* c_prev = pa >= 0 && pb >= 0 && pb < value(nd.c).width ? at(nd.c, pa, pb) : nullptr;
    T* c_out = at(nd.c, a, b);
    T* h_out = at(nd.h, a, b);
    for (int64_t c = th.id; c < Hc; c += th.count) {
      const T cell = sigmoid(gates[Hc + c]) * (c_prev ? c_prev[c] : T(0)) + sigmoid(gates[c]) * tanh(gates[3 * Hc + c]);
      c_out[c] = cell;
      h_out[c] = sigmoid(gates[2 * Hc + c]) * tanh(cell);
    }
  }

  // The draw of colour `colour` (categorical) or of the pixel (mixture) at (i, j), by thread 0.
  FASTGEN_HD void draw(int64_t i, int64_t j, int64_t colour) const {
    if (th.id != 0) return;
    const int64_t C = p.C, H = p.H, W = p.W, L = p.L, HW = H * W, at_ij = i * W + j;
    const T* params = at(p.draw_src, i, j);
    T* x = at(0, i, j);
    const T scale = T(2) / static_cast<T>(L - 1);
    if (p.categorical) {
      const T* logits = params + colour * L;
      if (im.draw_inputs)
        for (int64_t l = 0; l < L; ++l) im.draw_inputs[(colour * L + l) * HW + at_ij] = logits[l];
      if (!im.known[colour * HW + at_ij])
        im.image[colour * HW + at_ij] = categorical_draw(logits, 1, L, static_cast<double>(im.noise[colour * HW + at_ij]));
      x[colour] = static_cast<T>(im.image[colour * HW + at_ij]) * scale - T(1);
      return;
    }
    if (im.draw_inputs)
      for (int64_t k = 0; k < p.draw_channels; ++k) im.draw_inputs[k * HW + at_ij] = params[k];
    bool all_known = true;
    for (int64_t c = 0; c < C; ++c) all_known = all_known && im.known[c * HW + at_ij];
    if (!all_known) {
      T value[3];
      mixture_draw(C, p.nr_mix, params, int64_t{1}, im.noise + at_ij, HW, L, value);
      const T steps = static_cast<T>(L - 1);
      for (int64_t c = 0; c < C; ++c) im.image[c * HW + at_ij] = static_cast<int64_t>(nearbyint((value[c] + T(1)) * (steps / T(2))));
    }
    for (int64_t c = 0; c < C; ++c) x[c] = static_cast<T>(im.image[c * HW + at_ij]) * scale - T(1);
  }

  FASTGEN_HD void encode_row(int64_t i) const {
    const int64_t C = p.C, W = p.W, HW = p.H * W, per = C + (p.ones ? 1 : 0);
    const T scale = T(2) / static_cast<T>(p.L - 1);
    for (int64_t idx = th.id; idx < W * per; idx += th.count) {
      const int64_t j = idx / per, c = idx % per;
      at(0, i, j)[c] = c < C ? static_cast<T>(im.image[c * HW + i * W + j]) * scale - T(1) : T(1);
    }
  }

  template <typename Sync>
  FASTGEN_HD void run(Sync sync) const {
    for (int64_t i = 0; i < p.H; ++i) {
      sync();
      encode_row(i);
      sync();
      for (int64_t k = 0; k + 1 < p.n_nodes; ++k) {
        const Node<T>& nd = p.nodes[k];
        const int64_t scale_step = p.W / value(nd.out).width;  // 2^scale
        if (i % scale_step) continue;
        const int64_t a = i / scale_step;
        const bool row_out = is_row(nd.out);
        if (nd.kind == kKindConv && (row_out || nd.rowbuf >= 0)) {
          conv_rows(nd, a);
          sync();
          if (row_out) {
            finish_row(nd, a);
            sync();
          }
        } else if (row_out && nd.kind == kKindUpsample) {
          upsample_row(nd, a);
          sync();
          finish_row(nd, a);
          sync();
        } else if (row_out && nd.kind == kKindPointwise) {
          for (int64_t b = 0; b < value(nd.out).width; ++b) pointwise(nd, a, b);
          sync();
        } else if (row_out && nd.kind == kKindLstmCell) {
          for (int64_t b = value(nd.out).width - 1; b >= 0; --b) {
            lstm(nd, a, b, sync);
            sync();
          }
        }
      }
      for (int64_t j = 0; j < p.W; ++j) {
        for (int64_t colour = 0; colour < p.passes; ++colour) {
          for (int64_t k = 0; k + 1 < p.n_nodes; ++k) {
            const Node<T>& nd = p.nodes[k];
            const int64_t step = p.W / value(nd.out).width;
            if (is_row(nd.out) || i % step || j % step) continue;
            const int64_t a = i / step, b = j / step;
            if (nd.kind == kKindConv) conv_pixel(nd, a, b);
            else if (nd.kind == kKindPointwise) pointwise(nd, a, b);
            else if (nd.kind == kKindUpsample) upsample_pixel(nd, a, b);
            else lstm(nd, a, b, sync);
            sync();
          }
          draw(i, j, colour);
          sync();
        }
      }
    }
  }

  FASTGEN_HD bool is_row(int64_t v) const { return p.values[v].stream == kStreamRow; }
};

}  // namespace block
}  // namespace program
}  // namespace fastgen

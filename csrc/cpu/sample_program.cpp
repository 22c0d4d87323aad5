// The C++ interpreter of a sampling program (fastgen/program.py; the specification is
// fastgen/reference/sample_program.py): the whole loop over rows, pixels and colours, every node
// and the draw, in one call.
//
// Cost model, per image: when a row starts, the ROW nodes and the rows-above part of every PIXEL
// node's terms run for the row's W positions at once (an im2col gather and a matrix-matrix product
// over N * W rows); at each pixel (and colour), the current-row taps, the 1x1 layers and the draw
// run as products over the N images (matrix-vector at batch 1).
//
// Layout: every value is a ring of the image rows its readers still need, channels last, each
// channel part padded to 16 (panel_gemm.h; the image itself is not padded), zero columns left and
// right of the row so that every window lies inside. Reads above the image see a row of zeros.
//
// Threads. Images are independent, so a batch can be cut into slices, each run by one thread alone
// with no barrier; or the threads can share every product of one slice (batch 1). Which is faster
// depends on the batch and on how much weight a pixel reads: see split_batch. When they share,
// each thread owns the same output panels of every value for the whole run, so that its share of
// the weights stays in its own L2 cache; a thread meets the others at a barrier only before it reads
// channels that another thread wrote since the last barrier (a product's inputs, the draw), which
// the `Fences` below track.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "../common/sample_program_draw.h"
#include "../common/sample_program_reader.h"
#include "dmol.h"
#include "fast_math.h"
#include "panel_gemm.h"

namespace fastgen {
namespace {

using namespace program;

template <typename T>
struct Math;
template <>
struct Math<float> {
  static FASTGEN_INLINE float tanh(float x) { return tanh_fast(x); }
  static FASTGEN_INLINE float sigmoid(float x) { return sigmoid_fast(x); }
  static FASTGEN_INLINE float elu(float x) { return x > 0.0f ? x : -one_minus_exp_neg(-x); }
};
template <>
struct Math<double> {
  static double tanh(double x) { return std::tanh(x); }
  static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
  static double elu(double x) { return x > 0.0 ? x : std::expm1(x); }
};

// The epilogues' loops, branch-free so that they vectorise (absent terms come as zeros).
// d = act(x + k) + r, act ReLU or none.
template <typename T>
FASTGEN_CLONES void add_act(const T* x, const T* k, const T* r, T* d, int64_t n, bool relu) {
  if (relu) {
    for (int64_t c = 0; c < n; ++c) {
      const T v = x[c] + k[c];
      d[c] = (v > T(0) ? v : T(0)) + r[c];
    }
  } else {
    for (int64_t c = 0; c < n; ++c) d[c] = x[c] + k[c] + r[c];
  }
}

// d = g(x + kx) * sigmoid(y + ky) + r, g tanh (Gated PixelCNN) or the identity (PixelCNN++).
template <typename T>
FASTGEN_CLONES void gate_act(const T* x, const T* kx, const T* y, const T* ky, const T* r, T* d, int64_t n, bool use_tanh) {
  if (use_tanh) {
    for (int64_t c = 0; c < n; ++c) d[c] = Math<T>::tanh(x[c] + kx[c]) * Math<T>::sigmoid(y[c] + ky[c]) + r[c];
  } else {
    for (int64_t c = 0; c < n; ++c) d[c] = (x[c] + kx[c]) * Math<T>::sigmoid(y[c] + ky[c]) + r[c];
  }
}

// d0 = elu(x + k), d1 = elu(-(x + k)) (concat_elu); or only d0 with d1 null (elu).
template <typename T>
FASTGEN_CLONES void elu_act(const T* x, const T* k, T* d0, T* d1, int64_t n) {
  if (d1) {
    for (int64_t c = 0; c < n; ++c) {
      const T v = x[c] + k[c];
      d0[c] = Math<T>::elu(v);
      d1[c] = Math<T>::elu(-v);
    }
  } else {
    for (int64_t c = 0; c < n; ++c) d0[c] = Math<T>::elu(x[c] + k[c]);
  }
}

// The channels [c0, c1) of each part that thread t of `threads` owns in a layout: its share of
// every part's panels (all channels to thread 0 for an unpadded layout).
struct Own {
  int64_t c0 = 0, c1 = 0, p0 = 0, p1 = 0;
};
Own own(const ChannelLayout& l, int t, int threads) {
  if (!l.padded) return t == 0 ? Own{0, l.part_channels(), 0, 0} : Own{};
  const int64_t panels = l.part_panels();
  Own o;
  o.p0 = panels * t / threads;
  o.p1 = panels * (t + 1) / threads;
  o.c0 = std::min(o.p0 * kPanel, l.part_channels());
  o.c1 = std::min(o.p1 * kPanel, l.part_channels());
  return o;
}

// A node's channel owners for one thread: of its pre-activation, its output, and (pointwise
// nodes) the channels it walks.
struct Owners {
  Own pre, out, point;
};

// Whether two layouts give every thread the same channels (so that one can read what it wrote
// into the other without a barrier).
bool same_owners(const ChannelLayout& a, const ChannelLayout& b) {
  return a.padded && b.padded && a.part_channels() == b.part_channels();
}

// ---------------------------------------------------------------------------------------------
// The program with its weights packed: shared, read-only, by every slice of a batch.

template <typename T>
struct TermPlan {
  TermSpec spec;
  PanelsOf<T> rows, current;  // the per-row part (K = row_taps * kw * S_src) and the per-pixel part
  std::vector<T> bias;        // in the pre-activation layout; empty without bias
  bool shifted() const { return spec.shift_rows > 0 || spec.shift_cols > 0; }
};

template <typename T>
struct NodePlan {
  NodeSpec spec;
  ChannelLayout pre;  // the layout of the pre-activation (the products' output)
  std::vector<TermPlan<T>> terms;
  std::vector<T> bias;                // biases of the unshifted terms (and of an upsample)
  std::vector<PanelsOf<T>> upsample;  // PIXEL: taps (r % 2, c % 2); ROW: kernel rows, K = kw * S_src
  bool row_part = false, pixel_part = false;
  bool aligned_src = true, aligned_residual = true;
  const T* cond = nullptr;  // (N_total, Hc, Wc, K)
  int64_t cond_hc = 1, cond_wc = 1, cond_k = 0;
};

struct ValuePlan {
  ChannelLayout layout;
  int64_t rows = 1, width = 0, height = 0, pad_l = 0, pad_r = 0, scale = 0, stream = 0;
  // Read only at the position being computed (1x1 terms, pointwise and residual sources, the
  // draw): a thread alone can keep one position per image instead of a row (see Ring).
  bool local = false;
  int64_t wp() const { return pad_l + width + pad_r; }
  int64_t row_size() const { return wp() * layout.stride(); }
};

template <typename T>
struct PackedProgram {
  ProgramSpec spec;
  std::vector<ValuePlan> values;
  std::vector<NodePlan<T>> nodes;
  int64_t im2col_k = 1, widest_row = 1, widest_pre = 1;
  // The bytes of all packed weights, and those read per image pixel by the per-pixel products,
  // averaged over the pixels (a scale-s node runs at one pixel in 4^s): what a thread streams per
  // pixel when it runs a slice of the batch alone, against 1/threads of it when the threads share
  // every product. They choose how the threads split a batch (split_batch).
  double weight_bytes = 0, pixel_weight_bytes = 0;
};

// The weight (O, I, kh, kw) of a conv term packed over the taps of kernel rows `rows`, columns
// [col0, col0 + cols), K ordered (row, column, input channel) like a channels-last window.
template <typename T>
PanelsOf<T> pack_taps(const at::Tensor& w, const ChannelLayout& out, const ChannelLayout& in,
                      const std::vector<int64_t>& rows, int64_t col0, int64_t cols) {
  const T* data = w.const_data_ptr<T>();
  const int64_t O = w.size(0), I = w.size(1), kh = w.size(2), kw = w.size(3), S = in.stride();
  PanelsOf<T> p;
  p.K = static_cast<int64_t>(rows.size()) * cols * S;
  p.panels = out.stride() / kPanel;
  p.data.assign(static_cast<size_t>(p.panels * p.K * kPanel), T(0));
  for (int64_t o = 0; o < O; ++o) {
    const int64_t po = out.pos(o);
    T* panel = p.data.data() + (po / kPanel) * p.K * kPanel + po % kPanel;
    for (size_t r = 0; r < rows.size(); ++r)
      for (int64_t tx = 0; tx < cols; ++tx) {
        const int64_t k0 = (static_cast<int64_t>(r) * cols + tx) * S;
        for (int64_t c = 0; c < I; ++c)
          panel[(k0 + in.pos(c)) * kPanel] = data[((o * I + c) * kh + rows[r]) * kw + col0 + tx];
      }
  }
  return p;
}

template <typename T>
std::vector<T> pack_vector(const at::Tensor& v, const ChannelLayout& l) {
  std::vector<T> out(static_cast<size_t>(l.stride()), T(0));
  const T* src = v.const_data_ptr<T>();
  for (int64_t c = 0; c < l.channels; ++c) out[static_cast<size_t>(l.pos(c))] = src[c];
  return out;
}

template <typename T>
std::shared_ptr<PackedProgram<T>> pack_program(const ProgramSpec& spec, at::TensorList tensors) {
  auto packed = std::make_shared<PackedProgram<T>>();
  PackedProgram<T>& P = *packed;
  P.spec = spec;
  const int64_t V = static_cast<int64_t>(spec.values.size());
  // Channel parts: a gate reads halves, concat_elu writes halves, an LSTM reads quarters.
  std::vector<int64_t> parts(static_cast<size_t>(V), 1);
  auto need = [&](int64_t v, int64_t k) {
    TORCH_CHECK(parts[static_cast<size_t>(v)] == 1 || parts[static_cast<size_t>(v)] == k,
                "sample_program: value ", v, " is read as ", parts[static_cast<size_t>(v)], " and as ", k,
                " channel parts; the C++ interpreter keeps one layout per value");
    parts[static_cast<size_t>(v)] = k;
  };
  for (const NodeSpec& nd : spec.nodes) {
    if (nd.kind == kKindPointwise && (nd.act == kActTanhGate || nd.act == kActSigmoidGate)) need(nd.src, 2);
    if (nd.kind == kKindPointwise && nd.act == kActConcatElu) need(nd.out, 2);
    if (nd.kind == kKindLstmCell) need(nd.gates, 4);
  }
  // A gate writes, and concat_elu reads, a value of one part, so that their channels map one to
  // one (and concat_elu never reads the unpadded image).
  for (size_t index = 0; index < spec.nodes.size(); ++index) {
    const NodeSpec& nd = spec.nodes[index];
    if (nd.kind == kKindPointwise && nd.act == kActConcatElu)
      TORCH_CHECK(nd.src != 0 && parts[static_cast<size_t>(nd.src)] == 1, "sample_program: node ", index,
                  ": the C++ interpreter reads concat_elu's input whole (not the image, a gate's or an LSTM's input)");
    if (nd.act == kActTanhGate || nd.act == kActSigmoidGate)
      TORCH_CHECK(parts[static_cast<size_t>(nd.out)] == 1, "sample_program: node ", index,
                  ": the C++ interpreter writes a gate's output whole (not as a gate's or an LSTM's input)");
  }
  P.values.resize(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) {
    const ValueSpec& s = spec.values[static_cast<size_t>(v)];
    ValuePlan& vp = P.values[static_cast<size_t>(v)];
    vp.layout = v == 0 ? ChannelLayout::unpadded(s.channels) : ChannelLayout{s.channels, parts[static_cast<size_t>(v)]};
    TORCH_CHECK(s.channels % vp.layout.parts == 0, "sample_program: value ", v, " has ", s.channels,
                " channels, not ", vp.layout.parts, " equal parts");
    vp.scale = s.scale;
    vp.stream = s.stream;
    vp.width = spec.W >> s.scale;
    vp.height = spec.H >> s.scale;
  }
  // Ring rows and column padding from every reader's window.
  auto reads = [&](int64_t v, int64_t top, int64_t left, int64_t kw) {
    ValuePlan& vp = P.values[static_cast<size_t>(v)];
    vp.rows = std::max(vp.rows, top + 1);
    vp.pad_l = std::max(vp.pad_l, left);
    vp.pad_r = std::max(vp.pad_r, kw);
  };
  for (const NodeSpec& nd : spec.nodes) {
    for (const TermSpec& t : nd.terms) reads(t.src, t.top, t.left, t.kw);
    if (nd.kind == kKindLstmCell) reads(nd.c, 1, 1, 1);  // the carried cell at (a - 1, b) or (a, b -+ 1)
  }
  for (int64_t v = 1; v < V; ++v) {
    ValuePlan& vp = P.values[static_cast<size_t>(v)];
    vp.local = vp.stream == kStreamPixel;
  }
  auto not_local = [&](int64_t v) { P.values[static_cast<size_t>(v)].local = false; };
  for (const NodeSpec& nd : spec.nodes) {
    for (const TermSpec& t : nd.terms) {
      const bool same_position = t.top == 0 && t.left == 0 && t.kh == 1 && t.kw == 1 && t.stride == 1 &&
                                 t.shift_rows == 0 && t.shift_cols == 0;
      if (!same_position) not_local(t.src);
    }
    if (nd.kind == kKindUpsample) not_local(nd.src);  // read at (a / 2, b / 2) from later pixels
    if (nd.kind == kKindLstmCell) {
      not_local(nd.c);
      not_local(nd.h);
    }
  }

  P.nodes.resize(spec.nodes.size());
  for (size_t index = 0; index < spec.nodes.size(); ++index) {
    const NodeSpec& nd = spec.nodes[index];
    NodePlan<T>& np = P.nodes[index];
    np.spec = nd;
    if (nd.kind == kKindCategoricalDraw || nd.kind == kKindMixtureDraw) continue;
    const ValuePlan& out = P.values[static_cast<size_t>(nd.out)];
    const bool gate = nd.kind == kKindConv && (nd.act == kActTanhGate || nd.act == kActSigmoidGate);
    np.pre = gate ? ChannelLayout{2 * out.layout.channels, 2} : out.layout;
    if (nd.kind == kKindLstmCell) np.pre = P.values[static_cast<size_t>(nd.gates)].layout;
    if (nd.kind == kKindPointwise) {
      const ChannelLayout& src = P.values[static_cast<size_t>(nd.src)].layout;
      np.aligned_src = same_owners(src, out.layout);
      np.pre = src;
    }
    if (nd.residual >= 0) np.aligned_residual = same_owners(P.values[static_cast<size_t>(nd.residual)].layout, out.layout);
    if (nd.cond_index >= 0) {
      const at::Tensor& c = tensors[spec.first_cond + nd.cond_index];
      np.cond = c.const_data_ptr<T>();
      np.cond_hc = c.size(1);
      np.cond_wc = c.size(2);
      np.cond_k = c.size(3);
    }
    np.bias.assign(static_cast<size_t>(np.pre.stride()), T(0));
    for (const TermSpec& t : nd.terms) {
      TermPlan<T> tp;
      tp.spec = t;
      const ValuePlan& src = P.values[static_cast<size_t>(t.src)];
      std::vector<int64_t> row_taps(static_cast<size_t>(t.row_taps));
      for (int64_t r = 0; r < t.row_taps; ++r) row_taps[static_cast<size_t>(r)] = r;
      if (t.row_taps > 0) {
        tp.rows = pack_taps<T>(tensors[t.weight], np.pre, src.layout, row_taps, 0, t.kw);
        np.row_part = np.row_part || nd.kind == kKindConv;
        P.im2col_k = std::max(P.im2col_k, tp.rows.K);
      }
      if (t.current_row) {
        tp.current = pack_taps<T>(tensors[t.weight], np.pre, src.layout, {t.kh - 1}, 0, t.current_taps());
        np.pixel_part = true;
        P.pixel_weight_bytes +=
            static_cast<double>(tp.current.data.size() * sizeof(T)) / static_cast<double>(int64_t{1} << (2 * out.scale));
      }
      if (t.bias >= 0) {
        tp.bias = pack_vector<T>(tensors[t.bias], np.pre);
        if (!tp.shifted())
          for (size_t c = 0; c < np.bias.size(); ++c) np.bias[c] += tp.bias[c];
      }
      np.terms.push_back(std::move(tp));
    }
    if (nd.kind == kKindUpsample) {
      const at::Tensor& w = tensors[nd.weight];  // (I, O, 2, kw)
      const ValuePlan& src = P.values[static_cast<size_t>(nd.src)];
      const T* data = w.const_data_ptr<T>();
      const int64_t O = w.size(1), kw = w.size(3);
      auto tap = [&](int64_t ty, int64_t tx0, int64_t cols) {
        return PanelsOf<T>::pack(np.pre, src.layout, src.layout.stride(), cols, [&](int64_t o, int64_t c, int64_t t) {
          return data[((c * O + o) * 2 + ty) * kw + tx0 + t];
        });
      };
      if (out.stream == kStreamPixel) {
        for (int64_t ty = 0; ty < 2; ++ty)
          for (int64_t tx = 0; tx < 2; ++tx) np.upsample.push_back(tap(ty, tx, 1));
      } else {
        for (int64_t ty = 0; ty < 2; ++ty) np.upsample.push_back(tap(ty, 0, kw));
        P.im2col_k = std::max(P.im2col_k, kw * src.layout.stride());
      }
      if (nd.bias >= 0) np.bias = pack_vector<T>(tensors[nd.bias], np.pre);
    }
    for (const TermPlan<T>& tp : np.terms)
      P.weight_bytes += static_cast<double>((tp.rows.data.size() + tp.current.data.size()) * sizeof(T));
    for (const PanelsOf<T>& up : np.upsample) P.weight_bytes += static_cast<double>(up.data.size() * sizeof(T));
    P.widest_row = std::max(P.widest_row, out.width);
    P.widest_pre = std::max(P.widest_pre, np.pre.stride());
  }
  return packed;
}

// ---------------------------------------------------------------------------------------------
// One slice of the batch: the values' rings, per-node buffers and the call's tensors.

template <typename T>
struct Ring {
  const ValuePlan* plan = nullptr;
  // One position per image, for a value read only where it is computed (ValuePlan::local) when a
  // thread runs its slice alone: the row of positions would stream through the cache once per
  // row for nothing. (With a team it would not do: a thread could overwrite the position while
  // another still reads it.)
  bool one_position = false;
  AlignedVector<T> data;  // (N, rows, wp, S), or (N, 1, 1, S)
  int64_t row_size() const { return one_position ? plan->layout.stride() : plan->row_size(); }
  int64_t batch_stride() const { return plan->rows * row_size(); }
  // Image row r of image m, at padded column 0; r must be >= 0.
  T* row(int64_t m, int64_t r) { return data.data() + m * batch_stride() + (r % plan->rows) * row_size(); }
  // Position (r, b) of image m (b may reach into the padding).
  T* at(int64_t m, int64_t r, int64_t b) {
    return row(m, r) + (one_position ? 0 : (plan->pad_l + b) * plan->layout.stride());
  }
};

// Barriers only where needed: a thread must wait for the others before it reads channels they
// wrote since the last barrier. Every thread runs the same sequence of nodes, so every thread
// makes the same decisions and meets the others at the same barriers.
class Fences {
 public:
  Fences(Team& team, int64_t values) : team_(team), dirty_(static_cast<size_t>(values) + 1, 0) {}
  // im2col, the row phase's shared gather buffer, is the extra "value".
  int64_t im2col() const { return static_cast<int64_t>(dirty_.size()) - 1; }
  void wrote(int64_t v) { dirty_[static_cast<size_t>(v)] = 1; }
  void reads(int64_t v) {
    if (dirty_[static_cast<size_t>(v)]) barrier();
  }
  // Before the gather overwrites im2col: a product may still read it.
  void before_gather() {
    if (im2col_read_) barrier();
  }
  void read_im2col() { im2col_read_ = true; }
  void barrier() {
    team_.barrier();
    std::fill(dirty_.begin(), dirty_.end(), 0);
    im2col_read_ = false;
  }

 private:
  Team& team_;
  std::vector<char> dirty_;
  bool im2col_read_ = false;
};

template <typename T>
class Slice {
 public:
  // `alone`: the slice runs on one thread (see Ring::one_position).
  Slice(const PackedProgram<T>& P, int64_t n0, int64_t n, int64_t* image, const bool* known, const T* noise,
        T* draw_inputs, bool alone)
      : P_(P), S_(P.spec), n0_(n0), n_(n), image_(image), known_(known), noise_(noise), draw_inputs_(draw_inputs) {
    rings_.resize(P.values.size());
    size_t widest = 1;
    for (size_t v = 0; v < P.values.size(); ++v) {
      rings_[v].plan = &P.values[v];
      rings_[v].one_position = alone && P.values[v].local;
      rings_[v].data.assign(static_cast<size_t>(n * rings_[v].batch_stride()), T(0));
      widest = std::max(widest, static_cast<size_t>(P.values[v].row_size()));
    }
    zero_row_.assign(widest, T(0));
    zeros_.assign(static_cast<size_t>(std::max<int64_t>(P.widest_pre, 1)) * 2, T(0));
    row_terms_.resize(P.nodes.size());
    pre_.resize(P.nodes.size());
    for (size_t k = 0; k < P.nodes.size(); ++k) {
      const NodePlan<T>& np = P.nodes[k];
      if (np.spec.kind == kKindCategoricalDraw || np.spec.kind == kKindMixtureDraw) continue;
      const ValuePlan& out = P.values[static_cast<size_t>(np.spec.out)];
      const bool needs_rows = np.row_part || out.stream == kStreamRow;
      if (needs_rows) row_terms_[k].assign(static_cast<size_t>(n * out.width * np.pre.stride()), T(0));
      pre_[k].assign(static_cast<size_t>(n * np.pre.stride()), T(0));
    }
    im2col_.assign(static_cast<size_t>(n * P.widest_row * P.im2col_k), T(0));
    owners_.resize(static_cast<size_t>(std::max<int64_t>(1, at::get_num_threads())));
  }

  void run(Team& team, int t) {
    Fences fences(team, static_cast<int64_t>(P_.values.size()));
    const int threads = team.size();
    std::vector<T> draw_params, scratch;  // this thread's copy of the draw's inputs, its residual gather
    owners_of_thread(t, threads);
    for (int64_t i = 0; i < S_.H; ++i) {
      fences.barrier();  // every thread is done with the previous row
      encode_row(i, t, threads);
      fences.wrote(0);
      for (size_t k = 0; k + 1 < P_.nodes.size(); ++k) {
        const NodePlan<T>& np = P_.nodes[k];
        const int64_t scale = P_.values[static_cast<size_t>(np.spec.out)].scale;
        if (i % (int64_t{1} << scale)) continue;
        row_step(k, i >> scale, fences, t, threads, scratch);
      }
      for (int64_t j = 0; j < S_.W; ++j) {
        for (int64_t colour = 0; colour < S_.passes(); ++colour) {
          for (size_t k = 0; k + 1 < P_.nodes.size(); ++k) {
            const NodePlan<T>& np = P_.nodes[k];
            const ValuePlan& out = P_.values[static_cast<size_t>(np.spec.out)];
            const int64_t step = int64_t{1} << out.scale;
            if (out.stream != kStreamPixel || i % step || j % step) continue;
            pixel_step(k, i >> out.scale, j >> out.scale, fences, t, threads, scratch);
          }
          draw(i, j, colour, fences, t, threads, draw_params);
        }
      }
    }
  }

 private:
  // -- helpers --------------------------------------------------------------------------------
  // The image rows of value v from row r, or zeros above the image.
  const T* row_or_zero(int64_t v, int64_t m, int64_t r) {
    return r < 0 ? zero_row_.data() : rings_[static_cast<size_t>(v)].row(m, r);
  }

  const T* cond_at(const NodePlan<T>& np, int64_t m, int64_t a, int64_t b) const {
    return np.cond + (((n0_ + m) * np.cond_hc + (np.cond_hc > 1 ? a : 0)) * np.cond_wc + (np.cond_wc > 1 ? b : 0)) *
                         np.cond_k + np.spec.cond_offset;
  }

  // pre[row] own channels = bias and the active shifted terms' biases at (a, b).
  void init_bias(const NodePlan<T>& np, T* pre, int64_t a, int64_t b, const Own& o) {
    const ChannelLayout& l = np.pre;
    for (int64_t q = 0; q < l.parts; ++q) {
      const int64_t base = q * l.part_stride();
      std::memcpy(pre + base + o.c0, np.bias.data() + base + o.c0, static_cast<size_t>(o.c1 - o.c0) * sizeof(T));
      for (const TermPlan<T>& tp : np.terms) {
        if (!tp.shifted() || tp.bias.empty() || !tp.spec.active(a, b)) continue;
        for (int64_t c = o.c0; c < o.c1; ++c) pre[base + c] += tp.bias[static_cast<size_t>(base + c)];
      }
    }
  }

  void product(const PanelsOf<T>& w, const ChannelLayout& l, const T* A, int64_t lda, int64_t M, T* C, int64_t ldc,
               const Own& o) {
    if (o.p1 <= o.p0) return;
    for (int64_t q = 0; q < l.parts; ++q)
      panel_gemm(w, A, lda, M, C, ldc, q * l.part_panels() + o.p0, q * l.part_panels() + o.p1);
  }

  // The epilogue of a conv at one position: act(pre + cond) + residual into out, own channels,
  // part by part. A residual of another layout is first gathered into scratch.
  void finish(const NodePlan<T>& np, const T* pre, int64_t m, int64_t a, int64_t b, T* dst, const T* residual,
              const ChannelLayout& res_layout, const Own& o, std::vector<T>& scratch) {
    const NodeSpec& nd = np.spec;
    const ChannelLayout& out = P_.values[static_cast<size_t>(nd.out)].layout;
    const T* cond = np.cond ? cond_at(np, m, a, b) : zeros_.data();
    const int64_t n = o.c1 - o.c0;
    if (n <= 0) return;
    const T* res = zeros_.data();
    const bool same = res_layout.parts == out.parts && res_layout.part_stride() == out.part_stride();
    if (residual && same) res = residual;
    if (residual && !same) {
      scratch.assign(static_cast<size_t>(out.stride()), T(0));
      for (int64_t c = 0; c < out.channels; ++c) scratch[static_cast<size_t>(out.pos(c))] = residual[res_layout.pos(c)];
      res = scratch.data();
    }
    if (nd.act == kActTanhGate || nd.act == kActSigmoidGate) {  // the output has one part (pack_program)
      const int64_t C = out.channels, half = np.pre.part_stride(), c0 = o.c0;
      gate_act(pre + c0, cond + c0, pre + half + c0, (np.cond ? cond + C : zeros_.data()) + c0, res + c0, dst + c0, n,
               nd.act == kActTanhGate);
      return;
    }
    for (int64_t q = 0; q < out.parts; ++q) {
      const int64_t base = q * out.part_stride() + o.c0, cbase = np.cond ? q * out.part_channels() + o.c0 : 0;
      add_act(pre + base, cond + cbase, res + (res == zeros_.data() ? 0 : base), dst + base, n, nd.act == kActRelu);
    }
  }

  // A pointwise node at one position, own channels (layouts checked in pack_program: a gate writes
  // one part, concat_elu reads one).
  void pointwise(const NodePlan<T>& np, const T* src, T* dst, int64_t m, int64_t a, int64_t b, const Own& o) {
    const NodeSpec& nd = np.spec;
    const ChannelLayout& in = np.pre;
    const ChannelLayout& out = P_.values[static_cast<size_t>(nd.out)].layout;
    const T* cond = np.cond ? cond_at(np, m, a, b) : nullptr;
    const int64_t n = o.c1 - o.c0, c0 = o.c0;
    if (n <= 0) return;
    const T* z = zeros_.data();
    if (nd.act == kActTanhGate || nd.act == kActSigmoidGate) {
      const int64_t C = out.channels, half = in.part_stride();
      gate_act(src + c0, (cond ? cond : z) + c0, src + half + c0, (cond ? cond + C : z) + c0, z, dst + c0, n,
               nd.act == kActTanhGate);
    } else if (nd.act == kActConcatElu) {
      elu_act(src + c0, (cond ? cond : z) + c0, dst + c0, dst + out.part_stride() + c0, n);
    } else if (in.parts == out.parts && in.part_stride() == out.part_stride()) {
      for (int64_t q = 0; q < out.parts; ++q) {
        const int64_t base = q * out.part_stride() + c0, cbase = q * out.part_channels() + c0;
        const T* k = cond ? cond + cbase : z;
        if (nd.act == kActRelu) {
          add_act(src + base, k, z, dst + base, n, true);
        } else {
          elu_act(src + base, k, dst + base, static_cast<T*>(nullptr), n);
        }
      }
    } else {  // another layout: channel by channel
      for (int64_t q = 0; q < out.parts; ++q)
        for (int64_t c = q * out.part_channels() + c0; c < q * out.part_channels() + o.c1; ++c) {
          const T x = src[in.pos(c)] + (cond ? cond[c] : T(0));
          dst[out.pos(c)] = nd.act == kActRelu ? (x > T(0) ? x : T(0)) : Math<T>::elu(x);
        }
    }
  }

  // Every node's owners for thread t, computed once per run: a pointwise node walks its source's
  // channels for concat_elu, its output's otherwise.
  std::vector<std::vector<Owners>> owners_;
  void owners_of_thread(int t, int threads) {
    TORCH_CHECK(t < static_cast<int>(owners_.size()), "sample_program: a team of ", threads, " threads for ",
                owners_.size(), " thread slots");
    std::vector<Owners>& mine = owners_[static_cast<size_t>(t)];
    mine.resize(P_.nodes.size());
    for (size_t k = 0; k + 1 < P_.nodes.size(); ++k) {
      const NodePlan<T>& np = P_.nodes[k];
      const ChannelLayout& out = P_.values[static_cast<size_t>(np.spec.out)].layout;
      mine[k].pre = own(np.pre, t, threads);
      mine[k].out = own(out, t, threads);
      mine[k].point = np.spec.act == kActConcatElu ? mine[k].pre : mine[k].out;
    }
  }
  const Owners& owners(size_t k, int t) const { return owners_[static_cast<size_t>(t)][k]; }

  // Gathers the rows-above windows of a term for output row a into im2col rows [r0, r1) of
  // n * width (image m, column b); columns where the term is shifted out read zeros.
  void gather_term(const TermSpec& ts, int64_t a, int64_t width, int64_t r0, int64_t r1) {
    const ValuePlan& src = P_.values[static_cast<size_t>(ts.src)];
    const int64_t S = src.layout.stride(), span = ts.kw * S, K = ts.row_taps * span;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t m = r / width, b = r % width;
      T* dst = im2col_.data() + r * K;
      if (b < ts.shift_cols) {
        std::fill(dst, dst + K, T(0));
        continue;
      }
      for (int64_t ty = 0; ty < ts.row_taps; ++ty) {
        const int64_t row = ts.stride * a - ts.top + ty;
        const T* base = row_or_zero(ts.src, m, row) + (src.pad_l + ts.stride * b - ts.left) * S;
        std::memcpy(dst + ty * span, base, static_cast<size_t>(span) * sizeof(T));
      }
    }
  }

  void encode_row(int64_t i, int t, int threads) {
    const int64_t C = S_.C, H = S_.H, W = S_.W;
    const T scale = static_cast<T>(2.0 / static_cast<double>(S_.L - 1));
    Ring<T>& x = rings_[0];
    for (int64_t m = n_ * t / threads; m < n_ * (t + 1) / threads; ++m)
      for (int64_t j = 0; j < W; ++j) {
        T* pos = x.at(m, i, j);
        for (int64_t c = 0; c < C; ++c) pos[c] = static_cast<T>(image_[((m * C + c) * H + i) * W + j]) * scale - T(1);
        if (S_.ones) pos[C] = T(1);
      }
  }

  // -- the row phase --------------------------------------------------------------------------
  void row_step(size_t k, int64_t a, Fences& fences, int t, int threads, std::vector<T>& scratch) {
    const NodePlan<T>& np = P_.nodes[k];
    const NodeSpec& nd = np.spec;
    const ValuePlan& out = P_.values[static_cast<size_t>(nd.out)];
    const bool row_out = out.stream == kStreamRow;
    const int64_t width = out.width, M = n_ * width, ld = np.pre.stride();
    const auto [r0, r1] = team_share(M, t, threads);
    if (nd.kind == kKindLstmCell) {
      if (row_out)
        for (int64_t b = width - 1; b >= 0; --b) lstm_step(k, a, b, fences, t, threads);
      return;
    }
    if (!row_out && !np.row_part) return;
    if (nd.kind == kKindPointwise) {
      if (!np.aligned_src) fences.reads(nd.src);
      const Own& o = owners(k, t).point;
      for (int64_t m = 0; m < n_; ++m)
        for (int64_t b = 0; b < width; ++b)
          pointwise(np, rings_[static_cast<size_t>(nd.src)].at(m, a, b), rings_[static_cast<size_t>(nd.out)].at(m, a, b),
                    m, a, b, o);
      fences.wrote(nd.out);
      return;
    }
    const Own& o = owners(k, t).pre;
    T* buf = row_terms_[k].data();
    for (int64_t m = 0; m < n_; ++m)
      for (int64_t b = 0; b < width; ++b) init_bias(np, buf + (m * width + b) * ld, a, b, o);
    if (nd.kind == kKindUpsample) {
      upsample_row(np, a, width, buf, fences, t, threads, o);
    } else {
      for (const TermPlan<T>& tp : np.terms) {
        const TermSpec& ts = tp.spec;
        if (ts.row_taps == 0 || a < ts.shift_rows) continue;
        fences.before_gather();
        fences.reads(ts.src);
        gather_term(ts, a, width, r0, r1);
        fences.wrote(fences.im2col());
        fences.reads(fences.im2col());
        product(tp.rows, np.pre, im2col_.data(), tp.rows.K, M, buf, ld, o);
        fences.read_im2col();
      }
    }
    if (!row_out) return;  // a PIXEL node's row part: kept for its pixels
    if (nd.residual >= 0 && !np.aligned_residual) fences.reads(nd.residual);
    const Own& oo = owners(k, t).out;
    for (int64_t m = 0; m < n_; ++m)
      for (int64_t b = 0; b < width; ++b) {
        const T* residual = nd.residual >= 0 ? rings_[static_cast<size_t>(nd.residual)].at(m, a, b) : nullptr;
        const ChannelLayout& rl = nd.residual >= 0 ? P_.values[static_cast<size_t>(nd.residual)].layout : out.layout;
        finish(np, buf + (m * width + b) * ld, m, a, b, rings_[static_cast<size_t>(nd.out)].at(m, a, b), residual,
               rl, oo, scratch);
      }
    fences.wrote(nd.out);
  }

  void upsample_row(const NodePlan<T>& np, int64_t a, int64_t width, T* buf, Fences& fences, int t, int threads,
                    const Own& o) {
    const NodeSpec& nd = np.spec;
    const ValuePlan& src = P_.values[static_cast<size_t>(nd.src)];
    const PanelsOf<T>& w = np.upsample[static_cast<size_t>(a % 2)];
    const int64_t S = src.layout.stride(), kw = w.K / S, M = n_ * width;
    const auto [r0, r1] = team_share(M, t, threads);
    fences.before_gather();
    fences.reads(nd.src);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t m = r / width, c = r % width;
      T* dst = im2col_.data() + r * w.K;
      for (int64_t tx = 0; tx < kw; ++tx) {
        const int64_t shifted = c + nd.first_column - tx, ix = shifted / 2;
        if (shifted < 0 || shifted % 2 || ix >= src.width) {
          std::fill(dst + tx * S, dst + (tx + 1) * S, T(0));
        } else {
          std::memcpy(dst + tx * S, rings_[static_cast<size_t>(nd.src)].at(m, a / 2, ix), static_cast<size_t>(S) * sizeof(T));
        }
      }
    }
    fences.wrote(fences.im2col());
    fences.reads(fences.im2col());
    product(w, np.pre, im2col_.data(), w.K, M, buf, np.pre.stride(), o);
    fences.read_im2col();
  }

  // -- the pixel phase ------------------------------------------------------------------------
  void pixel_step(size_t k, int64_t a, int64_t b, Fences& fences, int t, int threads, std::vector<T>& scratch) {
    const NodePlan<T>& np = P_.nodes[k];
    const NodeSpec& nd = np.spec;
    Ring<T>& out = rings_[static_cast<size_t>(nd.out)];
    if (nd.kind == kKindLstmCell) return lstm_step(k, a, b, fences, t, threads);
    if (nd.kind == kKindPointwise) {
      if (!np.aligned_src) fences.reads(nd.src);
      const Own& o = owners(k, t).point;
      for (int64_t m = 0; m < n_; ++m) pointwise(np, rings_[static_cast<size_t>(nd.src)].at(m, a, b), out.at(m, a, b), m, a, b, o);
      fences.wrote(nd.out);
      return;
    }
    const int64_t ld = np.pre.stride();
    const Own& o = owners(k, t).pre;
    T* pre = pre_[k].data();
    const int64_t width = P_.values[static_cast<size_t>(nd.out)].width;
    for (int64_t m = 0; m < n_; ++m) {
      if (np.row_part) {
        const T* row = row_terms_[k].data() + (m * width + b) * ld;
        for (int64_t q = 0; q < np.pre.parts; ++q) {
          const int64_t base = q * np.pre.part_stride();
          std::memcpy(pre + m * ld + base + o.c0, row + base + o.c0, static_cast<size_t>(o.c1 - o.c0) * sizeof(T));
        }
      } else {
        init_bias(np, pre + m * ld, a, b, o);
      }
    }
    if (nd.kind == kKindUpsample) {
      fences.reads(nd.src);
      Ring<T>& src = rings_[static_cast<size_t>(nd.src)];
      product(np.upsample[static_cast<size_t>(2 * (a % 2) + b % 2)], np.pre, src.at(0, a / 2, b / 2),
              src.batch_stride(), n_, pre, ld, o);
    } else {
      for (const TermPlan<T>& tp : np.terms) {
        const TermSpec& ts = tp.spec;
        if (!ts.current_row || !ts.active(a, b)) continue;
        fences.reads(ts.src);
        Ring<T>& src = rings_[static_cast<size_t>(ts.src)];
        product(tp.current, np.pre, src.at(0, ts.stride * a, ts.stride * b - ts.left), src.batch_stride(), n_, pre, ld,
                o);
      }
    }
    if (nd.residual >= 0 && !np.aligned_residual) fences.reads(nd.residual);
    const ChannelLayout& out_layout = P_.values[static_cast<size_t>(nd.out)].layout;
    const Own& oo = owners(k, t).out;
    for (int64_t m = 0; m < n_; ++m) {
      const T* residual = nd.residual >= 0 ? rings_[static_cast<size_t>(nd.residual)].at(m, a, b) : nullptr;
      const ChannelLayout& rl = nd.residual >= 0 ? P_.values[static_cast<size_t>(nd.residual)].layout : out_layout;
      finish(np, pre + m * ld, m, a, b, out.at(m, a, b), residual, rl, oo, scratch);
    }
    fences.wrote(nd.out);
  }

  // An LSTM cell at (a, b): gates + recurrent terms on h, then c and h (own channels).
  void lstm_step(size_t k, int64_t a, int64_t b, Fences& fences, int t, int threads) {
    const NodePlan<T>& np = P_.nodes[k];
    const NodeSpec& nd = np.spec;
    const ChannelLayout& gl = np.pre;
    const int64_t ld = gl.stride(), Hc = gl.part_channels();
    const Own& o = owners(k, t).pre;
    T* pre = pre_[k].data();
    Ring<T>& gates = rings_[static_cast<size_t>(nd.gates)];
    for (int64_t m = 0; m < n_; ++m) {
      init_bias(np, pre + m * ld, a, b, o);
      const T* g = gates.at(m, a, b);
      for (int64_t q = 0; q < 4; ++q)
        for (int64_t c = q * gl.part_stride() + o.c0; c < q * gl.part_stride() + o.c1; ++c) pre[m * ld + c] += g[c];
    }
    const ValuePlan& hp = P_.values[static_cast<size_t>(nd.h)];
    for (const TermPlan<T>& tp : np.terms) {
      const TermSpec& ts = tp.spec;
      if (!ts.active(a, b)) continue;
      fences.reads(nd.h);
      fences.before_gather();
      const int64_t S = hp.layout.stride(), span = ts.kw * S;
      const auto [m0, m1] = team_share(n_, t, threads);
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t ty = 0; ty < ts.kh; ++ty) {
          const T* base = row_or_zero(nd.h, m, a - ts.top + ty) + (hp.pad_l + b - ts.left) * S;
          std::memcpy(im2col_.data() + m * tp.rows.K + ty * span, base, static_cast<size_t>(span) * sizeof(T));
        }
      fences.wrote(fences.im2col());
      fences.reads(fences.im2col());
      product(tp.rows, gl, im2col_.data(), tp.rows.K, n_, pre, ld, o);
      fences.read_im2col();
    }
    const int64_t pa = nd.carry == kCarryAbove ? a - 1 : a;
    const int64_t pb = nd.carry == kCarryLeft ? b - 1 : nd.carry == kCarryRight ? b + 1 : b;
    const bool inside = pa >= 0 && pb >= 0 && pb < hp.width;
    const ChannelLayout& hl = hp.layout;
    const int64_t part = gl.part_stride();
    for (int64_t m = 0; m < n_; ++m) {
      const T* c_prev = inside ? rings_[static_cast<size_t>(nd.c)].at(m, pa, pb) : nullptr;
      T* c_out = rings_[static_cast<size_t>(nd.c)].at(m, a, b);
      T* h_out = rings_[static_cast<size_t>(nd.h)].at(m, a, b);
      const T* g = pre + m * ld;
      for (int64_t c = o.c0; c < std::min(o.c1, Hc); ++c) {
        const T ig = Math<T>::sigmoid(g[c]), fg = Math<T>::sigmoid(g[part + c]), og = Math<T>::sigmoid(g[2 * part + c]);
        const T cell = fg * (c_prev ? c_prev[hl.pos(c)] : T(0)) + ig * Math<T>::tanh(g[3 * part + c]);
        c_out[hl.pos(c)] = cell;
        h_out[hl.pos(c)] = og * Math<T>::tanh(cell);
      }
    }
    fences.wrote(nd.h);
    fences.wrote(nd.c);
  }

  void draw(int64_t i, int64_t j, int64_t colour, Fences& fences, int t, int threads, std::vector<T>& params) {
    const NodeSpec& nd = P_.nodes.back().spec;
    fences.reads(nd.src);
    const int64_t C = S_.C, H = S_.H, W = S_.W, L = S_.L, HW = H * W, K = S_.draw_channels;
    const ChannelLayout& sl = P_.values[static_cast<size_t>(nd.src)].layout;
    Ring<T>& src = rings_[static_cast<size_t>(nd.src)];
    Ring<T>& x = rings_[0];
    const T scale = static_cast<T>(2.0 / static_cast<double>(L - 1));
    const auto [m0, m1] = team_share(n_, t, threads);
    params.resize(static_cast<size_t>(K));
    for (int64_t m = m0; m < m1; ++m) {
      const T* p = src.at(m, i, j);
      if (sl.parts == 1) {
        std::memcpy(params.data(), p, static_cast<size_t>(K) * sizeof(T));
      } else {
        for (int64_t c = 0; c < K; ++c) params[static_cast<size_t>(c)] = p[sl.pos(c)];
      }
      int64_t* image = image_ + m * C * HW + i * W + j;
      const bool* known = known_ + m * C * HW + i * W + j;
      if (S_.categorical()) {
        const T* logits = params.data() + colour * L;
        if (draw_inputs_)
          for (int64_t l = 0; l < L; ++l) draw_inputs_[(m * K + colour * L + l) * HW + i * W + j] = logits[l];
        if (!known[colour * HW]) {
          const double u = static_cast<double>(noise_[(m * C + colour) * HW + i * W + j]);
          image[colour * HW] = categorical_draw(logits, 1, L, u);
        }
        x.at(m, i, j)[colour] = static_cast<T>(image[colour * HW]) * scale - T(1);
        continue;
      }
      if (draw_inputs_)
        for (int64_t c = 0; c < K; ++c) draw_inputs_[(m * K + c) * HW + i * W + j] = params[static_cast<size_t>(c)];
      bool all_known = true;
      for (int64_t c = 0; c < C; ++c) all_known = all_known && known[c * HW];
      if (!all_known) {
        T value[3][kDmolDrawChunk];
        const int64_t M = nd.nr_mix;
        dmol_draw_block<T, T>(C, M, params.data(), 1, noise_ + m * (M + C) * HW + i * W + j, HW, 1, L, value);
        const T steps = static_cast<T>(L - 1);
        for (int64_t c = 0; c < C; ++c) image[c * HW] = static_cast<int64_t>(std::nearbyint((value[c][0] + T(1)) * (steps / T(2))));
      }
      for (int64_t c = 0; c < C; ++c) x.at(m, i, j)[c] = static_cast<T>(image[c * HW]) * scale - T(1);
    }
    fences.wrote(0);
  }

  static std::pair<int64_t, int64_t> team_share(int64_t total, int t, int threads) {
    return {total * t / threads, total * (t + 1) / threads};
  }

  const PackedProgram<T>& P_;
  const ProgramSpec& S_;
  int64_t n0_, n_;
  int64_t* image_;
  const bool* known_;
  const T* noise_;
  T* draw_inputs_;
  std::vector<Ring<T>> rings_;
  std::vector<T> zero_row_, zeros_;
  AlignedVector<T> im2col_;
  std::vector<AlignedVector<T>> row_terms_, pre_;
};

// How the threads share a batch (see the top of the file). A slice needs no barrier but its thread
// streams every per-pixel weight; sharing splits the weights between the threads' caches and the
// work between their cores, but meets at a barrier before most products, so it pays only when there
// is much work per barrier. Measured on 2 threads (Xeon, 2 MB L2 per core; weights all / per pixel):
//   PixelCNN (2.1 / 1.3 MB): at batch 1 one thread beat two sharing (14 against 22 ms); at batch
//     2-4 slices beat sharing 2x;
//   PixelCNN++ (15 / 1.4 MB): at batch 1 sharing beat one thread (70 against 82 ms); at batch 2-4
//     slices beat sharing 1.3x;
//   Gated PixelCNN (25 / 4.9 MB): at batch 1 sharing beat one thread 2x; at batch 2-4 sharing beat
//     slices by 10-15%, at batch 8 slices won by 6%.
constexpr double kShareWeightBytes = 4.0 * 1024 * 1024;  // less: a batch of 1 runs on one thread
constexpr double kSliceWeightBytes = 3.0 * 1024 * 1024;  // more per pixel: slices only from
constexpr int64_t kImagesPerThread = 4;                  // this many images per thread

struct Split {
  int64_t slices;  // run by separate threads, each alone
  int team;        // threads sharing each slice's products
};

// FASTGEN_SAMPLE_SPLIT overrides the choice: "share" (the threads share every product), "slices"
// (each thread samples its own images; fewer threads than images at a small batch) or "auto".
enum class SplitRule { kAuto, kShare, kSlices };

SplitRule split_rule() {
  const char* v = std::getenv("FASTGEN_SAMPLE_SPLIT");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return SplitRule::kAuto;
  if (std::strcmp(v, "share") == 0) return SplitRule::kShare;
  if (std::strcmp(v, "slices") == 0) return SplitRule::kSlices;
  TORCH_CHECK_VALUE(false, "sample_program: FASTGEN_SAMPLE_SPLIT must be auto, share or slices, got '", v, "'");
}

template <typename T>
Split split_batch(const PackedProgram<T>& P, int64_t n, int64_t threads) {
  const SplitRule rule = split_rule();
  if (threads < 2 || at::in_parallel_region()) return {1, 1};
  if (rule == SplitRule::kShare) return {1, static_cast<int>(threads)};
  if (rule == SplitRule::kSlices) return {std::min(n, threads), 1};
  if (n >= threads && (P.pixel_weight_bytes <= kSliceWeightBytes || n >= kImagesPerThread * threads))
    return {threads, 1};
  if (n < threads && P.weight_bytes <= kShareWeightBytes) return {n, 1};
  return {1, static_cast<int>(threads)};
}

template <typename T>
void run_slices(const PackedProgram<T>& P, int64_t n, int64_t* image, const bool* known, const T* noise, T* draw_inputs) {
  const int64_t C = P.spec.C, HW = P.spec.H * P.spec.W, K = P.spec.draw_channels, U = P.spec.noise_channels;
  const Split split = split_batch(P, n, at::get_num_threads());
  if (split.slices == 1) {
    Slice<T> slice(P, 0, n, image, known, noise, draw_inputs, split.team == 1);
    Team team(split.team);
    team.run([&](int t) { slice.run(team, t); });
    return;
  }
  at::parallel_for(0, split.slices, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t b0 = n * s / split.slices, b1 = n * (s + 1) / split.slices;
      Slice<T> slice(P, b0, b1 - b0, image + b0 * C * HW, known + b0 * C * HW, noise + b0 * U * HW,
                     draw_inputs ? draw_inputs + b0 * K * HW : nullptr, true);
      Team team(1);
      team.run([&](int id) { slice.run(team, id); });
    }
  });
}

std::tuple<at::Tensor, at::Tensor> sample_program_cpu(at::TensorList tensors, at::IntArrayRef ints,
                                                      const at::Tensor& image_in, const at::Tensor& known_in,
                                                      const at::Tensor& noise_in, bool return_draw_inputs) {
  const ProgramSpec spec = read_program(tensors, ints, "sample_program");
  check_sample_args(spec, tensors, image_in, known_in, noise_in, "sample_program");
  const int64_t n = image_in.size(0);
  at::Tensor image = image_in.contiguous().clone();
  const at::Tensor known = known_in.contiguous();
  const at::Tensor noise = noise_in.to(spec.dtype).contiguous();
  at::Tensor draw_inputs = at::zeros(return_draw_inputs ? std::vector<int64_t>{n, spec.draw_channels, spec.H, spec.W}
                                                        : std::vector<int64_t>{0},
                                     image.options().dtype(spec.dtype));
  if (n == 0) return {image, draw_inputs};
  AT_DISPATCH_FLOATING_TYPES(spec.dtype, "sample_program", [&] {
    const auto packed = pack_program<scalar_t>(spec, tensors);
    run_slices<scalar_t>(*packed, n, image.data_ptr<int64_t>(), known.const_data_ptr<bool>(),
                         noise.const_data_ptr<scalar_t>(), return_draw_inputs ? draw_inputs.data_ptr<scalar_t>() : nullptr);
  });
  return {image, draw_inputs};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("sample_program", &sample_program_cpu); }

}  // namespace fastgen

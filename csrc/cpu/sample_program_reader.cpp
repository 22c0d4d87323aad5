// The reader of a sampling program's binary layout (csrc/common/sample_program_reader.h) and the
// fastgen::sample_program_describe op, which prints what it read so that tests can compare it
// with the Python side.
#include "../common/sample_program_reader.h"

#include <torch/library.h>

#include <algorithm>
#include <cctype>
#include <sstream>

namespace fastgen {
namespace program {
namespace {

// Far above any real model, low enough that no count or size overflows int64 arithmetic.
constexpr int64_t kMaxCount = 1 << 20;
constexpr int64_t kMaxSize = 1 << 14;
constexpr int64_t kMaxOffset = 64;

class Reader {
 public:
  Reader(at::IntArrayRef ints, const char* op) : ints_(ints), op_(op) {}

  // The next record of `size` fields.
  const int64_t* record(int64_t size, const char* what) {
    TORCH_CHECK(at_ + size <= static_cast<int64_t>(ints_.size()), op_, ": the program's ints end inside a ", what,
                " record (at ", at_, " of ", ints_.size(), ")");
    const int64_t* fields = ints_.data() + at_;
    at_ += size;
    return fields;
  }
  bool done() const { return at_ == static_cast<int64_t>(ints_.size()); }
  int64_t left() const { return static_cast<int64_t>(ints_.size()) - at_; }

 private:
  at::IntArrayRef ints_;
  const char* op_;
  int64_t at_ = 0;
};

std::string lower(const char* name) {
  std::string s(name);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

int64_t act_channels(int64_t act, int64_t channels) {
  if (act == kActConcatElu) return 2 * channels;
  if (act == kActTanhGate || act == kActSigmoidGate) return channels / 2;
  return channels;
}

}  // namespace

ProgramSpec read_program(at::TensorList tensors, at::IntArrayRef ints, const char* op) {
  Reader r(ints, op);
  ProgramSpec p;
  const int64_t* h = r.record(HeaderFields::kSize, "header");
  TORCH_CHECK(h[HeaderFields::kVersion] == kLayoutVersion, op, ": program layout version ", h[HeaderFields::kVersion],
              ", this build reads version ", kLayoutVersion);
  p.C = h[HeaderFields::kImageChannels];
  p.L = h[HeaderFields::kLevels];
  p.H = h[HeaderFields::kHeight];
  p.W = h[HeaderFields::kWidth];
  TORCH_CHECK(p.C == 1 || p.C == 3, op, ": image_channels must be 1 or 3, got ", p.C);
  TORCH_CHECK(p.L >= 2 && p.L <= 65536, op, ": levels must be in [2, 65536], got ", p.L);
  TORCH_CHECK(p.H >= 1 && p.H <= kMaxSize && p.W >= 1 && p.W <= kMaxSize, op, ": image size ", p.H, "x", p.W,
              " outside [1, ", kMaxSize, "]");
  TORCH_CHECK(h[HeaderFields::kOnesChannel] == 0 || h[HeaderFields::kOnesChannel] == 1, op,
              ": ones_channel must be 0 or 1");
  p.ones = h[HeaderFields::kOnesChannel] == 1;
  const int64_t n_values = h[HeaderFields::kValues], n_nodes = h[HeaderFields::kNodes];
  p.n_conds = h[HeaderFields::kConds];
  TORCH_CHECK(n_values >= 1 && n_values <= kMaxCount && n_nodes >= 1 && n_nodes <= kMaxCount && p.n_conds >= 0 &&
                  p.n_conds <= kMaxCount,
              op, ": the program header's counts (", n_values, " values, ", n_nodes, " nodes, ", p.n_conds,
              " conds) are not counts");

  for (int64_t i = 0; i < n_values; ++i) {
    const int64_t* v = r.record(ValueFields::kSize, "value");
    ValueSpec value{v[ValueFields::kChannels], v[ValueFields::kStream], v[ValueFields::kScale]};
    TORCH_CHECK(value.channels >= 1 && value.channels <= kMaxCount, op, ": value ", i, " has ", value.channels,
                " channels");
    TORCH_CHECK(value.stream == kStreamRow || value.stream == kStreamPixel, op, ": value ", i, " has stream ",
                value.stream);
    TORCH_CHECK(value.scale >= 0 && value.scale <= 8 && p.H % (int64_t{1} << value.scale) == 0 &&
                    p.W % (int64_t{1} << value.scale) == 0,
                op, ": value ", i, ": scale ", value.scale, " does not divide the ", p.H, "x", p.W, " image");
    p.values.push_back(value);
  }
  const ValueSpec& image = p.values[0];
  TORCH_CHECK(image.channels == p.C + (p.ones ? 1 : 0) && image.stream == kStreamPixel && image.scale == 0, op,
              ": value 0 must be the image: ", p.C + (p.ones ? 1 : 0), " channels, PIXEL, scale 0");

  const int64_t n_tensors = static_cast<int64_t>(tensors.size());
  TORCH_CHECK(n_tensors >= 1, op, ": a program has at least one weight");
  p.dtype = tensors[0].scalar_type();
  p.device = tensors[0].device();
  TORCH_CHECK(p.dtype == at::kFloat || p.dtype == at::kDouble, op, ": weights must be float32 or float64, got ",
              p.dtype);
  for (int64_t t = 0; t < n_tensors; ++t) {
    const at::Tensor& x = tensors[t];
    TORCH_CHECK(x.defined() && x.scalar_type() == p.dtype && x.device() == p.device && x.is_contiguous(), op,
                ": tensor ", t, " must be a contiguous ", p.dtype, " tensor on ", p.device);
  }

  std::vector<bool> made(static_cast<size_t>(n_values), false);
  made[0] = true;
  int64_t next_tensor = 0;  // tensors are numbered in program order
  auto tensor_index = [&](int64_t i, bool optional, const std::string& where) {
    if (optional && i == -1) return i;
    TORCH_CHECK(i == next_tensor && i < n_tensors, op, ": ", where, ": tensor index ", i, " where ", next_tensor,
                " comes next (of ", n_tensors, ")");
    ++next_tensor;
    return i;
  };
  auto value_index = [&](int64_t v, bool must_exist, const std::string& where, const char* role) {
    TORCH_CHECK(v >= 0 && v < n_values, op, ": ", where, ": ", role, " value ", v, " does not exist");
    TORCH_CHECK(!must_exist || made[static_cast<size_t>(v)], op, ": ", where, ": ", role, " value ", v,
                " is read before a node makes it");
    return v;
  };
  // recurrent_of: the cell whose own h a recurrent term reads, or -1.
  auto read_term = [&](const std::string& where, const ValueSpec& out, int64_t out_channels, int64_t recurrent_of) {
    const int64_t* f = r.record(TermFields::kSize, "term");
    TermSpec t{};
    t.src = f[TermFields::kSrc];
    if (recurrent_of >= 0) {
      TORCH_CHECK(t.src == recurrent_of, op, ": ", where, ": recurrent terms read the cell's own h");
    } else {
      value_index(t.src, true, where, "source");
    }
    t.weight = tensor_index(f[TermFields::kWeight], false, where + " weight");
    t.bias = tensor_index(f[TermFields::kBias], true, where + " bias");
    t.top = f[TermFields::kTop];
    t.left = f[TermFields::kLeft];
    t.stride = f[TermFields::kStride];
    t.shift_rows = f[TermFields::kShiftRows];
    t.shift_cols = f[TermFields::kShiftCols];
    const ValueSpec& src = p.values[static_cast<size_t>(t.src)];
    const at::Tensor& w = tensors[t.weight];
    const int64_t kh = f[TermFields::kKh], kw = f[TermFields::kKw];
    TORCH_CHECK(kh >= 1 && kw >= 1 && kh <= kMaxOffset && kw <= kMaxOffset, op, ": ", where, ": a ", kh, "x", kw,
                " kernel");
    TORCH_CHECK(w.dim() == 4 && w.size(0) == out_channels && w.size(1) == src.channels && w.size(2) == kh &&
                    w.size(3) == kw,
                op, ": ", where, ": weight must be (", out_channels, ", ", src.channels, ", ", kh, ", ", kw, "), got ",
                w.sizes());
    t.out_channels = w.size(0);
    t.in_channels = w.size(1);
    t.kh = w.size(2);
    t.kw = w.size(3);
    if (t.bias >= 0) {
      TORCH_CHECK(tensors[t.bias].dim() == 1 && tensors[t.bias].size(0) == out_channels, op, ": ", where,
                  ": bias must have shape (", out_channels, ",), got ", tensors[t.bias].sizes());
    }
    TORCH_CHECK((t.stride == 1 || t.stride == 2) && src.scale + (t.stride == 2 ? 1 : 0) == out.scale, op, ": ", where,
                ": stride ", t.stride, " from scale ", src.scale, " cannot make scale ", out.scale);
    TORCH_CHECK(t.top >= 0 && t.left >= 0 && t.shift_rows >= 0 && t.shift_cols >= 0 && t.top < kMaxOffset &&
                    t.left < kMaxOffset && t.shift_rows < kMaxOffset && t.shift_cols < kMaxOffset,
                op, ": ", where, ": top, left and shift must lie in [0, ", kMaxOffset, ")");
    TORCH_CHECK(t.kh - 1 <= t.top, op, ": ", where, ": kernel rows below the output row (", t.kh, " rows, top ", t.top,
                ")");
    const bool last_is_output_row = t.kh - 1 == t.top;
    TORCH_CHECK(!(out.stream == kStreamRow && src.stream == kStreamPixel && last_is_output_row), op, ": ", where,
                ": a ROW output may read a PIXEL value's rows above only");
    t.current_row = src.stream == kStreamPixel && last_is_output_row && recurrent_of < 0;
    t.row_taps = t.current_row ? t.kh - 1 : t.kh;
    return t;
  };

  for (int64_t index = 0; index < n_nodes; ++index) {
    const int64_t kind = r.record(1, "node kind")[0];
    TORCH_CHECK(kind >= kKindConv && kind <= kKindMixtureDraw, op, ": node ", index, ": unknown kind ", kind);
    const std::string where = "node " + std::to_string(index) + " (" + lower(kKindNames[kind]) + ")";
    NodeSpec nd;
    nd.kind = kind;
    auto new_output = [&](int64_t v) {
      value_index(v, false, where, "output");
      TORCH_CHECK(!made[static_cast<size_t>(v)], op, ": ", where, ": value ", v, " is made twice");
    };
    if (kind == kKindConv) {
      const int64_t* f = r.record(ConvFields::kSize, "conv");
      nd.out = f[ConvFields::kOut];
      nd.act = f[ConvFields::kAct];
      nd.cond_index = f[ConvFields::kCondIndex];
      nd.cond_offset = f[ConvFields::kCondOffset];
      nd.residual = f[ConvFields::kResidual];
      const int64_t n_terms = f[ConvFields::kNTerms];
      new_output(nd.out);
      TORCH_CHECK(nd.act >= kActNone && nd.act <= kActSigmoidGate && nd.act != kActConcatElu, op, ": ", where,
                  ": act ", nd.act, " is not a Conv activation");
      const ValueSpec& out = p.values[static_cast<size_t>(nd.out)];
      nd.pre_channels = (nd.act == kActTanhGate || nd.act == kActSigmoidGate) ? 2 * out.channels : out.channels;
      TORCH_CHECK(n_terms >= 1 && n_terms <= r.left(), op, ": ", where, ": ", n_terms, " terms");
      for (int64_t k = 0; k < n_terms; ++k)
        nd.terms.push_back(read_term(where + " term " + std::to_string(k), out, nd.pre_channels, -1));
      if (nd.residual != -1) {
        value_index(nd.residual, true, where, "residual");
        const ValueSpec& res = p.values[static_cast<size_t>(nd.residual)];
        TORCH_CHECK(res.channels == out.channels && res.stream == out.stream && res.scale == out.scale, op, ": ",
                    where, ": the residual must have the output's channels, stream and scale");
      }
    } else if (kind == kKindPointwise) {
      const int64_t* f = r.record(PointwiseFields::kSize, "pointwise");
      nd.out = f[PointwiseFields::kOut];
      nd.src = f[PointwiseFields::kSrc];
      nd.act = f[PointwiseFields::kAct];
      nd.cond_index = f[PointwiseFields::kCondIndex];
      nd.cond_offset = f[PointwiseFields::kCondOffset];
      new_output(nd.out);
      value_index(nd.src, true, where, "source");
      TORCH_CHECK(nd.act > kActNone && nd.act <= kActSigmoidGate, op, ": ", where, ": act ", nd.act,
                  " is not a Pointwise activation");
      const ValueSpec& src = p.values[static_cast<size_t>(nd.src)];
      const ValueSpec& out = p.values[static_cast<size_t>(nd.out)];
      const bool gate = nd.act == kActTanhGate || nd.act == kActSigmoidGate;
      TORCH_CHECK(!(gate && src.channels % 2) && out.channels == act_channels(nd.act, src.channels) &&
                      out.stream == src.stream && out.scale == src.scale,
                  op, ": ", where, ": ", kActNames[nd.act], " of value ", nd.src, " cannot make value ", nd.out);
      nd.pre_channels = src.channels;
    } else if (kind == kKindUpsample) {
      const int64_t* f = r.record(UpsampleFields::kSize, "upsample");
      nd.out = f[UpsampleFields::kOut];
      nd.src = f[UpsampleFields::kSrc];
      nd.first_column = f[UpsampleFields::kFirstColumn];
      new_output(nd.out);
      value_index(nd.src, true, where, "source");
      nd.weight = tensor_index(f[UpsampleFields::kWeight], false, where + " weight");
      nd.bias = tensor_index(f[UpsampleFields::kBias], true, where + " bias");
      const ValueSpec& src = p.values[static_cast<size_t>(nd.src)];
      const ValueSpec& out = p.values[static_cast<size_t>(nd.out)];
      const at::Tensor& w = tensors[nd.weight];
      const int64_t kw = f[UpsampleFields::kKw];
      TORCH_CHECK(kw >= 1 && kw <= kMaxOffset && w.dim() == 4 && w.size(0) == src.channels &&
                      w.size(1) == out.channels && w.size(2) == 2 && w.size(3) == kw,
                  op, ": ", where, ": weight must be (", src.channels, ", ", out.channels, ", 2, ", kw, "), got ",
                  w.sizes());
      if (nd.bias >= 0) {
        TORCH_CHECK(tensors[nd.bias].dim() == 1 && tensors[nd.bias].size(0) == out.channels, op, ": ", where,
                    ": bias must have shape (", out.channels, ",)");
      }
      TORCH_CHECK(src.scale == out.scale + 1 && src.stream == out.stream, op, ": ", where,
                  ": upsamples a value of the same stream from the scale above");
      TORCH_CHECK(nd.first_column >= 0 && nd.first_column < w.size(3), op, ": ", where, ": first_column ",
                  nd.first_column, " outside the kernel");
      TORCH_CHECK(out.stream == kStreamRow || (w.size(3) == 2 && nd.first_column == 0), op, ": ", where,
                  ": a PIXEL upsample reads (r // 2, c // 2) only: kernel (2, 2), first_column 0");
      nd.pre_channels = out.channels;
    } else if (kind == kKindLstmCell) {
      const int64_t* f = r.record(LstmCellFields::kSize, "lstm_cell");
      nd.h = f[LstmCellFields::kH];
      nd.c = f[LstmCellFields::kC];
      nd.gates = f[LstmCellFields::kGates];
      nd.carry = f[LstmCellFields::kCarry];
      const int64_t n_terms = f[LstmCellFields::kNTerms];
      new_output(nd.h);
      new_output(nd.c);
      value_index(nd.gates, true, where, "gates");
      TORCH_CHECK(nd.h != nd.c, op, ": ", where, ": h and c must be two values");
      const ValueSpec& hv = p.values[static_cast<size_t>(nd.h)];
      const ValueSpec& cv = p.values[static_cast<size_t>(nd.c)];
      const ValueSpec& gv = p.values[static_cast<size_t>(nd.gates)];
      TORCH_CHECK(hv.channels == cv.channels && hv.stream == cv.stream && hv.scale == cv.scale &&
                      gv.channels == 4 * hv.channels && gv.stream == hv.stream && gv.scale == hv.scale,
                  op, ": ", where, ": h and c must be values of H channels and gates one of 4H, same stream and scale");
      TORCH_CHECK(nd.carry >= kCarryAbove && nd.carry <= kCarryRight &&
                      (nd.carry == kCarryRight) == (hv.stream == kStreamRow),
                  op, ": ", where, ": carry RIGHT is for a ROW cell, ABOVE and LEFT for a PIXEL cell");
      TORCH_CHECK(n_terms >= 0 && n_terms <= r.left(), op, ": ", where, ": ", n_terms, " terms");
      nd.out = nd.h;
      nd.pre_channels = gv.channels;
      for (int64_t k = 0; k < n_terms; ++k)
        nd.terms.push_back(read_term(where + " term " + std::to_string(k), gv, gv.channels, nd.h));
    } else {
      const int64_t* f = r.record(kind == kKindCategoricalDraw ? CategoricalDrawFields::kSize : MixtureDrawFields::kSize,
                                  lower(kKindNames[kind]).c_str());
      nd.src = f[0];
      value_index(nd.src, true, where, "source");
      if (kind == kKindMixtureDraw) {
        nd.nr_mix = f[MixtureDrawFields::kNrMix];
        TORCH_CHECK(nd.nr_mix >= 1 && nd.nr_mix <= kMaxSize, op, ": ", where, ": nr_mix must be positive, got ",
                    nd.nr_mix);
      }
      TORCH_CHECK(index == n_nodes - 1, op, ": ", where, ": a draw must be the last node");
    }
    // Conditioning: channels [offset, offset + pre) of a (N, Hc, Wc, K) tensor.
    if (nd.cond_index != -1) {
      TORCH_CHECK(nd.cond_index >= 0 && nd.cond_index < p.n_conds, op, ": ", where, ": cond ", nd.cond_index,
                  " does not exist");
    }
    if (kind == kKindLstmCell) {
      made[static_cast<size_t>(nd.h)] = made[static_cast<size_t>(nd.c)] = true;
    } else if (nd.out >= 0) {
      made[static_cast<size_t>(nd.out)] = true;
    }
    p.nodes.push_back(std::move(nd));
  }
  TORCH_CHECK(r.done(), op, ": the program's ints continue after the last node (", r.left(), " left)");
  const NodeSpec& draw = p.nodes.back();
  TORCH_CHECK(draw.kind == kKindCategoricalDraw || draw.kind == kKindMixtureDraw, op,
              ": the last node must be a categorical or mixture draw");
  p.draw_channels = draw.kind == kKindMixtureDraw ? draw.nr_mix * (p.C == 3 ? 10 : 3) : p.C * p.L;
  p.noise_channels = p.C + (draw.kind == kKindMixtureDraw ? draw.nr_mix : 0);
  const ValueSpec& src = p.values[static_cast<size_t>(draw.src)];
  TORCH_CHECK(src.channels == p.draw_channels && src.stream == kStreamPixel && src.scale == 0, op,
              ": the draw reads a PIXEL value at scale 0 of ", p.draw_channels, " channels, got ", src.channels);

  p.first_cond = next_tensor;
  TORCH_CHECK(n_tensors == p.first_cond + p.n_conds, op, ": the program names ", p.first_cond, " weights and ",
              p.n_conds, " conditioning tensors, got ", n_tensors, " tensors");
  for (int64_t k = 0; k < p.n_conds; ++k) {
    const at::Tensor& c = tensors[p.first_cond + k];
    const bool spatial = c.dim() == 4 && c.size(1) == p.H && c.size(2) == p.W;
    const bool klass = c.dim() == 4 && c.size(1) == 1 && c.size(2) == 1;
    TORCH_CHECK(spatial || klass, op, ": cond ", k, " must be (N, 1, 1, K) or (N, ", p.H, ", ", p.W, ", K), got ",
                c.sizes());
  }
  for (size_t index = 0; index < p.nodes.size(); ++index) {
    const NodeSpec& nd = p.nodes[index];
    if (nd.cond_index == -1) continue;
    const at::Tensor& c = tensors[p.first_cond + nd.cond_index];
    TORCH_CHECK(nd.cond_offset >= 0 && nd.cond_offset + nd.pre_channels <= c.size(3), op, ": node ", index,
                ": cond channels [", nd.cond_offset, ", ", nd.cond_offset + nd.pre_channels, ") outside its ",
                c.size(3));
    TORCH_CHECK(c.size(1) == 1 || p.values[static_cast<size_t>(nd.out)].scale == 0, op, ": node ", index,
                ": a spatial conditioning map can only be added at scale 0");
  }
  return p;
}

void check_sample_args(const ProgramSpec& p, at::TensorList tensors, const at::Tensor& image, const at::Tensor& known,
                       const at::Tensor& noise, const char* op) {
  TORCH_CHECK(image.dim() == 4 && image.scalar_type() == at::kLong && image.size(1) == p.C && image.size(2) == p.H &&
                  image.size(3) == p.W,
              op, ": image must be int64 (N, ", p.C, ", ", p.H, ", ", p.W, "), got ", image.scalar_type(), " ",
              image.sizes());
  const int64_t n = image.size(0);
  TORCH_CHECK(known.scalar_type() == at::kBool && known.sizes() == image.sizes(), op,
              ": known must be bool of the image's shape ", image.sizes(), ", got ", known.scalar_type(), " ",
              known.sizes());
  TORCH_CHECK(noise.scalar_type() == at::kDouble && noise.dim() == 4 && noise.size(0) == n &&
                  noise.size(1) == p.noise_channels && noise.size(2) == p.H && noise.size(3) == p.W,
              op, ": noise must be float64 (", n, ", ", p.noise_channels, ", ", p.H, ", ", p.W, "), got ",
              noise.scalar_type(), " ", noise.sizes());
  for (const at::Tensor* t : {&image, &known, &noise})
    TORCH_CHECK(t->device() == p.device, op, ": image, known and noise must be on the weights' device ", p.device);
  for (int64_t k = 0; k < p.n_conds; ++k)
    TORCH_CHECK(tensors[p.first_cond + k].size(0) == n, op, ": cond ", k, " has ", tensors[p.first_cond + k].size(0),
                " rows for a batch of ", n);
}

std::string describe_program(const ProgramSpec& p, at::TensorList tensors) {
  std::ostringstream s;
  auto shape = [&](int64_t t) {
    if (t < 0) return std::string("-");
    std::string out;
    for (int64_t d = 0; d < tensors[t].dim(); ++d) out += (d ? "x" : "") + std::to_string(tensors[t].size(d));
    return out;
  };
  auto cond = [](const NodeSpec& nd) {
    return nd.cond_index < 0 ? std::string("-") : std::to_string(nd.cond_index) + "+" + std::to_string(nd.cond_offset);
  };
  s << "program C=" << p.C << " L=" << p.L << " H=" << p.H << " W=" << p.W << " ones=" << (p.ones ? 1 : 0) << "\n";
  for (size_t i = 0; i < p.values.size(); ++i)
    s << "value " << i << " channels=" << p.values[i].channels << " stream=" << kStreamNames[p.values[i].stream]
      << " scale=" << p.values[i].scale << "\n";
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const NodeSpec& nd = p.nodes[i];
    s << "node " << i << " " << lower(kKindNames[nd.kind]);
    switch (nd.kind) {
      case kKindConv:
        s << " out=" << nd.out << " act=" << kActNames[nd.act] << " cond=" << cond(nd)
          << " residual=" << (nd.residual < 0 ? std::string("-") : std::to_string(nd.residual));
        break;
      case kKindPointwise:
        s << " out=" << nd.out << " src=" << nd.src << " act=" << kActNames[nd.act] << " cond=" << cond(nd);
        break;
      case kKindUpsample:
        s << " out=" << nd.out << " src=" << nd.src << " weight=" << shape(nd.weight) << " bias=" << shape(nd.bias)
          << " first_column=" << nd.first_column;
        break;
      case kKindLstmCell:
        s << " h=" << nd.h << " c=" << nd.c << " gates=" << nd.gates << " carry=" << kCarryNames[nd.carry];
        break;
      case kKindCategoricalDraw:
        s << " src=" << nd.src;
        break;
      default:
        s << " src=" << nd.src << " nr_mix=" << nd.nr_mix;
    }
    s << "\n";
    for (const TermSpec& t : nd.terms)
      s << "  term src=" << t.src << " weight=" << shape(t.weight) << " bias=" << shape(t.bias) << " top=" << t.top
        << " left=" << t.left << " stride=" << t.stride << " shift=" << t.shift_rows << "," << t.shift_cols << "\n";
  }
  for (int64_t k = 0; k < p.n_conds; ++k) s << "cond " << k << " " << shape(p.first_cond + k) << "\n";
  return s.str();
}

namespace {

std::string sample_program_describe_cpu(at::TensorList tensors, at::IntArrayRef ints) {
  return describe_program(read_program(tensors, ints, "sample_program_describe"), tensors);
}

}  // namespace
}  // namespace program

TORCH_LIBRARY_IMPL(fastgen, CPU, m) { m.impl("sample_program_describe", &program::sample_program_describe_cpu); }

}  // namespace fastgen

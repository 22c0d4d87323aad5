// The compiled interpreters' reader of a sampling program (fastgen/program.py): the ints of
// SamplingProgram.encode() parsed into structs, with every index, count, shape, dtype and device
// checked against the layout (csrc/common/sample_program_layout.h) before any kernel touches
// memory. torch.ops.fastgen.sample_program is public, so the reader trusts nothing the Python
// wrapper checked. Host code, shared by the C++ interpreter, the CUDA launcher and its CPU emulation.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "sample_program_layout.h"

namespace fastgen {
namespace program {

struct TermSpec {
  int64_t src, weight, bias, top, left, stride, shift_rows, shift_cols;
  int64_t out_channels, in_channels, kh, kw;  // of the weight
  // The kernel rows computed once per row (the rows above the output row, or every row of a ROW
  // value), and whether the last kernel row is the output row of a PIXEL value (the per-pixel part).
  int64_t row_taps;
  bool current_row;
  // Taps of the current row up to the output column: min(kw, left + 1).
  int64_t current_taps() const { return kw < left + 1 ? kw : left + 1; }
  bool active(int64_t a, int64_t b) const { return a >= shift_rows && b >= shift_cols; }
};

struct NodeSpec {
  int64_t kind = -1;
  int64_t out = -1, src = -1, act = kActNone, cond_index = -1, cond_offset = 0, residual = -1;
  int64_t weight = -1, bias = -1, first_column = 0;  // upsample
  int64_t h = -1, c = -1, gates = -1, carry = kCarryAbove;  // lstm_cell (out = h)
  int64_t nr_mix = 0;  // mixture_draw
  std::vector<TermSpec> terms;
  // Channels before the activation (twice the output's for a gate).
  int64_t pre_channels = 0;
};

struct ValueSpec {
  int64_t channels, stream, scale;
};

struct ProgramSpec {
  int64_t C = 0, L = 0, H = 0, W = 0;
  bool ones = false;
  std::vector<ValueSpec> values;
  std::vector<NodeSpec> nodes;
  int64_t first_cond = 0, n_conds = 0;
  int64_t draw_channels = 0, noise_channels = 0;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);

  const NodeSpec& draw() const { return nodes.back(); }
  bool categorical() const { return draw().kind == kKindCategoricalDraw; }
  // Colour passes per pixel: a categorical draw recomputes the pixel for each colour.
  int64_t passes() const { return categorical() ? C : 1; }
  int64_t width(int64_t v) const { return W >> values[v].scale; }
  int64_t height(int64_t v) const { return H >> values[v].scale; }
};

// Parses and checks a program ("sample_program: ..." errors); `op` names the caller in messages.
ProgramSpec read_program(at::TensorList tensors, at::IntArrayRef ints, const char* op);

// Checks the sampler call's other arguments against the program: image (N, C, H, W) int64,
// known of its shape bool, noise (N, noise channels, H, W) float64, conditioning tensors with N
// rows, everything on the program's device.
void check_sample_args(const ProgramSpec& p, at::TensorList tensors, const at::Tensor& image, const at::Tensor& known,
                       const at::Tensor& noise, const char* op);

// One line per value, node and term, as SamplingProgram.describe() prints them.
std::string describe_program(const ProgramSpec& p, at::TensorList tensors);

}  // namespace program
}  // namespace fastgen

// Host side of the block interpreter (sample_program_block.cuh), shared by the CUDA launcher and
// its CPU emulation: the program read and checked (sample_program_reader.h), the weights
// transposed for the block's reads, the workspace laid out, and the tables the kernel reads.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/sample_program_reader.h"
#include "sample_program_block.cuh"

namespace fastgen {
namespace program {
namespace block {

template <typename T>
struct Launch {
  Program<T> program{};
  std::vector<at::Tensor> keep;  // the transposed weights and the tables: alive as long as the launch
  at::Tensor image, known, noise, draw_inputs, workspace;
  int64_t n = 0;
  Image<T> image_of(int64_t b) {
    const int64_t HW = program.H * program.W;
    return Image<T>{image.data_ptr<int64_t>() + b * program.C * HW, known.const_data_ptr<bool>() + b * program.C * HW,
                    noise.const_data_ptr<T>() + b * program.noise_channels * HW,
                    draw_inputs.numel() ? draw_inputs.data_ptr<T>() + b * program.draw_channels * HW : nullptr,
                    workspace.data_ptr<T>() + b * program.workspace, b};
  }
};

// Host copies of the tables, moved to the device in one byte tensor.
template <typename Row>
int64_t append_table(std::vector<unsigned char>& bytes, const std::vector<Row>& rows) {
  const int64_t offset = static_cast<int64_t>((bytes.size() + 15) / 16 * 16);
  bytes.resize(static_cast<size_t>(offset) + rows.size() * sizeof(Row));
  if (!rows.empty()) std::memcpy(bytes.data() + offset, rows.data(), rows.size() * sizeof(Row));
  return offset;
}

template <typename T>
Launch<T> prepare(const ProgramSpec& spec, at::TensorList tensors, const at::Tensor& image_in, const at::Tensor& known_in,
                  const at::Tensor& noise_in, bool return_draw_inputs) {
  Launch<T> run;
  Program<T>& P = run.program;
  P.C = spec.C;
  P.L = spec.L;
  P.H = spec.H;
  P.W = spec.W;
  P.ones = spec.ones;
  P.passes = spec.passes();
  P.categorical = spec.categorical();
  P.draw_src = spec.draw().src;
  P.nr_mix = spec.draw().nr_mix;
  P.draw_channels = spec.draw_channels;
  P.noise_channels = spec.noise_channels;
  P.n_values = static_cast<int64_t>(spec.values.size());
  P.n_nodes = static_cast<int64_t>(spec.nodes.size());
  auto keep = [&](at::Tensor t) -> const T* {
    run.keep.push_back(t.contiguous());
    return run.keep.back().template const_data_ptr<T>();
  };

  // Values: rings of the rows their readers need, zero columns for every window.
  std::vector<Value> values(spec.values.size());
  for (size_t v = 0; v < values.size(); ++v)
    values[v] = Value{spec.values[v].channels, spec.values[v].stream, 1, spec.W >> spec.values[v].scale, 0, 0, 0};
  std::vector<int64_t> pad_r(values.size(), 0);
  for (const NodeSpec& nd : spec.nodes) {
    for (const TermSpec& t : nd.terms) {
      Value& x = values[static_cast<size_t>(t.src)];
      x.rows = std::max(x.rows, t.top + 1);
      x.pad_l = std::max(x.pad_l, t.left);
      pad_r[static_cast<size_t>(t.src)] = std::max(pad_r[static_cast<size_t>(t.src)], t.kw);
    }
    if (nd.kind == kKindLstmCell) {
      Value& c = values[static_cast<size_t>(nd.c)];
      c.rows = std::max<int64_t>(c.rows, 2);
      c.pad_l = std::max<int64_t>(c.pad_l, 1);
      pad_r[static_cast<size_t>(nd.c)] = std::max<int64_t>(pad_r[static_cast<size_t>(nd.c)], 1);
    }
  }
  int64_t offset = 0;
  for (size_t v = 0; v < values.size(); ++v) {
    Value& x = values[v];
    x.wp = x.pad_l + x.width + pad_r[v];
    x.offset = offset;
    offset += x.rows * x.wp * x.channels;
  }

  // Terms and nodes, weights transposed to (K, O) with K = (tap row, tap column, input channel).
  std::vector<Term<T>> terms;
  std::vector<Node<T>> nodes;
  for (const NodeSpec& nd : spec.nodes) {
    Node<T> node{};
    node.kind = nd.kind;
    node.out = nd.kind == kKindCategoricalDraw || nd.kind == kKindMixtureDraw ? nd.src : nd.out;
    node.src = nd.src;
    node.act = nd.act;
    node.residual = nd.residual;
    node.pre = nd.pre_channels;
    node.h = nd.h;
    node.c = nd.c;
    node.gates = nd.gates;
    node.carry = nd.carry;
    node.nr_mix = nd.nr_mix;
    node.first_column = nd.first_column;
    node.rowbuf = node.scratch = -1;
    node.term0 = static_cast<int64_t>(terms.size());
    node.n_terms = static_cast<int64_t>(nd.terms.size());
    bool row_part = false;
    for (const TermSpec& t : nd.terms) {
      const at::Tensor& w = tensors[t.weight];
      Term<T> term{t.src, t.top, t.left, t.stride, t.shift_rows, t.shift_cols, t.kw, t.row_taps, 0, nullptr, nullptr,
                   nullptr};
      if (t.row_taps > 0) {
        term.w_rows = keep(w.narrow(2, 0, t.row_taps).permute({2, 3, 1, 0}));
        row_part = true;
      }
      if (t.current_row) {
        term.current_taps = t.current_taps();
        term.w_current = keep(w.select(2, t.kh - 1).narrow(2, 0, t.current_taps()).permute({2, 1, 0}));
      }
      if (t.bias >= 0) term.bias = keep(tensors[t.bias]);
      terms.push_back(term);
    }
    if (nd.kind == kKindUpsample) {
      const at::Tensor& w = tensors[nd.weight];
      node.up_kw = w.size(3);
      node.up_w = keep(w.permute({2, 3, 0, 1}));
      node.up_bias = nd.bias >= 0 ? keep(tensors[nd.bias]) : nullptr;
    }
    if (nd.cond_index >= 0) {
      const at::Tensor& c = tensors[spec.first_cond + nd.cond_index];
      node.cond = c.const_data_ptr<T>();
      node.cond_hc = c.size(1);
      node.cond_wc = c.size(2);
      node.cond_k = c.size(3);
      node.cond_offset = nd.cond_offset;
    }
    const bool is_draw = nd.kind == kKindCategoricalDraw || nd.kind == kKindMixtureDraw;
    const bool row_out = !is_draw && spec.values[static_cast<size_t>(nd.out)].stream == kStreamRow;
    if ((nd.kind == kKindConv && (row_out || row_part)) || (nd.kind == kKindUpsample && row_out)) {
      node.rowbuf = offset;
      offset += spec.width(nd.out) * node.pre;
    }
    if (nd.kind == kKindLstmCell) {
      node.scratch = offset;
      offset += node.pre;
    }
    nodes.push_back(node);
  }
  P.workspace = offset;

  std::vector<unsigned char> bytes;
  const int64_t values_at = append_table(bytes, values);
  const int64_t terms_at = append_table(bytes, terms);
  const int64_t nodes_at = append_table(bytes, nodes);
  at::Tensor table = at::empty({static_cast<int64_t>(bytes.size())}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(table.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  table = table.to(image_in.device());
  run.keep.push_back(table);
  const unsigned char* base = table.const_data_ptr<uint8_t>();
  P.values = reinterpret_cast<const Value*>(base + values_at);
  P.terms = reinterpret_cast<const Term<T>*>(base + terms_at);
  P.nodes = reinterpret_cast<const Node<T>*>(base + nodes_at);

  run.n = image_in.size(0);
  run.image = image_in.contiguous().clone();
  run.known = known_in.contiguous();
  run.noise = noise_in.to(spec.dtype).contiguous();
  run.draw_inputs = at::zeros(return_draw_inputs ? std::vector<int64_t>{run.n, spec.draw_channels, spec.H, spec.W}
                                                 : std::vector<int64_t>{0},
                              image_in.options().dtype(spec.dtype));
  run.workspace = at::zeros({std::max<int64_t>(1, run.n * P.workspace)}, image_in.options().dtype(spec.dtype));
  return run;
}

}  // namespace block
}  // namespace program
}  // namespace fastgen

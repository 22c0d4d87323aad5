// Host side of the block sampler (block_sampler.cuh), shared by the CUDA launcher and the CPU
// emulation: checks, sizes read from the block plan, the per-image workspace and the pointer table.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

#include "block_sampler.cuh"

namespace fastgen {
namespace block_sampler {

// The tensors of a sampler call: the start image copied (the sampler fills it in place), the known
// mask, the noise, and the logits of every draw (N, L, C, H, W), or an empty tensor.
struct SampleTensors {
  at::Tensor image, known, noise, logits;
  int64_t levels = 0;
  int64_t n() const { return image.size(0); }
};

inline SampleTensors sample_tensors(const at::Tensor& image, const at::Tensor& known, const at::Tensor& noise,
                                    int64_t levels, bool return_logits) {
  TORCH_CHECK(image.dim() == 4 && image.scalar_type() == at::kLong, "image must be int64 (N, C, H, W)");
  TORCH_CHECK(known.scalar_type() == at::kBool && known.sizes() == image.sizes(), "known must be bool, like image");
  TORCH_CHECK(noise.scalar_type() == at::kDouble && noise.sizes() == image.sizes(), "noise must be float64, like image");
  SampleTensors t;
  t.image = image.contiguous().clone();
  t.known = known.contiguous();
  t.noise = noise.contiguous();
  const int64_t n = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  t.logits = at::empty(return_logits ? std::vector<int64_t>{n, levels, C, H, W} : std::vector<int64_t>{0},
                       image.options().dtype(at::kFloat));
  t.levels = levels;
  return t;
}

// The canvas of image b, drawing into `map` (its encoded copy, (H + pad, W + 2 pad, C)).
inline Canvas canvas_of(SampleTensors& t, int64_t b, int64_t pad, float* map) {
  const int64_t C = t.image.size(1), H = t.image.size(2), W = t.image.size(3), L = t.levels;
  const int64_t plane = C * H * W;
  return Canvas{t.image.data_ptr<int64_t>() + b * plane,
                t.known.data_ptr<bool>() + b * plane,
                t.noise.data_ptr<double>() + b * plane,
                t.logits.numel() ? t.logits.data_ptr<float>() + b * L * plane : nullptr,
                map, C, H, W, L, pad, static_cast<float>(2.0 / static_cast<double>(L - 1))};
}

// Everything a launch needs, with the tensors that own the memory.
struct Launch {
  bool gated = false;
  PixelCNNDims pixelcnn{};
  GatedDims gated_dims{};
  int64_t workspace_per_image = 0, cond_per_image = 0, cond_hc = 1, cond_wc = 1, pad = 0;
  SampleTensors out;
  at::Tensor workspace, pointers, cond;
  int64_t n() const { return out.n(); }
  Canvas canvas(int64_t b) { return canvas_of(out, b, pad, nullptr); }  // the map lives in the workspace
};

inline Launch prepare(const std::string& model, at::TensorList plan, const std::optional<at::Tensor>& cond,
                      const at::Tensor& image_in, const at::Tensor& known_in, const at::Tensor& noise_in,
                      int64_t levels, bool return_logits) {
  TORCH_CHECK(model == "pixelcnn" || model == "gated_pixelcnn", "model must be 'pixelcnn' or 'gated_pixelcnn', got ",
              model);
  for (const auto& t : plan) {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device() == image_in.device(),
                "the block plan must be contiguous float32 tensors on the image's device");
  }
  Launch run;
  run.gated = model == "gated_pixelcnn";
  run.out = sample_tensors(image_in, known_in, noise_in, levels, return_logits);
  const int64_t n = run.n(), C = image_in.size(1), H = image_in.size(2), W = image_in.size(3);
  int64_t layers = 0, total = 0;
  if (run.gated) {
    TORCH_CHECK(plan.size() > 5 && (plan.size() - 5) % 8 == 0, "a Gated PixelCNN block plan has 8 per layer + 5 tensors");
    layers = static_cast<int64_t>(plan.size() - 5) / 8;
    // The first layer's horizontal taps are (p + 1) x C rows of its matrix, and k = 2p + 1.
    GatedDims d{layers, C, H, W, levels, 2 * (plan[4].size(0) / C) - 1, plan[5].size(0), plan[7].size(1),
                plan[plan.size() - 4].size(1)};
    TORCH_CHECK(d.k >= 3, "a Gated PixelCNN kernel is at least 3 wide, got ", d.k);
    run.gated_dims = d;
    run.pad = d.p();
    total = GatedWorkspace(d).total;
  } else {
    TORCH_CHECK(plan.size() >= 7 && (plan.size() - 7) % 7 == 0, "a PixelCNN block plan has 3 + 7 per block + 4 tensors");
    layers = static_cast<int64_t>(plan.size() - 7) / 7;
    PixelCNNDims d{layers, C, H, W, levels, 2 * (plan[1].size(0) / C) - 1, plan[1].size(1), 0, 1,
                   plan[plan.size() - 4].size(1)};
    if (layers > 0) {
      d.half = plan[3].size(1);
      d.k = 2 * (plan[6].size(0) / d.half) - 1;
    }
    run.pixelcnn = d;
    run.pad = d.q();
    total = PixelCNNWorkspace(d).total;
  }
  TORCH_CHECK(plan[plan.size() - 2].size(1) == C * levels, "the plan's head has ", plan[plan.size() - 2].size(1),
              " outputs but C * levels = ", C * levels);
  run.workspace_per_image = total;
  run.workspace = at::zeros({n * total}, image_in.options().dtype(at::kFloat));
  std::vector<int64_t> addresses;
  for (const auto& t : plan) addresses.push_back(reinterpret_cast<int64_t>(t.data_ptr<float>()));
  run.pointers = at::tensor(addresses, at::kLong).to(image_in.device());
  if (cond) {
    // (layers, N, Hc, Wc, K) -> (N, layers, Hc, Wc, K): each image's terms contiguous.
    TORCH_CHECK(cond->dim() == 5 && cond->size(1) == n && cond->scalar_type() == at::kFloat,
                "cond must be float32 (layers, N, Hc, Wc, K)");
    run.cond = cond->permute({1, 0, 2, 3, 4}).contiguous();
    run.cond_hc = cond->size(2);
    run.cond_wc = cond->size(3);
    run.cond_per_image = run.cond.numel() / n;
  }
  return run;
}

}  // namespace block_sampler
}  // namespace fastgen

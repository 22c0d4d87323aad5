"""The schema of every fastgen op, declared once.

Declaring schemas in Python means the ops exist even when the C++ extension did not build; the
extension only adds implementations (``TORCH_LIBRARY_IMPL(fastgen, CPU/CUDA, m)``).
"""
import torch

lib = torch.library.Library("fastgen", "DEF")

# masked_conv2d: PixelCNN masked convolution (stride 1, "same" zero padding, odd square kernel).
lib.define("masked_conv2d(Tensor x, Tensor weight, Tensor? bias, str mask_type, int color_groups) -> Tensor")
# Gradients of x, weight and bias in one call (implementations share work between them); an
# entry whose output_mask is False comes back as an empty tensor.
lib.define(
    "masked_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, str mask_type, int color_groups, "
    "bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
)

# gated_activation: tanh(a + c_a) * sigmoid(b + c_b) over the two channel halves of x.
lib.define("gated_activation(Tensor x, Tensor? cond) -> Tensor")
# Returns grad_x and its sum over H and W, which is the gradient of an (N, 2C) cond (fused, one pass).
lib.define("gated_activation_backward(Tensor grad_out, Tensor x, Tensor? cond) -> (Tensor, Tensor)")

# categorical_nll: softmax cross-entropy over levels, summed per image. logits (N, L, C, H, W),
# target (N, C, H, W) int64 -> (nll (N,), lse (N, C, H, W)); lse (logsumexp over levels, float32
# or float64) is what the backward needs instead of a saved softmax.
lib.define("categorical_nll(Tensor logits, Tensor target) -> (Tensor, Tensor)")
# grad_logits = grad[n] * (exp(logits - lse) - onehot(target)), in the logits' layout.
lib.define("categorical_nll_backward(Tensor grad, Tensor logits, Tensor target, Tensor lse) -> Tensor")

# sample_program: cached incremental sampling of a sampling program (fastgen/program.py), given as
# SamplingProgram.encode()'s (tensors, ints): the start image (N, C, H, W) int64, the known mask
# (N, C, H, W) bool, uniform float64 noise (N, noise channels, H, W). Returns the images and, when
# return_draw_inputs, the draw's inputs at every pixel (N, K, H, W) in the program's dtype.
_SAMPLE_PROGRAM = ("(Tensor[] tensors, int[] program, Tensor image, Tensor known, Tensor noise, "
                   "bool return_draw_inputs) -> (Tensor, Tensor)")
lib.define("sample_program" + _SAMPLE_PROGRAM)
# The same program run by the GPU block interpreter (csrc/cuda/sample_program_block.cuh: one thread
# block per image). Its CUDA kernel serves sample_program on GPUs; its CPU implementation runs the
# same code with a few threads per image meeting at real barriers, so that tests check it without
# a GPU.
lib.define("sample_program_block" + _SAMPLE_PROGRAM)
# The compiled reader's view of a program: one line per value, node and term, as
# SamplingProgram.describe() prints it (tests compare the two).
lib.define("sample_program_describe(Tensor[] tensors, int[] program) -> str")

# reparameterize: z = mu + exp(logvar / 2) * eps (all one shape). The backward returns
# (grad_logvar, grad_eps); grad_mu is the incoming gradient itself.
lib.define("reparameterize(Tensor mu, Tensor logvar, Tensor eps) -> Tensor")
lib.define("reparameterize_backward(Tensor grad, Tensor logvar, Tensor eps, bool[2] output_mask) -> (Tensor, Tensor)")

# vae_nelbo: per-example negative ELBO (N,) and its two parts, recon_nll (N,) and kl (N,), which are
# not differentiable outputs; likelihood is "bernoulli", "categorical", "gaussian" or "logistic";
# levels is read by "logistic" only. See fastgen/reference/vae_nelbo.py for the layouts. With
# keep_grad the fourth output is d recon_nll[n] / d recon (recon's shape; else empty), computed in
# the same pass; the backward then only scales it (recon_grad).
lib.define("vae_nelbo(Tensor recon, Tensor x, Tensor mu, Tensor logvar, str likelihood, float beta, int levels, "
           "bool keep_grad) -> (Tensor, Tensor, Tensor, Tensor)")
lib.define("vae_nelbo_backward(Tensor grad, Tensor recon, Tensor x, Tensor mu, Tensor logvar, Tensor? recon_grad, "
           "str likelihood, float beta, int levels, bool[3] output_mask) -> (Tensor, Tensor, Tensor)")

# gan_loss: the scalar loss of the discriminator or (generator=True) the generator; kind is
# "minimax", "non_saturating", "lsgan", "hinge" or "wasserstein"; d_real may be None for the
# generator. The backward returns (grad_real, grad_fake), grad_real empty when d_real is None.
lib.define("gan_loss(Tensor? d_real, Tensor d_fake, str kind, bool generator) -> Tensor")
lib.define("gan_loss_backward(Tensor grad, Tensor? d_real, Tensor d_fake, str kind, bool generator) "
           "-> (Tensor, Tensor)")

# gradient_penalty: weight * mean_n (||grad_n|| - 1)^2 over the non-batch dimensions of grad (N, ...);
# returns the penalty (a scalar) and the norms (N,), which the backward reuses.
lib.define("gradient_penalty(Tensor grad, float weight) -> (Tensor, Tensor)")
lib.define("gradient_penalty_backward(Tensor grad_out, Tensor grad, Tensor norms, float weight) -> Tensor")

# dmol_nll: the discretized logistic mixture of PixelCNN++ (layout: fastgen/reference/dmol.py).
# x (N, C, H, W) in [-1, 1], params (N, K, H, W) -> (nll (N,), pixel_log_prob (N, H, W)); the
# per-pixel log-likelihood (float32, or float64) is what the backward needs to recompute the
# component posteriors in one pass.
lib.define("dmol_nll(Tensor x, Tensor params, int nr_mix, int levels) -> (Tensor, Tensor)")
lib.define("dmol_nll_backward(Tensor grad, Tensor x, Tensor params, Tensor pixel_log_prob, int nr_mix, int levels) "
           "-> Tensor")
# dmol_sample: one draw per pixel from the mixture, noise (N, nr_mix + C, H, W) uniform in [0, 1)
# -> (N, C, H, W) in [-1, 1] on the grid of `levels` values.
lib.define("dmol_sample(Tensor params, Tensor noise, int nr_mix, int levels) -> Tensor")

# feature_stats_update: one batch of streaming feature statistics (FID's mean and covariance), in
# place: d = features - shift; total += d.sum(0) in float64; cross[i, j] += sum_b d[b, i] d[b, j]
# for i <= j. features (B, D) and shift (D,) float32 or float64; total (D,) and cross (D, D)
# contiguous float64. The strictly lower triangle of cross is never read or written.
lib.define("feature_stats_update(Tensor features, Tensor shift, Tensor(a!) total, Tensor(b!) cross) -> ()")

# instance_norm_act: act(instance_norm(x) * weight + bias) per (n, c) plane of x (N, C, H, W); act is
# "relu", "leaky_relu" (slope negative_slope) or "none"; weight and bias (C,) optional. Returns
# (y, mean, rstd), mean and rstd (N, C) in float32 (float64 for float64 x), which the backward reuses
# (it recomputes z from x rather than keeping y). The backward returns (grad_x, grad_weight,
# grad_bias), an entry whose output_mask is False as an empty tensor; grad_weight and grad_bias are
# computed where asked for even without a weight or bias (the gradients at 1 and 0).
lib.define("instance_norm_act(Tensor x, Tensor? weight, Tensor? bias, str act, float negative_slope, float eps) "
           "-> (Tensor, Tensor, Tensor)")
lib.define("instance_norm_act_backward(Tensor grad_out, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, "
           "Tensor rstd, str act, float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor)")

# pixel_norm: y = a / sqrt(mean_c(a^2) + eps) at every position of x (N, C, *spatial), a =
# leaky_relu(x, negative_slope) where negative_slope is given, else x. Returns (y, rstd), rstd
# (N, *spatial) in float32 (float64 for float64 x), which the backward reuses (it recomputes a and
# y from x rather than keeping y).
lib.define("pixel_norm(Tensor x, float? negative_slope, float eps) -> (Tensor, Tensor)")
lib.define("pixel_norm_backward(Tensor grad_out, Tensor x, Tensor rstd, float? negative_slope) -> Tensor")

# minibatch_stddev: x (N, C, H, W) -> (N, C + 1, H, W), x followed by the mean over (c, h, w) of the
# standard deviation over each group of G samples (G the largest divisor of N <= group_size; group
# m holds samples m, m + N/G, ...). Nothing is saved: the backward recomputes the group statistics
# from x and returns grad_x (N, C, H, W).
lib.define("minibatch_stddev(Tensor x, int group_size, float eps) -> Tensor")
lib.define("minibatch_stddev_backward(Tensor grad_out, Tensor x, int group_size, float eps) -> Tensor")

// Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2, 2) fused for training
// (docs/convolution.md §6). Two nodes: the convolution's (inputs x, weight,
// bias) and the tail's (inputs y, gamma, beta), y being the convolution's
// output. The tail's backward produces dy and, in the same pass, the sum of
// dy that is the convolution bias's gradient; it hands that sum to the
// convolution's node, which runs next, so that no pass over dy is left to it
// but its GEMMs.
#include "autograd/fused_conv_ops.h"

#include <algorithm>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "autograd/norm_ops.h"
#include "tensor/communicator.h"
#include "tensor/conv_kernels.h"
#include "tensor/norm_kernels.h"
#include "tensor/ops.h"
#include "tensor/pool_kernels.h"

namespace tq {

namespace k = kernels;

namespace {

// Filled by the tail's backward, read by the convolution's (which runs after it).
struct SharedBiasGrad {
  Tensor sum;
};

struct FusedConv2dBackward final : Node {
  FusedConv2dBackward(const k::Conv2dGeometry& g, std::shared_ptr<SharedBiasGrad> bias)
      : geometry(g), bias_grad(std::move(bias)) {}
  k::Conv2dGeometry geometry;
  std::shared_ptr<SharedBiasGrad> bias_grad;
  const char* name() const override { return "ConvolutionBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = k::contiguous(g_in);
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    if (x.requires_grad()) gi[0] = k::conv2d_backward_input(g, w, geometry);
    if (w.requires_grad()) {
      const LeafGrad leaf = leaf_grad_for_accumulation(w);
      if (leaf.buffer.defined()) {
        k::conv2d_backward_weight(g, x, geometry, leaf.buffer, !leaf.fresh);
      } else {
        gi[1] = empty(w.shape());
        k::conv2d_backward_weight(g, x, geometry, gi[1], false);
      }
    }
    if (num_inputs > 2 && inputs[2].requires_grad()) {
      if (bias_grad && bias_grad->sum.defined()) {
        gi[2] = bias_grad->sum;  // taken by the tail's backward while dy was in cache
        bias_grad->sum = Tensor();
      } else {
        gi[2] = empty(inputs[2].shape());
        k::conv2d_backward_bias(g, gi[2], false);
      }
    }
  }
};

struct BatchNormReluMaxPoolBackward final : Node {
  BatchNormReluMaxPoolBackward(Tensor mean, Tensor invstd, Tensor at, Tensor y_at, std::shared_ptr<SharedBiasGrad> bias,
                               int64_t global_count)
      : mean(std::move(mean)), invstd(std::move(invstd)), at(std::move(at)), y_at(std::move(y_at)),
        bias_grad(std::move(bias)), global_count(global_count) {}
  Tensor mean, invstd;  // (C): the batch statistics of y
  Tensor at, y_at;      // (N, C, OH, OW): where each maximum came from (-1: ReLU closed), and y there
  std::shared_ptr<SharedBiasGrad> bias_grad;  // null when the convolution has no bias needing a gradient
  // Data parallel: the values per channel over every rank (the statistics'
  // count); 0 on a single process.
  int64_t global_count;
  const char* name() const override { return "BatchNormReluMaxPool2dBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = k::contiguous(g_in);
    const Tensor& y = inputs[0];
    const Tensor gamma = inputs[1];
    Tensor sum_dz, sum_dz_xhat, bias_sum;
    Tensor dy;
    if (global_count > 0) {
      // As batch_norm's backward: eq. 4 of docs/batchnorm.md takes the sums
      // over the global batch (all-reduced between the two passes); gamma's
      // and beta's gradients below stay this rank's sums, averaged with the
      // other parameters'.
      k::batch_norm_relu_max_pool2x2_backward_sums(g, at, y_at, y, mean, invstd, sum_dz, sum_dz_xhat);
      const int64_t C = sum_dz.numel();
      std::vector<float> sums(static_cast<size_t>(2 * C));
      std::copy_n(sum_dz.data<float>(), C, sums.begin());
      std::copy_n(sum_dz_xhat.data<float>(), C, sums.begin() + C);
      dist::world().allreduce_sum(sums.data(), 2 * C);
      const Tensor all_dz = empty({C}), all_dz_xhat = empty({C});
      std::copy_n(sums.begin(), C, all_dz.data<float>());
      std::copy_n(sums.begin() + C, C, all_dz_xhat.data<float>());
      dy = k::batch_norm_relu_max_pool2x2_backward_input(g, at, y, mean, invstd, gamma, all_dz, all_dz_xhat,
                                                         global_count, bias_grad ? &bias_sum : nullptr);
    } else {
      dy = k::batch_norm_relu_max_pool2x2_backward(g, at, y_at, y, mean, invstd, gamma, sum_dz, sum_dz_xhat,
                                                   bias_grad ? &bias_sum : nullptr);
    }
    if (bias_grad) bias_grad->sum = bias_sum;
    if (y.requires_grad()) gi[0] = std::move(dy);
    if (inputs[1].defined() && inputs[1].requires_grad()) gi[1] = sum_dz_xhat;  // d gamma = sum dz xhat
    if (inputs[2].defined() && inputs[2].requires_grad()) gi[2] = sum_dz;       // d beta = sum dz
  }
};

Tensor float_contiguous(const Tensor& t, const char* what) {
  if (!t.defined())
    throw std::invalid_argument(fmt::format("conv2d_batch_norm_relu_max_pool2x2: {} is undefined", what));
  return k::contiguous(t.dtype() == DType::f32 ? t : k::to_float(t));
}

void check_channels(const Tensor& t, int64_t C, const char* what) {
  if (t.defined() && !(t.shape() == Shape{C}))
    throw std::invalid_argument(fmt::format("conv2d_batch_norm_relu_max_pool2x2: batch norm {} of shape {} does not "
                                            "match the convolution's {} output channels",
                                            what, t.shape().str(), C));
}

bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

}  // namespace

Tensor conv2d_batch_norm_relu_max_pool2x2(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in,
                                          const Conv2dOptions& o, const Tensor& running_mean,
                                          const Tensor& running_var, const Tensor& bn_weight, const Tensor& bn_bias,
                                          double momentum, double eps) {
  const Tensor x = float_contiguous(x_in, "the input");
  const Tensor w = float_contiguous(weight_in, "the weight");
  const k::Conv2dGeometry g = k::conv2d_geometry(x.shape(), w.shape(), o.stride[0], o.stride[1], o.padding[0],
                                                 o.padding[1], o.dilation[0], o.dilation[1], o.groups);
  const Tensor b = bias_in.defined() ? float_contiguous(bias_in, "the bias") : Tensor();
  check_channels(b, g.OC, "convolution bias");
  for (const auto& [t, what] : {std::pair{&running_mean, "running_mean"}, std::pair{&running_var, "running_var"},
                                std::pair{&bn_weight, "weight"}, std::pair{&bn_bias, "bias"}})
    check_channels(*t, g.OC, what);
  if (running_mean.defined() != running_var.defined())
    throw std::invalid_argument("conv2d_batch_norm_relu_max_pool2x2: running_mean and running_var must both be given "
                                "or both be absent");
  if (!(eps > 0)) throw std::invalid_argument(fmt::format("batch_norm: eps must be positive, got {}", eps));
  const int64_t M = g.N * g.OH * g.OW;
  if (M <= 1)
    throw std::invalid_argument(fmt::format("batch_norm: training needs more than 1 value per channel, got a "
                                            "convolution output of shape {}",
                                            g.output_shape().str()));
  if (g.OH < 2 || g.OW < 2)
    throw std::invalid_argument(fmt::format("max_pool2d: the window (2 x 2) is larger than the input of shape {}",
                                            g.output_shape().str()));

  // Forward: each image's batch-norm sums while the GEMM's output is in cache.
  k::BatchNormStats stats(g.OC, g.OH * g.OW);
  Tensor y = k::conv2d_forward(x, w, b, g, [&](int64_t, const float* y_n) { stats.add(y_n); });
  Tensor mean, var;
  stats.finish(mean, var);
  // Data parallel (docs/distributed.md §4): the statistics of the global batch.
  const int64_t global_count = dist::distributed() ? batch_norm_all_reduce_stats(mean, var, M) : 0;
  const Tensor invstd = batch_norm_training_invstd(mean, var, global_count > 0 ? global_count : M, running_mean,
                                                   running_var, momentum, eps);
  // y = x scale + shift with scale = gamma invstd, shift = beta - mean scale, as batch_norm computes them.
  Tensor scale = empty({g.OC}), shift = empty({g.OC});
  for (int64_t c = 0; c < g.OC; ++c) {
    const float gam = bn_weight.defined() ? bn_weight.data<float>()[c] : 1.f;
    const float bet = bn_bias.defined() ? bn_bias.data<float>()[c] : 0.f;
    scale.data<float>()[c] = gam * invstd.data<float>()[c];
    shift.data<float>()[c] = bet - mean.data<float>()[c] * scale.data<float>()[c];
  }
  Tensor out, at, y_at;
  k::batch_norm_relu_max_pool2x2_forward(y, scale, shift, out, at, y_at);

  if (!grad_mode_enabled()) return out;
  std::shared_ptr<SharedBiasGrad> bias_grad;
  if (needs_grad(x) || needs_grad(w) || needs_grad(b)) {
    if (needs_grad(b)) bias_grad = std::make_shared<SharedBiasGrad>();
    if (b.defined()) record<FusedConv2dBackward>(y, {x, w, b}, g, bias_grad);
    else record<FusedConv2dBackward>(y, {x, w}, g, bias_grad);
  }
  if (needs_grad(y) || needs_grad(bn_weight) || needs_grad(bn_bias))
    record<BatchNormReluMaxPoolBackward>(out, {y, bn_weight, bn_bias}, std::move(mean), invstd, std::move(at),
                                         std::move(y_at), std::move(bias_grad), global_count);
  return out;
}

}  // namespace tq

// Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2, 2) fused for training
// (docs/convolution.md §6). One node, inputs x, weight, bias, gamma, beta
// (any but x and weight may be undefined). Its backward takes the batch
// norm's sums over the pooled tensors first (the gradients of gamma and
// beta), then, image by image, writes dy_n, the convolution's output
// gradient, adds up its planes (the gradient of the convolution's bias) and
// runs the convolution's GEMMs on it while it is in cache: dy is never a
// full-size tensor in memory.
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

bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

struct ConvBatchNormReluMaxPoolBackward final : Node {
  ConvBatchNormReluMaxPoolBackward(const k::Conv2dGeometry& g, Tensor y, Tensor mean, Tensor invstd, Tensor at,
                                   Tensor y_at, int64_t global_count)
      : geometry(g), y(std::move(y)), mean(std::move(mean)), invstd(std::move(invstd)), at(std::move(at)),
        y_at(std::move(y_at)), global_count(global_count) {}
  k::Conv2dGeometry geometry;
  Tensor y;             // (N, C, H, W): the convolution's output
  Tensor mean, invstd;  // (C): the batch statistics of y
  Tensor at, y_at;      // (N, C, OH, OW): where each maximum came from (-1: ReLU closed), and y there
  // Data parallel: the values per channel over every rank (the statistics'
  // count); 0 on a single process.
  int64_t global_count;
  // Named after the batch norm + ReLU + pool tail, whose output is the op's.
  const char* name() const override { return "BatchNormReluMaxPool2dBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    k::BatchNormReluMaxPool2x2Backward tail(k::contiguous(g_in), at, y_at, y, mean, invstd, inputs[3]);
    if (global_count > 0) {
      // As batch_norm's backward: eq. 4 of docs/batchnorm.md takes the sums
      // over the global batch, all-reduced between the two passes.
      const auto [all_dz, all_dz_xhat] = batch_norm_all_reduce_sums(tail.sum_dz(), tail.sum_dz_xhat());
      tail.use_global_sums(all_dz, all_dz_xhat, global_count);
    }
    if (needs_grad(inputs[3])) gi[3] = tail.sum_dz_xhat();  // d gamma = sum dz xhat
    if (needs_grad(inputs[4])) gi[4] = tail.sum_dz();       // d beta = sum dz
    const bool bias_grad = needs_grad(inputs[2]);
    if (!needs_grad(inputs[0]) && !needs_grad(inputs[1]) && !bias_grad) return;
    thread_local std::vector<float> dy_n;  // only grows: no allocation after the first step
    dy_n.resize(static_cast<size_t>(tail.image_numel()));
    std::vector<double> bias(bias_grad ? static_cast<size_t>(geometry.OC) : 0, 0.0);
    conv2d_input_weight_backward(
        *this,
        [&](int64_t n) {
          tail.image(n, dy_n.data(), bias_grad ? bias.data() : nullptr);
          return dy_n.data();
        },
        geometry, gi);
    if (bias_grad) {  // db = sum of dy over n, oh, ow
      gi[2] = empty({geometry.OC});
      for (int64_t c = 0; c < geometry.OC; ++c) gi[2].data<float>()[c] = static_cast<float>(bias[c]);
    }
  }
};

constexpr const char* kTrainingOp = "conv2d_batch_norm_relu_max_pool2x2";

Tensor float_contiguous(const Tensor& t, const char* what, const char* op = kTrainingOp) {
  if (!t.defined()) throw std::invalid_argument(fmt::format("{}: {} is undefined", op, what));
  return k::contiguous(t.dtype() == DType::f32 ? t : k::to_float(t));
}

// `what` names the tensor in full ("the convolution's bias", "batch norm running_mean").
void check_channels(const Tensor& t, int64_t C, const char* what, const char* op = kTrainingOp) {
  if (t.defined() && !(t.shape() == Shape{C}))
    throw std::invalid_argument(fmt::format("{}: {} of shape {} does not match the convolution's {} output channels",
                                            op, what, t.shape().str(), C));
}

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
  check_channels(b, g.OC, "the convolution's bias");
  for (const auto& [t, what] :
       {std::pair{&running_mean, "batch norm running_mean"}, std::pair{&running_var, "batch norm running_var"},
        std::pair{&bn_weight, "batch norm weight"}, std::pair{&bn_bias, "batch norm bias"}})
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
  // y = x scale + shift, scale and shift as batch_norm computes them.
  Tensor scale, shift;
  batch_norm_scale_shift(bn_weight, bn_bias, mean, invstd, scale, shift);
  Tensor out, at, y_at;
  k::batch_norm_relu_max_pool2x2_forward(y, scale, shift, out, at, y_at);

  if (!grad_mode_enabled()) return out;
  if (needs_grad(x) || needs_grad(w) || needs_grad(b) || needs_grad(bn_weight) || needs_grad(bn_bias))
    record<ConvBatchNormReluMaxPoolBackward>(out, {x, w, b, bn_weight, bn_bias}, g, std::move(y), std::move(mean),
                                             invstd, std::move(at), std::move(y_at), global_count);
  return out;
}

Tensor conv2d_batch_norm_eval(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in,
                              const Conv2dOptions& o, const Tensor& running_mean, const Tensor& running_var,
                              const Tensor& bn_weight, const Tensor& bn_bias, double eps, bool then_relu6) {
  constexpr const char* op = "conv2d_batch_norm_eval";
  if (grad_mode_enabled() && (needs_grad(x_in) || needs_grad(weight_in) || needs_grad(bias_in) ||
                              needs_grad(bn_weight) || needs_grad(bn_bias)))
    throw std::logic_error(fmt::format("{}: inference only; a gradient is being recorded (use conv2d, batch_norm)", op));
  const Tensor x = float_contiguous(x_in, "the input", op);
  const Tensor w = float_contiguous(weight_in, "the weight", op);
  const k::Conv2dGeometry g = k::conv2d_geometry(x.shape(), w.shape(), o.stride[0], o.stride[1], o.padding[0],
                                                 o.padding[1], o.dilation[0], o.dilation[1], o.groups, op);
  const Tensor b = bias_in.defined() ? float_contiguous(bias_in, "the bias", op) : Tensor();
  check_channels(b, g.OC, "the convolution's bias", op);
  for (const auto& [t, what] :
       {std::pair{&running_mean, "batch norm running_mean"}, std::pair{&running_var, "batch norm running_var"},
        std::pair{&bn_weight, "batch norm weight"}, std::pair{&bn_bias, "batch norm bias"}})
    check_channels(*t, g.OC, what, op);
  if (!running_mean.defined() || !running_var.defined())
    throw std::invalid_argument(fmt::format("{}: evaluation needs running_mean and running_var", op));
  if (!(eps > 0)) throw std::invalid_argument(fmt::format("{}: eps must be positive, got {}", op, eps));
  // scale and shift as eval batch_norm computes them; the convolution applies
  // them (and the clamp) to each output as batch_norm_apply would.
  Tensor scale, shift;
  batch_norm_scale_shift(bn_weight, bn_bias, k::contiguous(running_mean), batch_norm_eval_invstd(running_var, eps),
                         scale, shift);
  k::ChannelEpilogue then;
  then.scale = scale.data<float>();
  then.shift = shift.data<float>();
  then.relu6 = then_relu6;
  return k::conv2d_forward(x, w, b, g, {}, then);
}

}  // namespace tq

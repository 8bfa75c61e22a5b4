// batch_norm forward and backward (docs/batchnorm.md eq. 1-4).
#include "autograd/norm_ops.h"

#include <cmath>

#include <fmt/format.h>

#include "tensor/norm_kernels.h"
#include "tensor/ops.h"

namespace tq {

namespace k = kernels;

namespace {

struct BatchNormBackward final : Node {
  BatchNormBackward(Tensor mean, Tensor invstd, bool training)
      : mean(std::move(mean)), invstd(std::move(invstd)), training(training) {}
  Tensor mean, invstd;  // (C): the statistics the forward normalised with
  bool training;        // batch statistics (they depend on x) or running ones (constants)
  const char* name() const override { return "NativeBatchNormBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = k::contiguous(g_in);
    const Tensor& x = inputs[0];
    const Tensor gamma = num_inputs > 1 ? inputs[1] : Tensor();
    Tensor sum_dy, sum_dy_xhat;
    k::batch_norm_backward_sums(g, x, mean, invstd, sum_dy, sum_dy_xhat);
    if (x.requires_grad()) gi[0] = k::batch_norm_backward_input(g, x, mean, invstd, gamma, sum_dy, sum_dy_xhat, training);
    if (num_inputs > 1 && inputs[1].requires_grad()) gi[1] = sum_dy_xhat;  // d gamma = sum dy xhat
    if (num_inputs > 2 && inputs[2].requires_grad()) gi[2] = sum_dy;       // d beta = sum dy
  }
};

void check_channel_vector(const Tensor& t, int64_t C, const char* what) {
  if (t.defined() && !(t.shape() == Shape{C}))
    throw std::invalid_argument(fmt::format("batch_norm: {} of shape {} does not match the input's {} channels "
                                            "(expected ({},))",
                                            what, t.shape().str(), C, C));
}

}  // namespace

Tensor batch_norm_training_invstd(const Tensor& mean, const Tensor& var, int64_t M, const Tensor& running_mean,
                                  const Tensor& running_var, double momentum, double eps) {
  const int64_t C = mean.numel();
  Tensor invstd = empty({C});
  for (int64_t c = 0; c < C; ++c) invstd.data<float>()[c] = static_cast<float>(1.0 / std::sqrt(var.data<float>()[c] + eps));
  if (running_mean.defined()) {  // eq. 3: the running variance is unbiased
    float* rm = running_mean.data<float>();
    float* rv = running_var.data<float>();
    const double unbias = static_cast<double>(M) / static_cast<double>(M - 1);
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * mean.data<float>()[c]);
      rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * var.data<float>()[c] * unbias);
    }
  }
  return invstd;
}

Tensor batch_norm(const Tensor& x_in, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  if (!x_in.defined()) throw std::invalid_argument("batch_norm: received an undefined tensor");
  if (x_in.dim() < 2)
    throw std::invalid_argument(fmt::format("batch_norm: expected an input (N, C, ...), got shape {}", x_in.shape().str()));
  if (!(eps > 0)) throw std::invalid_argument(fmt::format("batch_norm: eps must be positive, got {}", eps));
  const Tensor x = k::contiguous(x_in.dtype() == DType::f32 ? x_in : k::to_float(x_in));
  const int64_t N = x.size(0), C = x.size(1), M = C ? x.numel() / C : 0;
  check_channel_vector(running_mean, C, "running_mean");
  check_channel_vector(running_var, C, "running_var");
  check_channel_vector(weight, C, "weight");
  check_channel_vector(bias, C, "bias");
  if (running_mean.defined() != running_var.defined())
    throw std::invalid_argument("batch_norm: running_mean and running_var must both be given or both be absent");

  Tensor mean, invstd = empty({C});
  if (training) {
    if (M <= 1)
      throw std::invalid_argument(fmt::format("batch_norm: training needs more than 1 value per channel, got input of "
                                              "shape {} (batch {})",
                                              x.shape().str(), N));
    Tensor var;
    k::batch_norm_stats(x, mean, var);
    invstd = batch_norm_training_invstd(mean, var, M, running_mean, running_var, momentum, eps);
  } else {
    if (!running_mean.defined())
      throw std::invalid_argument("batch_norm: evaluation needs running_mean and running_var (track_running_stats)");
    mean = k::contiguous(running_mean);
    const float* rv = running_var.data<float>();
    for (int64_t c = 0; c < C; ++c) invstd.data<float>()[c] = static_cast<float>(1.0 / std::sqrt(rv[c] + eps));
  }
  // y = x scale + shift with scale = gamma invstd, shift = beta - mean scale (eq. 2).
  Tensor scale = empty({C}), shift = empty({C});
  for (int64_t c = 0; c < C; ++c) {
    const float gam = weight.defined() ? weight.data<float>()[c] : 1.f;
    const float bet = bias.defined() ? bias.data<float>()[c] : 0.f;
    scale.data<float>()[c] = gam * invstd.data<float>()[c];
    shift.data<float>()[c] = bet - mean.data<float>()[c] * scale.data<float>()[c];
  }
  Tensor out = k::batch_norm_apply(x, scale, shift);
  if (any_requires_grad(x, weight, bias)) {
    if (weight.defined() && bias.defined()) record<BatchNormBackward>(out, {x, weight, bias}, mean, invstd, training);
    else if (weight.defined()) record<BatchNormBackward>(out, {x, weight}, mean, invstd, training);
    else if (bias.defined()) record<BatchNormBackward>(out, {x, Tensor(), bias}, mean, invstd, training);
    else record<BatchNormBackward>(out, {x}, mean, invstd, training);
  }
  return out;
}

}  // namespace tq

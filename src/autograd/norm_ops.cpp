// batch_norm forward and backward (docs/batchnorm.md eq. 1-4).
#include "autograd/norm_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "tensor/communicator.h"
#include "tensor/norm_kernels.h"
#include "tensor/ops.h"

namespace tq {

namespace k = kernels;

namespace {

struct BatchNormBackward final : Node {
  BatchNormBackward(Tensor mean, Tensor invstd, bool training, int64_t global_count)
      : mean(std::move(mean)), invstd(std::move(invstd)), training(training), global_count(global_count) {}
  Tensor mean, invstd;  // (C): the statistics the forward normalised with
  bool training;        // batch statistics (they depend on x) or running ones (constants)
  // Data parallel (dist::distributed()): the values per channel over all
  // ranks, whose statistics the forward used; 0 on a single process.
  int64_t global_count;
  const char* name() const override { return "NativeBatchNormBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = k::contiguous(g_in);
    const Tensor& x = inputs[0];
    const Tensor gamma = num_inputs > 1 ? inputs[1] : Tensor();
    Tensor sum_dy, sum_dy_xhat;
    k::batch_norm_backward_sums(g, x, mean, invstd, sum_dy, sum_dy_xhat);
    if (x.requires_grad()) {
      if (global_count > 0) {
        // eq. 4 over the global batch: the mean of dy and of dy xhat over every
        // rank's values. gamma's and beta's gradients below stay this rank's
        // sums: the trainer averages parameter gradients over the ranks.
        const auto [all_dy, all_dy_xhat] = batch_norm_all_reduce_sums(sum_dy, sum_dy_xhat);
        gi[0] = k::batch_norm_backward_input(g, x, mean, invstd, gamma, all_dy, all_dy_xhat, training, global_count);
      } else {
        gi[0] = k::batch_norm_backward_input(g, x, mean, invstd, gamma, sum_dy, sum_dy_xhat, training);
      }
    }
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

// Data parallel: the batch's mean and biased variance over every rank's values
// (docs/distributed.md eq. 2), from each rank's own (eq. 1 of docs/batchnorm.md) merged in
// double: with M_r values, mean m_r and variance v_r on rank r,
//   M = sum M_r,  mean = sum M_r m_r / M,  var = (sum M_r v_r + sum M_r m_r^2) / M - mean^2.
// Returns M.
std::pair<Tensor, Tensor> batch_norm_all_reduce_sums(const Tensor& a, const Tensor& b) {
  const int64_t C = a.numel();
  std::vector<float> sums(static_cast<size_t>(2 * C));
  std::copy_n(a.data<float>(), C, sums.begin());
  std::copy_n(b.data<float>(), C, sums.begin() + C);
  dist::world().allreduce_sum(sums.data(), 2 * C);
  return {from_vector(std::vector<float>(sums.begin(), sums.begin() + C), {C}),
          from_vector(std::vector<float>(sums.begin() + C, sums.end()), {C})};
}

int64_t batch_norm_all_reduce_stats(Tensor& mean, Tensor& var, int64_t local_count) {
  const int64_t C = mean.numel();
  std::vector<double> s(static_cast<size_t>(3 * C + 1));
  const double m_r = static_cast<double>(local_count);
  for (int64_t c = 0; c < C; ++c) {
    if (local_count == 0) break;  // an empty shard adds nothing
    const double m = mean.data<float>()[c], v = var.data<float>()[c];
    s[static_cast<size_t>(c)] = m_r * m;
    s[static_cast<size_t>(C + c)] = m_r * v;
    s[static_cast<size_t>(2 * C + c)] = m_r * m * m;
  }
  s[static_cast<size_t>(3 * C)] = m_r;
  dist::world().allreduce_sum(s.data(), 3 * C + 1);
  const double M = s[static_cast<size_t>(3 * C)];
  mean = empty({C});
  var = empty({C});
  for (int64_t c = 0; c < C; ++c) {
    const double m = M > 0 ? s[static_cast<size_t>(c)] / M : 0;
    const double v = M > 0 ? (s[static_cast<size_t>(C + c)] + s[static_cast<size_t>(2 * C + c)]) / M - m * m : 0;
    mean.data<float>()[c] = static_cast<float>(m);
    var.data<float>()[c] = static_cast<float>(std::max(0.0, v));
  }
  return static_cast<int64_t>(std::llround(M));
}

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

Tensor batch_norm_eval_invstd(const Tensor& running_var, double eps) {
  const Tensor rv = k::contiguous(running_var);
  const int64_t C = rv.numel();
  Tensor invstd = empty({C});
  for (int64_t c = 0; c < C; ++c)
    invstd.data<float>()[c] = static_cast<float>(1.0 / std::sqrt(rv.data<float>()[c] + eps));
  return invstd;
}

void batch_norm_scale_shift(const Tensor& weight, const Tensor& bias, const Tensor& mean, const Tensor& invstd,
                            Tensor& scale, Tensor& shift) {
  const int64_t C = mean.numel();
  scale = empty({C});
  shift = empty({C});
  for (int64_t c = 0; c < C; ++c) {
    const float gam = weight.defined() ? weight.data<float>()[c] : 1.f;
    const float bet = bias.defined() ? bias.data<float>()[c] : 0.f;
    scale.data<float>()[c] = gam * invstd.data<float>()[c];
    shift.data<float>()[c] = bet - mean.data<float>()[c] * scale.data<float>()[c];
  }
}

namespace {

// batch_norm, and with then_relu6 (eval, nothing recorded) ReLU6 in the same pass.
Tensor batch_norm_impl(const Tensor& x_in, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, bool training, double momentum, double eps, bool then_relu6) {
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
  int64_t global_count = 0;  // data parallel: M over every rank
  if (training) {
    const bool synced = dist::distributed();
    Tensor var;
    if (synced) {
      k::batch_norm_stats(x, mean, var);
      global_count = batch_norm_all_reduce_stats(mean, var, M);
    }
    const int64_t count = synced ? global_count : M;
    if (count <= 1)
      throw std::invalid_argument(fmt::format("batch_norm: training needs more than 1 value per channel, got input of "
                                              "shape {} (batch {})",
                                              x.shape().str(), N));
    if (!synced) k::batch_norm_stats(x, mean, var);
    invstd = batch_norm_training_invstd(mean, var, count, running_mean, running_var, momentum, eps);
  } else {
    if (!running_mean.defined())
      throw std::invalid_argument("batch_norm: evaluation needs running_mean and running_var (track_running_stats)");
    mean = k::contiguous(running_mean);
    invstd = batch_norm_eval_invstd(running_var, eps);
  }
  Tensor scale, shift;
  batch_norm_scale_shift(weight, bias, mean, invstd, scale, shift);
  Tensor out = k::batch_norm_apply(x, scale, shift, then_relu6);
  if (then_relu6) return out;  // the caller made sure nothing is recorded
  if (any_requires_grad(x, weight, bias)) {
    if (weight.defined() && bias.defined()) record<BatchNormBackward>(out, {x, weight, bias}, mean, invstd, training, global_count);
    else if (weight.defined()) record<BatchNormBackward>(out, {x, weight}, mean, invstd, training, global_count);
    else if (bias.defined()) record<BatchNormBackward>(out, {x, Tensor(), bias}, mean, invstd, training, global_count);
    else record<BatchNormBackward>(out, {x}, mean, invstd, training, global_count);
  }
  return out;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  return batch_norm_impl(x, running_mean, running_var, weight, bias, training, momentum, eps, false);
}

Tensor batch_norm_relu6_eval(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& weight, const Tensor& bias, double eps) {
  if (any_requires_grad(x, weight, bias))
    throw std::logic_error("batch_norm_relu6_eval: inference only; a gradient is being recorded (use batch_norm, relu6)");
  return batch_norm_impl(x, running_mean, running_var, weight, bias, false, 0.0, eps, true);
}

}  // namespace tq

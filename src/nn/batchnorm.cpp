// BatchNorm2d: parameters, buffers and the train / eval switch (docs/batchnorm.md).
#include "nn/batchnorm.h"

#include "tensor/ops.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace tq::nn {

BatchNorm2d::BatchNorm2d(int64_t c, double eps_, double momentum_, bool affine_, bool track)
    : num_features(c), eps(eps_), momentum(momentum_), affine(affine_), track_running_stats(track) {
  if (c <= 0) throw std::invalid_argument(fmt::format("BatchNorm2d: num_features ({}) must be positive", c));
  if (!(eps > 0)) throw std::invalid_argument(fmt::format("BatchNorm2d: eps ({}) must be positive", eps));
  if (!(momentum >= 0 && momentum <= 1))
    throw std::invalid_argument(fmt::format("BatchNorm2d: momentum ({}) must lie in [0, 1]", momentum));
  if (affine) {
    weight = register_parameter("weight", ones({c}));
    bias = register_parameter("bias", zeros({c}));
  }
  if (track) {
    register_buffer("running_mean", zeros({c}));
    register_buffer("running_var", ones({c}));
    register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
}

int64_t BatchNorm2d::num_batches_tracked() const {
  const Tensor t = buffer("num_batches_tracked");
  return t.defined() ? t.data<int64_t>()[0] : 0;
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (!x.defined() || x.dim() != 4)
    throw std::invalid_argument(fmt::format("BatchNorm2d: expected a 4-D input (N, C, H, W), got shape {}",
                                            x.defined() ? x.shape().str() : "undefined"));
  if (x.size(1) != num_features)
    throw std::invalid_argument(fmt::format("BatchNorm2d({}): input of shape {} has {} channels, expected {}",
                                            num_features, x.shape().str(), x.size(1), num_features));
  const bool use_batch_stats = is_training() || !track_running_stats;
  Tensor out = tq::batch_norm(x, running_mean(), running_var(), weight, bias, use_batch_stats, momentum, eps);
  if (is_training()) count_batch();
  return out;
}

void BatchNorm2d::count_batch() {
  if (!track_running_stats) return;
  const Tensor n = buffer("num_batches_tracked");
  if (n.defined() && n.data<int64_t>()[0] < std::numeric_limits<int64_t>::max()) n.data<int64_t>()[0] += 1;
}

void BatchNorm2d::on_state_loaded() {
  if (!track_running_stats) return;
  for (const char* name : {"running_mean", "running_var"}) {
    const Tensor t = buffer(name);
    if (!t.defined() || t.dtype() != DType::f32 || !(t.shape() == Shape{num_features}))
      throw std::invalid_argument(fmt::format("BatchNorm2d({}): loaded {} must be f32 of shape ({}), got {}", num_features,
                                              name, num_features,
                                              t.defined() ? std::string(dtype_name(t.dtype())) + " " + t.shape().str() : "none"));
    const Tensor c = t.is_contiguous() ? t : kernels::contiguous(t);
    const float* v = c.data<float>();
    for (int64_t i = 0; i < num_features; ++i)
      if (!std::isfinite(v[i]) || (std::string(name) == "running_var" && v[i] < 0))
        throw std::invalid_argument(fmt::format("BatchNorm2d({}): loaded {}[{}] is {}; running statistics are finite{}",
                                                num_features, name, i, v[i],
                                                std::string(name) == "running_var" ? " and variances >= 0" : ""));
  }
  const Tensor n = buffer("num_batches_tracked");
  if (!n.defined() || n.dtype() != DType::i64 || n.numel() != 1)
    throw std::invalid_argument(fmt::format("BatchNorm2d({}): loaded num_batches_tracked must be one i64 value, got {}",
                                            num_features,
                                            n.defined() ? std::string(dtype_name(n.dtype())) + " " + n.shape().str() : "none"));
  if (n.data<int64_t>()[0] < 0)
    throw std::invalid_argument(fmt::format("BatchNorm2d({}): loaded num_batches_tracked is {}, a count cannot be negative",
                                            num_features, n.data<int64_t>()[0]));
}

std::string BatchNorm2d::extra_repr() const {
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats={}", num_features, eps, momentum,
                     affine ? "True" : "False", track_running_stats ? "True" : "False");
}

}  // namespace tq::nn

#include "nn/sgd.h"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::nn {

SGD::SGD(std::vector<Tensor> params, SGDOptions options) : params_(std::move(params)), options_(options) {
  if (!(options_.lr >= 0)) throw std::invalid_argument(fmt::format("SGD: invalid learning rate {}", options_.lr));
  if (!(options_.momentum >= 0)) throw std::invalid_argument(fmt::format("SGD: invalid momentum {}", options_.momentum));
  if (!(options_.weight_decay >= 0))
    throw std::invalid_argument(fmt::format("SGD: invalid weight_decay {}", options_.weight_decay));
  if (options_.nesterov && (options_.momentum <= 0 || options_.dampening != 0))
    throw std::invalid_argument("SGD: Nesterov momentum requires a momentum and zero dampening");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!p.defined() || p.dtype() != DType::f32 || !p.is_contiguous())
      throw std::invalid_argument(fmt::format("SGD: parameter {} is not a contiguous f32 tensor", i));
  }
  buffers_.resize(params_.size());
}

void SGD::step() {
  const float lr = static_cast<float>(options_.lr), mu = static_cast<float>(options_.momentum);
  const float wd = static_cast<float>(options_.weight_decay), damp = 1.f - static_cast<float>(options_.dampening);
  bool any = false;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    any = true;
    float* w = p.data<float>();
    const float* d = g.data<float>();
    const int64_t n = p.numel();
    if (mu == 0.f) {
      for (int64_t j = 0; j < n; ++j) w[j] -= lr * (d[j] + wd * w[j]);  // eq. 1-2
      continue;
    }
    // eq. 3: b = mu b + (1 - dampening) d;  the first step starts b at d.
    const bool first = !buffers_[i].defined();
    if (first) buffers_[i] = empty(p.shape());
    float* b = buffers_[i].data<float>();
    for (int64_t j = 0; j < n; ++j) {
      const float dj = d[j] + wd * w[j];
      b[j] = first ? dj : mu * b[j] + damp * dj;
      // eq. 4: Nesterov looks ahead along the new momentum.
      w[j] -= lr * (options_.nesterov ? dj + mu * b[j] : b[j]);
    }
  }
  if (!any && !params_.empty())
    throw std::logic_error("SGD.step: no parameter has a gradient; call backward() on a loss first");
}

void SGD::zero_grad() {
  for (const Tensor& p : params_) {
    const Tensor g = p.grad();
    if (g.defined()) std::memset(g.data<float>(), 0, static_cast<size_t>(g.numel()) * sizeof(float));
  }
}

}  // namespace tq::nn

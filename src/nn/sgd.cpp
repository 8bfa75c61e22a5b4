// SGD as torch.optim.SGD computes it (docs/sgd.md eq. 1-4), updating the
// parameters in place.
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

namespace {

// The update loops, one per case so each is a simple, vectorisable pass over
// memory (w, g, b never alias). n elements; w: the parameter, g: its
// gradient, b: its momentum buffer.

// eq. 1-2: w -= lr (g + wd w)
void sgd_plain(float* __restrict w, const float* __restrict g, int64_t n, float lr, float wd) {
  for (int64_t j = 0; j < n; ++j) w[j] -= lr * (g[j] + wd * w[j]);
}

// eq. 3-4 with d = g + wd w:
//   first step: b = d; later: b = mu b + (1 - dampening) d;
//   w -= lr (nesterov ? d + mu b : b)
template <bool kFirst, bool kNesterov>
void sgd_momentum(float* __restrict w, const float* __restrict g, float* __restrict b, int64_t n, float lr, float wd,
                  float mu, float one_minus_dampening) {
  for (int64_t j = 0; j < n; ++j) {
    const float d = g[j] + wd * w[j];
    const float bj = kFirst ? d : mu * b[j] + one_minus_dampening * d;
    b[j] = bj;
    w[j] -= lr * (kNesterov ? d + mu * bj : bj);
  }
}

}  // namespace

void SGD::step() {
  const float lr = static_cast<float>(options_.lr), mu = static_cast<float>(options_.momentum);
  const float wd = static_cast<float>(options_.weight_decay);
  const float one_minus_dampening = static_cast<float>(1.0 - options_.dampening);
  bool any = false;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!(g.shape() == p.shape()) || !g.is_contiguous())
      throw std::invalid_argument(fmt::format("SGD.step: gradient of parameter {} has shape {} (contiguous: {}), "
                                              "the parameter has shape {}",
                                              i, g.shape().str(), g.is_contiguous(), p.shape().str()));
    any = true;
    float* w = p.data<float>();
    const float* d = g.data<float>();
    const int64_t n = p.numel();
    if (mu == 0.f) {
      sgd_plain(w, d, n, lr, wd);
      continue;
    }
    // The first step that uses momentum starts the buffer at d (no dampening), as PyTorch does.
    const bool first = !buffers_[i].defined();
    if (first) buffers_[i] = empty(p.shape());
    float* b = buffers_[i].data<float>();
    if (first && options_.nesterov) sgd_momentum<true, true>(w, d, b, n, lr, wd, mu, one_minus_dampening);
    else if (first) sgd_momentum<true, false>(w, d, b, n, lr, wd, mu, one_minus_dampening);
    else if (options_.nesterov) sgd_momentum<false, true>(w, d, b, n, lr, wd, mu, one_minus_dampening);
    else sgd_momentum<false, false>(w, d, b, n, lr, wd, mu, one_minus_dampening);
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

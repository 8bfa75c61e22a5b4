// SGD as torch.optim.SGD computes it (docs/sgd.md eq. 1-4), updating the
// parameters in place.
#include "nn/sgd.h"

#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::nn {

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options)
    : Optimizer("SGD", std::move(groups), options.lr, options.weight_decay), options_(options) {
  if (!(options_.lr >= 0)) throw std::invalid_argument(fmt::format("SGD: invalid learning rate {}", options_.lr));
  if (!(options_.momentum >= 0)) throw std::invalid_argument(fmt::format("SGD: invalid momentum {}", options_.momentum));
  if (!(options_.weight_decay >= 0))
    throw std::invalid_argument(fmt::format("SGD: invalid weight_decay {}", options_.weight_decay));
  if (options_.nesterov && (options_.momentum <= 0 || options_.dampening != 0))
    throw std::invalid_argument("SGD: Nesterov momentum requires a momentum and zero dampening");
  // The parameters and the groups' rates are checked by Optimizer.
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
  const float mu = static_cast<float>(options_.momentum);
  const float one_minus_dampening = static_cast<float>(1.0 - options_.dampening);
  bool any = false;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamGroup& group = groups_[group_index_[i]];
    const float lr = static_cast<float>(*group.lr), wd = static_cast<float>(*group.weight_decay);
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

void SGD::save_state(StateDict& s) const {
  s.scalars["momentum"] = options_.momentum;
  s.scalars["dampening"] = options_.dampening;
  s.scalars["nesterov"] = options_.nesterov;
  for (size_t i = 0; i < buffers_.size(); ++i)
    if (buffers_[i].defined()) s.tensors[fmt::format("param.{}.momentum_buffer", i)] = kernels::clone(buffers_[i]);
}

void SGD::load_state(const StateDict& s) {
  check_setting(s, "momentum", options_.momentum);
  check_setting(s, "dampening", options_.dampening);
  check_setting(s, "nesterov", options_.nesterov);
  std::vector<Tensor> buffers(params_.size());
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i] = load_buffer(s, fmt::format("param.{}.momentum_buffer", i), i);
  buffers_ = std::move(buffers);
}

}  // namespace tq::nn

// SGD as torch.optim.SGD computes it (docs/sgd.md eq. 1-4), updating the
// parameters in place.
#include "nn/sgd.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::nn {

void validate(const SGDOptions& o, const char* who) {
  // Written as !(in range) so that NaN fails every test.
  if (!(std::isfinite(o.lr) && o.lr >= 0))
    throw std::invalid_argument(fmt::format("{}: invalid learning rate {} (must be finite and >= 0)", who, o.lr));
  if (!(std::isfinite(o.momentum) && o.momentum >= 0 && o.momentum <= 1))
    throw std::invalid_argument(fmt::format("{}: invalid momentum {} (must be in [0, 1])", who, o.momentum));
  if (!(std::isfinite(o.dampening) && o.dampening >= 0 && o.dampening <= 1))
    throw std::invalid_argument(fmt::format("{}: invalid dampening {} (must be in [0, 1])", who, o.dampening));
  if (!(std::isfinite(o.weight_decay) && o.weight_decay >= 0))
    throw std::invalid_argument(fmt::format("{}: invalid weight_decay {} (must be finite and >= 0)", who, o.weight_decay));
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
    throw std::invalid_argument(fmt::format("{}: Nesterov momentum requires a momentum and zero dampening", who));
}

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options)
    : Optimizer("SGD", std::move(groups), options.lr, options.weight_decay), options_(options) {
  validate(options_, "SGD");
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

void SGD::set_momentum_buffers(std::vector<Tensor> buffers) {
  if (buffers.size() != params_.size())
    throw std::invalid_argument(fmt::format("SGD.set_momentum_buffers: {} buffers for {} parameters", buffers.size(),
                                            params_.size()));
  for (size_t i = 0; i < buffers.size(); ++i) {
    const Tensor& b = buffers[i];
    if (!b.defined()) continue;
    if (b.dtype() != DType::f32 || !(b.shape() == params_[i].shape()))
      throw std::invalid_argument(fmt::format("SGD.set_momentum_buffers: buffer {} is {} {}, its parameter f32 {}", i,
                                              dtype_name(b.dtype()), b.shape().str(), params_[i].shape().str()));
    buffers[i] = kernels::contiguous(b);
    const float* p = buffers[i].data<float>();
    for (int64_t j = 0, j_end = buffers[i].numel(); j < j_end; ++j)
      if (!std::isfinite(p[j]))
        throw std::invalid_argument(fmt::format("SGD.set_momentum_buffers: buffer {} holds {} at element {}; "
                                                "momentum must be finite",
                                                i, p[j], j));
  }
  buffers_ = std::move(buffers);
}

void SGD::step() {
  // options() hands out a mutable reference: check again what may have changed.
  validate(options_, "SGD.step");
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
    // momentum_buffers() is writable too: a buffer of another shape would be
    // read and written out of bounds.
    const Tensor& buf = buffers_[i];
    if (buf.dtype() != DType::f32 || !(buf.shape() == p.shape()) || !buf.is_contiguous())
      throw std::invalid_argument(fmt::format("SGD.step: momentum buffer {} is {} {}, its parameter f32 {}", i,
                                              dtype_name(buf.dtype()), buf.shape().str(), p.shape().str()));
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

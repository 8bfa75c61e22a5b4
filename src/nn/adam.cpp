// Adam / AdamW as torch.optim.Adam / AdamW compute them in PyTorch 1.13
// (docs/optim.md eq. 1-6), updating the parameters in place.
#include "nn/adam.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::nn {

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options) : Adam(std::move(groups), options, false) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options, bool decoupled)
    : Optimizer(decoupled ? "AdamW" : "Adam", std::move(groups), options.lr, options.weight_decay),
      options_(options),
      decoupled_(decoupled) {
  const char* name = decoupled ? "AdamW" : "Adam";
  if (!(options_.eps >= 0) || !std::isfinite(options_.eps))
    throw std::invalid_argument(fmt::format("{}: invalid eps {} (must be finite and >= 0)", name, options_.eps));
  if (!(options_.beta1 >= 0 && options_.beta1 < 1))
    throw std::invalid_argument(fmt::format("{}: invalid beta1 {} (must be in [0, 1))", name, options_.beta1));
  if (!(options_.beta2 >= 0 && options_.beta2 < 1))
    throw std::invalid_argument(fmt::format("{}: invalid beta2 {} (must be in [0, 1))", name, options_.beta2));
  exp_avg_.resize(params_.size());
  exp_avg_sq_.resize(params_.size());
  max_exp_avg_sq_.resize(params_.size());
  steps_.assign(params_.size(), 0);
}

namespace {

// The f32 constants of one parameter's update; each is a double that PyTorch
// passes to a tensor op, which rounds it to f32.
struct AdamStep {
  float l2;                     // Adam's weight decay (0 for AdamW)
  float decay;                  // AdamW's 1 - lr λ (1 for Adam)
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float bias_correction2_sqrt;  // sqrt(1 - β2^t)
  float eps;
  float neg_step_size;          // -lr / (1 - β1^t)
};

// One pass over a parameter's n elements (none alias): w the parameter, g its
// gradient, m and v the moments, vmax the running maximum of v (amsgrad).
// The f32 operations and their order are PyTorch's (docs/optim.md §2).
template <bool kAmsgrad>
void adam_update(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                 float* __restrict vmax, int64_t n, const AdamStep& c) {
  for (int64_t j = 0; j < n; ++j) {
    const float gj = c.l2 != 0.f ? g[j] + c.l2 * w[j] : g[j];       // eq. 5: grad.add(param, alpha=λ)
    const float wj = w[j] * c.decay;                                 // eq. 6: param.mul_(1 - lr λ)
    m[j] = m[j] * c.beta1 + c.one_minus_beta1 * gj;                  // eq. 1
    v[j] = v[j] * c.beta2 + c.one_minus_beta2 * gj * gj;             // eq. 2: addcmul_(g, g, 1 - β2)
    float second = v[j];
    if constexpr (kAmsgrad) second = vmax[j] = std::max(vmax[j], v[j]);  // eq. 4
    const float denom = std::sqrt(second) / c.bias_correction2_sqrt + c.eps;
    w[j] = wj + c.neg_step_size * m[j] / denom;                     // eq. 3: addcdiv_(m, denom, -step_size)
  }
}

}  // namespace

void Adam::step() {
  bool any = false;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!(g.shape() == p.shape()) || !g.is_contiguous() || g.dtype() != DType::f32)
      throw std::invalid_argument(fmt::format("{}.step: gradient of parameter {} has shape {} (contiguous: {}), "
                                              "the parameter has shape {}",
                                              type_name(), i, g.shape().str(), g.is_contiguous(), p.shape().str()));
    any = true;
    if (!exp_avg_[i].defined()) {  // the state starts at the first step with a gradient, as PyTorch's
      exp_avg_[i] = zeros(p.shape());
      exp_avg_sq_[i] = zeros(p.shape());
      if (options_.amsgrad) max_exp_avg_sq_[i] = zeros(p.shape());
    }
    const int64_t t = ++steps_[i];
    const ParamGroup& group = groups_[group_index_[i]];
    const double lr = *group.lr, wd = *group.weight_decay;
    // Python floats: the bias corrections and the step size are computed in double.
    const double bias_correction1 = 1 - std::pow(options_.beta1, static_cast<double>(t));
    const double bias_correction2 = 1 - std::pow(options_.beta2, static_cast<double>(t));
    const AdamStep c{
        .l2 = decoupled_ ? 0.f : static_cast<float>(wd),
        .decay = decoupled_ ? static_cast<float>(1 - lr * wd) : 1.f,
        .beta1 = static_cast<float>(options_.beta1),
        .one_minus_beta1 = static_cast<float>(1 - options_.beta1),
        .beta2 = static_cast<float>(options_.beta2),
        .one_minus_beta2 = static_cast<float>(1 - options_.beta2),
        .bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2)),
        .eps = static_cast<float>(options_.eps),
        .neg_step_size = static_cast<float>(-(lr / bias_correction1)),
    };
    float* vmax = options_.amsgrad ? max_exp_avg_sq_[i].data<float>() : nullptr;
    if (options_.amsgrad)
      adam_update<true>(p.data<float>(), g.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(), vmax,
                        p.numel(), c);
    else
      adam_update<false>(p.data<float>(), g.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(),
                         vmax, p.numel(), c);
  }
  if (!any && !params_.empty())
    throw std::logic_error(
        fmt::format("{}.step: no parameter has a gradient; call backward() on a loss first", type_name()));
}

void Adam::save_state(StateDict& s) const {
  s.scalars["beta1"] = options_.beta1;
  s.scalars["beta2"] = options_.beta2;
  s.scalars["eps"] = options_.eps;
  s.scalars["amsgrad"] = options_.amsgrad;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!exp_avg_[i].defined()) continue;
    const std::string k = fmt::format("param.{}.", i);
    s.scalars[k + "step"] = static_cast<double>(steps_[i]);
    s.tensors[k + "exp_avg"] = kernels::clone(exp_avg_[i]);
    s.tensors[k + "exp_avg_sq"] = kernels::clone(exp_avg_sq_[i]);
    if (options_.amsgrad) s.tensors[k + "max_exp_avg_sq"] = kernels::clone(max_exp_avg_sq_[i]);
  }
}

void Adam::load_state(const StateDict& s) {
  check_setting(s, "beta1", options_.beta1);
  check_setting(s, "beta2", options_.beta2);
  check_setting(s, "eps", options_.eps);
  check_setting(s, "amsgrad", options_.amsgrad);
  const size_t n = params_.size();
  std::vector<Tensor> m(n), v(n), vmax(n);
  std::vector<int64_t> steps(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string k = fmt::format("param.{}.", i);
    m[i] = load_buffer(s, k + "exp_avg", i);
    v[i] = load_buffer(s, k + "exp_avg_sq", i);
    if (options_.amsgrad) vmax[i] = load_buffer(s, k + "max_exp_avg_sq", i);
    const bool has_step = s.scalars.count(k + "step") != 0;
    const bool complete = m[i].defined() && v[i].defined() && (!options_.amsgrad || vmax[i].defined()) && has_step;
    const bool none = !m[i].defined() && !v[i].defined() && !vmax[i].defined() && !has_step;
    // The second moments are running means of squares: a negative one
    // would make the step's square root NaN.
    for (const Tensor* sq : {&v[i], &vmax[i]}) {
      if (!sq->defined()) continue;
      const float* x = sq->data<float>();
      for (int64_t k = 0, k_end = sq->numel(); k < k_end; ++k)
        if (x[k] < 0)
          throw std::invalid_argument(fmt::format("{} state: parameter {} has a negative second moment {} at element {}",
                                                  type_name(), i, x[k], k));
    }
    if (!complete && !none)
      throw std::invalid_argument(fmt::format("{} state: parameter {} has only part of its state (step, exp_avg, "
                                              "exp_avg_sq{})",
                                              type_name(), i, options_.amsgrad ? ", max_exp_avg_sq" : ""));
    if (complete) {
      const double t = s.scalar(k + "step");
      if (!(t >= 1 && t <= 9.0e15 && t == std::floor(t)))
        throw std::invalid_argument(fmt::format("{} state: parameter {} has step {}, expected a positive integer",
                                                type_name(), i, t));
      steps[i] = static_cast<int64_t>(t);
    }
  }
  exp_avg_ = std::move(m);
  exp_avg_sq_ = std::move(v);
  max_exp_avg_sq_ = std::move(vmax);
  steps_ = std::move(steps);
}

}  // namespace tq::nn

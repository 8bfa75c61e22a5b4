// Parameter groups, zero_grad and the checkpoint state shared by every
// optimizer (docs/optim.md §1).
#include "nn/optimizer.h"

#include <cmath>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::nn {

double StateDict::scalar(const std::string& key) const {
  auto it = scalars.find(key);
  if (it == scalars.end()) throw std::invalid_argument(fmt::format("{} state: no value '{}'", kind, key));
  return it->second;
}

Tensor StateDict::tensor(const std::string& key) const {
  auto it = tensors.find(key);
  return it == tensors.end() ? Tensor() : it->second;
}

static bool valid_rate(double v) { return std::isfinite(v) && v >= 0; }

Optimizer::Optimizer(const char* kind, std::vector<ParamGroup> groups, double default_lr, double default_weight_decay)
    : groups_(std::move(groups)) {
  std::set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup& group = groups_[g];
    if (!group.lr) group.lr = default_lr;
    if (!group.weight_decay) group.weight_decay = default_weight_decay;
    if (!valid_rate(*group.lr))
      throw std::invalid_argument(fmt::format("{}: invalid learning rate {} in {}", kind, *group.lr, group_label(g)));
    if (!valid_rate(*group.weight_decay))
      throw std::invalid_argument(
          fmt::format("{}: invalid weight_decay {} in {}", kind, *group.weight_decay, group_label(g)));
    if (group.initial_lr && !valid_rate(*group.initial_lr))
      throw std::invalid_argument(
          fmt::format("{}: invalid initial_lr {} in {}", kind, *group.initial_lr, group_label(g)));
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      const size_t index = params_.size();
      if (!p.defined() || p.dtype() != DType::f32 || !p.is_contiguous())
        throw std::invalid_argument(
            fmt::format("{}: parameter {} ({}) is not a contiguous f32 tensor", kind, index, group_label(g)));
      if (!seen.insert(p.impl()).second)
        throw std::invalid_argument(fmt::format(
            "{}: parameter {} ({}) appears twice; each parameter may belong to one group only", kind, index,
            group_label(g)));
      params_.push_back(p);
      group_index_.push_back(g);
    }
  }
}

std::string Optimizer::group_label(size_t g) const {
  const std::string& name = groups_.at(g).name;
  return name.empty() ? fmt::format("group {}", g) : fmt::format("group {} ('{}')", g, name);
}

void Optimizer::set_lr(size_t g, double lr) {
  if (!valid_rate(lr))
    throw std::invalid_argument(fmt::format("{}: invalid learning rate {} for {}", type_name(), lr, group_label(g)));
  groups_.at(g).lr = lr;
}

void Optimizer::zero_grad() {
  for (const Tensor& p : params_) {
    const Tensor g = p.grad();
    if (g.defined()) kernels::fill_(g, 0.0);
  }
}

StateDict Optimizer::state_dict() const {
  StateDict s;
  s.kind = type_name();
  s.scalars["groups"] = static_cast<double>(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string k = fmt::format("group.{}.", g);
    s.scalars[k + "size"] = static_cast<double>(groups_[g].params.size());
    s.scalars[k + "lr"] = *groups_[g].lr;
    s.scalars[k + "weight_decay"] = *groups_[g].weight_decay;
    if (groups_[g].initial_lr) s.scalars[k + "initial_lr"] = *groups_[g].initial_lr;
  }
  save_state(s);
  return s;
}

void Optimizer::load_state_dict(const StateDict& s) {
  if (s.kind != type_name())
    throw std::invalid_argument(
        fmt::format("{}: cannot load a state saved by '{}', another kind of optimizer", type_name(), s.kind));
  const double groups = s.scalar("groups");
  if (groups != static_cast<double>(groups_.size()))
    throw std::invalid_argument(
        fmt::format("{} state: saved with {} parameter groups, this optimizer has {}", type_name(), groups, groups_.size()));
  struct Rates {
    double lr, weight_decay;
    std::optional<double> initial_lr;
  };
  std::vector<Rates> rates;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string k = fmt::format("group.{}.", g);
    const double size = s.scalar(k + "size");
    if (size != static_cast<double>(groups_[g].params.size()))
      throw std::invalid_argument(fmt::format("{} state: {} was saved with {} parameters, it has {}", type_name(),
                                              group_label(g), size, groups_[g].params.size()));
    Rates r{s.scalar(k + "lr"), s.scalar(k + "weight_decay"), std::nullopt};
    if (auto it = s.scalars.find(k + "initial_lr"); it != s.scalars.end()) r.initial_lr = it->second;
    if (!valid_rate(r.lr) || !valid_rate(r.weight_decay) || (r.initial_lr && !valid_rate(*r.initial_lr)))
      throw std::invalid_argument(fmt::format("{} state: {} has an invalid rate (lr {}, weight_decay {})", type_name(),
                                              group_label(g), r.lr, r.weight_decay));
    rates.push_back(r);
  }
  load_state(s);  // checks everything before it changes anything
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].lr = rates[g].lr;
    groups_[g].weight_decay = rates[g].weight_decay;
    groups_[g].initial_lr = rates[g].initial_lr;
  }
}

void Optimizer::check_setting(const StateDict& s, const std::string& key, double ours) const {
  const double saved = s.scalar(key);
  if (saved != ours && !(std::isnan(saved) && std::isnan(ours)))
    throw std::invalid_argument(fmt::format("{} state: saved with {} = {}, this optimizer has {} = {}", type_name(), key,
                                            saved, key, ours));
}

Tensor Optimizer::load_buffer(const StateDict& s, const std::string& key, size_t i) const {
  const Tensor t = s.tensor(key);
  if (!t.defined()) return t;
  const Tensor& p = params_.at(i);
  if (t.dtype() != DType::f32 || !(t.shape() == p.shape()))
    throw std::invalid_argument(fmt::format("{} state: '{}' is {} {}, its parameter {} is f32 {}", type_name(), key,
                                            dtype_name(t.dtype()), t.shape().str(), i, p.shape().str()));
  // A restored buffer reaches the weights at the next step: a NaN or an
  // infinity in it would train a model of NaNs without a word.
  Tensor copy = kernels::clone(t);
  const float* v = copy.data<float>();
  for (int64_t k = 0, k_end = copy.numel(); k < k_end; ++k)
    if (!std::isfinite(v[k]))
      throw std::invalid_argument(fmt::format("{} state: '{}' holds {} at element {}; a restored buffer must be finite",
                                              type_name(), key, v[k], k));
  return copy;
}

}  // namespace tq::nn

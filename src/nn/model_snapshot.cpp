// Keeping and restoring a model's parameters and buffers (docs/optim.md §6).
#include "nn/model_snapshot.h"

#include <stdexcept>

#include <fmt/format.h>

#include "autograd/functions.h"
#include "tensor/ops.h"

namespace tq::nn {

ModelSnapshot ModelSnapshot::take(const Module& model) {
  ModelSnapshot s;
  for (const auto& [name, p] : model.named_parameters()) s.parameters_.emplace_back(name, kernels::clone(p));
  for (const auto& [name, b] : model.named_buffers()) s.buffers_.emplace_back(name, kernels::clone(b));
  return s;
}

ModelSnapshot ModelSnapshot::from(std::vector<std::pair<std::string, Tensor>> parameters,
                                  std::vector<std::pair<std::string, Tensor>> buffers) {
  ModelSnapshot s;
  s.parameters_ = std::move(parameters);
  s.buffers_ = std::move(buffers);
  return s;
}

void ModelSnapshot::restore(Module& model) const {
  const auto params = model.named_parameters();
  const auto buffers = model.named_buffers();
  // Check everything first, so a mismatch leaves the model as it was.
  if (params.size() != parameters_.size())
    throw std::invalid_argument(fmt::format("ModelSnapshot::restore: the snapshot has {} parameters, the model {}",
                                            parameters_.size(), params.size()));
  if (buffers.size() != buffers_.size())
    throw std::invalid_argument(fmt::format("ModelSnapshot::restore: the snapshot has {} buffers, the model {}",
                                            buffers_.size(), buffers.size()));
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    const auto& [saved_name, saved] = parameters_[i];
    if (name != saved_name || !(p.shape() == saved.shape()) || p.dtype() != saved.dtype())
      throw std::invalid_argument(fmt::format("ModelSnapshot::restore: parameter {} is '{}' {} in the model, '{}' {} in "
                                              "the snapshot",
                                              i, name, p.shape().str(), saved_name, saved.shape().str()));
  }
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].first != buffers_[i].first)
      throw std::invalid_argument(fmt::format("ModelSnapshot::restore: buffer {} is '{}' in the model, '{}' in the "
                                              "snapshot",
                                              i, buffers[i].first, buffers_[i].first));
  NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) kernels::copy_(params[i].second, parameters_[i].second);
  for (size_t i = 0; i < buffers.size(); ++i) {
    const Tensor& b = buffers[i].second;
    const Tensor& saved = buffers_[i].second;
    if (b.shape() == saved.shape() && b.dtype() == saved.dtype() && b.is_contiguous()) {
      kernels::copy_(b, saved);
      continue;
    }
    const std::string& name = buffers[i].first;
    const size_t dot = name.rfind('.');
    Module& owner = dot == std::string::npos ? model : model.get_submodule(name.substr(0, dot));
    owner.set_buffer(dot == std::string::npos ? name : name.substr(dot + 1), kernels::clone(saved));
  }
  for (auto& [path, m] : model.named_modules()) m->on_state_loaded();
}

}  // namespace tq::nn

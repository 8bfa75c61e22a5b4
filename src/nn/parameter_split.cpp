// Parameters by name, into two sets (docs/optim.md §1).
#include "nn/parameter_split.h"

namespace tq::nn {

std::vector<Tensor> ParameterSplit::tensors(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<Tensor> out;
  out.reserve(named.size());
  for (const auto& [name, t] : named) out.push_back(t);
  return out;
}

ParameterSplit split_parameters(const Module& model, const std::function<bool(const std::string&)>& select) {
  ParameterSplit s;
  for (auto& [name, p] : model.named_parameters()) (select(name) ? s.selected : s.rest).emplace_back(name, p);
  return s;
}

bool name_ends_with(const std::string& name, const std::string& leaf) {
  if (name.size() < leaf.size() || name.compare(name.size() - leaf.size(), leaf.size(), leaf) != 0) return false;
  return name.size() == leaf.size() || name[name.size() - leaf.size() - 1] == '.';
}

bool is_bias_name(const std::string& name) { return name_ends_with(name, "bias"); }

}  // namespace tq::nn

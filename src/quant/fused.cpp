#include "quant/fused.h"

#include <functional>
#include <set>
#include <stdexcept>
#include <typeindex>
#include <typeinfo>

#include <fmt/format.h>

#include "nn/activation.h"

namespace tq::quant {

namespace {

// The fusion patterns: (this layer type, this activation type) -> the fused
// module. A new fusable layer kind adds its rows here.
struct Pattern {
  std::type_index layer, activation;
  std::function<std::shared_ptr<nn::Module>(nn::Module& layer)> fuse;
};

const std::vector<Pattern>& patterns() {
  static const std::vector<Pattern> table = {
      {typeid(nn::Linear), typeid(nn::ReLU),
       [](nn::Module& l) { return std::make_shared<LinearReLU>(static_cast<nn::Linear&>(l)); }},
      {typeid(nn::Linear), typeid(nn::ReLU6),
       [](nn::Module& l) { return std::make_shared<LinearReLU6>(static_cast<nn::Linear&>(l)); }},
  };
  return table;
}

// The pattern that fuses (first, second), or nullptr. Types must match
// exactly: a LinearReLU followed by a ReLU is not fused again.
const Pattern* find_pattern(const nn::Module& first, const nn::Module& second) {
  for (const Pattern& p : patterns())
    if (p.layer == std::type_index(typeid(first)) && p.activation == std::type_index(typeid(second))) return &p;
  return nullptr;
}

std::shared_ptr<nn::Module> fuse_pair(const Pattern& p, nn::Module& first) {
  auto fused = p.fuse(first);
  if (first.qconfig) fused->qconfig = first.qconfig;
  return fused;
}

}  // namespace

FusedLinear::FusedLinear(const nn::Linear& linear, FusedActivation a) : nn::Linear(linear.weight, linear.bias), activation(a) {
  train(linear.is_training());
}

Tensor FusedLinear::forward(const Tensor& x) { return apply_fused_activation(activation, nn::Linear::forward(x)); }

FusedActivation fused_activation_of(const nn::Module& m) {
  auto* f = dynamic_cast<const FusedLinear*>(&m);
  return f ? f->activation : FusedActivation::none;
}

void fuse_modules(nn::Module& model, const std::vector<std::vector<std::string>>& groups) {
  // Check every group before changing anything, so a bad group leaves the model as it was.
  std::vector<std::shared_ptr<nn::Module>> fused_modules;
  std::set<std::string> seen;
  for (const auto& group : groups) {
    std::string names;
    for (auto& n : group) names += (names.empty() ? "" : ", ") + n;
    if (group.size() != 2)
      throw std::invalid_argument(fmt::format("fuse_modules: group [{}] must name two modules (Linear, ReLU)", names));
    for (auto& n : group)
      if (!seen.insert(n).second)
        throw std::invalid_argument(fmt::format("fuse_modules: '{}' appears in more than one group", n));
    nn::Module& first = model.get_submodule(group[0]);
    nn::Module& second = model.get_submodule(group[1]);
    const Pattern* p = find_pattern(first, second);
    if (!p)
      throw std::invalid_argument(fmt::format("fuse_modules: group [{}] is ({}, {}); only (Linear, ReLU) and (Linear, "
                                              "ReLU6) can be fused",
                                              names, first.type_name(), second.type_name()));
    fused_modules.push_back(fuse_pair(*p, first));
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    model.replace_module(groups[i][0], fused_modules[i]);
    model.replace_module(groups[i][1], std::make_shared<Identity>());
  }
}

int fuse_linear_relu(nn::Module& model) {
  // Find the Sequentials first: fusing frees the replaced Linear and ReLU
  // modules, so a list of every module would hold dangling pointers.
  std::vector<nn::Sequential*> sequentials;
  for (auto& [path, m] : model.named_modules())
    if (auto* seq = dynamic_cast<nn::Sequential*>(m)) sequentials.push_back(seq);
  int fused = 0;
  for (nn::Sequential* seq : sequentials) {
    const auto& slots = seq->children();
    for (size_t i = 0; i + 1 < slots.size(); ++i) {
      const Pattern* p = find_pattern(*slots[i]->module, *slots[i + 1]->module);
      if (!p) continue;
      slots[i]->module = fuse_pair(*p, *slots[i]->module);
      slots[i + 1]->module = std::make_shared<Identity>();
      ++fused;
      ++i;
    }
  }
  return fused;
}

}  // namespace tq::quant

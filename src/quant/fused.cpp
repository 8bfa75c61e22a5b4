#include "quant/fused.h"

#include <set>
#include <stdexcept>
#include <typeinfo>

#include <fmt/format.h>

#include "nn/activation.h"

namespace tq::quant {

namespace {
bool is_plain_linear(const nn::Module& m) { return typeid(m) == typeid(nn::Linear); }
bool is_relu(const nn::Module& m) { return typeid(m) == typeid(nn::ReLU); }
}  // namespace

void fuse_modules(nn::Module& model, const std::vector<std::vector<std::string>>& groups) {
  // Check every group before changing anything, so a bad group leaves the model as it was.
  std::vector<std::shared_ptr<LinearReLU>> fused_modules;
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
    if (!is_plain_linear(first) || !is_relu(second))
      throw std::invalid_argument(fmt::format("fuse_modules: group [{}] is ({}, {}); only (Linear, ReLU) can be fused",
                                              names, first.type_name(), second.type_name()));
    auto fused = std::make_shared<LinearReLU>(static_cast<nn::Linear&>(first));
    if (first.qconfig) fused->qconfig = first.qconfig;
    fused_modules.push_back(std::move(fused));
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
      if (!is_plain_linear(*slots[i]->module) || !is_relu(*slots[i + 1]->module)) continue;
      auto f = std::make_shared<LinearReLU>(static_cast<nn::Linear&>(*slots[i]->module));
      if (slots[i]->module->qconfig) f->qconfig = slots[i]->module->qconfig;
      slots[i]->module = f;
      slots[i + 1]->module = std::make_shared<Identity>();
      ++fused;
      ++i;
    }
  }
  return fused;
}

}  // namespace tq::quant

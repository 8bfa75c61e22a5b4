#include "quant/fused.h"

#include <functional>
#include <set>
#include <stdexcept>
#include <typeindex>
#include <typeinfo>

#include <fmt/format.h>

#include "nn/activation.h"
#include "quant/conv_bn_fold.h"

namespace tq::quant {

namespace {

// The fusion patterns: a run of module types -> the fused module, built from
// the run's modules. A new fusable layer kind adds its rows here.
struct Pattern {
  std::vector<std::type_index> types;
  std::function<std::shared_ptr<nn::Module>(const std::vector<std::shared_ptr<nn::Module>>& run)> fuse;
};

template <class L>
std::shared_ptr<nn::Module> fuse_linear(const std::vector<std::shared_ptr<nn::Module>>& run) {
  return std::make_shared<L>(static_cast<nn::Linear&>(*run[0]));
}

template <class C>
std::shared_ptr<nn::Module> fuse_conv(const std::vector<std::shared_ptr<nn::Module>>& run) {
  return std::make_shared<C>(static_cast<nn::Conv2d&>(*run[0]));
}

// Conv2d + BatchNorm2d (+ activation A): kept apart for QAT in training
// mode (QAT form Q), folded in eval mode.
template <class Q, FusedActivation A>
std::shared_ptr<nn::Module> fuse_conv_bn(const std::vector<std::shared_ptr<nn::Module>>& run) {
  auto& conv = static_cast<nn::Conv2d&>(*run[0]);
  auto& bn = static_cast<nn::BatchNorm2d&>(*run[1]);
  if (bn.num_features != conv.out_channels)
    throw std::invalid_argument(fmt::format("fuse: BatchNorm2d({}) cannot follow a Conv2d with {} output channels",
                                            bn.num_features, conv.out_channels));
  if (conv.is_training()) {
    // The BatchNorm module itself moves into the fused one.
    return std::make_shared<Q>(conv, std::static_pointer_cast<nn::BatchNorm2d>(run[1]));
  }
  if (!bn.track_running_stats)
    throw std::invalid_argument("fuse: a BatchNorm2d without running statistics cannot be folded (eval mode); fuse in "
                                "training mode for quantization-aware training");
  std::shared_ptr<nn::Conv2d> folded = fold_conv_bn(conv, bn);
  if constexpr (A == FusedActivation::none) return folded;
  else if constexpr (A == FusedActivation::relu) return std::make_shared<ConvReLU2d>(*folded);
  else return std::make_shared<ConvReLU62d>(*folded);
}

const std::vector<Pattern>& patterns() {
  using nn::BatchNorm2d, nn::Conv2d, nn::Linear, nn::ReLU, nn::ReLU6;
  constexpr auto kNone = FusedActivation::none, kReLU = FusedActivation::relu, kReLU6 = FusedActivation::relu6;
  static const std::vector<Pattern> table = {
      {{typeid(Linear), typeid(ReLU)}, fuse_linear<LinearReLU>},
      {{typeid(Linear), typeid(ReLU6)}, fuse_linear<LinearReLU6>},
      {{typeid(Conv2d), typeid(BatchNorm2d), typeid(ReLU)}, fuse_conv_bn<ConvBnReLU2d, kReLU>},
      {{typeid(Conv2d), typeid(BatchNorm2d), typeid(ReLU6)}, fuse_conv_bn<ConvBnReLU62d, kReLU6>},
      {{typeid(Conv2d), typeid(BatchNorm2d)}, fuse_conv_bn<ConvBn2d, kNone>},
      {{typeid(Conv2d), typeid(ReLU)}, fuse_conv<ConvReLU2d>},
      {{typeid(Conv2d), typeid(ReLU6)}, fuse_conv<ConvReLU62d>},
  };
  return table;
}

// The pattern that fuses exactly this run, or nullptr. Types must match
// exactly: a LinearReLU followed by a ReLU is not fused again.
const Pattern* find_pattern(const std::vector<std::shared_ptr<nn::Module>>& run) {
  for (const Pattern& p : patterns()) {
    if (p.types.size() != run.size()) continue;
    bool match = true;
    for (size_t i = 0; i < run.size() && match; ++i) {
      const nn::Module& m = *run[i];
      match = p.types[i] == std::type_index(typeid(m));
    }
    if (match) return &p;
  }
  return nullptr;
}

std::shared_ptr<nn::Module> fuse_run(const Pattern& p, const std::vector<std::shared_ptr<nn::Module>>& run) {
  auto fused = p.fuse(run);
  if (run[0]->qconfig) fused->qconfig = run[0]->qconfig;
  return fused;
}

std::string pattern_list() {
  std::string out;
  for (const Pattern& p : patterns()) {
    std::string names;
    for (auto& t : p.types) {
      std::string n = t.name();
      for (const char* k : {"Linear", "Conv2d", "BatchNorm2d", "ReLU6", "ReLU"})
        if (n.find(k) != std::string::npos) { n = k; break; }
      names += (names.empty() ? "" : ", ") + n;
    }
    out += (out.empty() ? "(" : ", (") + names + ")";
  }
  return out;
}

}  // namespace

FusedLinear::FusedLinear(const nn::Linear& linear, FusedActivation a) : nn::Linear(linear.weight, linear.bias), activation(a) {
  train(linear.is_training());
}

Tensor FusedLinear::forward(const Tensor& x) { return apply_fused_activation(activation, nn::Linear::forward(x)); }

FusedConv2d::FusedConv2d(const nn::Conv2d& conv, FusedActivation a) : nn::Conv2d(conv, conv.weight, conv.bias), activation(a) {}

Tensor FusedConv2d::forward(const Tensor& x) { return apply_fused_activation(activation, nn::Conv2d::forward(x)); }

FusedConvBn2d::FusedConvBn2d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm2d> bn_module, FusedActivation a)
    : nn::Conv2d(conv, conv.weight, conv.bias), activation(a) {
  if (!bn_module || bn_module->num_features != out_channels)
    throw std::invalid_argument(fmt::format("ConvBn2d: needs a BatchNorm2d({}) for a Conv2d with {} output channels",
                                            out_channels, out_channels));
  bn = register_module("bn", std::move(bn_module));
  train(conv.is_training());
}

Tensor FusedConvBn2d::forward(const Tensor& x) { return apply_fused_activation(activation, bn(nn::Conv2d::forward(x))); }

std::shared_ptr<nn::Conv2d> fold_conv_bn(const nn::Conv2d& conv, const nn::BatchNorm2d& bn) {
  const FoldedConv f = fold_batch_norm(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean(), bn.running_var(), bn.eps);
  auto folded = std::make_shared<nn::Conv2d>(conv, f.weight, f.bias);
  return folded;
}

FusedActivation fused_activation_of(const nn::Module& m) {
  if (auto* f = dynamic_cast<const FusedLinear*>(&m)) return f->activation;
  if (auto* f = dynamic_cast<const FusedConv2d*>(&m)) return f->activation;
  if (auto* f = dynamic_cast<const FusedConvBn2d*>(&m)) return f->activation;
  return FusedActivation::none;
}

void fuse_modules(nn::Module& model, const std::vector<std::vector<std::string>>& groups) {
  // Check every group before changing anything, so a bad group leaves the model as it was.
  std::vector<std::shared_ptr<nn::Module>> fused_modules;
  std::set<std::string> seen;
  for (const auto& group : groups) {
    std::string names;
    for (auto& n : group) names += (names.empty() ? "" : ", ") + n;
    if (group.size() != 2 && group.size() != 3)
      throw std::invalid_argument(fmt::format("fuse_modules: group [{}] must name two modules (Linear, ReLU) or three "
                                              "(Conv2d, BatchNorm2d, ReLU)",
                                              names));
    for (auto& n : group)
      if (!seen.insert(n).second)
        throw std::invalid_argument(fmt::format("fuse_modules: '{}' appears in more than one group", n));
    std::vector<std::shared_ptr<nn::Module>> run;
    std::string types;
    for (auto& n : group) {
      model.get_submodule(n);  // throws naming a missing path
      const size_t dot = n.rfind('.');
      nn::Module& parent = dot == std::string::npos ? model : model.get_submodule(n.substr(0, dot));
      run.push_back(parent.find_slot(dot == std::string::npos ? n : n.substr(dot + 1))->module);
      types += (types.empty() ? "" : ", ") + run.back()->type_name();
    }
    const Pattern* p = find_pattern(run);
    if (!p)
      throw std::invalid_argument(fmt::format("fuse_modules: group [{}] is ({}); only these can be fused: {}", names,
                                              types, pattern_list()));
    fused_modules.push_back(fuse_run(*p, run));
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    model.replace_module(groups[i][0], fused_modules[i]);
    for (size_t k = 1; k < groups[i].size(); ++k) model.replace_module(groups[i][k], std::make_shared<Identity>());
  }
}

namespace {

// Fuses the runs of `seq` that the patterns accepted by `use` match; longest first.
int fuse_in_sequentials(nn::Module& model, const std::function<bool(const Pattern&)>& use) {
  // Find the Sequentials first: fusing frees the replaced modules, so a list
  // of every module would hold dangling pointers. (A fused module keeps its
  // own references to what it took over, such as a BatchNorm2d.)
  std::vector<nn::Sequential*> sequentials;
  for (auto& [path, m] : model.named_modules())
    if (auto* seq = dynamic_cast<nn::Sequential*>(m)) sequentials.push_back(seq);
  int fused = 0;
  for (nn::Sequential* seq : sequentials) {
    const auto& slots = seq->children();
    for (size_t i = 0; i + 1 < slots.size(); ++i) {
      for (size_t len : {size_t{3}, size_t{2}}) {
        if (i + len > slots.size()) continue;
        std::vector<std::shared_ptr<nn::Module>> run;
        for (size_t k = 0; k < len; ++k) run.push_back(slots[i + k]->module);
        const Pattern* p = find_pattern(run);
        if (!p || !use(*p)) continue;
        slots[i]->module = fuse_run(*p, run);
        for (size_t k = 1; k < len; ++k) slots[i + k]->module = std::make_shared<Identity>();
        ++fused;
        i += len - 1;
        break;
      }
    }
  }
  return fused;
}

}  // namespace

int fuse_linear_relu(nn::Module& model) {
  return fuse_in_sequentials(model, [](const Pattern& p) { return p.types[0] == std::type_index(typeid(nn::Linear)); });
}

int fuse_known_modules(nn::Module& model) {
  return fuse_in_sequentials(model, [](const Pattern&) { return true; });
}

}  // namespace tq::quant

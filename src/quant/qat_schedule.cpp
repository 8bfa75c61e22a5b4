// Switching quantizers over a whole model, the QAT schedule and the LSQ
// parameter groups (docs/optim.md §8).
#include "quant/qat_schedule.h"

#include <set>
#include <typeinfo>
#include <utility>

#include "nn/parameter_split.h"
#include "quant/fake_quantize.h"
#include "quant/qat_conv.h"
#include "quant/learnable_fake_quantize.h"

namespace tq::quant {

namespace {

// Calls fq(FakeQuantize&) / lsq(LearnableFakeQuantize&) on every quantizer
// module; returns how many returned true (changed something).
int for_each_quantizer(nn::Module& model, const std::function<bool(FakeQuantize&)>& fq,
                       const std::function<bool(LearnableFakeQuantize&)>& lsq) {
  int changed = 0;
  for (auto& [path, m] : model.named_modules()) {
    if (auto* f = dynamic_cast<FakeQuantize*>(m)) changed += fq(*f);
    else if (auto* l = dynamic_cast<LearnableFakeQuantize*>(m)) changed += lsq(*l);
  }
  return changed;
}

}  // namespace

int disable_observer(nn::Module& model) {
  return for_each_quantizer(
      model, [](FakeQuantize& f) { return std::exchange(f.observer_enabled, false); },
      [](LearnableFakeQuantize& l) {
        const bool was = l.static_enabled();
        l.disable_observer();
        return was;
      });
}

int enable_observer(nn::Module& model) {
  return for_each_quantizer(
      model, [](FakeQuantize& f) { return !std::exchange(f.observer_enabled, true); },
      [](LearnableFakeQuantize& l) {
        const bool was = l.static_enabled();
        l.enable_observer();
        return !was;
      });
}

int disable_fake_quant(nn::Module& model) {
  return for_each_quantizer(
      model, [](FakeQuantize& f) { return std::exchange(f.fake_quant_enabled, false); },
      [](LearnableFakeQuantize& l) {
        const bool was = l.fake_quant_enabled();
        l.disable_fake_quant();
        return was;
      });
}

int enable_fake_quant(nn::Module& model) {
  return for_each_quantizer(
      model, [](FakeQuantize& f) { return !std::exchange(f.fake_quant_enabled, true); },
      [](LearnableFakeQuantize& l) {
        const bool was = l.fake_quant_enabled();
        l.enable_fake_quant();
        return !was;
      });
}

int freeze_qparams(nn::Module& model) {
  return for_each_quantizer(
      model, [](FakeQuantize& f) { return std::exchange(f.observer_enabled, false); },
      [](LearnableFakeQuantize& l) {
        const bool was = l.static_enabled() || l.learning_enabled();
        l.disable_observer();
        l.toggle_qparam_learning(false);
        // No gradient: optimizers skip these parameters from now on.
        for (auto& [name, p] : l.named_parameters(false)) p.set_grad(Tensor());
        return was;
      });
}

std::map<std::type_index, FreezeBnStatsFunction>& freeze_bn_stats_functions() {
  // The library's layers with batch statistics: the QAT convolution with a
  // BatchNorm (docs/quantized_cnn.md §6).
  static std::map<std::type_index, FreezeBnStatsFunction> table = {
      {typeid(QATConv2d), [](nn::Module& m) { static_cast<QATConv2d&>(m).freeze_bn_stats(); }},
  };
  return table;
}

int freeze_bn_stats(nn::Module& model) {
  const auto& table = freeze_bn_stats_functions();
  int n = 0;
  for (auto& [path, m] : model.named_modules()) {
    if (auto* f = dynamic_cast<FreezesBnStats*>(m)) {
      f->freeze_bn_stats();
      ++n;
      continue;
    }
    auto it = table.find(std::type_index(typeid(*m)));
    if (it == table.end()) continue;
    it->second(*m);
    ++n;
  }
  return n;
}

QatScheduleChanges apply_qat_schedule(nn::Module& model, const QatSchedule& s, int epoch) {
  QatScheduleChanges c;
  if (s.freeze_observers_epoch >= 0 && epoch >= s.freeze_observers_epoch) c.observers_disabled = disable_observer(model);
  if (s.freeze_qparams_epoch >= 0 && epoch >= s.freeze_qparams_epoch) c.qparams_frozen = freeze_qparams(model);
  // BatchNorm freezing is applied once, at its epoch (its functions need not be idempotent).
  if (s.freeze_bn_epoch >= 0 && epoch == s.freeze_bn_epoch) c.bn_frozen = freeze_bn_stats(model);
  return c;
}

std::vector<std::string> quantizer_parameter_names(const nn::Module& model) {
  std::vector<std::string> names;
  for (auto& [path, m] : model.named_modules()) {
    if (!dynamic_cast<const QParamsSource*>(m)) continue;
    for (auto& [name, p] : m->named_parameters(false)) names.push_back(path.empty() ? name : path + "." + name);
  }
  return names;
}

std::vector<nn::ParamGroup> lsq_param_groups(const nn::Module& model, std::optional<double> quantizer_lr,
                                             double quantizer_weight_decay) {
  const std::vector<std::string> names = quantizer_parameter_names(model);
  const std::set<std::string> quantizer(names.begin(), names.end());
  const nn::ParameterSplit split =
      nn::split_parameters(model, [&](const std::string& name) { return quantizer.count(name) != 0; });
  std::vector<nn::ParamGroup> groups;
  groups.push_back({.name = "weights", .params = nn::ParameterSplit::tensors(split.rest)});
  if (!split.selected.empty())
    groups.push_back({.name = "quantizers",
                      .params = nn::ParameterSplit::tensors(split.selected),
                      .lr = quantizer_lr,
                      .weight_decay = quantizer_weight_decay});
  return groups;
}

}  // namespace tq::quant

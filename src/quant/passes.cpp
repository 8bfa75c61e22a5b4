#include "quant/passes.h"

#include <stdexcept>
#include <typeinfo>

#include <fmt/format.h>

#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"

namespace tq::quant {

namespace {

std::string join(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }

// Depth-first over the slots: swaps every module whose exact type has an
// entry (and, if `need_qconfig`, an effective qconfig). Returns the count.
int swap_modules(nn::Module& parent, const std::string& prefix, QConfigPtr inherited, const ModuleMapping& mapping,
                 bool need_qconfig) {
  int swapped = 0;
  for (const auto& slot : parent.children()) {
    nn::Module& child = *slot->module;
    const QConfigPtr qconfig = child.qconfig.has_value() ? *child.qconfig : inherited;
    const std::string path = join(prefix, slot->name);
    auto it = mapping.find(std::type_index(typeid(child)));
    if (it != mapping.end() && (qconfig || !need_qconfig)) {
      auto replacement = it->second(child, qconfig.get(), path);
      replacement->qconfig = qconfig;
      slot->module = std::move(replacement);
      ++swapped;
    } else {
      swapped += swap_modules(child, path, qconfig, mapping, need_qconfig);
    }
  }
  return swapped;
}

void name_observers(nn::Module& m, const std::string& path) {
  for (auto& [sub, mod] : m.named_modules())
    if (auto* src = dynamic_cast<QParamsSource*>(mod)) src->owner = join(path, sub);
}

}  // namespace

ModuleMapping& default_qat_module_mappings() {
  static ModuleMapping mapping = {
      {std::type_index(typeid(nn::Linear)),
       [](nn::Module& m, const QConfig* qc, const std::string& path) -> std::shared_ptr<nn::Module> {
         auto qat = std::make_shared<QATLinear>(static_cast<nn::Linear&>(m), *qc);
         qat->name = path;
         name_observers(*qat, path);
         return qat;
       }},
  };
  return mapping;
}

ModuleMapping& default_static_quant_module_mappings() {
  static ModuleMapping mapping = {
      {std::type_index(typeid(QATLinear)),
       [](nn::Module& m, const QConfig*, const std::string& path) -> std::shared_ptr<nn::Module> {
         auto& qat = static_cast<QATLinear&>(m);
         // Exactly the qparams of the last fake-quant forward (DESIGN: "Convert uses ...").
         const QParams wq = qat.weight_fake_quant->calculate_qparams();
         const QParams oq = qat.activation_post_process->calculate_qparams();
         std::shared_ptr<const QParams> iq;
         if (qat.saw_float_input()) iq = std::make_shared<const QParams>(qat.input_fake_quant->calculate_qparams());
         auto q = std::make_shared<QuantizedLinear>(qat.weight, qat.bias, wq, oq, iq, qat.fused_relu, path);
         q->train(false);
         return q;
       }},
  };
  return mapping;
}

std::map<std::string, QConfigPtr> propagate_qconfig(const nn::Module& model) {
  std::map<std::string, QConfigPtr> out;
  std::function<void(const nn::Module&, const std::string&, QConfigPtr)> walk = [&](const nn::Module& m,
                                                                                    const std::string& path,
                                                                                    QConfigPtr inherited) {
    const QConfigPtr qc = m.qconfig.has_value() ? *m.qconfig : inherited;
    out[path] = qc;
    for (auto& s : m.children()) walk(*s->module, join(path, s->name), qc);
  };
  walk(model, "", nullptr);
  return out;
}

void prepare_qat(nn::Module& model, const ModuleMapping& mapping) {
  bool any_qconfig = false;
  for (auto& [path, qc] : propagate_qconfig(model)) any_qconfig |= qc != nullptr;
  if (!any_qconfig)
    throw std::logic_error("prepare_qat: no module has a qconfig; set one first, e.g. "
                           "model.qconfig = quant::get_default_qat_qconfig(\"x86\")");
  for (auto& [path, m] : model.named_modules())
    if (auto* qat = dynamic_cast<QATLinear*>(m))
      throw std::logic_error(fmt::format("prepare_qat: the model is already prepared ('{}' is a {})", qat->name,
                                         qat->type_name()));
  model.train();
  const QConfigPtr root = model.qconfig.value_or(nullptr);
  const int n = swap_modules(model, "", root, mapping, true);
  if (n == 0)
    throw std::logic_error("prepare_qat: no module with a qconfig has a QAT mapping (is there a Linear under the qconfig?)");
}

void convert(nn::Module& model, const ModuleMapping& mapping) {
  // Check first, so a failing convert leaves the model as it was.
  bool any_prepared = false;
  for (auto& [path, m] : model.named_modules()) {
    if (mapping.count(std::type_index(typeid(*m))) == 0) continue;
    any_prepared = true;
    if (auto* qat = dynamic_cast<QATLinear*>(m)) {
      qat->weight_fake_quant->calculate_qparams();         // throws naming the layer
      qat->activation_post_process->calculate_qparams();   // if it saw no data
    }
  }
  if (!any_prepared) {
    for (auto& [path, m] : model.named_modules())
      if (dynamic_cast<nn::Linear*>(m) && !path.empty())
        throw std::logic_error(fmt::format("convert: '{}' is a float {} — call prepare_qat (or prepare) and "
                                           "train / calibrate before convert",
                                           path, m->type_name()));
    throw std::logic_error("convert: the model has no prepared module; call prepare_qat (or prepare) first");
  }
  swap_modules(model, "", model.qconfig.value_or(nullptr), mapping, false);
  model.eval();
}

}  // namespace tq::quant

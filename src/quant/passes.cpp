#include "quant/passes.h"

#include <iostream>
#include <stdexcept>
#include <typeinfo>

#include <fmt/format.h>

#include "nn/activation.h"
#include "nn/sequential.h"
#include "quant/dynamic_linear.h"
#include "quant/fused.h"
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

// Builds a prepared layer of type P from a float Linear (fused or not).
template <class P, bool kFusedRelu>
std::shared_ptr<nn::Module> make_prepared(nn::Module& m, const QConfig* qc, const std::string& path) {
  auto p = std::make_shared<P>(static_cast<nn::Linear&>(m), *qc, kFusedRelu);
  p->name = path;
  name_observers(*p, path);
  return p;
}

// QATLinear / ObservedLinear -> QuantizedLinear with exactly the qparams the
// prepared layer last used (docs/design.md §2: convert uses exactly the
// qparams of the last fake-quant forward).
std::shared_ptr<nn::Module> make_quantized(nn::Module& m, const QConfig*, const std::string& path) {
  auto& p = static_cast<QATLinear&>(m);
  const QParams wq = p.weight_quant->calculate_qparams();
  const QParams oq = p.output_quant->calculate_qparams();
  std::shared_ptr<const QParams> iq;
  if (p.saw_float_input()) iq = std::make_shared<const QParams>(p.input_quant->calculate_qparams());
  auto q = std::make_shared<QuantizedLinear>(p.weight, p.bias, wq, oq, iq, p.fused_relu, path);
  q->train(false);
  return q;
}

ModuleMapping& default_qat_module_mappings() {
  static ModuleMapping mapping = {
      {std::type_index(typeid(nn::Linear)), make_prepared<QATLinear, false>},
      {std::type_index(typeid(LinearReLU)), make_prepared<QATLinear, true>},
  };
  return mapping;
}

ModuleMapping& default_observed_module_mappings() {
  static ModuleMapping mapping = {
      {std::type_index(typeid(nn::Linear)), make_prepared<ObservedLinear, false>},
      {std::type_index(typeid(LinearReLU)), make_prepared<ObservedLinear, true>},
  };
  return mapping;
}

ModuleMapping& default_static_quant_module_mappings() {
  static ModuleMapping mapping = {
      {std::type_index(typeid(QATLinear)), make_quantized},
      {std::type_index(typeid(ObservedLinear)), make_quantized},
  };
  return mapping;
}

ModuleMapping& default_dynamic_quant_module_mappings() {
  // The qconfig argument is unused: dynamic quantization needs no observers.
  static ModuleMapping mapping = {
      {std::type_index(typeid(nn::Linear)),
       [](nn::Module& m, const QConfig*, const std::string&) -> std::shared_ptr<nn::Module> {
         auto& l = static_cast<nn::Linear&>(m);
         return std::make_shared<DynamicQuantizedLinear>(l.weight, l.bias);
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

namespace {
void prepare_with(nn::Module& model, const ModuleMapping& mapping, const char* pass) {
  bool any_qconfig = false;
  for (auto& [path, qc] : propagate_qconfig(model)) any_qconfig |= qc != nullptr;
  if (!any_qconfig)
    throw std::logic_error(fmt::format("{}: no module has a qconfig; set one first, e.g. "
                                       "model.qconfig = quant::get_default_{}qconfig(\"x86\")",
                                       pass, std::string(pass) == "prepare_qat" ? "qat_" : ""));
  for (auto& [path, m] : model.named_modules())
    if (auto* p = dynamic_cast<QATLinear*>(m))
      throw std::logic_error(fmt::format("{}: the model is already prepared ('{}' is a {})", pass, p->name,
                                         p->type_name()));
  for (auto& [path, m] : model.named_modules())
    if (dynamic_cast<QuantizedLinear*>(m) || dynamic_cast<DynamicQuantizedLinear*>(m))
      throw std::logic_error(fmt::format("{}: the model is already quantized ('{}' is a {}); {} starts from a float model",
                                         pass, path, m->type_name(), pass));
  const int n = swap_modules(model, "", model.qconfig.value_or(nullptr), mapping, true);
  if (n == 0)
    throw std::logic_error(fmt::format("{}: no module with a qconfig has a mapping (is there a Linear under the qconfig?)", pass));
}
}  // namespace

void prepare_qat(nn::Module& model, const ModuleMapping& mapping) {
  prepare_with(model, mapping, "prepare_qat");
  model.train();
}

void prepare(nn::Module& model, const ModuleMapping& mapping) { prepare_with(model, mapping, "prepare"); }

int quantize_dynamic(nn::Module& model, const std::set<std::type_index>& types, DType dtype, bool per_channel) {
  if (dtype != DType::i8)
    throw std::invalid_argument(fmt::format("quantize_dynamic: only qint8 (i8) weights are supported, not {}", dtype_name(dtype)));
  const std::set<std::type_index> wanted =
      types.empty() ? std::set<std::type_index>{typeid(nn::Linear), typeid(LinearReLU)} : types;
  ModuleMapping mapping;
  for (const auto& t : wanted) {
    if (t == std::type_index(typeid(nn::Linear)) || t == std::type_index(typeid(LinearReLU))) {
      const bool relu = t == std::type_index(typeid(LinearReLU));
      mapping[t] = [per_channel, relu](nn::Module& m, const QConfig*, const std::string&) -> std::shared_ptr<nn::Module> {
        auto& l = static_cast<nn::Linear&>(m);
        auto d = std::make_shared<DynamicQuantizedLinear>(l.weight, l.bias, per_channel);
        if (!relu) return d;
        auto seq = std::make_shared<nn::Sequential>();  // dynamic int8 Linear, then the float ReLU
        seq->push_back(std::shared_ptr<nn::Module>(d));
        seq->push_back(nn::ReLU());
        return seq;
      };
    } else if (auto it = default_dynamic_quant_module_mappings().find(t); it != default_dynamic_quant_module_mappings().end()) {
      mapping[t] = it->second;
    }
  }
  const int n = swap_modules(model, "", nullptr, mapping, false);
  if (n == 0) {  // unchanged means unchanged: not even switched to eval mode
    std::cerr << "quantize_dynamic: no module of the requested types was found; the model is unchanged\n";
    return 0;
  }
  model.eval();
  return n;
}

void convert(nn::Module& model, const ModuleMapping& mapping) {
  // Check first, so a failing convert leaves the model as it was.
  bool any_prepared = false;
  for (auto& [path, m] : model.named_modules()) {
    if (mapping.count(std::type_index(typeid(*m))) == 0) continue;
    any_prepared = true;
    auto* p = dynamic_cast<QATLinear*>(m);
    if (!p) continue;
    // Each range the int8 layer will be made from must give valid qparams:
    // no data yet, or a range that is not finite, stops here, naming the layer.
    try {
      p->output_quant->calculate_qparams();
      p->weight_quant->calculate_qparams();
      if (p->saw_float_input()) p->input_quant->calculate_qparams();
    } catch (const std::invalid_argument& e) {  // from calculate_qparams, which knows no layer names
      throw std::invalid_argument(fmt::format("convert: layer '{}': {}", path, e.what()));
    }  // "has seen no data" (logic_error) names the observer by its path already
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

int set_int8_threads(nn::Module& model, int threads) {
  if (threads < 0) throw std::invalid_argument(fmt::format("set_int8_threads: threads {} must be >= 0", threads));
  int n = 0;
  for (auto& [path, m] : model.named_modules()) {
    if (auto* q = dynamic_cast<QuantizedLinear*>(m)) q->threads = threads, ++n;
    if (auto* d = dynamic_cast<DynamicQuantizedLinear*>(m)) d->threads = threads, ++n;
  }
  return n;
}

}  // namespace tq::quant

#include "quant/passes.h"

#include <iostream>
#include <stdexcept>
#include <typeinfo>

#include <fmt/format.h>

#include "nn/activation.h"
#include "nn/sequential.h"
#include "quant/dynamic_linear.h"
#include "quant/fused.h"
#include "quant/layer.h"
#include "quant/observer.h"
#include "quant/qat_conv.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"

namespace tq::quant {

namespace {

std::string join(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }

// Depth-first over the slots: swaps every module whose exact type has an
// entry (and, if `need_qconfig`, an effective qconfig). The swap function
// gets the module's effective qconfig, or `fixed` when given (quantize_dynamic,
// whose qconfig is not the model's). Returns the count.
int swap_modules(nn::Module& parent, const std::string& prefix, QConfigPtr inherited, const ModuleMapping& mapping,
                 bool need_qconfig, const QConfig* fixed = nullptr) {
  int swapped = 0;
  for (const auto& slot : parent.children()) {
    nn::Module& child = *slot->module;
    const QConfigPtr qconfig = child.qconfig.has_value() ? *child.qconfig : inherited;
    const std::string path = join(prefix, slot->name);
    auto it = mapping.find(std::type_index(typeid(child)));
    if (it != mapping.end() && (qconfig || !need_qconfig)) {
      auto replacement = it->second(child, fixed ? fixed : qconfig.get(), path);
      replacement->qconfig = qconfig;
      slot->module = std::move(replacement);
      ++swapped;
    } else {
      swapped += swap_modules(child, path, qconfig, mapping, need_qconfig, fixed);
    }
  }
  return swapped;
}

void name_observers(nn::Module& m, const std::string& path) {
  for (auto& [sub, mod] : m.named_modules())
    if (auto* src = dynamic_cast<QParamsSource*>(mod)) src->owner = join(path, sub);
}

}  // namespace

// prepare / prepare_qat: a prepared layer of type P from a float module F
// with activation A fused (Linear: none; LinearReLU: relu; ...).
template <class P, class F, FusedActivation A>
std::shared_ptr<nn::Module> prepare_layer(nn::Module& m, const QConfig* qc, const std::string& path) {
  auto p = std::make_shared<P>(static_cast<F&>(m), *qc, A);
  p->name = path;
  name_observers(*p, path);
  return p;
}

// convert: any prepared layer becomes the int8 layer it builds itself, with
// exactly the qparams it last used (docs/design.md §2: convert uses exactly
// the qparams of the last fake-quant forward).
std::shared_ptr<nn::Module> convert_layer(nn::Module& m, const QConfig*, const std::string& path) {
  return dynamic_cast<PreparedLayer&>(m).to_quantized(path);
}

// quantize_dynamic: float F (with activation A fused) -> its dynamic int8
// form. The qconfig says how the weights are quantized; a fused activation
// stays float, after the int8 layer.
template <class D, class F, FusedActivation A>
std::shared_ptr<nn::Module> dynamic_layer(nn::Module& m, const QConfig* qc, const std::string&) {
  std::shared_ptr<nn::Module> d = D::from_float(static_cast<F&>(m), qc ? *qc : *get_default_dynamic_qconfig());
  if constexpr (A == FusedActivation::none) {
    return d;
  } else {
    auto seq = std::make_shared<nn::Sequential>();
    seq->push_back(d);
    if constexpr (A == FusedActivation::relu) seq->push_back(nn::ReLU());
    else seq->push_back(nn::ReLU6());
    return seq;
  }
}

constexpr auto kNone = FusedActivation::none, kReLU = FusedActivation::relu, kReLU6 = FusedActivation::relu6;

ModuleMapping& default_qat_module_mappings() {
  static ModuleMapping mapping = {
      {typeid(nn::Linear), prepare_layer<QATLinear, nn::Linear, kNone>},
      {typeid(LinearReLU), prepare_layer<QATLinear, nn::Linear, kReLU>},
      {typeid(LinearReLU6), prepare_layer<QATLinear, nn::Linear, kReLU6>},
      {typeid(nn::Conv2d), prepare_layer<QATConv2d, nn::Conv2d, kNone>},
      {typeid(ConvReLU2d), prepare_layer<QATConv2d, nn::Conv2d, kReLU>},
      {typeid(ConvReLU62d), prepare_layer<QATConv2d, nn::Conv2d, kReLU6>},
      {typeid(ConvBn2d), prepare_layer<QATConv2d, FusedConvBn2d, kNone>},
      {typeid(ConvBnReLU2d), prepare_layer<QATConv2d, FusedConvBn2d, kReLU>},
      {typeid(ConvBnReLU62d), prepare_layer<QATConv2d, FusedConvBn2d, kReLU6>},
      {typeid(nn::Add), prepare_layer<QATAdd, nn::Add, kNone>},
  };
  return mapping;
}

ModuleMapping& default_observed_module_mappings() {
  static ModuleMapping mapping = {
      {typeid(nn::Linear), prepare_layer<ObservedLinear, nn::Linear, kNone>},
      {typeid(LinearReLU), prepare_layer<ObservedLinear, nn::Linear, kReLU>},
      {typeid(LinearReLU6), prepare_layer<ObservedLinear, nn::Linear, kReLU6>},
      {typeid(nn::Conv2d), prepare_layer<ObservedConv2d, nn::Conv2d, kNone>},
      {typeid(ConvReLU2d), prepare_layer<ObservedConv2d, nn::Conv2d, kReLU>},
      {typeid(ConvReLU62d), prepare_layer<ObservedConv2d, nn::Conv2d, kReLU6>},
      {typeid(ConvBn2d), prepare_layer<ObservedConv2d, FusedConvBn2d, kNone>},  // BN folded at prepare
      {typeid(ConvBnReLU2d), prepare_layer<ObservedConv2d, FusedConvBn2d, kReLU>},
      {typeid(ConvBnReLU62d), prepare_layer<ObservedConv2d, FusedConvBn2d, kReLU6>},
      {typeid(nn::Add), prepare_layer<ObservedAdd, nn::Add, kNone>},
  };
  return mapping;
}

ModuleMapping& default_static_quant_module_mappings() {
  static ModuleMapping mapping = {
      {typeid(QATLinear), convert_layer},
      {typeid(ObservedLinear), convert_layer},
      {typeid(QATConv2d), convert_layer},  // BN folded here
      {typeid(ObservedConv2d), convert_layer},
      {typeid(QATAdd), convert_layer},
      {typeid(ObservedAdd), convert_layer},
  };
  return mapping;
}

ModuleMapping& default_dynamic_quant_module_mappings() {
  static ModuleMapping mapping = {
      {typeid(nn::Linear), dynamic_layer<DynamicQuantizedLinear, nn::Linear, kNone>},
      {typeid(LinearReLU), dynamic_layer<DynamicQuantizedLinear, nn::Linear, kReLU>},
      {typeid(LinearReLU6), dynamic_layer<DynamicQuantizedLinear, nn::Linear, kReLU6>},
  };
  return mapping;
}

QConfigPtr get_default_dynamic_qconfig(bool per_channel) {
  auto qc = std::make_shared<QConfig>();
  qc->name = per_channel ? "dynamic per-channel" : "dynamic";
  if (per_channel)
    qc->weight = [] { return std::make_shared<PerChannelMinMaxObserver>(weight_spec(8, QScheme::per_channel_symmetric, 0)); };
  else
    qc->weight = [] { return std::make_shared<MinMaxObserver>(weight_spec(8, QScheme::per_tensor_symmetric)); };
  return qc;
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
    if (as_prepared_layer(m))
      throw std::logic_error(fmt::format("{}: the model is already prepared ('{}' is a {})", pass, path, m->type_name()));
  for (auto& [path, m] : model.named_modules())
    if (as_quantized_layer(m))
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
  // The default table, or the part of it that `types` asks for.
  ModuleMapping mapping;
  for (const auto& [type, swap] : default_dynamic_quant_module_mappings())
    if (types.empty() || types.count(type)) mapping[type] = swap;
  const QConfigPtr qconfig = get_default_dynamic_qconfig(per_channel);
  const int n = swap_modules(model, "", nullptr, mapping, false, qconfig.get());
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
    if (auto* p = as_prepared_layer(m)) p->check_convertible(path);
  }
  if (!any_prepared) {
    for (auto& [path, m] : model.named_modules())
      if (default_qat_module_mappings().count(std::type_index(typeid(*m))) && !path.empty())
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
  for (auto& [path, m] : model.named_modules())
    if (auto* q = as_quantized_layer(m)) q->threads = threads, ++n;
  return n;
}

}  // namespace tq::quant

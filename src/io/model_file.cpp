#include "io/model_file.h"

#include "io/packing.h"

#include <cmath>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "tensor/random.h"
#include "quant/dynamic_linear.h"
#include "quant/fake_quantize.h"
#include "quant/fused.h"
#include "quant/histogram_observer.h"
#include "quant/learnable_fake_quantize.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"
#include "tensor/ops.h"

namespace tq::io {

using json = nlohmann::json;
using TensorMap = std::map<std::string, Tensor>;
namespace q = tq::quant;

namespace {

// ---- JSON helpers for quantization specs and qparams ----

json spec_to_json(const q::QuantSpec& s) {
  return {{"quant_min", s.quant_min}, {"quant_max", s.quant_max}, {"dtype", dtype_name(s.dtype)},
          {"qscheme", qscheme_name(s.qscheme)}, {"ch_axis", s.ch_axis}};
}

QScheme parse_qscheme(const std::string& s) {
  for (QScheme k : {QScheme::per_tensor_affine, QScheme::per_tensor_symmetric, QScheme::per_channel_affine,
                    QScheme::per_channel_symmetric})
    if (s == qscheme_name(k)) return k;
  throw FormatError("unknown qscheme '" + s + "'");
}

// v as an integer of type T. nlohmann's get<int>() converts a float such
// as 1e30 with a plain cast (undefined behaviour out of range), so the value
// must be a JSON integer that fits T.
template <class T>
T integer_value(const json& v, const std::string& name) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x >= std::numeric_limits<T>::min() && x <= std::numeric_limits<T>::max()) return static_cast<T>(x);
  }
  throw FormatError(fmt::format("'{}' must be an integer in [{}, {}], not {}", name, std::numeric_limits<T>::min(),
                                std::numeric_limits<T>::max(), v.dump().substr(0, 40)));
}

template <class T>
T integer(const json& j, const char* key) {
  return integer_value<T>(j.at(key), key);
}

q::QuantSpec spec_from_json(const json& j) {
  q::QuantSpec s;
  s.quant_min = integer<int32_t>(j, "quant_min");
  s.quant_max = integer<int32_t>(j, "quant_max");
  const std::string dt = j.at("dtype").get<std::string>();
  if (dt == "u8") s.dtype = DType::u8;
  else if (dt == "i8") s.dtype = DType::i8;
  else throw FormatError("quantized dtype must be u8 or i8, not '" + dt + "'");
  s.qscheme = parse_qscheme(j.at("qscheme").get<std::string>());
  s.ch_axis = integer<int>(j, "ch_axis");
  q::validate(s, "model file");
  return s;
}

json qparams_to_json(const QParams& p) {
  return {{"qscheme", qscheme_name(p.scheme)}, {"axis", p.axis}, {"quant_min", p.quant_min},
          {"quant_max", p.quant_max}, {"scale", p.scale}, {"zero_point", p.zero_point}};
}

// j[key] as T, or a FormatError naming `what` and the key (a missing key, a
// null where a number belongs: JSON has no NaN, so a writer that had one
// leaves null).
template <class T>
T field(const json& j, const char* key, const std::string& what) {
  if (!j.is_object() || !j.contains(key)) throw FormatError(fmt::format("{}: no '{}'", what, key));
  try {
    if constexpr (std::is_integral_v<T>) {
      return integer_value<T>(j.at(key), key);
    } else if constexpr (std::is_same_v<T, std::vector<int32_t>>) {
      const json& v = j.at(key);
      if (!v.is_array()) throw FormatError(fmt::format("'{}' must be an array", key));
      std::vector<int32_t> out;
      for (size_t i = 0; i < v.size(); ++i) out.push_back(integer_value<int32_t>(v[i], fmt::format("{}[{}]", key, i)));
      return out;
    } else {
      return j.at(key).get<T>();
    }
  } catch (const FormatError& e) {
    throw FormatError(fmt::format("{}: {}", what, e.what()));
  } catch (const json::exception&) {
    throw FormatError(fmt::format("{}: '{}' has the wrong type or a null / non-numeric value: {}", what, key,
                                  j.at(key).dump().substr(0, 80)));
  }
}

QParams qparams_from_json(const json& j, const std::string& what) {
  QParams p;
  p.scheme = parse_qscheme(field<std::string>(j, "qscheme", what));
  p.axis = field<int>(j, "axis", what);
  p.quant_min = field<int32_t>(j, "quant_min", what);
  p.quant_max = field<int32_t>(j, "quant_max", what);
  p.scale = field<std::vector<float>>(j, "scale", what);
  p.zero_point = field<std::vector<int32_t>>(j, "zero_point", what);
  if (p.quant_min >= p.quant_max)
    throw FormatError(fmt::format("{}: quant_min {} is not below quant_max {}", what, p.quant_min, p.quant_max));
  if (p.scale.empty() || p.scale.size() != p.zero_point.size())
    throw FormatError(fmt::format("{}: {} scales and {} zero points", what, p.scale.size(), p.zero_point.size()));
  if (!is_per_channel(p.scheme) && p.scale.size() != 1)
    throw FormatError(fmt::format("{}: per-tensor qparams with {} scales", what, p.scale.size()));
  for (size_t i = 0; i < p.scale.size(); ++i) {
    if (!(p.scale[i] > 0) || !std::isfinite(p.scale[i]))
      throw FormatError(fmt::format("{}: scale {} must be positive and finite (got {})", what, i, p.scale[i]));
    if (p.zero_point[i] < p.quant_min || p.zero_point[i] > p.quant_max)
      throw FormatError(fmt::format("{}: zero point {} is outside [{}, {}]", what, p.zero_point[i], p.quant_min, p.quant_max));
  }
  return p;
}

const Tensor& need(const TensorMap& t, const std::string& name, const std::string& module) {
  auto it = t.find(name);
  if (it == t.end()) throw FormatError(fmt::format("{} has no tensor '{}'", module, name));
  return it->second;
}

void check_linear_shapes(const TensorMap& t, int64_t in, int64_t out, bool bias, const std::string& type) {
  if (in <= 0 || out <= 0) throw FormatError(fmt::format("{}: in/out features must be positive ({}, {})", type, in, out));
  const Tensor& w = need(t, "weight", type);
  if (!(w.shape() == Shape{out, in}))
    throw FormatError(fmt::format("{}: weight of shape {} does not match in_features={}, out_features={}", type,
                                  w.shape().str(), in, out));
  if (bias && !(need(t, "bias", type).shape() == Shape{out}))
    throw FormatError(fmt::format("{}: bias of shape {} does not match out_features={}", type, t.at("bias").shape().str(), out));
}

// ---- The codecs of the library's modules ----

void encode_linear(const nn::Module& m, json& c) {
  auto& l = dynamic_cast<const nn::Linear&>(m);
  c = {{"in_features", l.in_features}, {"out_features", l.out_features}, {"bias", l.bias.defined()}};
}

nn::Linear linear_from(const json& c, const TensorMap& t, const std::string& type) {
  const int64_t in = integer<int64_t>(c, "in_features"), out = integer<int64_t>(c, "out_features");
  const bool bias = c.at("bias").get<bool>();
  check_linear_shapes(t, in, out, bias, type);
  return nn::Linear(in, out, bias);  // values are restored afterwards
}

void encode_prepared(const nn::Module& m, json& c) {
  auto& p = dynamic_cast<const q::QATLinear&>(m);
  encode_linear(m, c);
  c["fused_relu"] = p.fused_relu;
  c["name"] = p.name;
}

template <class P>
std::shared_ptr<nn::Module> decode_prepared(const json& c, const TensorMap& t) {
  const nn::Linear f = linear_from(c, t, "QATLinear");
  // Placeholder observers; the file's own children replace them.
  auto p = std::make_shared<P>(f, *q::get_default_qat_qconfig("x86"), c.at("fused_relu").get<bool>());
  p->name = c.at("name").get<std::string>();
  return p;
}

void encode_observer(const nn::Module& m, json& c) {
  auto& o = dynamic_cast<const q::QParamsSource&>(m);
  c = {{"spec", spec_to_json(o.spec())}, {"owner", o.owner}};
  if (auto* ma = dynamic_cast<const q::MovingAverageMinMaxObserver*>(&m)) c["averaging_constant"] = ma->averaging_constant;
  if (auto* mp = dynamic_cast<const q::MovingAveragePerChannelMinMaxObserver*>(&m)) c["averaging_constant"] = mp->averaging_constant;
  if (auto* h = dynamic_cast<const q::HistogramObserver*>(&m)) {
    c["bins"] = h->bins();
    c["upsample_rate"] = h->upsample_rate();
  }
  if (auto* ob = dynamic_cast<const q::ObserverBase*>(&m)) c["enabled"] = ob->enabled;
}

template <class O>
std::shared_ptr<nn::Module> decode_observer(const json& c, const TensorMap&) {
  const q::QuantSpec spec = spec_from_json(c.at("spec"));
  std::shared_ptr<O> o;
  if constexpr (std::is_same_v<O, q::MovingAverageMinMaxObserver> || std::is_same_v<O, q::MovingAveragePerChannelMinMaxObserver>)
    o = std::make_shared<O>(spec, c.at("averaging_constant").get<float>());
  else if constexpr (std::is_same_v<O, q::HistogramObserver>)
    o = std::make_shared<O>(spec, integer<int>(c, "bins"), integer<int>(c, "upsample_rate"));
  else
    o = std::make_shared<O>(spec);
  o->owner = c.value("owner", std::string("observer"));
  o->enabled = c.value("enabled", true);
  return o;
}

void encode_fake_quant(const nn::Module& m, json& c) {
  auto& f = dynamic_cast<const q::FakeQuantize&>(m);
  c = {{"spec", spec_to_json(f.spec())}, {"owner", f.owner}, {"observer_enabled", f.observer_enabled},
       {"fake_quant_enabled", f.fake_quant_enabled}};
}

std::shared_ptr<nn::Module> decode_fake_quant(const json& c, const TensorMap&) {
  const q::QuantSpec spec = spec_from_json(c.at("spec"));
  std::shared_ptr<q::ObserverBase> placeholder;
  if (spec.per_channel()) placeholder = std::make_shared<q::PerChannelMinMaxObserver>(spec);
  else placeholder = std::make_shared<q::MinMaxObserver>(spec);
  auto f = std::make_shared<q::FakeQuantize>(placeholder);
  f->owner = c.value("owner", std::string("fake_quant"));
  f->observer_enabled = c.at("observer_enabled").get<bool>();
  f->fake_quant_enabled = c.at("fake_quant_enabled").get<bool>();
  return f;
}

// LSQ: the learned scale / zero point are its own tensors; the config holds
// the options and the three toggles.
void encode_learnable(const nn::Module& m, json& c) {
  auto& f = dynamic_cast<const q::LearnableFakeQuantize&>(m);
  c = {{"spec", spec_to_json(f.spec())}, {"owner", f.owner},
       {"init", f.options().init == q::LsqInit::lsq ? "lsq" : "observer"},
       {"use_grad_scaling", f.options().use_grad_scaling}, {"static_enabled", f.static_enabled()},
       {"learning_enabled", f.learning_enabled()}, {"fake_quant_enabled", f.fake_quant_enabled()},
       {"channels", f.channels()}};  // a size change makes load_into rebuild the module from the file
}

std::shared_ptr<nn::Module> decode_learnable(const json& c, const TensorMap& t) {
  const q::QuantSpec spec = spec_from_json(c.at("spec"));
  const std::string init = c.at("init").get<std::string>();
  if (init != "lsq" && init != "observer") throw FormatError("LearnableFakeQuantize: unknown init '" + init + "'");
  q::LearnableFakeQuantizeOptions options;
  options.init = init == "lsq" ? q::LsqInit::lsq : q::LsqInit::observer;
  options.use_grad_scaling = c.at("use_grad_scaling").get<bool>();
  // Per channel, the parameters are sized from the file's scale (restored afterwards).
  if (spec.per_channel()) options.channels = need(t, "scale", "LearnableFakeQuantize").numel();
  // A placeholder observer; the file's own child replaces it.
  auto f = std::make_shared<q::LearnableFakeQuantize>(spec, options);
  f->owner = c.value("owner", std::string("fake_quant"));
  f->toggle_qparam_learning(c.at("learning_enabled").get<bool>())
      .toggle_fake_quant(c.at("fake_quant_enabled").get<bool>())
      .toggle_observer_update(c.at("static_enabled").get<bool>());
  return f;
}

// Weights whose range fits 4 bits are stored two to a byte (io/packing.h).
bool packs_int4(const QParams& q) { return q.quant_min >= -8 && q.quant_max <= 7; }

Tensor stored_weight(const Tensor& w) { return packs_int4(w.qparams()) ? pack_int4(w.detach()) : w.detach(); }

// The module's tensors with a packed weight unpacked to i8 (out, in).
TensorMap unpacked(const TensorMap& t, const json& c, int64_t in, int64_t out, const std::string& type) {
  const std::string packing = c.value("weight_packing", "");
  if (packing.empty()) return t;
  if (packing != "int4x2") throw FormatError(fmt::format("{}: unknown weight_packing '{}'", type, packing));
  if (in <= 0 || out <= 0 || in > (int64_t{1} << 24) || out > (int64_t{1} << 24))
    throw FormatError(fmt::format("{}: implausible in/out features ({}, {})", type, in, out));
  TensorMap u = t;
  u["weight"] = unpack_int4(need(t, "weight", type), {out, in}, type + ".weight");
  return u;
}

void encode_quantized(const nn::Module& m, json& c) {
  auto& l = dynamic_cast<const q::QuantizedLinear&>(m);
  c = {{"in_features", l.in_features}, {"out_features", l.out_features}, {"bias", l.bias().defined()},
       {"fused_relu", l.fused_relu}, {"name", l.name}, {"weight_qparams", qparams_to_json(l.weight().qparams())},
       {"output_qparams", qparams_to_json(l.output_qparams())}};
  if (l.input_qparams()) c["input_qparams"] = qparams_to_json(*l.input_qparams());
  if (packs_int4(l.weight().qparams())) c["weight_packing"] = "int4x2";
}

// The i8 weight tensor of a file, checked and given its qparams.
Tensor quantized_weight(const TensorMap& t, const QParams& wq, int64_t in, int64_t out, bool bias, const std::string& type) {
  check_linear_shapes(t, in, out, bias, type);
  const Tensor& w = t.at("weight");
  if (w.dtype() != DType::i8) throw FormatError(fmt::format("{}: weight must be I8, got {}", type, dtype_name(w.dtype())));
  if (is_per_channel(wq.scheme) && (wq.axis != 0 || static_cast<int64_t>(wq.scale.size()) != out))
    throw FormatError(fmt::format("{}: {} weight scales for {} output channels (axis {})", type, wq.scale.size(), out, wq.axis));
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int v = w.data<int8_t>()[i];
    if (v < wq.quant_min || v > wq.quant_max)
      throw FormatError(fmt::format("{}: weight value {} lies outside its range [{}, {}]", type, v, wq.quant_min, wq.quant_max));
  }
  return with_qparams(w, std::make_shared<const QParams>(wq));
}

std::shared_ptr<nn::Module> decode_quantized(const json& c, const TensorMap& t) {
  const std::string type = "QuantizedLinear";
  const int64_t in = integer<int64_t>(c, "in_features"), out = integer<int64_t>(c, "out_features");
  const bool bias = c.at("bias").get<bool>();
  const QParams wq = qparams_from_json(c.at("weight_qparams"), type + " weight_qparams");
  const QParams oq = qparams_from_json(c.at("output_qparams"), type + " output_qparams");
  std::shared_ptr<const QParams> iq;
  if (c.contains("input_qparams")) iq = std::make_shared<const QParams>(qparams_from_json(c["input_qparams"], type + " input_qparams"));
  const Tensor w = quantized_weight(unpacked(t, c, in, out, type), wq, in, out, bias, type);
  return std::make_shared<q::QuantizedLinear>(w, bias ? t.at("bias") : Tensor(), wq, oq, iq, c.at("fused_relu").get<bool>(),
                                              c.at("name").get<std::string>());
}

void encode_dynamic(const nn::Module& m, json& c) {
  auto& d = dynamic_cast<const q::DynamicQuantizedLinear&>(m);
  c = {{"in_features", d.in_features}, {"out_features", d.out_features}, {"bias", d.bias().defined()},
       {"activation_quant_max", d.activation_quant_max}, {"weight_qparams", qparams_to_json(d.weight().qparams())}};
  if (packs_int4(d.weight().qparams())) c["weight_packing"] = "int4x2";
}

std::shared_ptr<nn::Module> decode_dynamic(const json& c, const TensorMap& t) {
  const std::string type = "DynamicQuantizedLinear";
  const int64_t in = integer<int64_t>(c, "in_features"), out = integer<int64_t>(c, "out_features");
  const bool bias = c.at("bias").get<bool>();
  const QParams wq = qparams_from_json(c.at("weight_qparams"), type + " weight_qparams");
  const Tensor w = quantized_weight(unpacked(t, c, in, out, type), wq, in, out, bias, type);
  return q::DynamicQuantizedLinear::from_quantized(w, bias ? t.at("bias") : Tensor(), integer<int32_t>(c, "activation_quant_max"));
}

void encode_nothing(const nn::Module&, json& c) { c = json::object(); }

template <class M>
ModuleCodec simple_codec() {
  return {encode_nothing, [](const json&, const TensorMap&) -> std::shared_ptr<nn::Module> { return std::make_shared<M>(); }};
}

// Which tensors of a module are stored for it (the rest are rebuilt).
bool stores_own_tensors_generically(const nn::Module& m) {
  return !dynamic_cast<const q::QuantizedLinear*>(&m) && !dynamic_cast<const q::DynamicQuantizedLinear*>(&m);
}

// ---- Tree encoding ----

json encode_tree(const nn::Module& m) {
  json node = {{"type", m.type_name()}};
  json config = json::object();
  auto& codecs = module_codecs();
  if (auto it = codecs.find(m.type_name()); it != codecs.end()) it->second.encode(m, config);
  node["config"] = config;
  json children = json::array();
  for (auto& s : m.children()) children.push_back({{"name", s->name}, {"module", encode_tree(*s->module)}});
  node["children"] = children;
  return node;
}

// The tensors of module `prefix` (local names), from the whole file.
TensorMap local_tensors(const TensorMap& all, const std::string& prefix) {
  TensorMap out;
  const std::string p = prefix.empty() ? "" : prefix + ".";
  for (auto& [name, t] : all) {
    if (name.compare(0, p.size(), p) != 0) continue;
    const std::string rest = name.substr(p.size());
    if (rest.find('.') == std::string::npos) out[rest] = t;
  }
  return out;
}

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

std::shared_ptr<nn::Module> decode_tree(const json& node, const TensorMap& all, const std::string& path,
                                        const std::string& file, int depth) {
  if (depth > 64) throw FormatError(fmt::format("{}: module tree is nested too deeply", file));
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string())
    throw FormatError(fmt::format("{}: module '{}' has no type", file, path));
  const std::string type = node["type"].get<std::string>();
  auto& codecs = module_codecs();
  auto it = codecs.find(type);
  if (it == codecs.end())
    throw FormatError(fmt::format("{}: module '{}' has type {}, which load_model cannot build; construct the model in "
                                  "code and use load_into",
                                  file, path.empty() ? "(root)" : path, type));
  std::shared_ptr<nn::Module> m;
  try {
    m = it->second.decode(node.value("config", json::object()), local_tensors(all, path));
  } catch (const FormatError& e) {
    throw FormatError(fmt::format("{}: module '{}': {}", file, path, e.what()));
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: module '{}' ({}) has a bad config: {}", file, path, type, e.what()));
  } catch (const std::invalid_argument& e) {
    throw FormatError(fmt::format("{}: module '{}' ({}): {}", file, path, type, e.what()));
  }
  for (const json& child : node.value("children", json::array())) {
    if (!child.contains("name") || !child["name"].is_string() || !child.contains("module"))
      throw FormatError(fmt::format("{}: a child of '{}' has no name or module", file, path));
    const std::string name = child["name"].get<std::string>();
    auto c = decode_tree(child["module"], all, join(path, name), file, depth + 1);
    if (auto slot = m->find_slot(name)) slot->module = c;
    else m->register_slot(name, c);
  }
  return m;
}

// A module of the model that load_into replaces by the file's, and the module it held.
struct Swap {
  std::shared_ptr<nn::ModuleSlot> slot;
  std::shared_ptr<nn::Module> replacement;
};

// Does the model's module `m` in a slot give way to the file's `node`? Where
// the types differ; always for quantized layers, whose state lives in their
// config and packed tensors rather than in parameters; and for observers and
// fake quants whose settings (spec, enabled flags) differ from the file's.
bool rebuild_from_file(const nn::Module& m, const json& node) {
  const std::string type = node.at("type").get<std::string>();
  if (m.type_name() != type || !stores_own_tensors_generically(m)) return true;
  if (!dynamic_cast<const q::QParamsSource*>(&m)) return false;
  auto& codecs = module_codecs();
  auto it = codecs.find(type);
  if (it == codecs.end()) return false;
  json config = json::object();
  it->second.encode(m, config);
  return config != node.value("config", json::object());
}

// (in_features, out_features) of a linear layer of any kind, or {0, 0}.
std::pair<int64_t, int64_t> linear_features(const nn::Module& m) {
  if (auto* l = dynamic_cast<const nn::Linear*>(&m)) return {l->in_features, l->out_features};
  if (auto* q = dynamic_cast<const q::QuantizedLinear*>(&m)) return {q->in_features, q->out_features};
  if (auto* d = dynamic_cast<const q::DynamicQuantizedLinear*>(&m)) return {d->in_features, d->out_features};
  return {0, 0};
}

// Plans which slots of `m` get the file's modules (built here, not yet put
// in), so that a file that does not fit changes nothing.
void plan_adoption(nn::Module& m, const json& node, const TensorMap& all, const std::string& path,
                   const std::string& file, int depth, std::vector<Swap>& swaps) {
  if (depth > 64) throw FormatError(fmt::format("{}: module tree is nested too deeply", file));
  const json children = node.value("children", json::array());
  if (!children.is_array()) throw FormatError(fmt::format("{}: the children of '{}' are not a list", file, path));
  for (const json& child : children) {
    if (!child.is_object() || !child.contains("name") || !child["name"].is_string() || !child.contains("module") ||
        !child["module"].is_object() || !child["module"].contains("type") || !child["module"]["type"].is_string())
      throw FormatError(fmt::format("{}: a child of '{}' has no name, module or type", file, path));
    const std::string name = child["name"].get<std::string>();
    auto slot = m.find_slot(name);
    if (!slot)
      throw std::invalid_argument(fmt::format("{}: the file has a module '{}' that the model does not have", file, join(path, name)));
    if (rebuild_from_file(*slot->module, child["module"])) {
      auto replacement = decode_tree(child["module"], all, join(path, name), file, depth + 1);
      // A layer of another kind may replace the model's, not one of another size.
      const auto have = linear_features(*slot->module), got = linear_features(*replacement);
      if (have.first && got.first && have != got)
        throw std::invalid_argument(fmt::format(
            "{}: module '{}' is {} with in_features={}, out_features={} in the file but {} with in_features={}, "
            "out_features={} in the model",
            file, join(path, name), replacement->type_name(), got.first, got.second, slot->module->type_name(),
            have.first, have.second));
      swaps.push_back({slot, replacement});
    }
    else
      plan_adoption(*slot->module, child["module"], all, join(path, name), file, depth + 1, swaps);
  }
  if (children.size() != m.children().size())
    for (auto& s : m.children()) {
      bool found = false;
      for (const json& child : children) found |= child.at("name").get<std::string>() == s->name;
      if (!found)
        throw std::invalid_argument(fmt::format("{}: the model has a module '{}' that the file does not have", file, join(path, s->name)));
    }
}

// Checks that the file holds every parameter of `model` with its shape and
// dtype, and every buffer; changes nothing. Throws naming the first mismatch.
void check_state(const nn::Module& model, const TensorMap& all, const std::string& file) {
  for (auto& [path, m] : model.named_modules()) {
    if (!stores_own_tensors_generically(*m)) continue;
    for (auto& [name, p] : m->named_parameters(false)) {
      const std::string full = join(path, name);
      auto it = all.find(full);
      if (it == all.end()) throw std::invalid_argument(fmt::format("{}: parameter '{}' is missing from the file", file, full));
      if (!(it->second.shape() == p.shape()) || it->second.dtype() != p.dtype())
        throw std::invalid_argument(fmt::format("{}: parameter '{}' is {} {} in the file but {} {} in the model", file, full,
                                                dtype_name(it->second.dtype()), it->second.shape().str(),
                                                dtype_name(p.dtype()), p.shape().str()));
    }
    for (auto& [name, b] : m->named_buffers(false)) {
      const std::string full = join(path, name);
      if (!all.count(full)) throw std::invalid_argument(fmt::format("{}: buffer '{}' is missing from the file", file, full));
    }
  }
}

// Restores every parameter and buffer of `model` from the file's tensors.
void restore_state(nn::Module& model, const TensorMap& all, const std::string& file) {
  check_state(model, all, file);
  for (auto& [path, m] : model.named_modules()) {
    if (!stores_own_tensors_generically(*m)) continue;
    for (auto& [name, p] : m->named_parameters(false)) kernels::copy_(p, all.at(join(path, name)));
    for (auto& [name, b] : m->named_buffers(false)) {
      const Tensor& t = all.at(join(path, name));
      if (t.shape() == b.shape() && t.dtype() == b.dtype()) kernels::copy_(b, t);
      else m->set_buffer(name, kernels::clone(t));
    }
  }
  // Children first, so a parent sees its children's restored state.
  auto modules = model.named_modules();
  for (auto it = modules.rbegin(); it != modules.rend(); ++it) {
    try {
      it->second->on_state_loaded();
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("{}: module '{}': {}", file, it->first, e.what()));
    }
  }
}

const json& model_tree(const SafetensorsFile& file, const std::string& name) {
  static thread_local json parsed;
  auto it = file.metadata.find("tinyqat");
  if (it == file.metadata.end()) throw FormatError(fmt::format("{}: not a tinyqat model file (no 'tinyqat' metadata)", name));
  try {
    parsed = json::parse(it->second);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: the model description is not valid JSON ({})", name, e.what()));
  }
  if (!parsed.is_object() || parsed.value("format", "") != "tinyqat-model")
    throw FormatError(fmt::format("{}: the metadata does not describe a tinyqat model", name));
  if (parsed.value("version", 0) != kModelFormatVersion)
    throw FormatError(fmt::format("{}: model format version {} is not supported (expected {})", name,
                                  parsed.value("version", 0), kModelFormatVersion));
  if (!parsed.contains("model")) throw FormatError(fmt::format("{}: the metadata has no module tree", name));
  return parsed;
}

}  // namespace

std::map<std::string, ModuleCodec>& module_codecs() {
  static std::map<std::string, ModuleCodec> codecs = [] {
    std::map<std::string, ModuleCodec> c;
    c["Sequential"] = simple_codec<nn::Sequential>();
    c["ReLU"] = simple_codec<nn::ReLU>();
    c["Flatten"] = simple_codec<nn::Flatten>();
    c["Identity"] = simple_codec<q::Identity>();
    c["Linear"] = {encode_linear, [](const json& cfg, const TensorMap& t) -> std::shared_ptr<nn::Module> {
                     return std::make_shared<nn::Linear>(linear_from(cfg, t, "Linear"));
                   }};
    c["LinearReLU"] = {encode_linear, [](const json& cfg, const TensorMap& t) -> std::shared_ptr<nn::Module> {
                         return std::make_shared<q::LinearReLU>(linear_from(cfg, t, "LinearReLU"));
                       }};
    for (const char* t : {"QATLinear", "QATLinearReLU"}) c[t] = {encode_prepared, decode_prepared<q::QATLinear>};
    for (const char* t : {"ObservedLinear", "ObservedLinearReLU"}) c[t] = {encode_prepared, decode_prepared<q::ObservedLinear>};
    for (const char* t : {"QuantizedLinear", "QuantizedLinearReLU"}) c[t] = {encode_quantized, decode_quantized};
    c["DynamicQuantizedLinear"] = {encode_dynamic, decode_dynamic};
    c["FakeQuantize"] = {encode_fake_quant, decode_fake_quant};
    c["MinMaxObserver"] = {encode_observer, decode_observer<q::MinMaxObserver>};
    c["MovingAverageMinMaxObserver"] = {encode_observer, decode_observer<q::MovingAverageMinMaxObserver>};
    c["PerChannelMinMaxObserver"] = {encode_observer, decode_observer<q::PerChannelMinMaxObserver>};
    c["MovingAveragePerChannelMinMaxObserver"] = {encode_observer, decode_observer<q::MovingAveragePerChannelMinMaxObserver>};
    c["HistogramObserver"] = {encode_observer, decode_observer<q::HistogramObserver>};
    c["LearnableFakeQuantize"] = {encode_learnable, decode_learnable};
    return c;
  }();
  return codecs;
}

SafetensorsFile model_to_safetensors(const nn::Module& model, const std::map<std::string, std::string>& extra) {
  SafetensorsFile file;
  for (auto& [path, m] : model.named_modules()) {
    if (auto* ql = dynamic_cast<const q::QuantizedLinear*>(m)) {
      file.tensors[join(path, "weight")] = stored_weight(ql->weight());
      if (ql->bias().defined()) file.tensors[join(path, "bias")] = ql->bias();
      continue;
    }
    if (auto* dl = dynamic_cast<const q::DynamicQuantizedLinear*>(m)) {
      file.tensors[join(path, "weight")] = stored_weight(dl->weight());
      if (dl->bias().defined()) file.tensors[join(path, "bias")] = dl->bias();
      continue;
    }
    for (auto& [name, p] : m->named_parameters(false)) file.tensors[join(path, name)] = p.detach();
    for (auto& [name, b] : m->named_buffers(false)) file.tensors[join(path, name)] = b.detach();
  }
  json meta = {{"format", "tinyqat-model"}, {"version", kModelFormatVersion}, {"model", encode_tree(model)}};
  file.metadata = extra;
  file.metadata["tinyqat"] = meta.dump();
  return file;
}

void save_model(const nn::Module& model, const std::string& path, const std::map<std::string, std::string>& extra) {
  save_safetensors(path, model_to_safetensors(model, extra));
}

std::shared_ptr<nn::Module> build_model(const SafetensorsFile& file, const std::string& name) {
  const json meta = model_tree(file, name);
  // Constructing the modules draws initial weights from the default
  // generator; they are overwritten by the file's. Loading a model must not
  // shift the caller's random sequence, so the generator is put back.
  Generator& rng = default_generator();
  const Generator::State saved = rng.state();
  std::shared_ptr<nn::Module> model;
  try {
    model = decode_tree(meta["model"], file.tensors, "", name, 0);
  } catch (const FormatError&) {
    rng.set_state(saved);
    throw;
  } catch (const std::exception& e) {
    // A constructor refused what the file describes (a bad module name, a
    // size it cannot take): a defect of the file, so say which file.
    rng.set_state(saved);
    throw FormatError(fmt::format("{}: {}", name, e.what()));
  }
  rng.set_state(saved);
  // The model was built from the file itself: a mismatch is a defect of the file.
  try {
    restore_state(*model, file.tensors, name);
  } catch (const std::invalid_argument& e) {
    throw FormatError(e.what());
  }
  return model;
}

void load_into(nn::Module& model, const SafetensorsFile& file, const std::string& name) {
  const json meta = model_tree(file, name);
  // Everything that can fail is checked before the model changes, so a file
  // that does not fit leaves the model as it was.
  std::vector<Swap> swaps;
  try {
    plan_adoption(model, meta["model"], file.tensors, "", name, 0, swaps);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: bad module tree ({})", name, e.what()));
  }
  std::vector<std::shared_ptr<nn::Module>> previous;
  for (Swap& s : swaps) {
    previous.push_back(s.slot->module);
    s.slot->module = s.replacement;
  }
  try {
    check_state(model, file.tensors, name);
  } catch (...) {
    for (size_t i = 0; i < swaps.size(); ++i) swaps[i].slot->module = previous[i];
    throw;
  }
  restore_state(model, file.tensors, name);
}

std::shared_ptr<nn::Module> load_model(const std::string& path) { return build_model(load_safetensors(path), path); }

void load_into(nn::Module& model, const std::string& path) { load_into(model, load_safetensors(path), path); }

}  // namespace tq::io

// The codecs of the library's modules (docs/model_files.md §2.1): for each
// module type name, how its config is written and how the module is rebuilt
// from config and tensors. The tree walking, saving and loading that use
// them is in model_file.cpp.
#include "io/model_file.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/packing.h"
#include "models/mobilenet_v2.h"
#include "nn/activation.h"
#include "nn/add.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/pooling.h"
#include "nn/sequential.h"
#include "quant/dynamic_linear.h"
#include "quant/fake_quantize.h"
#include "quant/fused.h"
#include "quant/histogram_observer.h"
#include "quant/learnable_fake_quantize.h"
#include "quant/qat_conv.h"
#include "quant/qat_linear.h"
#include "quant/quantized_conv.h"
#include "quant/quantized_linear.h"
#include "quant/quantized_pool.h"

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

// Linear, LinearReLU, LinearReLU6: the float layer, fused as L says.
template <class L>
ModuleCodec float_linear_codec(const std::string& type) {
  return {encode_linear, [type](const json& c, const TensorMap& t) -> std::shared_ptr<nn::Module> {
            if constexpr (std::is_same_v<L, nn::Linear>) return std::make_shared<nn::Linear>(linear_from(c, t, type));
            else return std::make_shared<L>(linear_from(c, t, type));
          }};
}

// The fused activation: "activation" (version 2), or version 1's bool "fused_relu".
q::FusedActivation activation_from(const json& c) {
  if (c.contains("activation")) return q::parse_fused_activation(c.at("activation").get<std::string>());
  return c.at("fused_relu").get<bool>() ? q::FusedActivation::relu : q::FusedActivation::none;
}

void encode_prepared(const nn::Module& m, json& c) {
  auto& p = dynamic_cast<const q::QATLinear&>(m);
  encode_linear(m, c);
  c["activation"] = q::fused_activation_name(p.activation());
  c["name"] = p.name;
}

template <class P>
std::shared_ptr<nn::Module> decode_prepared(const json& c, const TensorMap& t) {
  const nn::Linear f = linear_from(c, t, "QATLinear");
  // Placeholder observers; the file's own children replace them.
  auto p = std::make_shared<P>(f, *q::get_default_qat_qconfig("x86"), activation_from(c));
  p->name = c.at("name").get<std::string>();
  return p;
}

template <class O>
void encode_observer(const nn::Module& m, json& c) {
  auto& o = dynamic_cast<const O&>(m);
  c = {{"spec", spec_to_json(o.spec())}, {"owner", o.owner}, {"enabled", o.enabled}};
  if constexpr (std::is_same_v<O, q::MovingAverageMinMaxObserver> || std::is_same_v<O, q::MovingAveragePerChannelMinMaxObserver>)
    c["averaging_constant"] = o.averaging_constant;
  if constexpr (std::is_same_v<O, q::HistogramObserver>) {
    c["bins"] = o.bins();
    c["upsample_rate"] = o.upsample_rate();
  }
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

template <class O>
ModuleCodec observer_codec() {
  return {encode_observer<O>, decode_observer<O>};
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
       {"activation", q::fused_activation_name(l.activation())}, {"name", l.name}, {"weight_qparams", qparams_to_json(l.weight().qparams())},
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
  for (int64_t i = 0, i_end = w.numel(); i < i_end; ++i) {
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
  return std::make_shared<q::QuantizedLinear>(w, bias ? t.at("bias") : Tensor(), wq, oq, iq, activation_from(c),
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

// An int8 layer stores its i8 weight (packed when it fits 4 bits) and its float bias.
template <class L>
void int8_layer_tensors(const nn::Module& m, TensorMap& out) {
  auto& l = dynamic_cast<const L&>(m);
  out["weight"] = stored_weight(l.weight());
  if (l.bias().defined()) out["bias"] = l.bias();
}

// ---- int8 convolution and add (docs/quantized_cnn.md) ----

// A convolution's per-channel weight scales are tensors of the file, not
// JSON text: a scale printed as a decimal takes ~20 bytes, as F32 it takes 4,
// and a depthwise layer has one per 9 weights (docs/model_files.md §3). The
// config then keeps the scheme and range and says "scale": "tensor"; the
// zero points are a tensor too unless all are 0 (symmetric weights).
bool scales_as_tensors(const QParams& p) { return is_per_channel(p.scheme) && p.scale.size() > 1; }

json weight_qparams_to_json(const QParams& p) {
  json j = qparams_to_json(p);
  if (!scales_as_tensors(p)) return j;
  j["scale"] = "tensor";
  j.erase("zero_point");
  return j;
}

// The weight qparams of a convolution's config, reading the scales (and zero
// points) from its tensors when the config says so; checked as any qparams.
QParams weight_qparams_from(const json& c, const TensorMap& t, int64_t out, const std::string& type) {
  const std::string what = type + " weight_qparams";
  const json* j = &c.at("weight_qparams");
  json filled;
  if (j->is_object() && j->contains("scale") && (*j)["scale"] == "tensor") {
    const Tensor& s = need(t, "weight_scale", type);
    if (s.dtype() != DType::f32 || !(s.shape() == Shape{out}))
      throw FormatError(fmt::format("{}: weight_scale must be F32 of shape ({}), got {} {}", type, out,
                                    dtype_name(s.dtype()), s.shape().str()));
    filled = *j;
    filled["scale"] = std::vector<float>(s.data<float>(), s.data<float>() + out);
    std::vector<int32_t> zp(static_cast<size_t>(out), 0);
    if (t.count("weight_zero_point")) {
      const Tensor& z = t.at("weight_zero_point");
      if (z.dtype() != DType::i32 || !(z.shape() == Shape{out}))
        throw FormatError(fmt::format("{}: weight_zero_point must be I32 of shape ({})", type, out));
      zp.assign(z.data<int32_t>(), z.data<int32_t>() + out);
    }
    filled["zero_point"] = zp;
    j = &filled;
  }
  return qparams_from_json(*j, what);
}

void encode_quantized_conv(const nn::Module& m, json& c) {
  auto& l = dynamic_cast<const q::QuantizedConv2d&>(m);
  const auto& g = l.geometry;
  c = {{"in_channels", l.in_channels}, {"out_channels", l.out_channels},
       {"kernel_size", {l.kernel_h, l.kernel_w}}, {"stride", {g.stride_h, g.stride_w}},
       {"padding", {g.pad_h, g.pad_w}}, {"dilation", {g.dilation_h, g.dilation_w}}, {"groups", g.groups},
       {"bias", l.bias().defined()}, {"activation", q::fused_activation_name(l.activation())}, {"name", l.name},
       {"weight_qparams", weight_qparams_to_json(l.weight().qparams())},
       {"output_qparams", qparams_to_json(l.output_qparams())}};
  if (l.input_qparams()) c["input_qparams"] = qparams_to_json(*l.input_qparams());
}

std::pair<int64_t, int64_t> int_pair(const json& c, const char* key, const std::string& type) {
  const json& v = c.at(key);
  if (!v.is_array() || v.size() != 2) throw FormatError(fmt::format("{}: '{}' must be a pair of integers", type, key));
  return {integer_value<int64_t>(v[0], key), integer_value<int64_t>(v[1], key)};
}

std::shared_ptr<nn::Module> decode_quantized_conv(const json& c, const TensorMap& t) {
  const std::string type = "QuantizedConv2d";
  const int64_t in = integer<int64_t>(c, "in_channels"), out = integer<int64_t>(c, "out_channels");
  const auto [kh, kw] = int_pair(c, "kernel_size", type);
  q::Conv2dGeometry g;
  std::tie(g.stride_h, g.stride_w) = int_pair(c, "stride", type);
  std::tie(g.pad_h, g.pad_w) = int_pair(c, "padding", type);
  std::tie(g.dilation_h, g.dilation_w) = int_pair(c, "dilation", type);
  g.groups = integer<int64_t>(c, "groups");
  const int64_t limit = int64_t{1} << 16;
  if (in <= 0 || out <= 0 || in > limit || out > limit || kh <= 0 || kw <= 0 || kh > 64 || kw > 64 ||
      g.groups <= 0 || in % g.groups != 0 || out % g.groups != 0 || g.stride_h <= 0 || g.stride_w <= 0 ||
      g.pad_h < 0 || g.pad_w < 0 || g.dilation_h <= 0 || g.dilation_w <= 0)
    throw FormatError(fmt::format("{}: implausible geometry (in {}, out {}, kernel {}x{}, groups {})", type, in, out,
                                  kh, kw, g.groups));
  const bool bias = c.at("bias").get<bool>();
  const QParams wq = weight_qparams_from(c, t, out, type);
  const QParams oq = qparams_from_json(c.at("output_qparams"), type + " output_qparams");
  std::shared_ptr<const QParams> iq;
  if (c.contains("input_qparams"))
    iq = std::make_shared<const QParams>(qparams_from_json(c["input_qparams"], type + " input_qparams"));
  const Tensor& w = need(t, "weight", type);
  if (w.dtype() != DType::i8) throw FormatError(fmt::format("{}: weight must be I8, got {}", type, dtype_name(w.dtype())));
  if (!(w.shape() == Shape{out, in / g.groups, kh, kw}))
    throw FormatError(fmt::format("{}: weight of shape {} does not match ({}, {}, {}, {})", type, w.shape().str(), out,
                                  in / g.groups, kh, kw));
  if (is_per_channel(wq.scheme) && (wq.axis != 0 || static_cast<int64_t>(wq.scale.size()) != out))
    throw FormatError(fmt::format("{}: {} weight scales for {} output channels (axis {})", type, wq.scale.size(), out, wq.axis));
  for (int64_t i = 0, i_end = w.numel(); i < i_end; ++i) {
    const int v = w.data<int8_t>()[i];
    if (v < wq.quant_min || v > wq.quant_max)
      throw FormatError(fmt::format("{}: weight value {} lies outside its range [{}, {}]", type, v, wq.quant_min, wq.quant_max));
  }
  Tensor b;
  if (bias) {
    b = need(t, "bias", type);
    if (b.dtype() != DType::f32 || !(b.shape() == Shape{out}))
      throw FormatError(fmt::format("{}: bias must be F32 of shape ({})", type, out));
  }
  try {
    return std::make_shared<q::QuantizedConv2d>(with_qparams(w, std::make_shared<const QParams>(wq)), b, wq, oq, iq,
                                                activation_from(c), g, c.at("name").get<std::string>());
  } catch (const std::invalid_argument& e) {
    throw FormatError(e.what());
  }
}

// The int8 convolution stores its i8 weight (4-D: never int4-packed), its
// float bias, and per channel its weight scales (F32) and, unless all are 0,
// zero points (I32).
void quantized_conv_tensors(const nn::Module& m, TensorMap& out) {
  auto& l = dynamic_cast<const q::QuantizedConv2d&>(m);
  out["weight"] = l.weight().detach();
  if (l.bias().defined()) out["bias"] = l.bias();
  const QParams& wq = l.weight().qparams();
  if (!scales_as_tensors(wq)) return;
  const auto n = static_cast<int64_t>(wq.scale.size());
  Tensor s = empty({n}, DType::f32);
  std::copy(wq.scale.begin(), wq.scale.end(), s.data<float>());
  out["weight_scale"] = s;
  if (std::any_of(wq.zero_point.begin(), wq.zero_point.end(), [](int32_t z) { return z != 0; })) {
    Tensor z = empty({n}, DType::i32);
    std::copy(wq.zero_point.begin(), wq.zero_point.end(), z.data<int32_t>());
    out["weight_zero_point"] = z;
  }
}

void encode_quantized_add(const nn::Module& m, json& c) {
  auto& a = dynamic_cast<const q::QuantizedAdd&>(m);
  c = {{"activation", q::fused_activation_name(a.activation())}, {"name", a.name},
       {"output_qparams", qparams_to_json(a.output_qparams())}};
}

std::shared_ptr<nn::Module> decode_quantized_add(const json& c, const TensorMap&) {
  const QParams oq = qparams_from_json(c.at("output_qparams"), "QuantizedAdd output_qparams");
  try {
    return std::make_shared<q::QuantizedAdd>(oq, activation_from(c), c.at("name").get<std::string>());
  } catch (const std::invalid_argument& e) {
    throw FormatError(e.what());
  }
}

json pool_options_to_json(const q::Pool2dOptions& o) {
  return {{"kernel_size", {o.kernel_h, o.kernel_w}}, {"stride", {o.stride_h, o.stride_w}}, {"padding", {o.pad_h, o.pad_w}}};
}

q::Pool2dOptions pool_options_from_json(const json& c, const std::string& type) {
  q::Pool2dOptions o;
  std::tie(o.kernel_h, o.kernel_w) = int_pair(c, "kernel_size", type);
  std::tie(o.stride_h, o.stride_w) = int_pair(c, "stride", type);
  std::tie(o.pad_h, o.pad_w) = int_pair(c, "padding", type);
  if (o.kernel_h < 1 || o.kernel_w < 1 || o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 || o.pad_w < 0 ||
      2 * o.pad_h > o.kernel_h || 2 * o.pad_w > o.kernel_w)
    throw FormatError(fmt::format("{}: implausible kernel / stride / padding", type));
  return o;
}

ModuleCodec quantized_pool_codecs(const std::string& type) {
  if (type == "QuantizedMaxPool2d")
    return {[](const nn::Module& m, json& c) { c = pool_options_to_json(dynamic_cast<const q::QuantizedMaxPool2d&>(m).options); },
            [](const json& c, const TensorMap&) -> std::shared_ptr<nn::Module> {
              return std::make_shared<q::QuantizedMaxPool2d>(pool_options_from_json(c, "QuantizedMaxPool2d"));
            }};
  if (type == "QuantizedAvgPool2d")
    return {[](const nn::Module& m, json& c) {
              auto& p = dynamic_cast<const q::QuantizedAvgPool2d&>(m);
              c = pool_options_to_json(p.options);
              c["count_include_pad"] = p.count_include_pad;
            },
            [](const json& c, const TensorMap&) -> std::shared_ptr<nn::Module> {
              return std::make_shared<q::QuantizedAvgPool2d>(pool_options_from_json(c, "QuantizedAvgPool2d"),
                                                             c.at("count_include_pad").get<bool>());
            }};
  return {[](const nn::Module& m, json& c) {
            auto& p = dynamic_cast<const q::QuantizedAdaptiveAvgPool2d&>(m);
            c = {{"output_size", {p.out_h, p.out_w}}};
          },
          [](const json& c, const TensorMap&) -> std::shared_ptr<nn::Module> {
            const auto [h, w] = int_pair(c, "output_size", "QuantizedAdaptiveAvgPool2d");
            if (h < 1 || w < 1 || h > 65536 || w > 65536) throw FormatError("QuantizedAdaptiveAvgPool2d: implausible output size");
            return std::make_shared<q::QuantizedAdaptiveAvgPool2d>(h, w);
          }};
}

void encode_nothing(const nn::Module&, json& c) { c = json::object(); }

template <class M>
ModuleCodec simple_codec() {
  return {encode_nothing, [](const json&, const TensorMap&) -> std::shared_ptr<nn::Module> { return std::make_shared<M>(); }};
}


// ---- Convolutional layers and the MobileNetV2 blocks ----

json pair_json(const nn::Pair2d& p) { return json::array({p.h, p.w}); }

// c[key] as a (h, w) pair: [h, w], or one integer for both.
nn::Pair2d pair_from(const json& c, const char* key) {
  const json& v = c.at(key);
  if (v.is_array()) {
    if (v.size() != 2) throw FormatError(fmt::format("'{}' must be [h, w], not {}", key, v.dump().substr(0, 40)));
    return {integer_value<int64_t>(v[0], key), integer_value<int64_t>(v[1], key)};
  }
  return integer_value<int64_t>(v, key);
}

void encode_conv(const nn::Module& m, json& c) {
  auto& l = dynamic_cast<const nn::Conv2d&>(m);
  c = {{"in_channels", l.in_channels}, {"out_channels", l.out_channels}, {"kernel_size", pair_json(l.kernel_size)},
       {"stride", pair_json(l.stride)}, {"padding", pair_json(l.padding)}, {"dilation", pair_json(l.dilation)},
       {"groups", l.groups}, {"bias", l.bias.defined()}};
}

std::shared_ptr<nn::Module> decode_conv(const json& c, const TensorMap&) {
  // The constructor checks the arguments (std::invalid_argument, reported
  // with the module's path); restore_state checks the tensors' shapes.
  return std::make_shared<nn::Conv2d>(integer<int64_t>(c, "in_channels"), integer<int64_t>(c, "out_channels"),
                                      pair_from(c, "kernel_size"), pair_from(c, "stride"), pair_from(c, "padding"),
                                      pair_from(c, "dilation"), integer<int64_t>(c, "groups"), c.at("bias").get<bool>());
}

// ---- Fused, QAT and observed convolutions, the prepared add (docs/quantized_cnn.md §8) ----

std::shared_ptr<nn::Conv2d> conv_from(const json& c) {
  return std::static_pointer_cast<nn::Conv2d>(decode_conv(c, {}));
}

// ConvReLU2d, ConvReLU62d: the float convolution, fused as F says.
template <class F>
ModuleCodec fused_conv_codec() {
  return {encode_conv, [](const json& c, const TensorMap&) -> std::shared_ptr<nn::Module> {
            return std::make_shared<F>(*conv_from(c));
          }};
}

// ConvBn2d and its activation forms: a placeholder BatchNorm2d that the
// file's child "bn" replaces.
template <class F>
ModuleCodec conv_bn_codec() {
  return {encode_conv, [](const json& c, const TensorMap&) -> std::shared_ptr<nn::Module> {
            auto conv = conv_from(c);
            return std::make_shared<F>(*conv, std::make_shared<nn::BatchNorm2d>(conv->out_channels));
          }};
}

void encode_prepared_conv(const nn::Module& m, json& c) {
  auto& p = dynamic_cast<const q::QATConv2d&>(m);
  encode_conv(m, c);
  c["activation"] = q::fused_activation_name(p.activation());
  c["name"] = p.name;
  if (p.has_bn()) c["bn_frozen"] = p.bn_frozen;
}

// QATConv2d (with_bn: QATConvBn2d) and ObservedConv2d, with placeholder
// quantizers (and BatchNorm) that the file's children replace.
template <class P, bool with_bn>
std::shared_ptr<nn::Module> decode_prepared_conv(const json& c, const TensorMap&) {
  auto conv = conv_from(c);
  const q::FusedActivation act = activation_from(c);
  std::shared_ptr<q::QATConv2d> p;
  if constexpr (with_bn) {
    const q::ConvBn2d fused(*conv, std::make_shared<nn::BatchNorm2d>(conv->out_channels));
    p = std::make_shared<P>(fused, *q::get_default_qat_qconfig("x86"), act);
    p->bn_frozen = c.at("bn_frozen").get<bool>();
  } else {
    p = std::make_shared<P>(*conv, *q::get_default_qat_qconfig("x86"), act);
  }
  p->name = c.at("name").get<std::string>();
  return p;
}

void encode_prepared_add(const nn::Module& m, json& c) {
  auto& a = dynamic_cast<const q::QATAdd&>(m);
  c = {{"activation", q::fused_activation_name(a.activation())}, {"name", a.name}};
}

template <class P>
std::shared_ptr<nn::Module> decode_prepared_add(const json& c, const TensorMap&) {
  auto a = std::make_shared<P>(nn::Add(), *q::get_default_qat_qconfig("x86"), activation_from(c));
  a->name = c.at("name").get<std::string>();
  return a;
}

void encode_batchnorm(const nn::Module& m, json& c) {
  auto& b = dynamic_cast<const nn::BatchNorm2d&>(m);
  c = {{"num_features", b.num_features}, {"eps", b.eps}, {"momentum", b.momentum}, {"affine", b.affine},
       {"track_running_stats", b.track_running_stats}};
}

std::shared_ptr<nn::Module> decode_batchnorm(const json& c, const TensorMap&) {
  return std::make_shared<nn::BatchNorm2d>(integer<int64_t>(c, "num_features"), c.at("eps").get<double>(),
                                           c.at("momentum").get<double>(), c.at("affine").get<bool>(),
                                           c.at("track_running_stats").get<bool>());
}

void encode_maxpool(const nn::Module& m, json& c) {
  auto& p = dynamic_cast<const nn::MaxPool2d&>(m);
  c = {{"kernel_size", pair_json(p.kernel_size)}, {"stride", pair_json(p.stride)}, {"padding", pair_json(p.padding)},
       {"dilation", pair_json(p.dilation)}};
}

std::shared_ptr<nn::Module> decode_maxpool(const json& c, const TensorMap&) {
  return std::make_shared<nn::MaxPool2d>(pair_from(c, "kernel_size"), pair_from(c, "stride"), pair_from(c, "padding"),
                                         pair_from(c, "dilation"));
}

void encode_avgpool(const nn::Module& m, json& c) {
  auto& p = dynamic_cast<const nn::AvgPool2d&>(m);
  c = {{"kernel_size", pair_json(p.kernel_size)}, {"stride", pair_json(p.stride)}, {"padding", pair_json(p.padding)}};
}

std::shared_ptr<nn::Module> decode_avgpool(const json& c, const TensorMap&) {
  return std::make_shared<nn::AvgPool2d>(pair_from(c, "kernel_size"), pair_from(c, "stride"), pair_from(c, "padding"));
}

void encode_adaptive(const nn::Module& m, json& c) {
  c = {{"output_size", pair_json(dynamic_cast<const nn::AdaptiveAvgPool2d&>(m).output_size)}};
}

std::shared_ptr<nn::Module> decode_adaptive(const json& c, const TensorMap&) {
  return std::make_shared<nn::AdaptiveAvgPool2d>(pair_from(c, "output_size"));
}

void encode_dropout(const nn::Module& m, json& c) { c = {{"p", dynamic_cast<const nn::Dropout&>(m).p}}; }

std::shared_ptr<nn::Module> decode_dropout(const json& c, const TensorMap&) {
  return std::make_shared<nn::Dropout>(c.at("p").get<double>());
}

// ReLU6's `inplace` changes only its printout; a file records it when set.
void encode_relu6(const nn::Module& m, json& c) {
  c = json::object();
  if (dynamic_cast<const nn::ReLU6&>(m).inplace) c["inplace"] = true;
}

std::shared_ptr<nn::Module> decode_relu6(const json& c, const TensorMap&) {
  const auto it = c.find("inplace");
  if (it != c.end() && !it->is_boolean()) throw std::invalid_argument("'inplace' must be true or false");
  return std::make_shared<nn::ReLU6>(it != c.end() && it->get<bool>());
}

void encode_flatten(const nn::Module& m, json& c) { c = {{"start_dim", dynamic_cast<const nn::Flatten&>(m).start_dim}}; }

std::shared_ptr<nn::Module> decode_flatten(const json& c, const TensorMap&) {
  // Files written before Flatten had a config hold none: start_dim 1.
  return std::make_shared<nn::Flatten>(c.contains("start_dim") ? integer<int>(c, "start_dim") : 1);
}

// What the MobileNetV2 blocks' codecs read back from a convolution: float,
// fused, prepared (all Conv2d) or int8.
struct ConvInfo {
  int64_t in_channels, out_channels, kernel, stride, groups;
};

// The convolutions of a module tree, in order.
std::vector<ConvInfo> convs_of(const nn::Module& m) {
  std::vector<ConvInfo> out;
  for (auto& [path, sub] : m.named_modules()) {
    if (auto* k = dynamic_cast<const nn::Conv2d*>(sub))
      out.push_back({k->in_channels, k->out_channels, k->kernel_size.h, k->stride.h, k->groups});
    else if (auto* qk = dynamic_cast<const q::QuantizedConv2d*>(sub))
      out.push_back({qk->in_channels, qk->out_channels, qk->kernel_h, qk->geometry.stride_h, qk->geometry.groups});
  }
  return out;
}

// Conv2dNormActivation: its arguments read back from its convolution, and
// whether it ends in a ReLU6 (a third child).
void encode_conv_norm_act(const nn::Module& m, json& c) {
  const auto convs = convs_of(m);
  if (convs.size() != 1) throw std::logic_error("Conv2dNormActivation: expected one convolution");
  const ConvInfo& k = convs[0];
  c = {{"in_channels", k.in_channels}, {"out_channels", k.out_channels}, {"kernel_size", k.kernel},
       {"stride", k.stride}, {"groups", k.groups}, {"activation", m.children().size() == 3}};
}

std::shared_ptr<nn::Module> decode_conv_norm_act(const json& c, const TensorMap&) {
  return std::make_shared<models::Conv2dNormActivation>(integer<int64_t>(c, "in_channels"), integer<int64_t>(c, "out_channels"),
                                                        integer<int64_t>(c, "kernel_size"), integer<int64_t>(c, "stride"),
                                                        integer<int64_t>(c, "groups"), c.at("activation").get<bool>());
}

// InvertedResidual: in = the first convolution's input, out = the last's
// output, stride and the hidden width from the depthwise convolution.
void encode_inverted_residual(const nn::Module& m, json& c) {
  const auto convs = convs_of(m);
  const ConvInfo* depthwise = nullptr;
  for (auto& k : convs)
    if (k.groups > 1) depthwise = &k;
  if (convs.empty() || !depthwise) throw std::logic_error("InvertedResidual: no depthwise convolution");
  const int64_t in = convs.front().in_channels;
  c = {{"in_channels", in}, {"out_channels", convs.back().out_channels}, {"stride", depthwise->stride},
       {"expand_ratio", depthwise->in_channels / in}};
}

std::shared_ptr<nn::Module> decode_inverted_residual(const json& c, const TensorMap&) {
  return std::make_shared<models::InvertedResidual>(integer<int64_t>(c, "in_channels"), integer<int64_t>(c, "out_channels"),
                                                    integer<int64_t>(c, "stride"), integer<int64_t>(c, "expand_ratio"));
}

// MobileNetV2: its forward is features -> global average pool -> classifier,
// whatever the children hold. It is built as a small shell (no inverted
// residual stages) whose features and classifier the file's children replace.
void encode_mobilenet(const nn::Module& m, json& c) {
  c = {{"last_channel", dynamic_cast<const models::MobileNetV2&>(m).last_channel}};
}

std::shared_ptr<nn::Module> decode_mobilenet(const json& c, const TensorMap&) {
  auto net = std::make_shared<models::MobileNetV2>(1, 0.25, 1, 1, std::vector<models::InvertedResidualSetting>{}, 0.0);
  net->last_channel = integer<int64_t>(c, "last_channel");
  return net;
}

}  // namespace

std::map<std::string, ModuleCodec>& module_codecs() {
  static std::map<std::string, ModuleCodec> codecs = [] {
    std::map<std::string, ModuleCodec> c;
    c["Sequential"] = simple_codec<nn::Sequential>();
    c["ReLU"] = simple_codec<nn::ReLU>();
    c["ReLU6"] = {encode_relu6, decode_relu6};
    c["Flatten"] = {encode_flatten, decode_flatten};
    c["Add"] = simple_codec<nn::Add>();
    c["Conv2d"] = {encode_conv, decode_conv};
    c["BatchNorm2d"] = {encode_batchnorm, decode_batchnorm};
    c["MaxPool2d"] = {encode_maxpool, decode_maxpool};
    c["AvgPool2d"] = {encode_avgpool, decode_avgpool};
    c["AdaptiveAvgPool2d"] = {encode_adaptive, decode_adaptive};
    c["Dropout"] = {encode_dropout, decode_dropout};
    c["Conv2dNormActivation"] = {encode_conv_norm_act, decode_conv_norm_act};
    c["InvertedResidual"] = {encode_inverted_residual, decode_inverted_residual};
    c["MobileNetV2"] = {encode_mobilenet, decode_mobilenet};
    c["Identity"] = simple_codec<q::Identity>();
    c["Linear"] = float_linear_codec<nn::Linear>("Linear");
    c["LinearReLU"] = float_linear_codec<q::LinearReLU>("LinearReLU");
    c["LinearReLU6"] = float_linear_codec<q::LinearReLU6>("LinearReLU6");
    c["ConvReLU2d"] = fused_conv_codec<q::ConvReLU2d>();
    c["ConvReLU62d"] = fused_conv_codec<q::ConvReLU62d>();
    c["ConvBn2d"] = conv_bn_codec<q::ConvBn2d>();
    c["ConvBnReLU2d"] = conv_bn_codec<q::ConvBnReLU2d>();
    c["ConvBnReLU62d"] = conv_bn_codec<q::ConvBnReLU62d>();
    c["QATAdd"] = {encode_prepared_add, decode_prepared_add<q::QATAdd>};
    c["ObservedAdd"] = {encode_prepared_add, decode_prepared_add<q::ObservedAdd>};
    // Prepared and int8 layers: one type name per fused activation, one codec for all.
    for (const auto a : {q::FusedActivation::none, q::FusedActivation::relu, q::FusedActivation::relu6}) {
      const std::string fused = q::fused_activation_suffix(a);
      c["QATLinear" + fused] = {encode_prepared, decode_prepared<q::QATLinear>};
      c["ObservedLinear" + fused] = {encode_prepared, decode_prepared<q::ObservedLinear>};
      c["QuantizedLinear" + fused] = {encode_quantized, decode_quantized, int8_layer_tensors<q::QuantizedLinear>};
      c["QuantizedConv2d" + fused] = {encode_quantized_conv, decode_quantized_conv, quantized_conv_tensors};
      c["QATConv" + fused + "2d"] = {encode_prepared_conv, decode_prepared_conv<q::QATConv2d, false>};
      c["QATConvBn" + fused + "2d"] = {encode_prepared_conv, decode_prepared_conv<q::QATConv2d, true>};
      c["ObservedConv" + fused + "2d"] = {encode_prepared_conv, decode_prepared_conv<q::ObservedConv2d, false>};
      c["QuantizedAdd" + fused] = {encode_quantized_add, decode_quantized_add};
    }
    for (const char* pool : {"QuantizedMaxPool2d", "QuantizedAvgPool2d", "QuantizedAdaptiveAvgPool2d"})
      c[pool] = quantized_pool_codecs(pool);
    c["DynamicQuantizedLinear"] = {encode_dynamic, decode_dynamic, int8_layer_tensors<q::DynamicQuantizedLinear>};
    c["FakeQuantize"] = {encode_fake_quant, decode_fake_quant};
    c["MinMaxObserver"] = observer_codec<q::MinMaxObserver>();
    c["MovingAverageMinMaxObserver"] = observer_codec<q::MovingAverageMinMaxObserver>();
    c["PerChannelMinMaxObserver"] = observer_codec<q::PerChannelMinMaxObserver>();
    c["MovingAveragePerChannelMinMaxObserver"] = observer_codec<q::MovingAveragePerChannelMinMaxObserver>();
    c["HistogramObserver"] = observer_codec<q::HistogramObserver>();
    c["LearnableFakeQuantize"] = {encode_learnable, decode_learnable};
    return c;
  }();
  return codecs;
}

}  // namespace tq::io

// Values a model file may hold but no training or calibration can produce
// (docs/reliability.md §4): a fake-quant scale of 0, -1, NaN or inf, a zero
// point off its range, an observer range that is neither observed nor empty,
// a learned LSQ scale that is NaN, an int8 layer's NaN bias. Each is refused
// where it is read (when the model loads, not when it first runs), and the
// error names the file, the module and the tensor. The int8 layers' own
// constructors check what they are built from in the same way, so a float
// weight with a NaN is refused instead of becoming -128.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>

#include "io/model_file.h"
#include "io/safetensors.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/sequential.h"
#include "quant/dynamic_linear.h"
#include "quant/fused.h"
#include "quant/passes.h"
#include "quant/qconfig.h"
#include "quant/quantized_conv.h"
#include "quant/quantized_linear.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace {

using namespace tq;
namespace q = tq::quant;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// A small MLP, fused, prepared with `qconfig` and run through two training
// batches (QAT) or calibration batches (PTQ), as a model file of it.
io::SafetensorsFile prepared_file(const q::QConfigPtr& qconfig, bool qat) {
  manual_seed(7);
  auto m = nn::make_mlp({6, 5, 3});
  q::fuse_linear_relu(*m);
  m->qconfig = qconfig;
  if (qat) q::prepare_qat(*m);
  else q::prepare(*m);
  m->train();
  Generator g(11);
  for (int i = 0; i < 2; ++i) {
    Tensor loss = cross_entropy((*m)(randn({8, 6}, g)), randint(0, 3, {8}, g));
    if (qat) loss.backward();
  }
  return io::model_to_safetensors(*m);
}

// The name of the file's first tensor ending in `suffix`.
std::string tensor_ending(const io::SafetensorsFile& f, const std::string& suffix) {
  for (auto& [name, t] : f.tensors)
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return name;
  FAIL("no tensor ending in " << suffix);
  return "";
}

// `f` with element `i` of tensor `name` set to `v` (f32 or i32).
io::SafetensorsFile with_value(io::SafetensorsFile f, const std::string& name, int64_t i, double v) {
  Tensor t = kernels::clone(f.tensors.at(name));
  if (t.dtype() == DType::f32) t.data<float>()[i] = static_cast<float>(v);
  else if (t.dtype() == DType::i32) t.data<int32_t>()[i] = static_cast<int32_t>(v);
  else FAIL("unexpected dtype of " << name);
  f.tensors[name] = t;
  return f;
}

// The module path of a tensor name: "0.activation_post_process.scale" -> "0.activation_post_process".
std::string module_of(const std::string& tensor) { return tensor.substr(0, tensor.rfind('.')); }

void expect_refused(const io::SafetensorsFile& f, const std::string& tensor, const std::string& problem) {
  const std::string file = "edited.safetensors";
  CAPTURE(tensor, problem);
  CHECK_THROWS_AS(io::build_model(f, file), io::FormatError);
  CHECK_THROWS_WITH(io::build_model(f, file),
                    StartsWith(file + ": ") && Contains("'" + module_of(tensor) + "'") && Contains(problem));
}

}  // namespace

TEST_CASE("loaded values: a fake-quant scale or zero point no observer can produce is refused at load", "[loaded][qat]") {
  const io::SafetensorsFile good = prepared_file(q::get_default_qat_qconfig("x86"), true);
  REQUIRE_NOTHROW(io::build_model(good, "good.safetensors"));
  const std::string scale = tensor_ending(good, "activation_post_process.scale");
  const std::string zero_point = tensor_ending(good, "activation_post_process.zero_point");
  // It used to load and evaluate (exit 0, accuracy near chance) with each of these.
  for (double bad : {0.0, -1.0, static_cast<double>(kNaN), static_cast<double>(kInf), 1e-40})
    expect_refused(with_value(good, scale, 0, bad), scale, "scale[0] is ");
  expect_refused(with_value(good, zero_point, 0, 1000), zero_point, "zero_point[0] is 1000, outside [0, 127]");
  expect_refused(with_value(good, zero_point, 0, -1), zero_point, "zero_point[0] is -1");
  // The weights' fake quant (per channel) is checked channel by channel.
  const std::string weight_scale = tensor_ending(good, "weight_fake_quant.scale");
  expect_refused(with_value(good, weight_scale, 2, kNaN), weight_scale, "scale[2] is nan");
}

TEST_CASE("loaded values: an observer range that is neither observed nor empty is refused at load", "[loaded][ptq]") {
  const io::SafetensorsFile good = prepared_file(q::get_default_qconfig("x86"), false);
  REQUIRE_NOTHROW(io::build_model(good, "good.safetensors"));
  // The per-tensor activation observer (MinMax in the x86 PTQ preset is a histogram; use the QAT file's).
  const io::SafetensorsFile qat = prepared_file(q::get_default_qat_qconfig("x86"), true);
  const std::string min_val = tensor_ending(qat, "activation_post_process.activation_post_process.min_val");
  const std::string max_val = tensor_ending(qat, "activation_post_process.activation_post_process.max_val");
  expect_refused(with_value(qat, min_val, 0, -kInf), min_val, "[-inf, ");
  expect_refused(with_value(qat, max_val, 0, kNaN), max_val, "nan]");
  expect_refused(with_value(qat, min_val, 0, 1e30), min_val, "neither an observed range");  // min > max
  // "Nothing seen yet" (+inf, -inf) is a valid state.
  CHECK_NOTHROW(io::build_model(with_value(with_value(qat, min_val, 0, kInf), max_val, 0, -kInf), "empty.safetensors"));
  // Per channel (the weight observer of the QAT file): every channel must hold a finite range.
  const std::string channel_min = tensor_ending(qat, "weight_fake_quant.activation_post_process.min_val");
  expect_refused(with_value(qat, channel_min, 1, kInf), channel_min, "of channel 1");
}

TEST_CASE("loaded values: a learned LSQ scale or zero point that is not finite is refused at load", "[loaded][lsq]") {
  const io::SafetensorsFile good = prepared_file(q::make_lsq_qat_qconfig(4, 4), true);
  REQUIRE_NOTHROW(io::build_model(good, "good.safetensors"));
  const std::string scale = tensor_ending(good, "activation_post_process.scale");
  const std::string zero_point = tensor_ending(good, "activation_post_process.zero_point");
  expect_refused(with_value(good, scale, 0, kNaN), scale, "scale[0] is nan");
  expect_refused(with_value(good, zero_point, 0, -kInf), zero_point, "zero_point[0] is -inf");
  // A scale left at or below 0 by an optimizer step is clamped to eps by the next forward, as in training.
  CHECK_NOTHROW(io::build_model(with_value(good, scale, 0, -0.5), "negative.safetensors"));
}

TEST_CASE("loaded values: an int8 layer's NaN bias is refused at load, naming file, module and element", "[loaded][int8]") {
  manual_seed(7);
  auto m = nn::make_mlp({6, 5, 3});
  m->qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(*m);
  Generator g(11);
  (*m)(randn({8, 6}, g));
  q::convert(*m);
  const io::SafetensorsFile good = io::model_to_safetensors(*m);
  REQUIRE_NOTHROW(io::build_model(good, "good.safetensors"));
  const std::string bias = tensor_ending(good, "2.bias");
  // It loaded, and the first forward refused it.
  expect_refused(with_value(good, bias, 1, kNaN), bias, "bias[1] is nan");
  expect_refused(with_value(good, bias, 0, kInf), bias, "bias[0] is inf");
}

TEST_CASE("loaded values: int8 layers check every value they are built from", "[loaded][int8]") {
  const q::QuantSpec w = q::weight_spec(8, QScheme::per_tensor_symmetric);
  const q::QuantSpec a = q::activation_spec(8);
  const QParams wq = q::make_qparams(w, {{0.01f, 0}}), oq = q::make_qparams(a, {{0.02f, 128}});
  const auto iq = std::make_shared<const QParams>(q::make_qparams(a, {{0.05f, 128}}));
  const Tensor weight = from_vector({0.5f, -0.25f, 1.f, 0.f, 0.75f, -1.f}, {2, 3});
  const Tensor bias = from_vector({0.1f, 0.2f}, {2});
  REQUIRE_NOTHROW(q::QuantizedLinear(weight, bias, wq, oq, iq, false, "fc9"));

  // A float weight with a NaN was quantized to -128 without a word.
  Tensor nan_weight = kernels::clone(weight);
  nan_weight.data<float>()[4] = kNaN;
  CHECK_THROWS_WITH(q::QuantizedLinear(nan_weight, bias, wq, oq, iq, false, "fc9"), Contains("fc9: weight[1, 1] is nan"));
  CHECK_THROWS_WITH(q::DynamicQuantizedLinear(nan_weight, bias), Contains("weight[1, 1] is nan"));
  const Tensor inf_bias = from_vector({kInf, 0.f}, {2});
  CHECK_THROWS_WITH(q::DynamicQuantizedLinear(weight, inf_bias), Contains("bias[0] is inf"));

  QParams zero_scale = oq;
  zero_scale.scale[0] = 0;
  CHECK_THROWS_WITH(q::QuantizedLinear(weight, bias, wq, zero_scale, iq, false, "fc9"),
                    Contains("fc9: output qparams: scale[0] is 0"));
  QParams off_range = oq;
  off_range.zero_point[0] = 300;
  CHECK_THROWS_WITH(q::QuantizedLinear(weight, bias, wq, off_range, iq, false, "fc9"),
                    Contains("fc9: output qparams: zero_point[0] is 300, outside [0, 255]"));
  auto bad_input = std::make_shared<QParams>(*iq);
  bad_input->scale[0] = kInf;
  CHECK_THROWS_WITH(q::QuantizedLinear(weight, bias, wq, oq, bad_input, false, "fc9"),
                    Contains("fc9: input qparams: scale[0] is inf"));
  QParams tiny_weight_scale = wq;
  tiny_weight_scale.scale[0] = 1e-40f;  // subnormal: its reciprocal is inf
  CHECK_THROWS_WITH(q::QuantizedLinear(weight, bias, tiny_weight_scale, oq, iq, false, "fc9"),
                    Contains("fc9: weight qparams: scale[0]"));
  QParams too_few = q::make_qparams(q::weight_spec(8, QScheme::per_channel_symmetric, 0), {{0.01f, 0}});
  CHECK_THROWS_WITH(q::QuantizedLinear(weight, bias, too_few, oq, iq, false, "fc9"), Contains("1 weight scales for 2"));

  // The int8 convolution and add do the same.
  const Tensor conv_weight = full({2, 1, 1, 1}, 0.5);
  const Tensor nan_bias = from_vector({0.f, kNaN}, {2});
  CHECK_THROWS_WITH(q::QuantizedConv2d(conv_weight, nan_bias, wq, oq, iq, q::FusedActivation::none, {}, "conv9"),
                    Contains("conv9: bias[1] is nan"));
  CHECK_THROWS_WITH(q::QuantizedConv2d(conv_weight, Tensor(), wq, zero_scale, iq, q::FusedActivation::none, {}, "conv9"),
                    Contains("conv9: output qparams: scale[0] is 0"));
  CHECK_THROWS_WITH(q::QuantizedAdd(off_range, q::FusedActivation::none, "add9"),
                    Contains("add9: output qparams: zero_point[0] is 300"));
  CHECK_NOTHROW(q::QuantizedAdd(oq, q::FusedActivation::none, "add9"));
}

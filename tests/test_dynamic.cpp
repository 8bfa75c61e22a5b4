// Dynamic quantization (src/quant/dynamic_linear.h, quantize_dynamic in
// src/quant/passes.h, docs/dynamic.md).
//
// Golden data: tests/golden/quant_ptq.txt, dynamic/* — PyTorch 1.13's
// DynamicQuantizedLinear on nn.Linear(16, 8). That build has no FBGEMM: the
// outputs come from onednn (activations 0..127, what fbgemm's reduce_range
// gives) and qnnpack (0..255). PyTorch picks the activation qparams with ATen's
// ChooseQuantizationParams; we use the observer formula (docs/dynamic.md
// eq. 1), so the two may put a value on neighbouring integers. The bound on
// the output difference (derived at kInputSteps below) allows for that.
#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>
#include <typeindex>

#include "golden_reader.h"
#include "tensor/int8_gemm.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// ---- The golden bound ----
// Output element n of both implementations is
//     y_n = sum_k xhat_k * s_w[n] * W[n][k] + b_n,   xhat_k = s_x (q_k - z_x),
// with the SAME integer weights W and weight scale s_w (checked first). Each
// implementation rounds every input to its nearest grid point, so
// |xhat_k - x_k| <= s_x / 2 for both, and the two xhat_k differ by at most
// one input step s_x (taking the larger of the two scales). Hence
//     |y_n - y'_n| <= kInputSteps * s_x * s_w[n] * sum_k |W[n][k]|
// — one input quantization step times the weight scale, per element of the
// dot product. The float epilogue adds a few ulps of |y|: kEpilogueRelative.
constexpr double kInputSteps = 1.0;
constexpr double kEpilogueRelative = 1e-6;
// Weight scales: both are max|w| / 127.5 in float32.
constexpr double kWeightScaleRelative = 0.0;
// quantize_dynamic on a 3-layer MLP with 7-bit activations: the model
// output's SQNR against the float model (eq. 10 of docs/ptq.md; each 6 dB is
// about one bit). Measured: 34.0 dB, as expected for 7-bit activations
// spread over about 8 standard deviations of a Gaussian input.
constexpr double kModelMinSqnrDb = 30.0;

// Checks DynamicQuantizedLinear against dynamic/<w>/<engine>.
void check_dynamic_golden(bool per_channel, const std::string& engine, int32_t act_quant_max) {
  const golden::File& g = golden::load("quant_ptq.txt");
  const std::string w_case = per_channel ? "per_channel" : "per_tensor";
  const std::string prefix = "dynamic/" + w_case + "/" + engine + "/";
  INFO("case " << w_case << " / " << engine);
  REQUIRE(g.scalar(prefix + "act_quant_max") == act_quant_max);

  const Tensor weight = g.tensor("dynamic/weight"), bias = g.tensor("dynamic/bias"), x = g.tensor("dynamic/x");
  quant::DynamicQuantizedLinear layer(weight, bias, per_channel, act_quant_max);

  // Offline half: the same int8 weights and scales as PyTorch.
  REQUIRE(golden::ints_of(layer.weight()) == g.entry("dynamic/" + w_case + "/weight_int").ints);
  const std::vector<float> want_scales = to_vector(g.tensor("dynamic/" + w_case + "/weight_scale"));
  for (int64_t n = 0; n < 8; ++n) {
    const float want = want_scales[per_channel ? static_cast<size_t>(n) : 0];
    CHECK(std::fabs(layer.weight_scales()[static_cast<size_t>(n)] - want) <= kWeightScaleRelative * want);
  }

  // Run-time half: activation qparams from this batch's own min / max.
  const ActivationQParams ours =
      dynamic_activation_qparams(kernels::min_all(x), kernels::max_all(x), act_quant_max);
  const double pt_scale = g.scalar(prefix + "act_scale");
  const int64_t pt_zero_point = static_cast<int64_t>(g.scalar(prefix + "act_zero_point"));
  INFO("activation qparams: ours " << ours.scale << " / " << ours.zero_point << ", PyTorch " << pt_scale << " / "
                                   << pt_zero_point);
  const double s_x = std::max<double>(ours.scale, pt_scale);

  const Tensor y = layer(x);
  const Tensor want = g.tensor(prefix + "out");
  REQUIRE(y.shape() == want.shape());
  const std::vector<int64_t>& w_int = g.entry("dynamic/" + w_case + "/weight_int").ints;
  double worst_ratio = 0;  // max over elements of |diff| / bound
  for (int64_t m = 0; m < 5; ++m)
    for (int64_t n = 0; n < 8; ++n) {
      double abs_w = 0;
      for (int64_t k = 0; k < 16; ++k) abs_w += std::fabs(static_cast<double>(w_int[static_cast<size_t>(n * 16 + k)]));
      const double s_w = want_scales[per_channel ? static_cast<size_t>(n) : 0];
      const double reference = want.at({m, n});
      const double bound = kInputSteps * s_x * s_w * abs_w + kEpilogueRelative * std::fabs(reference);
      const double diff = std::fabs(y.at({m, n}) - reference);
      worst_ratio = std::max(worst_ratio, diff / bound);
      INFO("element (" << m << ", " << n << "): ours " << y.at({m, n}) << ", PyTorch " << reference << ", bound "
                       << bound);
      CHECK(diff <= bound);
    }
  const golden::Comparison c = golden::compare(y, want);
  INFO(c.describe(prefix + "out") << "; worst |diff| / bound = " << worst_ratio);
  // Where both sides chose the same activation qparams, they multiply the same
  // integers: then only the float epilogue can differ.
  // (On this data they do, so the integers are compared too.)
  if (ours.zero_point == pt_zero_point && std::fabs(ours.scale - pt_scale) <= 1e-7 * pt_scale) {
    const Tensor x_int = quant::quantize_per_tensor(x, ours.scale, ours.zero_point, 0, act_quant_max, DType::u8);
    CHECK(golden::ints_of(x_int) == g.entry(prefix + "x_int").ints);
    CHECK(c.relative_error <= kEpilogueRelative);
  }
}

// An MLP classifier head with several Linear layers (no training needed: the
// dynamic layer quantizes whatever weights it is given).
struct Head : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(64, 128));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(128, 64));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(64, 10));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : to_vector(t)) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> va = to_vector(a), vb = to_vector(b);
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(va[i]) - vb[i]));
  return m;
}

std::vector<std::string> module_types(const nn::Module& m) {
  std::vector<std::string> out;
  for (auto& [path, mod] : m.named_modules()) out.push_back(path + ":" + mod->type_name());
  return out;
}

}  // namespace

TEST_CASE("golden: dynamic Linear with per-tensor weights matches PyTorch (onednn, 0..127)", "[dynamic][golden]") {
  check_dynamic_golden(false, "onednn", 127);
}

TEST_CASE("golden: dynamic Linear with per-tensor weights matches PyTorch (qnnpack, 0..255)", "[dynamic][golden]") {
  check_dynamic_golden(false, "qnnpack", 255);
}

TEST_CASE("golden: dynamic Linear with per-channel weights matches PyTorch (onednn, 0..127)", "[dynamic][golden]") {
  check_dynamic_golden(true, "onednn", 127);
}

TEST_CASE("golden: dynamic Linear with per-channel weights matches PyTorch (qnnpack, 0..255)", "[dynamic][golden]") {
  check_dynamic_golden(true, "qnnpack", 255);
}

TEST_CASE("golden bound can fail: a missing bias or weights 10% off break it", "[dynamic][golden]") {
  const golden::File& g = golden::load("quant_ptq.txt");
  const Tensor want = g.tensor("dynamic/per_tensor/onednn/out");
  const double s_x = g.scalar("dynamic/per_tensor/onednn/act_scale");
  const double s_w = g.scalar("dynamic/per_tensor/weight_scale");
  const std::vector<int64_t>& w_int = g.entry("dynamic/per_tensor/weight_int").ints;
  auto violations = [&](const Tensor& y) {
    int count = 0;
    for (int64_t m = 0; m < 5; ++m)
      for (int64_t n = 0; n < 8; ++n) {
        double abs_w = 0;
        for (int64_t k = 0; k < 16; ++k) abs_w += std::fabs(static_cast<double>(w_int[static_cast<size_t>(n * 16 + k)]));
        const double bound = kInputSteps * s_x * s_w * abs_w + kEpilogueRelative * std::fabs(want.at({m, n}));
        count += std::fabs(y.at({m, n}) - want.at({m, n})) > bound;
      }
    return count;
  };
  const Tensor weight = g.tensor("dynamic/weight"), bias = g.tensor("dynamic/bias"), x = g.tensor("dynamic/x");
  quant::DynamicQuantizedLinear right(weight, bias, false, 127);
  quant::DynamicQuantizedLinear no_bias(weight, Tensor(), false, 127);
  quant::DynamicQuantizedLinear off(kernels::mul_scalar(weight, 1.1f), bias, false, 127);
  CHECK(violations(right(x)) == 0);
  const int a = violations(no_bias(x)), b = violations(off(x));
  INFO("elements out of bound: no bias " << a << " of 40, weights x1.1 " << b << " of 40");
  CHECK(a > 0);
  CHECK(b > 0);
}

TEST_CASE("quantize_dynamic swaps every Linear and stays close to the float model", "[dynamic]") {
  manual_seed(11);
  Head float_model, model;
  for (auto& [name, p] : model.named_parameters()) {  // the same weights in both
    for (auto& [fname, fp] : float_model.named_parameters())
      if (fname == name) kernels::copy_(p, fp);
  }
  Generator data(5);
  const Tensor x = randn({32, 64}, data);

  const int swapped = quant::quantize_dynamic(model, {std::type_index(typeid(nn::Linear))}, DType::i8);
  CHECK(swapped == 3);
  for (auto* name : {"fc1", "fc2", "fc3"}) {
    INFO(name);
    CHECK(dynamic_cast<quant::DynamicQuantizedLinear*>(&model.get_submodule(name)) != nullptr);
  }
  CHECK_FALSE(model.is_training());

  // The user's forward is unchanged and now runs the int8 layers, float in, float out.
  NoGradGuard no_grad;
  float_model.eval();
  const Tensor y_float = float_model(x), y_int8 = model(x);
  REQUIRE(y_int8.dtype() == DType::f32);
  REQUIRE(y_int8.shape() == y_float.shape());
  const double sqnr = quant::sqnr_db(y_float, y_int8);
  INFO("output SQNR " << sqnr << " dB, max |int8 - float| / max |float| = "
                      << max_abs_diff(y_float, y_int8) / max_abs(y_float));
  CHECK(sqnr > kModelMinSqnrDb);
  CHECK(std::isfinite(sqnr));  // it really is quantized

  // Printing shows the dynamic layers.
  std::ostringstream printed;
  printed << model;
  INFO(printed.str());
  CHECK(printed.str().find("(fc1): DynamicQuantizedLinear(in_features=64, out_features=128, dtype=qint8") !=
        std::string::npos);
  CHECK(printed.str().find("(fc3): DynamicQuantizedLinear(in_features=64, out_features=10") != std::string::npos);

  // Weight bytes: i8 weights are a quarter of f32.
  int64_t float_bytes = 0, int8_bytes = 0;
  for (auto* name : {"fc1", "fc2", "fc3"}) {
    const auto& f = dynamic_cast<nn::Linear&>(float_model.get_submodule(name));
    const auto& d = dynamic_cast<quant::DynamicQuantizedLinear&>(model.get_submodule(name));
    float_bytes += f.weight.numel() * static_cast<int64_t>(dtype_size(f.weight.dtype()));
    int8_bytes += d.weight().numel() * static_cast<int64_t>(dtype_size(d.weight().dtype()));
    CHECK(d.weight().dtype() == DType::i8);
  }
  CHECK(float_bytes == (64 * 128 + 128 * 64 + 64 * 10) * 4);
  CHECK(int8_bytes * 4 == float_bytes);
}

TEST_CASE("quantize_dynamic defaults to Linear and works on a Sequential", "[dynamic]") {
  manual_seed(3);
  nn::Sequential model(nn::Linear(8, 16), nn::ReLU(), nn::Linear(16, 4));
  CHECK(quant::quantize_dynamic(model) == 2);
  CHECK(model[0].type_name() == "DynamicQuantizedLinear");
  CHECK(model[1].type_name() == "ReLU");
  CHECK(model[2].type_name() == "DynamicQuantizedLinear");
  const Tensor y = model(randn({3, 8}));
  CHECK(y.shape() == Shape{3, 4});
  // A single sample (1-D input) works too.
  CHECK(model(randn({8})).shape() == Shape{4});
}

TEST_CASE("per-channel dynamic weights are at least as accurate as per-tensor ones", "[dynamic]") {
  // One row with tiny weights: a per-tensor scale wastes most of its levels on it.
  manual_seed(4);
  nn::Linear linear(32, 8);
  {
    NoGradGuard g;
    Tensor row = kernels::slice(linear.weight, 0, 3, 4);
    kernels::mul_scalar_(row, 0.01f);
  }
  quant::DynamicQuantizedLinear per_tensor(linear.weight, linear.bias, false), per_channel(linear.weight, linear.bias, true);
  const Tensor wt = quant::dequantize(per_tensor.weight()), wc = quant::dequantize(per_channel.weight());
  const double sqnr_tensor = quant::sqnr_db(linear.weight, wt), sqnr_channel = quant::sqnr_db(linear.weight, wc);
  const double row_tensor = quant::sqnr_db(kernels::slice(linear.weight, 0, 3, 4), kernels::slice(wt, 0, 3, 4));
  const double row_channel = quant::sqnr_db(kernels::slice(linear.weight, 0, 3, 4), kernels::slice(wc, 0, 3, 4));
  INFO("weight SQNR per-tensor " << sqnr_tensor << " dB, per-channel " << sqnr_channel << " dB; small row "
                                 << row_tensor << " vs " << row_channel << " dB");
  CHECK(sqnr_channel >= sqnr_tensor);
  CHECK(row_channel > row_tensor + 20);  // the small row gets its own, 100x finer, scale
}

TEST_CASE("bad input: quantize_dynamic with types that match nothing leaves the model unchanged", "[dynamic][errors]") {
  manual_seed(12);
  Head model;  // in training mode, as constructed
  const Tensor x = randn({4, 64});
  Tensor before;
  {
    NoGradGuard g;
    before = model(x);
  }
  const auto types_before = module_types(model);
  const int swapped = quant::quantize_dynamic(model, {std::type_index(typeid(nn::ReLU))}, DType::i8);
  CHECK(swapped == 0);
  CHECK(module_types(model) == types_before);
  CHECK(model.is_training());  // not even the mode changed
  NoGradGuard g;
  CHECK(max_abs_diff(model(x), before) == 0);
}

TEST_CASE("bad input: quantize_dynamic refuses dtypes other than qint8", "[dynamic][errors]") {
  Head model;
  CHECK_THROWS_WITH(quant::quantize_dynamic(model, {}, DType::u8), Catch::Contains("qint8"));
  CHECK(model.fc1.module().type_name() == "Linear");
}

TEST_CASE("bad input: a dynamic Linear names the shape it expected", "[dynamic][errors]") {
  manual_seed(2);
  nn::Linear linear(6, 3);
  quant::DynamicQuantizedLinear d(linear.weight, linear.bias);
  CHECK_THROWS_WITH(d(randn({2, 5})), Catch::Contains("in_features=6"));
}

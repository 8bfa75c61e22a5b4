// The int8 Linear that convert produces (src/quant/quantized_linear.h)
// against PyTorch 1.13's static quantized Linear and LinearReLU
// (tests/golden/quant_ptq.txt, static/*; onednn and qnnpack gave identical ints).
//
// The layer is built directly from the golden float weight and bias and the
// golden qparams, so it quantizes to the same integers as PyTorch did. From
// there everything is integer arithmetic plus one requantization per output,
// and no unclamped output lies within 0.008 of a .5 tie (README), so the
// fixed-point multiplier (within 1 ulp of M) must reproduce every output
// integer exactly: the comparison has no tolerance.
#include <catch2/catch.hpp>

#include "golden_reader.h"
#include "tensor/int8_gemm.h"
#include "tinyqat.h"

using namespace tq;

namespace {

QParams per_tensor_u8(float scale, int32_t zero_point) {
  QParams q;
  q.scheme = QScheme::per_tensor_affine;
  q.scale = {scale};
  q.zero_point = {zero_point};
  q.quant_min = 0;
  q.quant_max = 255;
  return q;
}

// static/weight_scale: per-channel symmetric qint8 along the output channels.
QParams golden_weight_qparams() {
  const golden::File& g = golden::load("quant_ptq.txt");
  QParams q;
  q.scheme = QScheme::per_channel_symmetric;
  q.scale = to_vector(g.tensor("static/weight_scale"));
  for (int64_t z : g.entry("static/weight_zero_point").ints) q.zero_point.push_back(static_cast<int32_t>(z));
  q.axis = 0;
  q.quant_min = -128;
  q.quant_max = 127;
  return q;
}

quant::QuantizedLinear golden_layer(const std::string& config, bool fused_relu) {
  const golden::File& g = golden::load("quant_ptq.txt");
  const QParams out = per_tensor_u8(static_cast<float>(g.scalar("static/" + config + "/y_scale")),
                                    static_cast<int32_t>(g.scalar("static/" + config + "/y_zero_point")));
  auto in = std::make_shared<const QParams>(per_tensor_u8(static_cast<float>(g.scalar("static/x_scale")),
                                                          static_cast<int32_t>(g.scalar("static/x_zero_point"))));
  return quant::QuantizedLinear(g.tensor("static/weight_float"), g.tensor("static/bias"), golden_weight_qparams(), out,
                                in, fused_relu, "golden." + config);
}

void check_config(const std::string& config, bool fused_relu) {
  const golden::File& g = golden::load("quant_ptq.txt");
  INFO("static/" << config << (fused_relu ? " (LinearReLU)" : " (Linear)"));
  quant::QuantizedLinear layer = golden_layer(config, fused_relu);
  CHECK(layer.type_name() == (fused_relu ? "QuantizedLinearReLU" : "QuantizedLinear"));
  // Offline: the same int8 weights as PyTorch.
  REQUIRE(golden::ints_of(layer.weight()) == g.entry("static/weight_int").ints);
  const std::vector<int64_t>& want = g.entry("static/" + config + "/out_int").ints;

  // The layer quantizes the float input itself with the recorded input qparams...
  const Tensor x_float = g.tensor("static/x_float");
  const Tensor x_q = quant::quantize(x_float, *layer.input_qparams(), DType::u8);
  REQUIRE(golden::ints_of(x_q) == g.entry("static/x_int").ints);
  for (auto kernel : {Int8Kernel::reference, Int8Kernel::automatic}) {
    ScopedInt8Kernel scoped(kernel);
    INFO("kernel " << to_string(kernel));
    const Tensor y_from_float = layer(x_float);
    REQUIRE(y_from_float.dtype() == DType::u8);
    CHECK(y_from_float.qparams().scale[0] == static_cast<float>(g.scalar("static/" + config + "/y_scale")));
    CHECK(golden::ints_of(y_from_float) == want);
    // ...and takes an already quantized input as it is.
    CHECK(golden::ints_of(layer(x_q)) == want);
  }
}

}  // namespace

TEST_CASE("golden: int8 Linear output integers equal PyTorch's quantized Linear", "[ptq][golden]") {
  check_config("linear", false);
}

TEST_CASE("golden: int8 LinearReLU output integers equal PyTorch's quantized LinearReLU", "[ptq][golden]") {
  check_config("linear_relu", true);
}

TEST_CASE("golden: saturating outputs clamp to 0..255 as in PyTorch", "[ptq][golden]") {
  check_config("linear_sat", false);
  check_config("linear_relu_sat", true);
  // The saturating case really reaches both ends of the range.
  const std::vector<int64_t>& sat = golden::load("quant_ptq.txt").entry("static/linear_sat/out_int").ints;
  CHECK(std::count(sat.begin(), sat.end(), 0) + std::count(sat.begin(), sat.end(), 255) > 0);
}

TEST_CASE("golden: the fused ReLU clamps at the output zero point, nothing else changes", "[ptq][golden]") {
  // PyTorch's LinearReLU ints are max(Linear ints, y_zero_point) on this data.
  const golden::File& g = golden::load("quant_ptq.txt");
  const std::vector<int64_t>& plain = g.entry("static/linear/out_int").ints;
  const std::vector<int64_t>& fused = g.entry("static/linear_relu/out_int").ints;
  const int64_t zy = static_cast<int64_t>(g.scalar("static/linear_relu/y_zero_point"));
  REQUIRE(plain.size() == fused.size());
  int clamped = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    CHECK(fused[i] == std::max(plain[i], zy));
    clamped += plain[i] < zy;
  }
  CHECK(clamped > 0);  // the case exercises the clamp
}

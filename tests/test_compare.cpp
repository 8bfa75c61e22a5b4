// Float-vs-int8 comparison tools (src/quant/compare.h, docs/ptq.md §5):
// sqnr_db (eq. 10), compare_weights, compare_model_outputs, format_comparison.
// The comparisons need two models: the float one and its quantized copy, built
// here from the same seed and then given identical parameters by name.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "tinyqat.h"

using namespace tq;

namespace {

// A weight outlier this many times the layer's largest weight.
constexpr float kOutlierFactor = 20.0f;
// How much lower the outlier layer's SQNR must be (dB; each 6 dB is about a
// bit). Measured with per-tensor weights: weights 48.1 -> 24.1 dB, layer
// outputs 29.9 -> 21.7 dB (the output also has 7-bit activation noise).
constexpr double kMinWeightSqnrDropDb = 12.0;
constexpr double kMinOutputSqnrDropDb = 6.0;

struct MLP : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(16, 64));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(64, 32));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(32, 5));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

// Copies every parameter of `src` into the parameter of the same name in `dst`, in place.
void copy_parameters(nn::Module& dst, const nn::Module& src) {
  const auto from = src.named_parameters();
  for (auto& [name, p] : dst.named_parameters()) {
    bool found = false;
    for (auto& [n, q] : from)
      if (n == name) {
        kernels::copy_(p, q);
        found = true;
      }
    REQUIRE(found);
  }
}

std::unique_ptr<MLP> float_model(uint64_t seed) {
  manual_seed(seed);
  auto m = std::make_unique<MLP>();
  m->eval();
  return m;
}

// Multiplies one weight of `layer` so that it is kOutlierFactor x the layer's max |w|.
void inject_outlier(nn::Linear& layer) {
  NoGradGuard g;
  float max_abs = 0;
  for (float v : to_vector(layer.weight)) max_abs = std::max(max_abs, std::fabs(v));
  layer.weight.data<float>()[5] = kOutlierFactor * max_abs;
}

Tensor calibration_data() {
  Generator g(99);
  return randn({256, 16}, g);
}

// A quantized copy of `reference`: same parameters, prepare / calibrate / convert.
std::unique_ptr<MLP> quantized_copy(const MLP& reference, const quant::QConfigPtr& qconfig) {
  auto q = float_model(12345);  // any seed: the parameters are overwritten
  copy_parameters(*q, reference);
  q->qconfig = qconfig;
  quant::prepare(*q);
  NoGradGuard g;
  (*q)(calibration_data());
  quant::convert(*q);
  return q;
}

const quant::LayerComparison& row(const std::vector<quant::LayerComparison>& rows, const std::string& name) {
  for (auto& r : rows)
    if (r.name == name) return r;
  FAIL("no row for layer " << name);
  return rows.front();
}

}  // namespace

TEST_CASE("sqnr_db follows eq. 10", "[compare]") {
  const Tensor r = from_vector({1, -1, 2, -2}, {4});
  // noise 0.1^2 * 4 = 0.04 against signal 10: 10 log10(250) dB
  const Tensor a = from_vector({1.1f, -0.9f, 2.1f, -1.9f}, {4});
  CHECK(quant::sqnr_db(r, a) == Approx(10.0 * std::log10(10.0 / 0.04)).epsilon(1e-5));
  CHECK(quant::sqnr_db(r, r) == std::numeric_limits<double>::infinity());
  // A quantized tensor is compared through its real values.
  const Tensor q = quant::quantize_per_tensor(r, 0.5f, 10, 0, 255, DType::u8);
  CHECK(quant::sqnr_db(r, q) == std::numeric_limits<double>::infinity());  // all on the grid
  CHECK_THROWS_WITH(quant::sqnr_db(r, from_vector({1, 2}, {2})), Catch::Contains("(4,)") && Catch::Contains("(2,)"));
}

TEST_CASE("compare_model_outputs and compare_weights report a finite SQNR for every layer", "[compare][ptq]") {
  auto reference = float_model(1);
  auto quantized = quantized_copy(*reference, quant::get_default_qconfig("x86"));
  const Tensor x = calibration_data();

  const auto outputs = quant::compare_model_outputs(*reference, *quantized, x);
  REQUIRE(outputs.size() == 3);
  for (const auto& r : outputs) {
    INFO(r.name << ": " << r.sqnr_db << " dB");
    CHECK(std::isfinite(r.sqnr_db));
    CHECK(r.sqnr_db > 20);  // 7-bit activations: well above 20 dB
    CHECK(r.float_type == "Linear");
    CHECK(r.quant_type == "QuantizedLinear");
    CHECK(r.max_abs_error > 0);
  }
  CHECK(outputs[0].name == "fc1");
  CHECK(outputs[0].numel == 256 * 64);

  const auto weights = quant::compare_weights(*reference, *quantized);
  REQUIRE(weights.size() == 3);
  for (const auto& r : weights) {
    INFO(r.name << ": " << r.sqnr_db << " dB");
    CHECK(std::isfinite(r.sqnr_db));
    CHECK(r.sqnr_db > 35);  // 8-bit per-channel weights: about 6 dB per bit
  }
  CHECK(row(weights, "fc2").numel == 64 * 32);

  const std::string table = quant::format_comparison(outputs, "per-layer outputs");
  INFO(table);
  CHECK(table.find("per-layer outputs") == 0);
  CHECK(table.find("SQNR (dB)") != std::string::npos);
  CHECK(table.find("fc3") != std::string::npos);
}

TEST_CASE("compare_model_outputs changes neither model", "[compare]") {
  auto reference = float_model(2);
  auto quantized = quantized_copy(*reference, quant::make_ptq_qconfig("minmax"));
  const Tensor x = calibration_data();
  NoGradGuard g;
  const std::vector<float> f_before = to_vector((*reference)(x)), q_before = to_vector((*quantized)(x));
  const std::string f_print = reference->repr(), q_print = quantized->repr();
  quant::compare_model_outputs(*reference, *quantized, x);
  CHECK(to_vector((*reference)(x)) == f_before);
  CHECK(to_vector((*quantized)(x)) == q_before);
  CHECK(reference->repr() == f_print);
  CHECK(quantized->repr() == q_print);
}

TEST_CASE("compare_model_outputs on a QAT model in training mode updates no observer", "[compare]") {
  auto reference = float_model(5);
  auto qat = float_model(5);
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);  // training mode
  const Tensor x = calibration_data();
  {
    NoGradGuard g;
    (*qat)(x);  // one training step's forward: the fake quants have qparams
  }
  auto buffers = [&] {
    std::vector<std::vector<float>> out;
    for (auto& [name, b] : qat->named_buffers()) out.push_back(to_vector(b));
    return out;
  };
  const auto before = buffers();
  Generator g(6);
  const auto rows = quant::compare_model_outputs(*reference, *qat, kernels::mul_scalar(randn({64, 16}, g), 5.0f));
  CHECK(rows.size() == 3);
  CHECK(buffers() == before);  // wider data went through, yet no range moved
  CHECK(qat->is_training());   // and the mode is back
  CHECK(qat->fc1.module().is_training());
}

TEST_CASE("an outlier weight lowers that layer's SQNR, and only that layer's", "[compare][ptq]") {
  // Per-tensor weights: one outlier stretches the grid for the whole layer.
  const auto qconfig = quant::make_ptq_qconfig("minmax", 8, 7, /*per_channel_weights=*/false);
  auto clean = float_model(3);
  auto spiked = float_model(3);
  inject_outlier(spiked->fc2.get());
  auto clean_q = quantized_copy(*clean, qconfig);
  auto spiked_q = quantized_copy(*spiked, qconfig);

  const auto w_clean = quant::compare_weights(*clean, *clean_q), w_spiked = quant::compare_weights(*spiked, *spiked_q);
  INFO(quant::format_comparison(w_clean, "weights, clean") << quant::format_comparison(w_spiked, "weights, outlier in fc2"));
  CHECK(row(w_spiked, "fc2").sqnr_db < row(w_clean, "fc2").sqnr_db - kMinWeightSqnrDropDb);
  CHECK(row(w_spiked, "fc1").sqnr_db == row(w_clean, "fc1").sqnr_db);
  CHECK(row(w_spiked, "fc3").sqnr_db == row(w_clean, "fc3").sqnr_db);

  const Tensor x = calibration_data();
  const auto o_clean = quant::compare_model_outputs(*clean, *clean_q, x);
  const auto o_spiked = quant::compare_model_outputs(*spiked, *spiked_q, x);
  INFO(quant::format_comparison(o_clean, "outputs, clean") << quant::format_comparison(o_spiked, "outputs, outlier in fc2"));
  CHECK(row(o_spiked, "fc2").sqnr_db < row(o_clean, "fc2").sqnr_db - kMinOutputSqnrDropDb);
  CHECK(row(o_spiked, "fc1").sqnr_db == row(o_clean, "fc1").sqnr_db);  // upstream of the outlier: untouched
}

TEST_CASE("per-channel weights confine an outlier to its own channel", "[compare][ptq]") {
  // The same outlier under the default per-channel weights hurts fc2's weight
  // SQNR far less than under per-tensor weights.
  auto spiked = float_model(3);
  inject_outlier(spiked->fc2.get());
  auto per_tensor = quantized_copy(*spiked, quant::make_ptq_qconfig("minmax", 8, 7, false));
  auto per_channel = quantized_copy(*spiked, quant::make_ptq_qconfig("minmax", 8, 7, true));
  const auto wt = quant::compare_weights(*spiked, *per_tensor), wc = quant::compare_weights(*spiked, *per_channel);
  INFO("fc2 weight SQNR: per-tensor " << row(wt, "fc2").sqnr_db << " dB, per-channel " << row(wc, "fc2").sqnr_db << " dB");
  CHECK(row(wc, "fc2").sqnr_db > row(wt, "fc2").sqnr_db);
}

TEST_CASE("the comparison tools also read dynamic and QAT models", "[compare][dynamic]") {
  auto reference = float_model(4);
  const Tensor x = calibration_data();
  SECTION("dynamic") {
    auto dynamic = float_model(4);
    quant::quantize_dynamic(*dynamic);
    const auto rows = quant::compare_model_outputs(*reference, *dynamic, x);
    REQUIRE(rows.size() == 3);
    for (auto& r : rows) {
      CHECK(r.quant_type == "DynamicQuantizedLinear");
      CHECK(std::isfinite(r.sqnr_db));
    }
    CHECK(quant::compare_weights(*reference, *dynamic).size() == 3);
  }
  SECTION("QAT (fake quant) before convert") {
    auto qat = float_model(4);
    qat->qconfig = quant::get_default_qat_qconfig("x86");
    quant::prepare_qat(*qat);
    {
      NoGradGuard g;
      (*qat)(x);  // one training-mode pass sets the qparams
    }
    const auto rows = quant::compare_weights(*reference, *qat);
    REQUIRE(rows.size() == 3);
    for (auto& r : rows) {
      CHECK(r.quant_type == "QATLinear");
      CHECK(std::isfinite(r.sqnr_db));
    }
  }
}

// Post-training static quantization end to end (src/quant/passes.h prepare /
// convert, docs/ptq.md): a float MLP 20-64-32-4 trained with SGD on seeded
// Gaussian clusters, then prepare -> calibrate -> convert, and the int8 model's
// accuracy against the float model's. Also the passes' error messages.
#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

#include "clusters.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// int8 accuracy may differ from float accuracy by at most this many
// percentage points on the 2000-point test set (the requirement).
constexpr double kMaxAccuracyDropPoints = 1.0;
// The float model must have learnt the task (else the comparison means little).
constexpr double kMinFloatAccuracy = 85.0;
// Calibration: this many training batches of kBatch.
constexpr int kCalibrationBatches = 8;
constexpr int64_t kBatch = 64;

constexpr int64_t kFeatures = 20, kClasses = 4;

struct MLP : tq_test::ClusterMLP {
  MLP() : ClusterMLP(kFeatures, kClasses) {}
};
using Dataset = tq_test::Clusters;

// Four Gaussian clusters in 20-D, spread 1.8 (they overlap, so a perfect
// score is out of reach and accuracy can move).
const Dataset& train_set() {
  static const Dataset d = tq_test::make_clusters(2000, kClasses, kFeatures, 1.8f, 1);
  return d;
}
const Dataset& test_set() {
  static const Dataset d = tq_test::make_clusters(2000, kClasses, kFeatures, 1.8f, 2);
  return d;
}

// The same seed and the same training give the same model, bit for bit.
std::unique_ptr<MLP> trained_mlp() {
  manual_seed(7);
  auto model = std::make_unique<MLP>();
  tq_test::train_sgd(*model, train_set(), 10, 0.05, kBatch);
  model->eval();
  return model;
}

double accuracy(nn::Module& model, const Dataset& d) {
  NoGradGuard no_grad;
  const Tensor pred = kernels::argmax(kernels::to_float(model(d.x)), 1);
  int64_t correct = 0;
  for (int64_t i = 0; i < d.x.size(0); ++i) correct += pred.at({i}) == d.y.at({i});
  return 100.0 * static_cast<double>(correct) / static_cast<double>(d.x.size(0));
}

void calibrate(nn::Module& model, const Tensor& x, int batches = kCalibrationBatches) {
  NoGradGuard no_grad;
  for (int b = 0; b < batches; ++b) model(kernels::slice(x, 0, b * kBatch, (b + 1) * kBatch));
}

// prepare -> calibrate -> convert with `qconfig`; returns {float, int8} accuracy.
std::pair<double, double> ptq_accuracies(const quant::QConfigPtr& qconfig) {
  auto model = trained_mlp();
  const double float_acc = accuracy(*model, test_set());
  model->qconfig = qconfig;
  quant::prepare(*model);
  calibrate(*model, train_set().x);
  quant::convert(*model);
  for (auto* name : {"fc1", "fc2", "fc3"}) {
    INFO(name);
    CHECK(model->get_submodule(name).type_name() == "QuantizedLinear");
  }
  return {float_acc, accuracy(*model, test_set())};
}

}  // namespace

TEST_CASE("PTQ with get_default_qconfig(\"x86\"): int8 accuracy within 1 point of float", "[ptq]") {
  const auto [float_acc, int8_acc] = ptq_accuracies(quant::get_default_qconfig("x86"));
  INFO("float " << float_acc << "%, int8 " << int8_acc << "%");
  CHECK(float_acc >= kMinFloatAccuracy);
  CHECK(std::fabs(float_acc - int8_acc) <= kMaxAccuracyDropPoints);
}

TEST_CASE("PTQ with make_ptq_qconfig(\"minmax\"): int8 accuracy within 1 point of float", "[ptq]") {
  const auto [float_acc, int8_acc] = ptq_accuracies(quant::make_ptq_qconfig("minmax"));
  INFO("float " << float_acc << "%, int8 " << int8_acc << "%");
  CHECK(float_acc >= kMinFloatAccuracy);
  CHECK(std::fabs(float_acc - int8_acc) <= kMaxAccuracyDropPoints);
}

TEST_CASE("PTQ with moving-average observers and the qnnpack preset", "[ptq]") {
  for (const auto& qconfig : {quant::make_ptq_qconfig("moving_average"), quant::get_default_qconfig("qnnpack")}) {
    const auto [float_acc, int8_acc] = ptq_accuracies(qconfig);
    INFO(qconfig->name << ": float " << float_acc << "%, int8 " << int8_acc << "%");
    CHECK(std::fabs(float_acc - int8_acc) <= kMaxAccuracyDropPoints);
  }
}

TEST_CASE("prepare inserts observers that only watch: the prepared model computes the float result", "[ptq]") {
  auto model = trained_mlp();
  auto reference = trained_mlp();
  const Tensor fc1_weight = model->fc1->weight;
  model->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*model);
  CHECK(model->fc1.module().type_name() == "ObservedLinear");
  // The observed layer is a Linear sharing the float weight, not a copy of it.
  CHECK(model->fc1->weight.same(fc1_weight));
  std::ostringstream printed;
  printed << *model;
  INFO(printed.str());
  CHECK(printed.str().find("(activation_post_process): HistogramObserver") != std::string::npos);
  CHECK(printed.str().find("(weight_observer): PerChannelMinMaxObserver") != std::string::npos);
  NoGradGuard no_grad;
  const Tensor x = kernels::slice(test_set().x, 0, 0, 100);
  const std::vector<float> a = to_vector((*model)(x)), b = to_vector((*reference)(x));
  CHECK(a == b);
}

TEST_CASE("the converted model prints its int8 layers with their qparams", "[ptq][print]") {
  auto model = trained_mlp();
  model->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*model);
  calibrate(*model, train_set().x);
  quant::convert(*model);
  std::ostringstream printed;
  printed << *model;
  INFO(printed.str());
  const std::string s = printed.str();
  CHECK(s.find("(fc1): QuantizedLinear(in_features=20, out_features=64, scale=") != std::string::npos);
  CHECK(s.find("quant_min=0, quant_max=127, qscheme=per_channel_symmetric, input_scale=") != std::string::npos);
  // Only fc1 saw float input, so only fc1 quantizes a float input itself.
  CHECK(model->fc1.module().extra_repr().find("input_scale") != std::string::npos);
  CHECK(model->fc2.module().extra_repr().find("input_scale") == std::string::npos);
  // Int8 all the way: the last layer's output is u8 quantized.
  const Tensor y = (*model)(kernels::slice(test_set().x, 0, 0, 4));
  CHECK(y.dtype() == DType::u8);
  CHECK(y.is_quantized());
}

TEST_CASE("a layer with qconfig = nullptr stays float, and the model still runs", "[ptq]") {
  SECTION("the last layer float: it takes the int8 layer's quantized output and dequantizes it") {
    auto model = trained_mlp();
    const double float_acc = accuracy(*model, test_set());
    model->qconfig = quant::get_default_qconfig("x86");
    model->fc3.module().qconfig = nullptr;
    quant::prepare(*model);
    CHECK(model->fc3.module().type_name() == "Linear");
    calibrate(*model, train_set().x);
    quant::convert(*model);
    CHECK(model->fc1.module().type_name() == "QuantizedLinear");
    CHECK(model->fc3.module().type_name() == "Linear");
    const Tensor y = (*model)(kernels::slice(test_set().x, 0, 0, 4));
    CHECK(y.dtype() == DType::f32);
    CHECK(std::fabs(accuracy(*model, test_set()) - float_acc) <= kMaxAccuracyDropPoints);
  }
  SECTION("the first layer float: the next layer observes its float input and quantizes it after convert") {
    auto model = trained_mlp();
    const double float_acc = accuracy(*model, test_set());
    model->qconfig = quant::get_default_qconfig("x86");
    model->fc1.module().qconfig = nullptr;
    quant::prepare(*model);
    calibrate(*model, train_set().x);
    quant::convert(*model);
    CHECK(model->fc1.module().type_name() == "Linear");
    auto& fc2 = dynamic_cast<quant::QuantizedLinear&>(model->fc2.module());
    CHECK(fc2.input_qparams() != nullptr);
    CHECK(std::fabs(accuracy(*model, test_set()) - float_acc) <= kMaxAccuracyDropPoints);
  }
}

TEST_CASE("bad input: convert without calibration names the first unobserved layer", "[ptq][errors]") {
  SECTION("a struct model: the layer is named by its member's path") {
    auto model = trained_mlp();
    model->qconfig = quant::get_default_qconfig("x86");
    quant::prepare(*model);
    CHECK_THROWS_WITH(quant::convert(*model), Catch::StartsWith("fc1.") && Catch::Contains("calibration"));
    // Nothing was swapped: the model can still be calibrated and converted.
    CHECK(model->fc1.module().type_name() == "ObservedLinear");
    calibrate(*model, train_set().x);
    CHECK_NOTHROW(quant::convert(*model));
  }
  SECTION("a Sequential: the layer is named by its index") {
    manual_seed(1);
    nn::Sequential model(nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2));
    model.qconfig = quant::make_ptq_qconfig("minmax");
    quant::prepare(model);
    CHECK_THROWS_WITH(quant::convert(model), Catch::StartsWith("0.") && Catch::Contains("seen no data"));
  }
}

TEST_CASE("bad input: prepare without any qconfig, and prepare twice, are errors", "[ptq][errors]") {
  auto model = trained_mlp();
  CHECK_THROWS_WITH(quant::prepare(*model), Catch::Contains("qconfig"));
  CHECK(model->fc1.module().type_name() == "Linear");  // unchanged
  model->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*model);
  CHECK_THROWS_WITH(quant::prepare(*model), Catch::Contains("already prepared") && Catch::Contains("fc1"));
  CHECK_THROWS_WITH(quant::prepare_qat(*model), Catch::Contains("already prepared"));
}

TEST_CASE("bad input: convert of a float model says to prepare first", "[ptq][errors]") {
  auto model = trained_mlp();
  CHECK_THROWS_WITH(quant::convert(*model), Catch::Contains("fc1") && Catch::Contains("prepare"));
}

TEST_CASE("bad input: unknown presets and observers are named", "[ptq][errors]") {
  CHECK_THROWS_WITH(quant::get_default_qconfig("arm"), Catch::Contains("arm"));
  CHECK_THROWS_WITH(quant::make_ptq_qconfig("percentile"), Catch::Contains("percentile"));
}

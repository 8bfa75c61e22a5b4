// Does the int8 model compute what the fake-quant model trained? (docs/design.md
// §3: outputs within one quantization step, predictions identical on at least
// 99.5%; docs/quantization.md §5, §7.)
//   1. An MLP learns a seeded synthetic task with QAT; its fake-quant outputs
//      on a test set are kept, the model is converted in place, and the int8
//      outputs are compared element by element.
//   2. One QuantizedLinear against the same layer computed in double
//      precision: integer accumulation, then real-valued rescaling and
//      rounding, for random weights, inputs and output ranges.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "tensor/int8_gemm.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// The contract.
constexpr double kMaxStepDifference = 1.0;      // |int8 - fake quant| in output steps, every element
constexpr double kMinPredictionAgreement = 0.995;
constexpr double kMaxAccuracyDrop = 0.02;       // int8 vs float accuracy (fraction of the test set)
constexpr double kMinFloatAccuracy = 0.90;      // the task must really be learned
// Both outputs are multiples of the output scale s_y, so their difference is
// a whole number of steps up to float rounding of s_y * (q - z).
constexpr double kStepRounding = 1e-3;

// Class 1 when x0 + x1 > x2 - x3 (as in examples/simple_nn_qat.cpp, part 2).
Tensor labels_for(const Tensor& x) {
  std::vector<int64_t> y(static_cast<size_t>(x.size(0)));
  const std::vector<float> v = to_vector(x);
  const int64_t d = x.size(1);
  for (int64_t i = 0; i < x.size(0); ++i) y[i] = v[i * d] + v[i * d + 1] > v[i * d + 2] - v[i * d + 3] ? 1 : 0;
  return from_vector_i64(y, {x.size(0)});
}

struct MLP : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 32));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(32, 16));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(16, 2));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

void train(nn::Module& model, const Tensor& x, const Tensor& y, int epochs, double lr) {
  nn::SGD opt(model.parameters(), {.lr = lr, .momentum = 0.9});
  nn::CrossEntropyLoss criterion;
  const int64_t n = x.size(0), batch = 32;
  for (int e = 0; e < epochs; ++e)
    for (int64_t b = 0; b < n; b += batch) {
      opt.zero_grad();
      Tensor loss = criterion(model(kernels::slice(x, 0, b, b + batch)), kernels::slice(y, 0, b, b + batch));
      loss.backward();
      opt.step();
    }
}

double accuracy(const Tensor& logits, const Tensor& y) {
  const Tensor pred = kernels::argmax(kernels::to_float(logits), 1);
  int64_t correct = 0;
  for (int64_t i = 0; i < y.size(0); ++i) correct += pred.at({i}) == y.at({i});
  return static_cast<double>(correct) / static_cast<double>(y.size(0));
}

}  // namespace

TEST_CASE("QAT MLP: int8 outputs within one step of fake quant, predictions agree", "[quant][agreement]") {
  manual_seed(1);
  Generator data(7);
  const Tensor x_train = randn({1024, 10}, data), x_test = randn({4000, 10}, data);
  const Tensor y_train = labels_for(x_train), y_test = labels_for(x_test);

  MLP model;
  train(model, x_train, y_train, 20, 0.05);  // float first, then QAT fine-tuning
  model.eval();
  double float_acc;
  {
    NoGradGuard no_grad;
    float_acc = accuracy(model(x_test), y_test);
  }
  REQUIRE(float_acc >= kMinFloatAccuracy);

  model.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(model);
  train(model, x_train, y_train, 5, 0.01);
  model.eval();
  Tensor fake_quant_out;
  {
    NoGradGuard no_grad;
    fake_quant_out = model(x_test);  // convert works in place: keep these first
  }
  const double fake_quant_acc = accuracy(fake_quant_out, y_test);

  quant::convert(model);
  const Tensor int8_out = model(x_test);
  REQUIRE(int8_out.is_quantized());
  const double s_y = int8_out.qparams().scale[0];
  const double int8_acc = accuracy(int8_out, y_test);

  const std::vector<float> a = to_vector(kernels::to_float(int8_out)), b = to_vector(fake_quant_out);
  REQUIRE(a.size() == b.size());
  double max_steps = 0;
  int64_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double steps = std::fabs(static_cast<double>(a[i]) - b[i]) / s_y;
    max_steps = std::max(max_steps, steps);
    differing += steps > kStepRounding;
  }
  const Tensor pa = kernels::argmax(kernels::to_float(int8_out), 1), pb = kernels::argmax(fake_quant_out, 1);
  int64_t same = 0;
  for (int64_t i = 0; i < x_test.size(0); ++i) same += pa.at({i}) == pb.at({i});
  const double agreement = static_cast<double>(same) / static_cast<double>(x_test.size(0));

  const std::string summary = fmt::format(
      "float {:.2f}%, fake quant {:.2f}%, int8 {:.2f}%; int8 vs fake quant: max {:.3f} steps, {} of {} outputs "
      "differ, predictions agree on {:.2f}%",
      100 * float_acc, 100 * fake_quant_acc, 100 * int8_acc, max_steps, differing, a.size(), 100 * agreement);
  INFO(summary);
  std::printf("[quant agreement] %s\n", summary.c_str());
  CHECK(max_steps <= kMaxStepDifference + kStepRounding);
  CHECK(agreement >= kMinPredictionAgreement);
  CHECK(std::fabs(int8_acc - float_acc) <= kMaxAccuracyDrop);
}

namespace {

QParams per_tensor(float scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
  QParams q;
  q.scheme = QScheme::per_tensor_affine;
  q.scale = {scale};
  q.zero_point = {zero_point};
  q.quant_min = qmin;
  q.quant_max = qmax;
  return q;
}

}  // namespace

// The layer in double: acc = sum_k (x_q - z_x) w_q (exact), then
// y = clamp(nearbyint((acc s_x s_w + b) / s_y) + z_y), ReLU clamping at z_y.
// The int8 layer differs only by quantizing b to the accumulator's scale
// (docs/quantization.md eq. 12) and by its Q31 multiplier (eq. 13) with round-half-away; both move
// a result by less than one step, so at most one step and almost always zero.
TEST_CASE("QuantizedLinear's fixed-point requantization matches double precision within one step",
          "[quant][agreement][int8]") {
  constexpr int kTrials = 12;
  constexpr double kMinExactFraction = 0.99;  // outputs that agree exactly, not just within a step
  int64_t total = 0, exact = 0, within = 0;
  int clamped_low = 0, clamped_high = 0;
  Generator g(123);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t N = 1 + trial % 5 * 7, K = 16 + trial * 11, M = 3 + trial;
    const bool relu = trial % 2 == 1;
    const bool full_range = trial % 3 == 0;  // 0..255 input (exact widening kernel path) or 0..127
    const Tensor w = mul(randn({N, K}, g), 0.2f);
    const Tensor bias = mul(randn({N}, g), 0.5f);
    const Tensor x = add(mul(randn({M, K}, g), 1.5f), 0.3f);
    quant::PerChannelMinMaxObserver wobs(quant::weight_spec(8, QScheme::per_channel_symmetric, 0));
    wobs.observe(w);
    const QParams wq = wobs.calculate_qparams();
    quant::MinMaxObserver xobs(quant::activation_spec(full_range ? 8 : 7));
    xobs.observe(x);
    const QParams xq = xobs.calculate_qparams();
    // Output range: the float output's, shrunk on some trials so that outputs clamp.
    const Tensor y_float = kernels::linear(x, w, bias);
    const float shrink = trial % 4 == 3 ? 0.5f : 1.f;
    const quant::ScaleZeroPoint yz = quant::calculate_qparams(kernels::min_all(y_float) * shrink,
                                                       kernels::max_all(y_float) * shrink, quant::activation_spec(8));
    const QParams yq = per_tensor(yz.scale, yz.zero_point, 0, 255);

    quant::QuantizedLinear layer(w, bias, wq, yq, std::make_shared<const QParams>(xq), relu, "layer");
    const Tensor x_q = quant::quantize(x, xq, DType::u8);
    const Tensor y_q = layer(x_q);
    REQUIRE(y_q.is_quantized());
    const std::vector<float> got = to_vector(y_q), xi = to_vector(x_q), wi = to_vector(layer.weight()),
                             b = to_vector(bias);
    const double s_x = xq.scale[0], z_x = xq.zero_point[0], s_y = yq.scale[0], z_y = yq.zero_point[0];
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += (xi[m * K + k] - z_x) * wi[n * K + k];
        const double real = acc * s_x * wq.scale[n] + b[n];
        double want = std::nearbyint(real / s_y) + z_y;
        want = std::clamp(want, relu ? z_y : 0.0, 255.0);
        const double diff = std::fabs(got[m * N + n] - want);
        ++total;
        exact += diff == 0;
        within += diff <= 1;
        clamped_low += want == 0;
        clamped_high += want == 255;
        if (diff > 1)
          FAIL_CHECK("trial " << trial << " (" << m << ", " << n << "): int8 " << got[m * N + n] << ", double " << want);
      }
  }
  INFO(exact << " of " << total << " exact, " << within << " within one step; clamped " << clamped_low << " low, "
             << clamped_high << " high");
  CHECK(within == total);
  CHECK(static_cast<double>(exact) >= kMinExactFraction * static_cast<double>(total));
  CHECK(clamped_high > 0);  // the shrunk trials really exercise saturation
}

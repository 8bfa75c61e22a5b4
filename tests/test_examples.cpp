// Every example builds and runs, and prints what it teaches. The int8
// walkthrough's numbers are recomputed here independently, in double
// (equations: docs/quantization.md).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "test_files.h"

namespace {

// Runs build/examples/<name>, returns stdout; the exit status goes to *status.
std::string run_example(const std::string& name, int* status) {
  return tq_test::capture(std::string(TINYQAT_BINARY_DIR) + "/examples/" + name + " 2>&1", status);
}

// "name[i] = value" and "name[i][j] = value" lines (the last number after '=').
std::map<std::string, double> indexed_values(const std::string& text) {
  std::map<std::string, double> out;
  const std::regex line(R"(^([A-Za-z_]+(?:\[\d+\])+) = (?:.*= )?(-?[0-9.]+)\s*$)");
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) {
    std::smatch m;
    if (std::regex_match(l, m, line)) out[m[1]] = std::stod(m[2]);
  }
  return out;
}

}  // namespace

TEST_CASE("example simple_nn: prints the model and the loss falls", "[examples]") {
  int status = 0;
  const std::string out = run_example("simple_nn", &status);
  REQUIRE(status == 0);
  REQUIRE(out.find("(fc1): Linear(in_features=10, out_features=5, bias=True)") != std::string::npos);
  std::regex loss_re(R"(step +(\d+) +loss ([0-9.]+))");
  std::vector<double> losses;
  for (std::sregex_iterator it(out.begin(), out.end(), loss_re), end; it != end; ++it) losses.push_back(std::stod((*it)[2]));
  REQUIRE(losses.size() >= 5);
  REQUIRE(losses.back() < 0.5 * losses.front());
}

TEST_CASE("example simple_nn_qat: converts, runs int8 on float input, agrees with fake quant", "[examples]") {
  int status = 0;
  const std::string out = run_example("simple_nn_qat", &status);
  REQUIRE(status == 0);
  REQUIRE(out.find("(fc1): QuantizedLinear(in_features=10, out_features=5") != std::string::npos);
  REQUIRE(out.find("int8 output:") != std::string::npos);
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex(R"(int8 accuracy +([0-9.]+)%)")));
  CHECK(std::stod(m[1]) > 90.0);
  REQUIRE(std::regex_search(out, m, std::regex(R"(predictions agree on ([0-9.]+)%)")));
  CHECK(std::stod(m[1]) >= 99.5);
}

TEST_CASE("example int8_walkthrough: every printed number checks out", "[examples]") {
  int status = 0;
  const std::string out = run_example("int8_walkthrough", &status);
  REQUIRE(status == 0);
  const auto v = indexed_values(out);
  // The layer, as in the example. Scales are float32 numbers, and values are
  // divided as v * (1 / s) in float32, as documented (docs/quantization.md
  // eq. 2): a weight equal to its row's largest magnitude lands exactly on
  // +-127.5 in exact arithmetic, so float32 decides which way it rounds.
  const float W[3][4] = {{0.50f, -0.25f, 0.10f, 0.80f}, {-0.60f, 0.30f, 0.45f, -0.15f}, {0.20f, 0.70f, -0.35f, 0.05f}};
  const float b[3] = {0.10f, -0.20f, 0.05f}, x[4] = {1.20f, -0.40f, 0.90f, 2.00f};
  // Input qparams on 0..127 (eq. 4): s = (max - min) / 127, z = -round(min / s).
  const float s_x = (2.0f - -0.4f) / 127.0f;
  const float z_x = -std::nearbyint(-0.4f / s_x);
  float y[3], ymin = 0, ymax = 0;  // the range always includes 0 (eq. 3)
  for (int n = 0; n < 3; ++n) {
    y[n] = b[n];
    for (int k = 0; k < 4; ++k) y[n] += x[k] * W[n][k];
    ymin = std::min(ymin, y[n]);
    ymax = std::max(ymax, y[n]);
  }
  const float s_y = (ymax - ymin) / 127.0f, z_y = -std::nearbyint(ymin / s_y);
  auto qx = [&](int k) { return std::clamp(std::nearbyint(x[k] * (1.f / s_x)) + z_x, 0.f, 127.f); };
  for (int k = 0; k < 4; ++k) CHECK(v.at("qx[" + std::to_string(k) + "]") == qx(k));
  for (int n = 0; n < 3; ++n) {
    float amax = 0;
    for (float w : W[n]) amax = std::max(amax, std::fabs(w));
    const float s_w = amax / 127.5f;  // symmetric (eq. 5)
    int64_t raw = 0, rowsum = 0;
    for (int k = 0; k < 4; ++k) {
      const float qw = std::clamp(std::nearbyint(W[n][k] * (1.f / s_w)), -128.f, 127.f);
      CHECK(v.at("qW[" + std::to_string(n) + "][" + std::to_string(k) + "]") == qw);
      raw += static_cast<int64_t>(qx(k)) * static_cast<int64_t>(qw);
      rowsum += static_cast<int64_t>(qw);
    }
    const double s_acc = static_cast<double>(s_x) * s_w;
    const double b_q = std::nearbyint(b[n] / s_acc);  // eq. 12
    const double acc = static_cast<double>(raw) - z_x * static_cast<double>(rowsum) + b_q;
    const std::string i = std::string(1, '[').append(std::to_string(n)).append("]");
    CHECK(v.at("raw" + i) == static_cast<double>(raw));
    CHECK(v.at("correction" + i) == z_x * static_cast<double>(rowsum));
    CHECK(v.at("b_q" + i) == b_q);
    CHECK(v.at("acc" + i) == acc);
    // Requantization (eq. 13): round half away from zero of acc * M, + z_y, clamp.
    const double scaled = std::round(acc * s_acc / s_y);
    CHECK(v.at("scaled" + i) == scaled);
    CHECK(v.at("y_q" + i) == std::clamp(z_y + scaled, 0.0, 127.0));
  }
  REQUIRE(out.find("the library computes exactly the integers above") != std::string::npos);
}

TEST_CASE("example dynamic_quant: swaps every Linear, keeps accuracy, weights 4x smaller", "[examples]") {
  int status = 0;
  const std::string out = run_example("dynamic_quant", &status);
  REQUIRE(status == 0);
  REQUIRE(out.find("DynamicQuantizedLinear") != std::string::npos);
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex(R"(accuracy: float ([0-9.]+)%, dynamic int8 ([0-9.]+)%)")));
  CHECK(std::stod(m[2]) >= std::stod(m[1]) - 1.0);
  REQUIRE(std::regex_search(out, m, std::regex(R"(weight bytes: float (\d+), int8 (\d+))")));
  CHECK(std::stod(m[1]) == 4 * std::stod(m[2]));
}

TEST_CASE("example ptq_calibration: representative calibration beats unrepresentative", "[examples]") {
  int status = 0;
  const std::string out = run_example("ptq_calibration", &status);
  REQUIRE(status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex(R"(training data \(representative\)\s+\[[^\]]*\]\s+([0-9.]+)%)")));
  const double representative = std::stod(m[1]);
  REQUIRE(std::regex_search(out, m, std::regex(R"(too small\)\s+\[[^\]]*\]\s+([0-9.]+)%)")));
  CHECK(std::stod(m[1]) < representative - 10.0);
  REQUIRE(std::regex_search(out, m, std::regex(R"(class 0 only \(biased\)\s+\[[^\]]*\]\s+([0-9.]+)%)")));
  CHECK(std::stod(m[1]) < representative - 5.0);
}

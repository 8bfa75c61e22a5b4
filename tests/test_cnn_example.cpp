// The mobilenet_v2_dynamic example (the quantization tutorial's first
// snippet): it runs, swaps the classifier for DynamicQuantizedLinear, and
// reports state sizes that differ by the classifier's weights, 4 -> 1 bytes.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "test_files.h"

#ifndef TINYQAT_BINARY_DIR
#define TINYQAT_BINARY_DIR "build"
#endif

TEST_CASE("example mobilenet_v2_dynamic: quantizes the classifier and prints both models' figures", "[examples][cnn]") {
  int status = -1;
  const std::string out = tq_test::capture(std::string(TINYQAT_BINARY_DIR) + "/examples/mobilenet_v2_dynamic 2>&1", &status);
  INFO(out);
  REQUIRE(status == 0);
  REQUIRE(out.find("no weights file given") != std::string::npos);
  REQUIRE(out.find("(1): DynamicQuantizedLinear(in_features=1280, out_features=1000") != std::string::npos);
  // 3,504,872 float parameters plus 52 batch norms' buffers (2 x f32 + 1 x i64 each) ...
  const long long float_bytes = 3504872LL * 4 + 17056LL * 2 * 4 + 52 * 8;
  // ... and the classifier's 1,280,000 weights in one byte instead of four.
  const long long int8_bytes = float_bytes - 1280000LL * 3;
  REQUIRE(out.find("state size: float " + std::to_string(float_bytes) + " bytes, dynamic int8 " +
                   std::to_string(int8_bytes) + " bytes") != std::string::npos);
  REQUIRE(out.find("largest output difference") != std::string::npos);
  REQUIRE(out.find("latency, 1x3x224x224") != std::string::npos);
}

TEST_CASE("example mobilenet_v2_static: every layer of the 224x224 model becomes int8", "[examples][cnn]") {
  int status = -1;
  const std::string out = tq_test::capture(std::string(TINYQAT_BINARY_DIR) + "/examples/mobilenet_v2_static 2>&1", &status);
  INFO(out);
  REQUIRE(status == 0);
  // The census of module kinds after convert: int8 convolutions (17 of them
  // depthwise), ten residual adds, the int8 classifier, and no float layer
  // left that would compute in float.
  const size_t at = out.find("modules after convert:");
  REQUIRE(at != std::string::npos);
  const std::string census = out.substr(at, out.find('\n', at) - at);
  CHECK(census.find("QuantizedConv2d") != std::string::npos);
  CHECK(census.find("QuantizedAdd x10,") != std::string::npos);
  CHECK(census.find("QuantizedLinear x1,") != std::string::npos);
  for (const char* float_kind : {" Conv2d x", " BatchNorm2d x", " ReLU6 x", " Linear x", " Add x", "Observed"})
    CHECK(census.find(float_kind) == std::string::npos);
  // The int8 model stays close to the float one on the images it was calibrated on.
  const size_t d = out.find("largest output difference on a calibration batch: ");
  REQUIRE(d != std::string::npos);
  float diff = 0, scale = 0;
  REQUIRE(std::sscanf(out.c_str() + d, "largest output difference on a calibration batch: %f (largest |output| %f)", &diff,
                      &scale) == 2);
  CHECK(diff < 0.5f * scale);
  CHECK(out.find("latency, 1x3x224x224") != std::string::npos);
}

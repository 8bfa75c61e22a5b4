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

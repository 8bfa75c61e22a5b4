// Quantized tensors (docs/quantization.md §1): a u8 / i8 tensor that carries
// its qparams. quantize / dequantize round trips (eq. 1-2), relu that stays
// quantized, float ops that dequantize, printing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "tinyqat.h"

using namespace tq;
using namespace tq::quant;

namespace {

// x * (1/s) is within an ulp or two of x / s, so a round trip may land a
// hair beyond half a step from x; this is that hair, relative to the step.
constexpr double kHalfStepSlack = 1e-5;

std::vector<float> random_values(int64_t n, float lo, float hi, uint64_t seed) {
  Generator g(seed);
  return to_vector(rand_uniform({n}, lo, hi, g));
}

}  // namespace

TEST_CASE("quantize_per_tensor / dequantize round trip (eq. 1-2)", "[quant][tensor]") {
  const std::vector<float> values = random_values(1000, -3.f, 5.f, 11);
  const Tensor x = from_vector(values, {10, 100});
  for (const QuantSpec& spec : {activation_spec(8), activation_spec(7), activation_spec(4),
                                weight_spec(8, QScheme::per_tensor_symmetric), weight_spec(3, QScheme::per_tensor_affine)}) {
    INFO(spec.str());
    const ScaleZeroPoint sz = calculate_qparams(-3.f, 5.f, spec);
    const Tensor q = quantize_per_tensor(x, sz.scale, sz.zero_point, spec.quant_min, spec.quant_max, spec.dtype,
                                         spec.qscheme);
    REQUIRE(q.is_quantized());
    CHECK(q.dtype() == spec.dtype);
    CHECK(q.shape() == x.shape());
    CHECK(q.qparams().scale == std::vector<float>{sz.scale});
    CHECK(q.qparams().zero_point == std::vector<int32_t>{sz.zero_point});
    CHECK(q.qparams().quant_min == spec.quant_min);
    CHECK(q.qparams().quant_max == spec.quant_max);

    const Tensor r = dequantize(q);
    REQUIRE(r.dtype() == DType::f32);
    REQUIRE_FALSE(r.is_quantized());
    const std::vector<float> ints = to_vector(q), real = to_vector(r);
    double worst = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      CHECK(ints[i] >= spec.quant_min);
      CHECK(ints[i] <= spec.quant_max);
      // eq. 1, exactly
      CHECK(real[i] == sz.scale * (ints[i] - static_cast<float>(sz.zero_point)));
      worst = std::max(worst, std::fabs(static_cast<double>(real[i]) - values[i]) / sz.scale);
    }
    // The grid spans [-3, 5] up to half a step at either end (the zero point
    // is rounded; symmetric grids reach one step less far on the positive
    // side), so every value, clamped or not, lands within half a step.
    CHECK(worst <= 0.5 + kHalfStepSlack);
    // Grid points map back to themselves.
    const Tensor again = quantize(r, q.qparams(), spec.dtype);
    CHECK(to_vector(again) == ints);
  }
}

TEST_CASE("quantize clamps out-of-range values to quant_min / quant_max", "[quant][tensor]") {
  const Tensor x = from_vector({-100.f, -1.f, 0.f, 1.f, 100.f}, {5});
  const Tensor q = quantize_per_tensor(x, 0.1f, 20, 0, 127, DType::u8);
  CHECK(to_vector(q) == std::vector<float>{0, 10, 20, 30, 127});
  const Tensor r = dequantize(q);
  CHECK(to_vector(r) == std::vector<float>{0.1f * -20, 0.1f * -10, 0.f, 0.1f * 10, 0.1f * 107});
}

TEST_CASE("quantize_per_channel / dequantize along axis 0 and axis 1", "[quant][tensor]") {
  const std::vector<float> values = random_values(4 * 6, -2.f, 2.f, 5);
  const Tensor x = from_vector(values, {4, 6});
  // axis 0: one (scale, zero point) per row
  {
    const std::vector<float> scales = {0.01f, 0.02f, 0.05f, 0.1f};
    const std::vector<int32_t> zps = {0, 3, -2, 0};
    const Tensor q = quantize_per_channel(x, scales, zps, 0, -128, 127, DType::i8, QScheme::per_channel_affine);
    REQUIRE(q.is_quantized());
    CHECK(q.dtype() == DType::i8);
    CHECK(q.qparams().axis == 0);
    const std::vector<float> ints = to_vector(q), real = to_vector(dequantize(q));
    for (int64_t i = 0; i < 24; ++i) {
      const size_t c = static_cast<size_t>(i / 6);
      const float expect = std::clamp(std::nearbyint(values[i] * (1.f / scales[c])) + zps[c], -128.f, 127.f);
      CHECK(ints[i] == expect);
      CHECK(real[i] == scales[c] * (ints[i] - static_cast<float>(zps[c])));
    }
  }
  // axis 1: one per column
  {
    const std::vector<float> scales = {0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f};
    const std::vector<int32_t> zps = {128, 100, 120, 128, 140, 128};
    const Tensor q = quantize_per_channel(x, scales, zps, 1, 0, 255, DType::u8, QScheme::per_channel_affine);
    const std::vector<float> ints = to_vector(q), real = to_vector(dequantize(q));
    for (int64_t i = 0; i < 24; ++i) {
      const size_t c = static_cast<size_t>(i % 6);
      const float expect = std::clamp(std::nearbyint(values[i] * (1.f / scales[c])) + zps[c], 0.f, 255.f);
      CHECK(ints[i] == expect);
      CHECK(real[i] == scales[c] * (ints[i] - static_cast<float>(zps[c])));
    }
  }
}

TEST_CASE("quantize rejects bad qparams and quantized input, naming the problem", "[quant][tensor]") {
  const Tensor x = from_vector({0.f, 1.f, 2.f, 3.f}, {2, 2});
  CHECK_THROWS_WITH(quantize_per_tensor(x, 0.1f, 300, 0, 255, DType::u8), Catch::Contains("zero point 300"));
  CHECK_THROWS_WITH(quantize_per_tensor(x, 0.f, 0, 0, 255, DType::u8), Catch::Contains("scale"));
  CHECK_THROWS_WITH(quantize_per_tensor(x, 0.1f, 0, 0, 300, DType::u8), Catch::Contains("does not fit"));
  CHECK_THROWS_WITH(quantize_per_channel(x, {0.1f, 0.1f, 0.1f}, {0, 0, 0}, 0, -128, 127, DType::i8,
                                         QScheme::per_channel_symmetric),
                    Catch::Contains("3 scales"));
  const Tensor q = quantize_per_tensor(x, 0.1f, 0, 0, 255, DType::u8);
  CHECK_THROWS_WITH(quantize_per_tensor(q, 0.1f, 0, 0, 255, DType::u8), Catch::Contains("already quantized"));
  CHECK_THROWS_WITH(dequantize(x), Catch::Contains("not quantized"));
}

TEST_CASE("relu of a quantized tensor stays quantized with the same qparams", "[quant][tensor]") {
  const Tensor x = from_vector({-2.f, -0.5f, -0.05f, 0.f, 0.04f, 0.3f, 1.5f, 6.f}, {2, 4});
  SECTION("per tensor") {
    const Tensor q = quantize_per_tensor(x, 0.05f, 60, 0, 255, DType::u8);
    const Tensor r = relu(q);
    REQUIRE(r.is_quantized());
    CHECK(r.dtype() == DType::u8);
    CHECK(r.qparams_ptr() == q.qparams_ptr());  // the very same qparams
    const std::vector<float> qi = to_vector(q), ri = to_vector(r);
    for (size_t i = 0; i < qi.size(); ++i) CHECK(ri[i] == std::max(qi[i], 60.f));  // clamp at the zero point
    // ... which is relu on the real values, exactly (0 is a grid point, eq. 3).
    const std::vector<float> real_q = to_vector(dequantize(q)), real_r = to_vector(dequantize(r));
    for (size_t i = 0; i < qi.size(); ++i) CHECK(real_r[i] == std::max(real_q[i], 0.f));
    // q itself is untouched
    CHECK(to_vector(q) == qi);
  }
  SECTION("per channel") {
    const Tensor q = quantize_per_channel(x, {0.02f, 0.05f}, {-10, 5}, 0, -128, 127, DType::i8,
                                          QScheme::per_channel_affine);
    const Tensor r = relu(q);
    REQUIRE(r.is_quantized());
    CHECK(r.qparams_ptr() == q.qparams_ptr());
    const std::vector<float> real_q = to_vector(dequantize(q)), real_r = to_vector(dequantize(r));
    for (size_t i = 0; i < real_q.size(); ++i) CHECK(real_r[i] == std::max(real_q[i], 0.f));
  }
}

TEST_CASE("float ops on a quantized tensor see its real values", "[quant][tensor]") {
  const Tensor x = from_vector({-1.f, 0.25f, 0.5f, 2.f}, {4});
  const Tensor q = quantize_per_tensor(x, 0.25f, 8, 0, 255, DType::u8);
  const Tensor real = dequantize(q);
  const Tensor f = from_vector({1.f, 2.f, 3.f, 4.f}, {4});
  const Tensor sum = add(q, f);
  CHECK_FALSE(sum.is_quantized());
  CHECK(sum.dtype() == DType::f32);
  CHECK(to_vector(sum) == to_vector(add(real, f)));
  CHECK(to_vector(mul(q, 2.f)) == to_vector(mul(real, 2.f)));
  CHECK(to_vector(kernels::to_float(q)) == to_vector(real));
}

TEST_CASE("printing a quantized tensor shows its real values and qparams", "[quant][tensor]") {
  const Tensor q = quantize_per_tensor(from_vector({-0.5f, 0.f, 1.25f}, {3}), 0.25f, 10, 0, 127, DType::u8);
  const std::string s = q.str();
  INFO(s);
  CHECK_THAT(s, Catch::Contains("-0.5000"));
  CHECK_THAT(s, Catch::Contains("1.2500"));
  CHECK_THAT(s, Catch::Contains("dtype=quint8"));
  CHECK_THAT(s, Catch::Contains("quantization_scheme=per_tensor_affine"));
  CHECK_THAT(s, Catch::Contains("scale=0.25"));
  CHECK_THAT(s, Catch::Contains("zero_point=10"));
  CHECK_THAT(s, Catch::Contains("quant_max=127"));

  const Tensor pc = quantize_per_channel(from_vector({0.1f, 0.2f, -0.3f, 0.4f}, {2, 2}), {0.1f, 0.2f}, {0, 0}, 0, -128,
                                         127, DType::i8, QScheme::per_channel_symmetric);
  const std::string p = pc.str();
  INFO(p);
  CHECK_THAT(p, Catch::Contains("dtype=qint8"));
  CHECK_THAT(p, Catch::Contains("quantization_scheme=per_channel_symmetric"));
  CHECK_THAT(p, Catch::Contains("axis=0"));
  CHECK_THAT(p, Catch::Contains("scales=[0.1, 0.2]"));
  CHECK_THAT(p, Catch::Contains("zero_points=[0, 0]"));
}

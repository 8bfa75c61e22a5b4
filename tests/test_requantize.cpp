// Tests of the fixed-point requantization (src/tensor/requantize.h,
// docs/int8_kernel.md eq. 5-8) against floating-point references.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "tensor/requantize.h"

namespace {

using tq::FixedPointMultiplier;

constexpr double kRoundTripRelativeError = 1.0 / (1 << 30);  // quantize_multiplier keeps M within 2^-30 (it is 2^-31)
constexpr double kTieDistance = 1e-9;                        // "at a tie" for the double reference

int64_t saturate_int32(long double v) {
  if (v >= static_cast<long double>(std::numeric_limits<int32_t>::max())) return std::numeric_limits<int32_t>::max();
  if (v <= static_cast<long double>(std::numeric_limits<int32_t>::min())) return std::numeric_limits<int32_t>::min();
  return static_cast<int64_t>(v);
}

// round(acc * M) half away from zero, saturated, in long double. With a
// 64-bit mantissa the product of two 31-bit integers is exact, so this
// reference has no error at all for the value that m represents.
int64_t exact_reference(int32_t acc, FixedPointMultiplier m) {
  const long double value = std::ldexp(static_cast<long double>(acc) * m.multiplier, -31 - m.shift);
  return saturate_int32(std::round(value));
}

// Multipliers log-uniform in [1e-6, 10] plus a few fixed ones.
std::vector<double> sample_multipliers(std::mt19937_64& rng, int count) {
  std::vector<double> out = {1e-6, 1e-3, 0.25, 0.5, 0.75, 1.0 - 1e-12, 1.0, 1.5, 2.0, 10.0, 1.0 / 3.0};
  std::uniform_real_distribution<double> log_m(std::log(1e-6), std::log(10.0));
  while (static_cast<int>(out.size()) < count) out.push_back(std::exp(log_m(rng)));
  return out;
}

// Accumulators from the full int32 range, a typical GEMM range, and small values.
std::vector<int32_t> sample_accumulators(std::mt19937_64& rng, int count) {
  std::vector<int32_t> out = {0,
                              1,
                              -1,
                              2,
                              -2,
                              3,
                              -3,
                              std::numeric_limits<int32_t>::max(),
                              std::numeric_limits<int32_t>::min(),
                              std::numeric_limits<int32_t>::min() + 1};
  std::uniform_int_distribution<int32_t> full(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
  std::uniform_int_distribution<int32_t> typical(-(1 << 20), 1 << 20);
  std::uniform_int_distribution<int32_t> small(-1000, 1000);
  while (static_cast<int>(out.size()) < count) {
    out.push_back(full(rng));
    out.push_back(typical(rng));
    out.push_back(small(rng));
  }
  return out;
}

}  // namespace

TEST_CASE("quantize_multiplier normalizes M0 to the interval 0.5 to 1 and round-trips M", "[requantize]") {
  std::mt19937_64 rng(1);
  for (double M : sample_multipliers(rng, 2000)) {
    const FixedPointMultiplier m = tq::quantize_multiplier(M);
    INFO("M = " << M << " multiplier = " << m.multiplier << " shift = " << m.shift);
    REQUIRE(m.multiplier >= (int32_t{1} << 30));
    REQUIRE(std::abs(tq::fixed_point_value(m) - M) <= kRoundTripRelativeError * M);
  }
  // A fraction that rounds up to 2^31 is halved and the exponent adjusted.
  const FixedPointMultiplier almost_one = tq::quantize_multiplier(1.0 - 1e-12);
  CHECK(almost_one.multiplier == (int32_t{1} << 30));
  CHECK(almost_one.shift == -1);
  CHECK(tq::fixed_point_value(almost_one) == 1.0);
  // M = 1 is 0.5 * 2^1; M = 0.5 is 0.5 * 2^0.
  CHECK(tq::quantize_multiplier(1.0).shift == -1);
  CHECK(tq::quantize_multiplier(0.5).shift == 0);
}

TEST_CASE("quantize_multiplier rejects M <= 0, NaN and infinity", "[requantize]") {
  for (double bad : {0.0, -0.0, -1.0, -1e-300, std::nan(""), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    INFO("M = " << bad);
    CHECK_THROWS_AS(tq::quantize_multiplier(bad), std::invalid_argument);
  }
  CHECK_THROWS_WITH(tq::quantize_multiplier(-2.0), Catch::Contains("positive and finite"));
}

TEST_CASE("multiply_by_quantized_multiplier is exact for the multiplier it represents", "[requantize]") {
  if (std::numeric_limits<long double>::digits < 64) {
    WARN("long double has no 64-bit mantissa here; the exact reference is unavailable");
    return;
  }
  std::mt19937_64 rng(2);
  const std::vector<int32_t> accs = sample_accumulators(rng, 3000);
  std::vector<double> Ms = sample_multipliers(rng, 300);
  // Extremes of the representation: tiny (total shift >= 63) and huge (a left shift).
  for (double extreme : {1e-12, 1e-20, std::ldexp(1.0, -32), std::ldexp(1.0, -31), 1e5, 3e9, 1e20})
    Ms.push_back(extreme);
  int64_t checked = 0;
  for (double M : Ms) {
    const FixedPointMultiplier m = tq::quantize_multiplier(M);
    for (int32_t acc : accs) {
      const int64_t expected = exact_reference(acc, m);
      const int32_t got = tq::multiply_by_quantized_multiplier(acc, m);
      if (got != expected) {
        FAIL("acc = " << acc << " M = " << M << " (multiplier " << m.multiplier << ", shift " << m.shift << "): got "
                      << got << ", expected " << expected);
      }
      ++checked;
    }
  }
  CHECK(checked > 900000);
}

TEST_CASE("multiply_by_quantized_multiplier agrees with round(acc * M) in double", "[requantize]") {
  // Against the real M (not the one represented) the only differences are at
  // ties and where the 2^-31 representation error moves a value across one:
  // |acc * M| * 2^-30 bounds that error.
  std::mt19937_64 rng(3);
  const std::vector<int32_t> accs = sample_accumulators(rng, 3000);
  int64_t exact = 0, total = 0;
  for (double M : sample_multipliers(rng, 300)) {
    const FixedPointMultiplier m = tq::quantize_multiplier(M);
    for (int32_t acc : accs) {
      const double real = static_cast<double>(acc) * M;
      const double expected = static_cast<double>(saturate_int32(std::round(real)));
      const double got = tq::multiply_by_quantized_multiplier(acc, m);
      INFO("acc = " << acc << " M = " << M << " real = " << real);
      REQUIRE(std::abs(got - expected) <= 1.0);
      const double distance_to_tie = std::abs(std::abs(real - std::trunc(real)) - 0.5);
      const bool saturated = std::abs(real) >= 2147483647.0;
      if (!saturated && distance_to_tie > kTieDistance + std::abs(real) * kRoundTripRelativeError) {
        REQUIRE(got == expected);
        ++exact;
      }
      ++total;
    }
  }
  CHECK(exact > total / 2);
}

TEST_CASE("multiply_by_quantized_multiplier rounds halves away from zero", "[requantize]") {
  const FixedPointMultiplier half = tq::quantize_multiplier(0.5);
  CHECK(tq::multiply_by_quantized_multiplier(3, half) == 2);    // 1.5
  CHECK(tq::multiply_by_quantized_multiplier(-3, half) == -2);  // -1.5
  CHECK(tq::multiply_by_quantized_multiplier(5, half) == 3);    // 2.5: not to even
  CHECK(tq::multiply_by_quantized_multiplier(-5, half) == -3);
  CHECK(tq::multiply_by_quantized_multiplier(1, half) == 1);  // 0.5
  CHECK(tq::multiply_by_quantized_multiplier(-1, half) == -1);
  const FixedPointMultiplier quarter = tq::quantize_multiplier(0.25);
  CHECK(tq::multiply_by_quantized_multiplier(2, quarter) == 1);
  CHECK(tq::multiply_by_quantized_multiplier(1, quarter) == 0);    // 0.25
  CHECK(tq::multiply_by_quantized_multiplier(-6, quarter) == -2);  // -1.5
  const FixedPointMultiplier one = tq::quantize_multiplier(1.0);
  CHECK(tq::multiply_by_quantized_multiplier(std::numeric_limits<int32_t>::min(), one) ==
        std::numeric_limits<int32_t>::min());
  CHECK(tq::multiply_by_quantized_multiplier(123456789, one) == 123456789);
}

TEST_CASE("multiply_by_quantized_multiplier saturates and underflows cleanly", "[requantize]") {
  const FixedPointMultiplier two = tq::quantize_multiplier(2.0);
  CHECK(tq::multiply_by_quantized_multiplier(2000000000, two) == std::numeric_limits<int32_t>::max());
  CHECK(tq::multiply_by_quantized_multiplier(-2000000000, two) == std::numeric_limits<int32_t>::min());
  const FixedPointMultiplier huge = tq::quantize_multiplier(1e15);  // total shift < 0: a left shift
  CHECK(tq::multiply_by_quantized_multiplier(1, huge) == std::numeric_limits<int32_t>::max());
  CHECK(tq::multiply_by_quantized_multiplier(-1, huge) == std::numeric_limits<int32_t>::min());
  CHECK(tq::multiply_by_quantized_multiplier(0, huge) == 0);
  const FixedPointMultiplier tiny = tq::quantize_multiplier(1e-30);  // total shift >= 63
  CHECK(tq::multiply_by_quantized_multiplier(std::numeric_limits<int32_t>::max(), tiny) == 0);
  CHECK(tq::multiply_by_quantized_multiplier(std::numeric_limits<int32_t>::min(), tiny) == 0);
}

TEST_CASE("requantize adds the zero point and clamps, and ReLU is q_min = zero point", "[requantize]") {
  const FixedPointMultiplier m = tq::quantize_multiplier(0.01);
  CHECK(tq::requantize(1000, m, 128, 0, 255) == 138);
  CHECK(tq::requantize(-1000, m, 128, 0, 255) == 118);
  CHECK(tq::requantize(100000, m, 128, 0, 255) == 255);
  CHECK(tq::requantize(-100000, m, 128, 0, 255) == 0);
  // Fused ReLU: negative real values map below the zero point, so they clamp to it.
  CHECK(tq::requantize(-1000, m, 128, 128, 255) == 128);
  CHECK(tq::requantize(1000, m, 128, 128, 255) == 138);
  // No overflow in zero_point + scaled even at the int32 extremes.
  const FixedPointMultiplier big = tq::quantize_multiplier(4.0);
  CHECK(tq::requantize(std::numeric_limits<int32_t>::max(), big, 255, 0, 255) == 255);
  CHECK(tq::requantize(std::numeric_limits<int32_t>::min(), big, 255, 0, 255) == 0);
}

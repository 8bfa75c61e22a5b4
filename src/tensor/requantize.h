// requantize.h — integer-only requantization: an int32 accumulator (scale
// s_x * s_w) becomes a quantized output value (scale s_y, zero point z_y).
//
// The real multiplier M = s_x s_w / s_y is stored as a fixed-point number
// M = M0 * 2^-n with M0 a Q31 integer in [0.5, 1) (docs/int8_kernel.md
// eq. 5), chosen offline with floating point (quantize_multiplier). At run
// time only integers are used (multiply_by_quantized_multiplier, eq. 6-7).
//
// Rounding: round half AWAY FROM ZERO, the same convention as std::round.
// multiply_by_quantized_multiplier(acc, m) is exactly std::round(acc * M_m)
// computed without any float error, where M_m is the value that m
// represents, saturated to the int32 range. Every int8 kernel (the scalar
// reference and the AVX2 epilogue) produces exactly this function.
#pragma once

#include <cstdint>
#include <limits>

namespace tq {

// A positive real multiplier M = multiplier * 2^-31 * 2^-shift
// (docs/int8_kernel.md eq. 5). quantize_multiplier returns multiplier in
// [2^30, 2^31), i.e. M0 = multiplier / 2^31 in [0.5, 1); shift is negative
// when M >= 1.
struct FixedPointMultiplier {
  int32_t multiplier = 0;
  int32_t shift = 0;
};

// Offline: the fixed-point form of M (M > 0 and finite, else
// std::invalid_argument). The represented value differs from M by a
// relative error of at most 2^-31.
FixedPointMultiplier quantize_multiplier(double M);

// The real number that m represents: multiplier * 2^-(31 + shift).
double fixed_point_value(FixedPointMultiplier m);

// Run time: round(acc * M), rounding half away from zero, saturated to int32
// (docs/int8_kernel.md eq. 6-7). Integer-only.
inline int32_t multiply_by_quantized_multiplier(int32_t acc, FixedPointMultiplier m) {
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
  // |acc| <= 2^31 and |multiplier| < 2^31, so |product| < 2^62: no overflow.
  const int64_t product = static_cast<int64_t>(acc) * m.multiplier;
  const int64_t total_shift = 31 + static_cast<int64_t>(m.shift);  // acc * M = product * 2^-total_shift
  int64_t result;
  if (total_shift >= 63) {
    // |product| < 2^62 <= 2^(total_shift - 1): strictly less than one half.
    return 0;
  } else if (total_shift > 0) {
    // Rounding right shift of the magnitude, so that halves round away from zero (eq. 7).
    const int64_t magnitude = product < 0 ? -product : product;
    const int64_t rounded = (magnitude + (int64_t{1} << (total_shift - 1))) >> total_shift;
    result = product < 0 ? -rounded : rounded;
  } else {
    // total_shift <= 0, i.e. shift <= -31: with a multiplier in [2^30, 2^31)
    // that is M >= 2^30. A left shift, saturating. Compare before shifting so
    // that the shift cannot overflow int64.
    const int64_t left = -total_shift;
    if (product == 0) return 0;
    if (left >= 32 || product > (kInt32Max >> left)) return product > 0 ? kInt32Max : kInt32Min;
    if (product < (kInt32Min >> left)) return kInt32Min;
    result = product * (int64_t{1} << left);
  }
  if (result > kInt32Max) return kInt32Max;
  if (result < kInt32Min) return kInt32Min;
  return static_cast<int32_t>(result);
}

// Run time: the quantized output clamp(z_y + round(acc * M), q_min, q_max)
// (docs/int8_kernel.md eq. 8). A fused ReLU is the same call with
// q_min = max(q_min, z_y): real 0 is the quantized value z_y.
inline int32_t requantize(int32_t acc, FixedPointMultiplier m, int32_t zero_point, int32_t q_min, int32_t q_max) {
  // In int64 so that zero_point + scaled cannot overflow.
  const int64_t value = int64_t{zero_point} + multiply_by_quantized_multiplier(acc, m);
  if (value < q_min) return q_min;
  if (value > q_max) return q_max;
  return static_cast<int32_t>(value);
}

}  // namespace tq

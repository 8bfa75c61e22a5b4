// requantize.cpp — the offline (floating-point) half of requantization:
// turning a real multiplier into its fixed-point form (docs/int8_kernel.md
// eq. 5). The run-time half is integer-only and lives in requantize.h.
#include "tensor/requantize.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace tq {

FixedPointMultiplier quantize_multiplier(double M) {
  if (!(M > 0.0) || !std::isfinite(M)) {
    std::ostringstream message;
    message << "quantize_multiplier: the multiplier M = s_x * s_w / s_y must be positive and finite, got " << M;
    throw std::invalid_argument(message.str());
  }
  // M = fraction * 2^exponent with fraction in [0.5, 1) (eq. 5: M0 = fraction, n = -exponent).
  int exponent = 0;
  const double fraction = std::frexp(M, &exponent);
  int64_t q31 = std::llround(fraction * 2147483648.0);  // fraction * 2^31, in [2^30, 2^31]
  if (q31 == (int64_t{1} << 31)) {
    // fraction rounded up to 1.0: 2^31 * 2^-31 = 2^30 * 2^-31 * 2^1.
    q31 /= 2;
    exponent += 1;
  }
  // frexp of a finite double gives exponent in [-1073, 1024]: it fits in int32.
  return FixedPointMultiplier{static_cast<int32_t>(q31), -exponent};
}

double fixed_point_value(FixedPointMultiplier m) {
  return std::ldexp(static_cast<double>(m.multiplier), -31 - m.shift);
}

}  // namespace tq

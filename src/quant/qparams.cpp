#include "quant/qparams.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/affine_quant.h"

namespace tq::quant {

int QuantSpec::bits() const {
  const int64_t levels = int64_t{quant_max} - quant_min + 1;
  int b = 1;
  while ((int64_t{1} << b) < levels) ++b;
  return b;
}

std::string QuantSpec::str() const {
  return fmt::format("dtype={}, quant_min={}, quant_max={}, qscheme={}", dtype == DType::u8 ? "quint8" : "qint8",
                     quant_min, quant_max, qscheme_name(qscheme));
}

void validate(const QuantSpec& spec, const std::string& who) {
  if (spec.quant_min >= spec.quant_max)
    throw std::invalid_argument(fmt::format("{}: quant_min ({}) must be less than quant_max ({})", who,
                                            spec.quant_min, spec.quant_max));
  if (spec.dtype != DType::u8 && spec.dtype != DType::i8)
    throw std::invalid_argument(fmt::format("{}: quantized dtype must be u8 or i8, not {}", who, dtype_name(spec.dtype)));
  const int32_t lo = spec.dtype == DType::u8 ? 0 : -128, hi = spec.dtype == DType::u8 ? 255 : 127;
  if (spec.quant_min < lo || spec.quant_max > hi)
    throw std::invalid_argument(fmt::format("{}: range [{}, {}] does not fit dtype {} ([{}, {}]); at most 8 bits are supported",
                                            who, spec.quant_min, spec.quant_max, dtype_name(spec.dtype), lo, hi));
  if (spec.bits() < 2)
    throw std::invalid_argument(fmt::format("{}: range [{}, {}] has fewer than 2 bits", who, spec.quant_min, spec.quant_max));
  if (spec.per_channel() && spec.ch_axis < 0)
    throw std::invalid_argument(fmt::format("{}: per-channel axis {} is negative", who, spec.ch_axis));
}

static void check_bits(int bits, const char* who) {
  if (bits < 2 || bits > 8)
    throw std::invalid_argument(fmt::format("{}: bit width {} is outside 2..8", who, bits));
}

QuantSpec activation_spec(int bits, QScheme scheme) {
  check_bits(bits, "activation_spec");
  return QuantSpec{0, (1 << bits) - 1, DType::u8, scheme, 0};
}

QuantSpec weight_spec(int bits, QScheme scheme, int ch_axis) {
  check_bits(bits, "weight_spec");
  return QuantSpec{-(1 << (bits - 1)), (1 << (bits - 1)) - 1, DType::i8, scheme, ch_axis};
}

ScaleZeroPoint calculate_qparams(float min_val, float max_val, const QuantSpec& spec) {
  if (std::isnan(min_val) || std::isnan(max_val))
    throw std::invalid_argument("calculate_qparams: the observed range contains NaN");
  // An infinite end makes the scale infinite and the zero point NaN, whose
  // conversion to an integer is undefined behaviour (found by fuzz/fuzz_model
  // on a model file whose observer had min_val = -inf).
  if (std::isinf(min_val) || std::isinf(max_val))
    throw std::invalid_argument(fmt::format("calculate_qparams: the observed range [{}, {}] is not finite", min_val, max_val));
  if (min_val > max_val)
    throw std::invalid_argument(fmt::format("calculate_qparams: min ({}) is greater than max ({})", min_val, max_val));
  if (spec.quant_min >= spec.quant_max)
    throw std::invalid_argument(fmt::format("calculate_qparams: quant_min ({}) must be less than quant_max ({})",
                                            spec.quant_min, spec.quant_max));
  // eq. 3: the range must contain 0 so that real 0 has an exact integer.
  const float min_neg = std::min(min_val, 0.f);
  const float max_pos = std::max(max_val, 0.f);
  const int32_t qmin = spec.quant_min, qmax = spec.quant_max;
  float scale;
  int32_t zero_point;
  if (spec.symmetric()) {
    // eq. 5: the grid is centred on zero.
    const float amax = std::max(-min_neg, max_pos);
    scale = amax / (static_cast<float>(qmax - qmin) / 2.f);
    scale = std::max(scale, kScaleEps);  // eq. 6
    zero_point = spec.dtype == DType::u8 ? (qmin + qmax) / 2 : 0;
  } else {
    // eq. 4: the grid spans [min, max] exactly; the one affine formula of
    // tinyqat (tensor/affine_quant.h), shared with the dynamic int8 path.
    const AffineQParams q = affine_qparams(min_neg, max_pos, qmin, qmax);
    scale = q.scale;
    zero_point = q.zero_point;
  }
  // A finite range can still be too wide for float32: max - min of
  // [-3.4e38, 3.4e38] is inf, and an infinite scale quantizes everything to
  // the zero point.
  if (!std::isfinite(scale))
    throw std::invalid_argument(fmt::format("calculate_qparams: the observed range [{}, {}] is too wide: its scale for "
                                            "[{}, {}] is {} in float32",
                                            min_val, max_val, qmin, qmax, scale));
  return {scale, zero_point};
}

QParams make_qparams(const QuantSpec& spec, const std::vector<ScaleZeroPoint>& pairs) {
  QParams q;
  q.scheme = spec.qscheme;
  q.axis = spec.per_channel() ? spec.ch_axis : -1;
  q.quant_min = spec.quant_min;
  q.quant_max = spec.quant_max;
  q.scale.reserve(pairs.size());
  q.zero_point.reserve(pairs.size());
  for (auto& p : pairs) {
    q.scale.push_back(p.scale);
    q.zero_point.push_back(p.zero_point);
  }
  return q;
}

}  // namespace tq::quant

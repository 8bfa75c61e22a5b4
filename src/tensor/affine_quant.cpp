// affine_quant.cpp — the scalar references and the dispatch of affine_quant.h.
#include "tensor/affine_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace tq {

AffineQParams affine_qparams(float min, float max, int32_t qmin, int32_t qmax) {
  auto fail = [&](const char* what) {
    std::ostringstream s;
    s << "affine_qparams: " << what << " (range [" << min << ", " << max << "], integers " << qmin << ".." << qmax
      << ")";
    throw std::invalid_argument(s.str());
  };
  if (std::isnan(min) || std::isnan(max)) fail("the range contains NaN");
  if (std::isinf(min) || std::isinf(max)) fail("the range is not finite");
  if (min > max) fail("min is greater than max");
  if (qmin >= qmax) fail("qmin must be less than qmax");
  // The range must contain 0 so that real 0 has an exact integer.
  const float lo = std::min(min, 0.0f), hi = std::max(max, 0.0f);
  AffineQParams q;
  q.scale = std::max((hi - lo) / static_cast<float>(qmax - qmin), std::numeric_limits<float>::epsilon());
  const float zp = static_cast<float>(qmin) - std::nearbyint(lo / q.scale);  // half to even
  q.zero_point = static_cast<int32_t>(std::clamp(zp, static_cast<float>(qmin), static_cast<float>(qmax)));
  return q;
}

namespace detail {

// `v < lo ? v : lo` is what the x86 min instruction computes: a NaN v keeps lo.
bool fold_min_max_reference(const float* p, int64_t n, float& lo, float& hi) {
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    const float v = p[i];
    nan |= v != v;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  return nan;
}

void quantize_affine_u8_reference(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin,
                                  float qmax) {
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv_scale) + z;
    v = v > qmin ? v : qmin;  // NaN -> qmin
    v = v < qmax ? v : qmax;
    q[i] = static_cast<uint8_t>(v);
  }
}

}  // namespace detail

bool fold_min_max(const float* p, int64_t n, float& lo, float& hi, SimdLevel level) {
  if (n >= 16 && level == SimdLevel::avx512) return detail::fold_min_max_avx512(p, n, lo, hi);
  if (n >= 8 && level != SimdLevel::scalar) return detail::fold_min_max_avx2(p, n, lo, hi);
  return detail::fold_min_max_reference(p, n, lo, hi);
}

void quantize_affine_u8(const float* x, uint8_t* q, int64_t n, float inv_scale, int32_t zero_point, int32_t qmin,
                        int32_t qmax, SimdLevel level) {
  const float z = static_cast<float>(zero_point), lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  if (n >= 16 && level == SimdLevel::avx512) return detail::quantize_affine_u8_avx512(x, q, n, inv_scale, z, lo, hi);
  if (n >= 8 && level != SimdLevel::scalar) return detail::quantize_affine_u8_avx2(x, q, n, inv_scale, z, lo, hi);
  detail::quantize_affine_u8_reference(x, q, n, inv_scale, z, lo, hi);
}

}  // namespace tq

// AVX2 twin of the per-tensor u8 quantization loop in quantize.cpp (same
// formula, same rounding: _mm256_round_ps rounds half to even like nearbyint).
// Compiled with -mavx2; called only when the CPU has AVX2.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace tq::quant::detail {

// q[i] = clamp(nearbyint(x[i] * inv_scale) + z, qmin, qmax)   (docs/quantization.md eq. 2)
void quantize_u8_avx2(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin, float qmax) {
  const __m256 vinv = _mm256_set1_ps(inv_scale), vz = _mm256_set1_ps(z);
  const __m256 vmin = _mm256_set1_ps(qmin), vmax = _mm256_set1_ps(qmax);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
    v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
    v = _mm256_min_ps(_mm256_max_ps(v, vmin), vmax);  // NaN becomes qmin
    const __m256i i32 = _mm256_cvtps_epi32(v);
    // 8 x i32 -> 8 x u8 (values already in 0..255).
    const __m128i lo = _mm256_castsi256_si128(i32), hi = _mm256_extracti128_si256(i32, 1);
    const __m128i w16 = _mm_packus_epi32(lo, hi);
    const __m128i b8 = _mm_packus_epi16(w16, w16);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), b8);
  }
  for (; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv_scale) + z;
    v = v > qmin ? v : qmin;
    v = v < qmax ? v : qmax;
    q[i] = static_cast<uint8_t>(v);
  }
}

}  // namespace tq::quant::detail

// AVX2 twins of the loops in affine_quant.cpp (same operations, eight lanes at
// a time, same bits). Compiled with -mavx2 -mfma; called only when
// cpu_features() reports AVX2.
#include <immintrin.h>

#include "tensor/affine_quant.h"

namespace tq::detail {

bool fold_min_max_avx2(const float* p, int64_t n, float& lo, float& hi) {
  if (n < 8) return fold_min_max_reference(p, n, lo, hi);
  // Four independent accumulators (32 values per step). _mm256_min_ps(v, l)
  // is `v < l ? v : l`: a NaN v keeps l, as in the reference. Min and max
  // round nothing, so the order of the folds changes no value (only,
  // possibly, the sign of a zero).
  __m256 l[4], h[4], nan = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) l[j] = _mm256_set1_ps(lo), h[j] = _mm256_set1_ps(hi);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(p + i + 8 * j);
      l[j] = _mm256_min_ps(v, l[j]);
      h[j] = _mm256_max_ps(v, h[j]);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(p + i);
    l[0] = _mm256_min_ps(v, l[0]);
    h[0] = _mm256_max_ps(v, h[0]);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  // The remaining < 8 values: the last eight, overlapping some already seen
  // (harmless for a min / max).
  if (i < n) {
    const __m256 v = _mm256_loadu_ps(p + n - 8);
    l[1] = _mm256_min_ps(v, l[1]);
    h[1] = _mm256_max_ps(v, h[1]);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  const __m256 lv = _mm256_min_ps(_mm256_min_ps(l[0], l[1]), _mm256_min_ps(l[2], l[3]));
  const __m256 hv = _mm256_max_ps(_mm256_max_ps(h[0], h[1]), _mm256_max_ps(h[2], h[3]));
  __m128 l4 = _mm_min_ps(_mm256_castps256_ps128(lv), _mm256_extractf128_ps(lv, 1));
  __m128 h4 = _mm_max_ps(_mm256_castps256_ps128(hv), _mm256_extractf128_ps(hv, 1));
  l4 = _mm_min_ps(l4, _mm_movehl_ps(l4, l4));
  h4 = _mm_max_ps(h4, _mm_movehl_ps(h4, h4));
  l4 = _mm_min_ss(l4, _mm_shuffle_ps(l4, l4, 1));
  h4 = _mm_max_ss(h4, _mm_shuffle_ps(h4, h4, 1));
  lo = _mm_cvtss_f32(l4);
  hi = _mm_cvtss_f32(h4);
  return _mm256_movemask_ps(nan) != 0;
}

void quantize_affine_u8_avx2(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin, float qmax) {
  const __m256 vinv = _mm256_set1_ps(inv_scale), vz = _mm256_set1_ps(z);
  const __m256 vmin = _mm256_set1_ps(qmin), vmax = _mm256_set1_ps(qmax);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // No multiply feeds an add directly (the rounding sits between), so FMA
    // contraction cannot change a value.
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
    v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
    v = _mm256_min_ps(_mm256_max_ps(v, vmin), vmax);  // `v > qmin ? v : qmin`: NaN becomes qmin
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packus_epi16(w16, w16));
  }
  if (i < n) quantize_affine_u8_reference(x + i, q + i, n - i, inv_scale, z, qmin, qmax);
}

}  // namespace tq::detail

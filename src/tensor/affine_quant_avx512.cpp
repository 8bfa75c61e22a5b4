// AVX-512 twins of the loops in affine_quant.cpp (same operations, sixteen
// lanes at a time, same bits; the tails are masked, not scalar). Compiled
// with AVX-512 F/BW/VL/DQ; called only when cpu_features() reports them.
#include "tensor/x86_intrinsics.h"

#include "tensor/affine_quant.h"

namespace tq::detail {

bool fold_min_max_avx512(const float* p, int64_t n, float& lo, float& hi) {
  // _mm512_min_ps(v, l) is `v < l ? v : l`: a NaN v keeps l, as in the reference.
  __m512 l[4], h[4];
  __mmask16 nan = 0;
  for (int j = 0; j < 4; ++j) l[j] = _mm512_set1_ps(lo), h[j] = _mm512_set1_ps(hi);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 4; ++j) {
      const __m512 v = _mm512_loadu_ps(p + i + 16 * j);
      l[j] = _mm512_min_ps(v, l[j]);
      h[j] = _mm512_max_ps(v, h[j]);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
  for (; i < n; i += 16) {
    // The last, partial vector: lanes past n load nothing and keep l / h.
    const __mmask16 valid = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(valid, p + i);
    l[0] = _mm512_mask_min_ps(l[0], valid, v, l[0]);
    h[0] = _mm512_mask_max_ps(h[0], valid, v, h[0]);
    nan |= _mm512_mask_cmp_ps_mask(valid, v, v, _CMP_UNORD_Q);
  }
  const __m512 lv = _mm512_min_ps(_mm512_min_ps(l[0], l[1]), _mm512_min_ps(l[2], l[3]));
  const __m512 hv = _mm512_max_ps(_mm512_max_ps(h[0], h[1]), _mm512_max_ps(h[2], h[3]));
  // min / max reductions of finite-or-infinite lanes (no NaN reaches l or h).
  lo = _mm512_reduce_min_ps(lv);
  hi = _mm512_reduce_max_ps(hv);
  return nan != 0;
}

void quantize_affine_u8_avx512(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin,
                               float qmax) {
  const __m512 vinv = _mm512_set1_ps(inv_scale), vz = _mm512_set1_ps(z);
  const __m512 vmin = _mm512_set1_ps(qmin), vmax = _mm512_set1_ps(qmax);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 valid = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(valid, x + i), vinv);
    v = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
    v = _mm512_min_ps(_mm512_max_ps(v, vmin), vmax);  // `v > qmin ? v : qmin`: NaN becomes qmin
    _mm_mask_storeu_epi8(q + i, valid, _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
  }
}

}  // namespace tq::detail

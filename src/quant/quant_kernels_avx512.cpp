// AVX-512 twins of the loops in quant_kernels.cpp: the same float operations,
// sixteen lanes at a time, so the same bits; the tail of a run is one masked
// vector instead of a scalar loop. Compiled with AVX-512 F/BW/VL/DQ
// (CMakeLists.txt); the dispatch in quant_kernels.cpp calls it only on CPUs
// that have them (tensor/cpu_features.h). No multiply feeds an add, so FMA
// contraction cannot change a result.
#include "tensor/x86_intrinsics.h"

#include "quant/quant_kernels.h"

namespace tq::quant {

namespace {
constexpr float kRoundMagic = 12582912.f;  // 1.5 * 2^23, see quant_kernels.cpp

inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

// Sixteen values of eq. 8-9 (lanes outside `valid` are neither read nor
// written): stores y, returns the mask of lanes where lo <= r <= hi.
// _mm512_max_ps(a, b) is `a > b ? a : b`, _mm512_min_ps(a, b) is
// `a < b ? a : b`, exactly max_of / min_of of the reference.
struct FakeQuant16 {
  __m512 inv, s, lo, hi, below, above, magic;
  explicit FakeQuant16(const FakeQuantConstants& k)
      : inv(_mm512_set1_ps(k.inv_scale)), s(_mm512_set1_ps(k.scale)), lo(_mm512_set1_ps(k.lo)),
        hi(_mm512_set1_ps(k.hi)), below(_mm512_set1_ps(k.lo - 1.f)), above(_mm512_set1_ps(k.hi + 1.f)),
        magic(_mm512_set1_ps(kRoundMagic)) {}
  __mmask16 operator()(const float* x, float* y, __mmask16 valid) const {
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(valid, x), inv), below), above);
    const __m512 r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
    const __m512 c = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    _mm512_mask_storeu_ps(y, valid, _mm512_mul_ps(c, s));
    return _mm512_mask_cmp_ps_mask(valid, r, c, _CMP_EQ_OQ);
  }
};
}  // namespace

void fake_quantize_run_avx512(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k) {
  const FakeQuant16 fq(k);
  const __m128i one = _mm_set1_epi8(1);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 valid = first_lanes(n - i);
    const __mmask16 inside = fq(x + i, y + i, valid);
    // 16 mask bytes, 1 where inside, 0 elsewhere.
    if (mask) _mm_mask_storeu_epi8(mask + i, valid, _mm_maskz_mov_epi8(inside, one));
  }
}

void apply_ste_mask_avx512(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate) {
  // A select, not a multiply by the mask: inf * 0 would be NaN.
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 valid = first_lanes(n - i);
    const __m128i bytes = _mm_maskz_loadu_epi8(valid, mask + i);
    const __mmask16 keep = _mm_test_epi8_mask(bytes, bytes);  // mask byte != 0 (never true outside `valid`)
    __m512 v = _mm512_maskz_loadu_ps(keep, g + i);
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(valid, out + i), v);
    _mm512_mask_storeu_ps(out + i, valid, v);
  }
}

}  // namespace tq::quant

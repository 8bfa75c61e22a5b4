// AVX2 twins of the loops in quant_kernels.cpp: the same float operations,
// eight lanes at a time, so the same bits. This file is compiled with -mavx2
// (CMakeLists.txt); the dispatch in quant_kernels.cpp calls it only on CPUs
// that have AVX2. No multiply here feeds an add, so FMA contraction cannot
// change a result.
#include "quant/quant_kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace tq::quant {

#if defined(__AVX2__)

namespace {
constexpr float kRoundMagic = 12582912.f;  // 1.5 * 2^23, see quant_kernels.cpp

// Eight values of eq. 8-9: stores y, returns the lane mask (all ones where lo <= r <= hi).
// _mm256_max_ps(a, b) is `a > b ? a : b` and _mm256_min_ps(a, b) is
// `a < b ? a : b`, exactly max_of / min_of of the reference.
struct FakeQuant8 {
  __m256 inv, s, lo, hi, below, above, magic;
  explicit FakeQuant8(const FakeQuantConstants& k)
      : inv(_mm256_set1_ps(k.inv_scale)), s(_mm256_set1_ps(k.scale)), lo(_mm256_set1_ps(k.lo)),
        hi(_mm256_set1_ps(k.hi)), below(_mm256_set1_ps(k.lo - 1.f)), above(_mm256_set1_ps(k.hi + 1.f)),
        magic(_mm256_set1_ps(kRoundMagic)) {}
  __m256 operator()(const float* x, float* y) const {
    const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x), inv), below), above);
    const __m256 r = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
    const __m256 c = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    _mm256_storeu_ps(y, _mm256_mul_ps(c, s));
    return _mm256_cmp_ps(r, c, _CMP_EQ_OQ);
  }
};
}  // namespace

void fake_quantize_run_avx2(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k) {
  const FakeQuant8 fq(k);
  int64_t i = 0;
  if (mask) {
    // 32 values per step; their four 8-lane masks (0 / -1 per 32-bit lane)
    // pack with signed saturation into 32 bytes. The packs work within
    // 128-bit halves, so a dword permutation restores the order.
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i one = _mm256_set1_epi8(1);
    for (; i + 32 <= n; i += 32) {
      const __m256i m0 = _mm256_castps_si256(fq(x + i, y + i));
      const __m256i m1 = _mm256_castps_si256(fq(x + i + 8, y + i + 8));
      const __m256i m2 = _mm256_castps_si256(fq(x + i + 16, y + i + 16));
      const __m256i m3 = _mm256_castps_si256(fq(x + i + 24, y + i + 24));
      const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(m0, m1), _mm256_packs_epi32(m2, m3));
      const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(mask + i), _mm256_and_si256(ordered, one));
    }
    for (; i + 8 <= n; i += 8) {
      const int bits = _mm256_movemask_ps(fq(x + i, y + i));
      for (int j = 0; j < 8; ++j) mask[i + j] = static_cast<uint8_t>((bits >> j) & 1);
    }
  } else {
    for (; i + 8 <= n; i += 8) fq(x + i, y + i);
  }
  if (i < n) fake_quantize_run_reference(x + i, y + i, mask ? mask + i : nullptr, n - i, k);
}

void apply_ste_mask_avx2(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate) {
  const __m256i zero = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // Eight mask bytes (0 / 1) -> eight 32-bit lanes (0 / all ones) that select g.
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + i));
    const __m256 keep = _mm256_castsi256_ps(_mm256_sub_epi32(zero, _mm256_cvtepu8_epi32(bytes)));
    __m256 v = _mm256_and_ps(_mm256_loadu_ps(g + i), keep);
    if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(out + i), v);
    _mm256_storeu_ps(out + i, v);
  }
  if (i < n) apply_ste_mask_reference(g + i, mask + i, out + i, n - i, accumulate);
}

#else  // built without AVX2: never called (the dispatch checks the CPU), kept for the linker

void fake_quantize_run_avx2(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k) {
  fake_quantize_run_reference(x, y, mask, n, k);
}
void apply_ste_mask_avx2(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate) {
  apply_ste_mask_reference(g, mask, out, n, accumulate);
}

#endif

}  // namespace tq::quant

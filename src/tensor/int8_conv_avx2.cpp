// int8_conv_avx2.cpp — the AVX2 direct 3x3 depthwise kernel. This file alone
// is compiled with -mavx2 -mfma; int8_conv.cpp calls it only on CPUs with
// AVX2. Math: docs/quantized_cnn.md §3.
//
// Channels in lanes: the input is NHWC, so one output pixel's 8 consecutive
// channels are 8 consecutive bytes of every tap. Per tap: vpmovzxbd (8 u8 ->
// 8 i32), subtract z_x, vpmulld by the tap's 8 weights (widened once per
// call), add. Taps in the padding are skipped (their term is 0). The
// epilogue is the exact integer requantization of requantize.h, per lane.
// Channels past the last whole group of 8 take the scalar reference.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "tensor/int8_conv.h"

namespace tq::detail {

namespace {

// One vector register in a struct, so that std::vector keeps its alignment attributes.
struct Lanes {
  __m256i v;
};

// Requantization parameters of 8 channels, in the 64-bit lane layout of
// vpmuludq: "even" holds channels 0 2 4 6, "odd" 1 3 5 7.
struct Requant8 {
  __m256i mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
  bool scalar = false;  // some multiplier >= 1 (negative shift): take requantize() per lane
};

Requant8 make_requant8(const FixedPointMultiplier* m) {
  Requant8 e;
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m));      // ch 0..3 {mult, shift}
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 4));  // ch 4..7
  e.scalar = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(lo, hi))) != 0;
  const __m256i lo_sorted = _mm256_permute4x64_epi64(lo, _MM_SHUFFLE(3, 1, 2, 0));
  const __m256i hi_sorted = _mm256_permute4x64_epi64(hi, _MM_SHUFFLE(3, 1, 2, 0));
  const __m256i even = _mm256_permute2x128_si256(lo_sorted, hi_sorted, 0x20);
  const __m256i odd = _mm256_permute2x128_si256(lo_sorted, hi_sorted, 0x31);
  e.mult_even = even;
  e.mult_odd = odd;
  const __m256i k31 = _mm256_set1_epi64x(31);
  e.shift_even = _mm256_add_epi64(_mm256_srli_epi64(even, 32), k31);
  e.shift_odd = _mm256_add_epi64(_mm256_srli_epi64(odd, 32), k31);
  // 2^(total - 1) rounds the magnitude half up (half away from zero); a
  // shift count >= 64 gives 0 in vpsllvq / vpsrlvq, as the scalar "return 0".
  const __m256i one = _mm256_set1_epi64x(1);
  e.round_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(e.shift_even, one));
  e.round_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(e.shift_odd, one));
  return e;
}

// round(acc * M) per lane, half away from zero, for shifts >= 0.
inline __m256i multiply_by_quantized_multiplier8(__m256i acc, const Requant8& e) {
  const __m256i magnitude = _mm256_abs_epi32(acc);
  const __m256i product_even = _mm256_mul_epu32(magnitude, e.mult_even);
  const __m256i product_odd = _mm256_mul_epu32(_mm256_srli_epi64(magnitude, 32), e.mult_odd);
  const __m256i result_even = _mm256_srlv_epi64(_mm256_add_epi64(product_even, e.round_even), e.shift_even);
  const __m256i result_odd = _mm256_srlv_epi64(_mm256_add_epi64(product_odd, e.round_odd), e.shift_odd);
  const __m256i result = _mm256_blend_epi32(result_even, _mm256_slli_epi64(result_odd, 32), 0xAA);
  return _mm256_sign_epi32(result, acc);
}

}  // namespace

void depthwise3x3_avx2(const uint8_t* x, const Depthwise3x3ShapeU8& s, int32_t zx, const int8_t* taps,
                       const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                       int32_t y_max, uint8_t* y) {
  // x: (N, H, W, C), taps: (9, C), y: (N, OH, OW, C)
  const int64_t C = s.channels;
  const int64_t blocks = C / 8;
  const int64_t C_vec = blocks * 8;
  if (C_vec < C) depthwise3x3_channels_reference(x, s, zx, taps, bias_q, multipliers, zy, y_min, y_max, y, C_vec, C);
  if (blocks == 0) return;

  // Per call: weights widened to i32, bias, requantization parameters.
  std::vector<Lanes> w(static_cast<size_t>(9 * blocks));
  std::vector<Lanes> bias(static_cast<size_t>(blocks));
  std::vector<Requant8> rq(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t t = 0; t < 9; ++t) {
      int64_t packed;
      std::memcpy(&packed, taps + t * C + b * 8, 8);
      w[static_cast<size_t>(t * blocks + b)].v = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(packed));
    }
    bias[static_cast<size_t>(b)].v = bias_q == nullptr ? _mm256_setzero_si256()
                                                     : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias_q + b * 8));
    rq[static_cast<size_t>(b)] = make_requant8(multipliers + b * 8);
  }
  const __m256i zx_v = _mm256_set1_epi32(zx);
  const __m256i zy_v = _mm256_set1_epi32(zy);
  const __m256i lo = _mm256_set1_epi32(y_min - zy);  // zy + clamp(r, y_min - zy, y_max - zy)
  const __m256i hi = _mm256_set1_epi32(y_max - zy);
  const __m256i gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);

  const int64_t OH = s.out_h(), OW = s.out_w();
  for (int64_t n = 0; n < s.batch; ++n) {
    const uint8_t* xn = x + n * s.in_h * s.in_w * C;
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int64_t iy0 = oy * s.stride - s.pad;
      const int64_t kh0 = iy0 < 0 ? -iy0 : 0;
      const int64_t kh1 = iy0 + 3 > s.in_h ? s.in_h - iy0 : 3;
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t ix0 = ox * s.stride - s.pad;
        const int64_t kw0 = ix0 < 0 ? -ix0 : 0;
        const int64_t kw1 = ix0 + 3 > s.in_w ? s.in_w - ix0 : 3;
        uint8_t* yp = y + ((n * OH + oy) * OW + ox) * C;
        for (int64_t b = 0; b < blocks; ++b) {
          __m256i acc = bias[static_cast<size_t>(b)].v;
          for (int64_t kh = kh0; kh < kh1; ++kh) {
            const uint8_t* row = xn + (iy0 + kh) * s.in_w * C + b * 8;
            for (int64_t kw = kw0; kw < kw1; ++kw) {
              const __m256i xv = _mm256_sub_epi32(
                  _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + (ix0 + kw) * C))), zx_v);
              acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(xv, w[static_cast<size_t>((kh * 3 + kw) * blocks + b)].v));
            }
          }
          const Requant8& e = rq[static_cast<size_t>(b)];
          __m256i q;
          if (e.scalar) {
            alignas(32) int32_t values[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(values), acc);
            for (int64_t c = 0; c < 8; ++c) values[c] = requantize(values[c], multipliers[b * 8 + c], zy, y_min, y_max);
            q = _mm256_load_si256(reinterpret_cast<const __m256i*>(values));
          } else {
            const __m256i r = multiply_by_quantized_multiplier8(acc, e);
            q = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r, lo), hi), zy_v);
          }
          // 8 int32 in 0..255 -> 8 bytes in channel order.
          const __m256i words = _mm256_packus_epi32(q, q);
          const __m256i bytes = _mm256_packus_epi16(words, words);
          const __m128i ordered = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, gather));
          _mm_storel_epi64(reinterpret_cast<__m128i*>(yp + b * 8), ordered);
        }
      }
    }
  }
}

}  // namespace tq::detail

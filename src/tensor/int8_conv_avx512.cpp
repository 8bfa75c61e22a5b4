// int8_conv_avx512.cpp — the AVX-512 direct 3x3 depthwise kernel. This file
// alone is compiled with -mavx512f -mavx512bw -mavx512vl; int8_conv.cpp calls
// it only on CPUs with AVX-512 F and BW. Math: docs/quantized_cnn.md §3.
//
// The AVX2 kernel's scheme with 16 channels per register, and no scalar
// tail: the last, partial group of channels uses masked loads and stores.
// GCC 12's AVX-512 headers start some intrinsics from an "undefined"
// register, which -Wmaybe-uninitialized reports where they are inlined into
// this file's loops, so it is silenced for the whole file (GCC only).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "tensor/x86_intrinsics.h"

#include <vector>

#include "tensor/int8_conv.h"

namespace tq::detail {

namespace {

// One vector register in a struct, so that std::vector keeps its alignment attributes.
struct Lanes {
  __m512i v;
};

// Requantization parameters of 16 channels; "even" lanes of 64 bits hold
// channels 0 2 .. 14, "odd" ones 1 3 .. 15.
struct Requant16 {
  __m512i mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
  bool scalar = false;  // some multiplier >= 1 (negative shift): requantize() per lane
};

Requant16 make_requant16(const FixedPointMultiplier* m, int64_t valid) {
  // Lanes past `valid` get multiplier 0, shift 0: harmless, never stored.
  alignas(64) int32_t mult[16] = {}, shift[16] = {};
  bool scalar = false;
  for (int64_t c = 0; c < valid; ++c) {
    mult[c] = m[c].multiplier;
    shift[c] = m[c].shift;
    scalar = scalar || m[c].shift < 0 || m[c].multiplier < 0;
  }
  Requant16 e;
  e.scalar = scalar;
  const __m512i mv = _mm512_load_si512(mult);
  const __m512i sv = _mm512_load_si512(shift);
  const __m512i k31 = _mm512_set1_epi64(31);
  const __m512i low32 = _mm512_set1_epi64(0xFFFFFFFF);
  e.mult_even = _mm512_and_si512(mv, low32);
  e.mult_odd = _mm512_srli_epi64(mv, 32);
  e.shift_even = _mm512_add_epi64(_mm512_and_si512(sv, low32), k31);
  e.shift_odd = _mm512_add_epi64(_mm512_srli_epi64(sv, 32), k31);
  const __m512i one = _mm512_set1_epi64(1);
  e.round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(e.shift_even, one));
  e.round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(e.shift_odd, one));
  return e;
}

// round(acc * M) per lane, half away from zero, for shifts >= 0.
inline __m512i multiply_by_quantized_multiplier16(__m512i acc, const Requant16& e) {
  const __m512i magnitude = _mm512_abs_epi32(acc);
  const __m512i product_even = _mm512_mul_epu32(magnitude, e.mult_even);
  const __m512i product_odd = _mm512_mul_epu32(_mm512_srli_epi64(magnitude, 32), e.mult_odd);
  const __m512i result_even = _mm512_srlv_epi64(_mm512_add_epi64(product_even, e.round_even), e.shift_even);
  const __m512i result_odd = _mm512_srlv_epi64(_mm512_add_epi64(product_odd, e.round_odd), e.shift_odd);
  const __m512i result = _mm512_mask_blend_epi32(0xAAAA, result_even, _mm512_slli_epi64(result_odd, 32));
  const __mmask16 negative = _mm512_cmplt_epi32_mask(acc, _mm512_setzero_si512());
  return _mm512_mask_sub_epi32(result, negative, _mm512_setzero_si512(), result);
}

}  // namespace

void depthwise3x3_avx512(const uint8_t* x, const Depthwise3x3ShapeU8& s, int32_t zx, const int8_t* taps,
                         const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                         int32_t y_max, uint8_t* y) {
  // x: (N, H, W, C), taps: (9, C), y: (N, OH, OW, C)
  const int64_t C = s.channels;
  const int64_t blocks = (C + 15) / 16;
  const int64_t last_valid = C - (blocks - 1) * 16;
  const __mmask16 last_mask = static_cast<__mmask16>((1u << last_valid) - 1u);

  std::vector<Lanes> w(static_cast<size_t>(9 * blocks));
  std::vector<Lanes> bias(static_cast<size_t>(blocks));
  std::vector<Requant16> rq(static_cast<size_t>(blocks));
  std::vector<__mmask16> mask(static_cast<size_t>(blocks), static_cast<__mmask16>(0xFFFF));
  mask[static_cast<size_t>(blocks - 1)] = last_mask;
  for (int64_t b = 0; b < blocks; ++b) {
    const __mmask16 m = mask[static_cast<size_t>(b)];
    for (int64_t t = 0; t < 9; ++t) {
      w[static_cast<size_t>(t * blocks + b)].v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, taps + t * C + b * 16));
    }
    bias[static_cast<size_t>(b)].v =
        bias_q == nullptr ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi32(m, bias_q + b * 16);
    rq[static_cast<size_t>(b)] = make_requant16(multipliers + b * 16, b + 1 < blocks ? 16 : last_valid);
  }
  const __m512i zx_v = _mm512_set1_epi32(zx);
  const __m512i zy_v = _mm512_set1_epi32(zy);
  const __m512i lo = _mm512_set1_epi32(y_min - zy);
  const __m512i hi = _mm512_set1_epi32(y_max - zy);

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
          const __mmask16 m = mask[static_cast<size_t>(b)];
          __m512i acc = bias[static_cast<size_t>(b)].v;
          for (int64_t kh = kh0; kh < kh1; ++kh) {
            const uint8_t* row = xn + (iy0 + kh) * s.in_w * C + b * 16;
            for (int64_t kw = kw0; kw < kw1; ++kw) {
              // Masked lanes load 0; their weight is 0 too, and they are never stored.
              const __m512i xv =
                  _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, row + (ix0 + kw) * C)), zx_v);
              acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, w[static_cast<size_t>((kh * 3 + kw) * blocks + b)].v));
            }
          }
          const Requant16& e = rq[static_cast<size_t>(b)];
          __m512i q;
          if (e.scalar) {
            alignas(64) int32_t values[16];
            _mm512_store_si512(values, acc);
            const int64_t valid = b + 1 < blocks ? 16 : last_valid;
            for (int64_t c = 0; c < valid; ++c) {
              values[c] = requantize(values[c], multipliers[b * 16 + c], zy, y_min, y_max);
            }
            q = _mm512_load_si512(values);
          } else {
            const __m512i r = multiply_by_quantized_multiplier16(acc, e);
            q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(r, lo), hi), zy_v);
          }
          _mm_mask_storeu_epi8(yp + b * 16, m, _mm512_cvtepi32_epi8(q));
        }
      }
    }
  }
}

}  // namespace tq::detail

// int8_gemm_avx2_common.h — the parts of the int8 GEMM kernels that every x86
// path shares: loading X groups, the fused epilogue on 8 output channels in a
// ymm register (bias fold of eq. 2, requantization of eq. 6-8 with its clamps,
// or the f32 epilogue of eq. 12), and the blocked loop over row blocks, panels
// and row tiles of the ymm kernels. Included only by the kernel files, each
// compiled with AVX2 or more (int8_gemm_avx2.cpp, int8_gemm_avxvnni.cpp,
// int8_gemm_avx512vnni.cpp, int8_gemm_amx.cpp). Everything here has internal
// linkage (an unnamed namespace), so each file gets its own copy compiled for
// its own instruction set and the linker never mixes them.
// Math and layout: docs/int8_kernel.md.
#pragma once

#include "tensor/x86_intrinsics.h"

#include <cstdint>
#include <cstring>

#include "tensor/int8_gemm.h"

namespace tq::detail {
namespace {

#define TQ_ALWAYS_INLINE inline __attribute__((always_inline))

constexpr int64_t kPanel = PackedWeightsI8::kPanelWidth;           // 16 output channels
constexpr int64_t kGroupBytes = kPanel * PackedWeightsI8::kGroup;  // 64 bytes of weights per k group
constexpr int kBlocks = static_cast<int>(kPanel / 8);              // ymm registers per panel row
constexpr int64_t kRowBlockBytes = 192 * 1024;                     // X rows kept in L2 while walking panels

static_assert(kBlocks == 2, "the kernels are written for 16-channel panels");

TQ_ALWAYS_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
TQ_ALWAYS_INLINE int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

TQ_ALWAYS_INLINE int32_t load_group(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The last, partial group of a row: k past K reads as 0 (the packed weights
// are 0 there too) and nothing past the row is touched.
TQ_ALWAYS_INLINE int32_t load_tail_group(const uint8_t* p, int64_t count) {
  int32_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(count));
  return v;
}

// ---------------------------------------------------------------------------
// Epilogue parameters of one block of 8 output channels, prepared once per
// panel and reused by every row tile.

struct BlockEpilogue {
  int64_t valid = 0;  // channels of the block that exist (< 8 at the edge)
  __m256i bias_eff;   // eq. 2: bias_q - zx * rowsum (i32)
  // requantization (eq. 6), in the 64-bit lane layout of vpmuludq:
  // "even" holds channels 0 2 4 6, "odd" channels 1 3 5 7
  __m256i mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
  bool needs_scalar = false;                // M >= 1 somewhere: use the scalar function
  const FixedPointMultiplier* multipliers;  // the block's `valid` multipliers, for that case
  // f32 output (eq. 12)
  __m256 scale, bias_f;
};

// 8 values of an array that has `valid` of them (zeros after; all zeros for
// a null array), never reading past it.
template <class T>
TQ_ALWAYS_INLINE __m256i load_padded(const T* src, int64_t valid) {
  static_assert(sizeof(T) * 8 == sizeof(__m256i) || sizeof(T) * 4 == sizeof(__m256i), "32 or 64 bytes");
  if (src == nullptr) return _mm256_setzero_si256();
  if (valid * static_cast<int64_t>(sizeof(T)) >= static_cast<int64_t>(sizeof(__m256i))) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  }
  alignas(32) T padded[sizeof(__m256i) / sizeof(T)] = {};
  std::memcpy(padded, src, static_cast<size_t>(valid) * sizeof(T));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(padded));
}

void prepare_block(const Int8GemmProblem& P, int64_t n0, BlockEpilogue& e) {
  const PackedWeightsI8& W = *P.W;
  e.valid = W.N() - n0 < 0 ? 0 : min64(W.N() - n0, 8);
  e.needs_scalar = false;
  if (e.valid == 0) {
    // No channel here (the second block of the last panel): the tile still
    // computes it, so keep the parameters harmless; nothing is stored.
    e.bias_eff = e.mult_even = e.mult_odd = e.shift_even = e.shift_odd = e.round_even = e.round_odd =
        _mm256_setzero_si256();
    e.scale = e.bias_f = _mm256_setzero_ps();
    return;
  }
  // W.row_sums() is padded to whole panels, so this load stays inside it.
  const __m256i row_sum = _mm256_load_si256(reinterpret_cast<const __m256i*>(W.row_sums() + n0));
  const __m256i zx_row_sum = _mm256_mullo_epi32(_mm256_set1_epi32(P.zx), row_sum);
  if (P.float_output) {
    e.bias_eff = _mm256_sub_epi32(_mm256_setzero_si256(), zx_row_sum);
    const __m256 w_scale = _mm256_castsi256_ps(load_padded(P.w_scale + n0, e.valid));
    e.scale = _mm256_mul_ps(_mm256_set1_ps(P.x_scale), w_scale);
    e.bias_f = _mm256_castsi256_ps(load_padded(P.bias_f == nullptr ? nullptr : P.bias_f + n0, e.valid));
    return;
  }
  e.bias_eff = _mm256_sub_epi32(load_padded(P.bias_q == nullptr ? nullptr : P.bias_q + n0, e.valid), zx_row_sum);

  // Each FixedPointMultiplier is one 64-bit lane {multiplier, shift}.
  e.multipliers = P.multipliers + n0;
  const __m256i lo = load_padded(e.multipliers, e.valid);                                  // ch 0..3
  const __m256i hi = load_padded(e.valid > 4 ? e.multipliers + 4 : nullptr, e.valid - 4);  // ch 4..7
  // A negative shift (M >= 1) or multiplier (not made by quantize_multiplier)
  // takes the scalar function, which handles every value.
  e.needs_scalar = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(lo, hi))) != 0;
  const __m256i lo_sorted = _mm256_permute4x64_epi64(lo, _MM_SHUFFLE(3, 1, 2, 0));  // ch 0 2 1 3
  const __m256i hi_sorted = _mm256_permute4x64_epi64(hi, _MM_SHUFFLE(3, 1, 2, 0));  // ch 4 6 5 7
  const __m256i even = _mm256_permute2x128_si256(lo_sorted, hi_sorted, 0x20);       // ch 0 2 4 6
  const __m256i odd = _mm256_permute2x128_si256(lo_sorted, hi_sorted, 0x31);        // ch 1 3 5 7
  e.mult_even = even;  // vpmuludq reads the low 32 bits: the multiplier
  e.mult_odd = odd;
  // total shift 31 + shift (eq. 6); only used when no shift is negative.
  const __m256i k31 = _mm256_set1_epi64x(31);
  e.shift_even = _mm256_add_epi64(_mm256_srli_epi64(even, 32), k31);
  e.shift_odd = _mm256_add_epi64(_mm256_srli_epi64(odd, 32), k31);
  // 2^(total - 1): adding it before the shift rounds half up on the
  // magnitude, i.e. half away from zero. A count >= 64 gives 0 in
  // vpsllvq / vpsrlvq, matching the scalar "return 0" for total >= 63.
  const __m256i one = _mm256_set1_epi64x(1);
  e.round_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(e.shift_even, one));
  e.round_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(e.shift_odd, one));
}

// round(acc * M) per channel, half away from zero (eq. 7), for shifts >= 0:
// then |acc| * multiplier < 2^62 and the result fits in 31 bits.
TQ_ALWAYS_INLINE __m256i multiply_by_quantized_multiplier8(__m256i acc, const BlockEpilogue& e) {
  const __m256i magnitude = _mm256_abs_epi32(acc);  // |INT32_MIN| = 2^31 read as unsigned: still right
  const __m256i product_even = _mm256_mul_epu32(magnitude, e.mult_even);
  const __m256i product_odd = _mm256_mul_epu32(_mm256_srli_epi64(magnitude, 32), e.mult_odd);
  const __m256i result_even = _mm256_srlv_epi64(_mm256_add_epi64(product_even, e.round_even), e.shift_even);
  const __m256i result_odd = _mm256_srlv_epi64(_mm256_add_epi64(product_odd, e.round_odd), e.shift_odd);
  const __m256i result = _mm256_blend_epi32(result_even, _mm256_slli_epi64(result_odd, 32), 0xAA);
  return _mm256_sign_epi32(result, acc);
}

// One row of one panel, u8: the 16 bytes requantize(acc + bias_eff) (eq. 8)
// in channel order; acc0 holds channels 0..7, acc1 channels 8..15.
TQ_ALWAYS_INLINE __m128i requantize_row16(const Int8GemmProblem& P, const BlockEpilogue (&e)[kBlocks], __m256i acc0,
                                          __m256i acc1) {
  // zy + clamp(r, y_min - zy, y_max - zy) == clamp(zy + r, y_min, y_max), without overflow.
  const __m256i zy = _mm256_set1_epi32(P.zy);
  const __m256i lo = _mm256_set1_epi32(P.y_min - P.zy);
  const __m256i hi = _mm256_set1_epi32(P.y_max - P.zy);
  const __m256i acc[kBlocks] = {acc0, acc1};
  __m256i q[kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    const __m256i v = _mm256_add_epi32(acc[b], e[b].bias_eff);
    if (e[b].needs_scalar) {
      alignas(32) int32_t values[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(values), v);
      for (int64_t c = 0; c < e[b].valid; ++c) {
        values[c] = requantize(values[c], e[b].multipliers[c], P.zy, P.y_min, P.y_max);
      }
      q[b] = _mm256_load_si256(reinterpret_cast<const __m256i*>(values));
    } else {
      const __m256i r = multiply_by_quantized_multiplier8(v, e[b]);
      q[b] = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r, lo), hi), zy);
    }
  }
  // 16 int32 in 0..255 -> 16 bytes in channel order.
  const __m256i gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i words = _mm256_packus_epi32(q[0], q[1]);    // [a0-3 b0-3 | a4-7 b4-7] u16
  const __m256i bytes = _mm256_packus_epi16(words, words);  // dwords: a0-3 b0-3 a0-3 b0-3 | a4-7 b4-7 ..
  return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, gather));
}

// 8 channels, f32: fma(float(acc + bias_eff), x_scale * w_scale, bias) (eq. 12).
TQ_ALWAYS_INLINE __m256 dequantize8(const BlockEpilogue& e, __m256i acc) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, e.bias_eff)), e.scale, e.bias_f);
}

// Stores the first `valid` (<= 16) bytes / (<= 8) floats without touching the rest.
TQ_ALWAYS_INLINE void store_u8_row(uint8_t* row, __m128i bytes, int64_t valid) {
  if (valid == kPanel) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row), bytes);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
    std::memcpy(row, tmp, static_cast<size_t>(valid));
  }
}
TQ_ALWAYS_INLINE void store_f32_block(float* dst, __m256 v, int64_t valid) {
  if (valid == 8) {
    _mm256_storeu_ps(dst, v);
  } else if (valid > 0) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    std::memcpy(dst, tmp, static_cast<size_t>(valid) * sizeof(float));
  }
}

// ---------------------------------------------------------------------------
// The full 4-row tile of the ymm kernels, with its eight accumulators as
// named variables: GCC 12 keeps accumulators held in an array in registers,
// but in a loop over k like this one copies each to another register and
// back once per k group (and spills one), which costs the AVX-VNNI tile
// about a quarter of its speed (docs/int8_kernel.md, "Blocking and
// prefetch"). `madd(acc, x, w)` returns acc plus, per int32 lane, the four
// products of the u8 group broadcast in x by the i8 group of w.
#define TQ_YMM_ROW(i, load)                                \
  {                                                        \
    const __m256i xb = _mm256_set1_epi32(load);            \
    a##i##0 = madd(a##i##0, xb, w0);                       \
    a##i##1 = madd(a##i##1, xb, w1);                       \
  }
template <class Madd>
TQ_ALWAYS_INLINE void accumulate_ymm_4x2(const Int8GemmProblem& P, int64_t m, const int8_t* w,
                                         __m256i (&acc)[4][kBlocks], Madd madd) {
  const uint8_t* x = P.X + m * P.ldx;
  const int64_t ldx = P.ldx, K = P.W->K();
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const int64_t full_groups = K / 4;
  for (int64_t g = 0; g < full_groups; ++g) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + g * kGroupBytes));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + g * kGroupBytes + 32));
    TQ_YMM_ROW(0, load_group(x + 4 * g))
    TQ_YMM_ROW(1, load_group(x + ldx + 4 * g))
    TQ_YMM_ROW(2, load_group(x + 2 * ldx + 4 * g))
    TQ_YMM_ROW(3, load_group(x + 3 * ldx + 4 * g))
  }
  if (K % 4 != 0) {
    const int64_t g = full_groups, tail = K % 4;
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + g * kGroupBytes));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + g * kGroupBytes + 32));
    TQ_YMM_ROW(0, load_tail_group(x + 4 * g, tail))
    TQ_YMM_ROW(1, load_tail_group(x + ldx + 4 * g, tail))
    TQ_YMM_ROW(2, load_tail_group(x + 2 * ldx + 4 * g, tail))
    TQ_YMM_ROW(3, load_tail_group(x + 3 * ldx + 4 * g, tail))
  }
  const __m256i named[4][kBlocks] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
  std::memcpy(acc, named, sizeof named);
}
#undef TQ_YMM_ROW

// ---------------------------------------------------------------------------
// The blocked loop of the ymm kernels. A tile is MR rows of X times one
// 16-channel panel: MR x 2 ymm accumulators. Policy supplies
//   static constexpr int kRows;            // MR of the full tile
//   static constexpr bool kWidensRows;     // X rows are pre-widened per row block
//   template <int MR> static void accumulate(const Int8GemmProblem&, int64_t m, const int32_t* xw,
//                                            const int8_t* panel, __m256i (&acc)[MR][2]);
//   static int32_t* widen(const Int8GemmProblem&, int64_t m0, int64_t rows);  // kWidensRows only
//   static int64_t row_bytes(const PackedWeightsI8&);                          // X bytes per row as read

template <class Policy, int MR>
void ymm_tile(const Int8GemmProblem& P, int64_t m, int64_t p, const BlockEpilogue (&e)[kBlocks], const int32_t* xw) {
  const PackedWeightsI8& W = *P.W;
  const int8_t* panel = W.panels() + p * W.k_groups() * kGroupBytes;
  __m256i acc[MR][kBlocks];
  Policy::template accumulate<MR>(P, m, xw, panel, acc);
  if (P.float_output) {
    for (int i = 0; i < MR; ++i) {
      float* y = P.Y_f32 + (m + i) * P.ldy + p * kPanel;
      for (int b = 0; b < kBlocks; ++b) store_f32_block(y + 8 * b, dequantize8(e[b], acc[i][b]), e[b].valid);
    }
  } else {
    for (int i = 0; i < MR; ++i) {
      store_u8_row(P.Y_u8 + (m + i) * P.ldy + p * kPanel, requantize_row16(P, e, acc[i][0], acc[i][1]),
                   e[0].valid + e[1].valid);
    }
  }
}

template <class Policy>
void ymm_gemm_blocked(const Int8GemmProblem& P, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                      int64_t panel_end) {
  constexpr int MR = Policy::kRows;
  static_assert(MR >= 1 && MR <= 6, "the remainder switch below handles up to 5 rows");
  // Rows per block: their X stays in L2 while every panel passes over it.
  const int64_t row_block = max64(MR, kRowBlockBytes / Policy::row_bytes(*P.W) / MR * MR);
  BlockEpilogue e[kBlocks];
  for (int64_t m0 = m_begin; m0 < m_end; m0 += row_block) {
    const int64_t m1 = min64(m_end, m0 + row_block);
    const int32_t* widened = nullptr;
    if constexpr (Policy::kWidensRows) widened = Policy::widen(P, m0, m1 - m0);
    auto xw = [&](int64_t m) { return widened == nullptr ? nullptr : widened + (m - m0) * 2 * P.W->k_groups(); };
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      for (int b = 0; b < kBlocks; ++b) prepare_block(P, p * kPanel + 8 * b, e[b]);
      // Batch 1 (GEMV) and the last rows take the smaller tiles: at M = 1 each
      // panel streams through once with 2 accumulators (docs, "Batch 1").
      int64_t m = m0;
      for (; m + MR <= m1; m += MR) ymm_tile<Policy, MR>(P, m, p, e, xw(m));
      switch (m1 - m) {
        case 0: break;
        case 1: ymm_tile<Policy, 1>(P, m, p, e, xw(m)); break;
        case 2: ymm_tile<Policy, 2>(P, m, p, e, xw(m)); break;
        case 3: ymm_tile<Policy, 3>(P, m, p, e, xw(m)); break;
        case 4: ymm_tile<Policy, 4>(P, m, p, e, xw(m)); break;
        case 5: ymm_tile<Policy, 5>(P, m, p, e, xw(m)); break;
        default: break;
      }
    }
  }
}

}  // namespace
}  // namespace tq::detail

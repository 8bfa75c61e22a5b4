// int8_gemm_avx2.cpp — the AVX2 int8 GEMM kernels. This file alone is
// compiled with -mavx2 -mfma; int8_gemm.cpp calls it only after checking that
// the CPU has AVX2 (cpu_has_avx2). Math and layout: docs/int8_kernel.md.
//
// A tile is MR rows of X times one 16-channel panel of packed weights:
// MR x 2 ymm accumulators of 8 int32 each, K walked in groups of 4.
//   maddubs path (exact when eq. 9 holds), per row, group and 8 channels:
//     vpmaddubsw  x(4 u8, broadcast) * w(8 ch x 4 k i8) -> 16 int16 pair sums
//     vpmaddwd    with ones                             -> 8 int32 (sums of 4)
//     vpaddd      into the accumulator
//   widening path (always exact): X widened to i16 pairs once per block of
//     rows, W widened to i16 in the loop (amortized over 4 rows), vpmaddwd.
// The epilogue adds the folded bias (eq. 2) and either requantizes to u8
// (eq. 6-8, the exact integer function of requantize.h) or scales to f32
// (eq. 10).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/int8_gemm.h"

namespace tq::detail {

namespace {

#define TQ_ALWAYS_INLINE inline __attribute__((always_inline))

constexpr int64_t kPanel = PackedWeightsI8::kPanelWidth;           // 16 output channels
constexpr int64_t kGroupBytes = kPanel * PackedWeightsI8::kGroup;  // 64 bytes of weights per k group
constexpr int kBlocks = static_cast<int>(kPanel / 8);              // ymm registers per panel row
constexpr int kTileRows = 4;                    // MR of the maddubs tile: 4x16 beat 3x16, 5x16, 6x16 (docs)
constexpr int kTileRowsWidening = 4;            // MR of the widening tile: 4 beat 2 and 3
constexpr int64_t kRowBlockBytes = 192 * 1024;  // X rows kept in L2 while walking panels

static_assert(kBlocks == 2, "the kernels below are written for 16-channel panels");

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
// Inner loops. x: MR rows of X (row stride ldx), w: one packed panel
// [k_groups][16][4]; acc[i][b] holds channels 8b..8b+7 of row i.

template <int MR>
TQ_ALWAYS_INLINE void maddubs_group(const int32_t (&xg)[MR], const int8_t* wg, __m256i (&acc)[MR][kBlocks]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg));
  const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + 32));
  for (int i = 0; i < MR; ++i) {
    const __m256i x = _mm256_set1_epi32(xg[i]);
    acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones));
    acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones));
  }
}

// One 32-byte block [8 ch][4 k] of i8 to two vectors of 16 i16:
// a = [c0k0 c0k1 c1k0 c1k1 .. c7k0 c7k1], b = the same for k2, k3.
TQ_ALWAYS_INLINE void widen_block(const int8_t* wb, __m256i& a, __m256i& b) {
  const __m256i pairs = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,  //
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(wb));
  v = _mm256_shuffle_epi8(v, pairs);                         // per lane: [4 ch k01 | 4 ch k23]
  v = _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0));  // [8 ch k01 | 8 ch k23]
  a = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));
  b = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1));
}

template <int MR>
TQ_ALWAYS_INLINE void accumulate_maddubs(const uint8_t* x, int64_t ldx, int64_t K, const int8_t* w,
                                         __m256i (&acc)[MR][kBlocks]) {
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  const int64_t full_groups = K / 4;
  int32_t xg[MR];
  for (int64_t g = 0; g < full_groups; ++g) {
    for (int i = 0; i < MR; ++i) xg[i] = load_group(x + i * ldx + 4 * g);
    maddubs_group<MR>(xg, w + g * kGroupBytes, acc);
  }
  if (K % 4 != 0) {
    for (int i = 0; i < MR; ++i) xg[i] = load_tail_group(x + i * ldx + 4 * full_groups, K % 4);
    maddubs_group<MR>(xg, w + full_groups * kGroupBytes, acc);
  }
}

// The widening path reads X pre-widened once per row block (widen_rows):
// per row and k group two dwords, the i16 pairs (x0, x1) and (x2, x3), so
// that the inner loop broadcasts them straight from memory.
void widen_rows(const uint8_t* X, int64_t ldx, int64_t rows, int64_t K, int64_t k_groups, int32_t* out) {
  for (int64_t m = 0; m < rows; ++m) {
    const uint8_t* x = X + m * ldx;
    int32_t* o = out + m * k_groups * 2;
    for (int64_t g = 0; g < k_groups; ++g) {
      const int32_t group = 4 * g + 4 <= K ? load_group(x + 4 * g) : load_tail_group(x + 4 * g, K - 4 * g);
      const uint32_t u = static_cast<uint32_t>(group);
      o[2 * g] = static_cast<int32_t>((u & 0xFFu) | ((u << 8) & 0xFF0000u));              // x0 | x1 << 16
      o[2 * g + 1] = static_cast<int32_t>(((u >> 16) & 0xFFu) | ((u >> 8) & 0xFF0000u));  // x2 | x3 << 16
    }
  }
}

template <int MR>
TQ_ALWAYS_INLINE void accumulate_widening(const int32_t* xw, int64_t xw_stride, int64_t k_groups, const int8_t* w,
                                          __m256i (&acc)[MR][kBlocks]) {
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  for (int64_t g = 0; g < k_groups; ++g) {
    __m256i a0, b0, a1, b1;
    widen_block(w + g * kGroupBytes, a0, b0);
    widen_block(w + g * kGroupBytes + 32, a1, b1);
    for (int i = 0; i < MR; ++i) {
      const __m256i x01 = _mm256_set1_epi32(xw[i * xw_stride + 2 * g]);
      const __m256i x23 = _mm256_set1_epi32(xw[i * xw_stride + 2 * g + 1]);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(x01, a0));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(x01, a1));
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(x23, b0));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(x23, b1));
    }
  }
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
  // f32 output (eq. 10)
  __m256 scale, bias_f;
};

// 8 values of an array that has `valid` of them (zeros after; all zeros for
// a null array), never reading past it. Whole blocks load directly; only the
// last, partial block of a layer goes through a small copy.
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
  e.valid = std::clamp<int64_t>(W.N() - n0, 0, 8);
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

// Output tile of MR rows x one panel, u8: Y[i][c] = requantize(acc + bias_eff) (eq. 8).
template <int MR>
TQ_ALWAYS_INLINE void store_requantized(const Int8GemmProblem& P, const BlockEpilogue (&e)[kBlocks],
                                        __m256i (&acc)[MR][kBlocks], uint8_t* y, int64_t ldy) {
  // zy + clamp(r, y_min - zy, y_max - zy) == clamp(zy + r, y_min, y_max), without overflow.
  const __m256i zy = _mm256_set1_epi32(P.zy);
  const __m256i lo = _mm256_set1_epi32(P.y_min - P.zy);
  const __m256i hi = _mm256_set1_epi32(P.y_max - P.zy);
  const __m256i gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const int64_t valid = e[0].valid + e[1].valid;
  for (int i = 0; i < MR; ++i) {
    __m256i q[kBlocks];
    for (int b = 0; b < kBlocks; ++b) {
      const __m256i v = _mm256_add_epi32(acc[i][b], e[b].bias_eff);
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
    const __m256i words = _mm256_packus_epi32(q[0], q[1]);    // [a0-3 b0-3 | a4-7 b4-7] u16
    const __m256i bytes = _mm256_packus_epi16(words, words);  // dwords: a0-3 b0-3 a0-3 b0-3 | a4-7 b4-7 ..
    const __m128i ordered = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, gather));
    uint8_t* row = y + i * ldy;
    if (valid == kPanel) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(row), ordered);
    } else {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), ordered);
      std::memcpy(row, tmp, static_cast<size_t>(valid));
    }
  }
}

// Output tile of MR rows x one panel, f32: Y = fma(float(acc), x_scale * w_scale, bias) (eq. 10).
template <int MR>
TQ_ALWAYS_INLINE void store_dequantized(const BlockEpilogue (&e)[kBlocks], __m256i (&acc)[MR][kBlocks], float* y,
                                        int64_t ldy) {
  for (int i = 0; i < MR; ++i) {
    for (int b = 0; b < kBlocks; ++b) {
      if (e[b].valid == 0) continue;
      const __m256 v = _mm256_cvtepi32_ps(_mm256_add_epi32(acc[i][b], e[b].bias_eff));
      const __m256 out = _mm256_fmadd_ps(v, e[b].scale, e[b].bias_f);
      float* dst = y + i * ldy + 8 * b;
      if (e[b].valid == 8) {
        _mm256_storeu_ps(dst, out);
      } else {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, out);
        std::memcpy(dst, tmp, static_cast<size_t>(e[b].valid) * sizeof(float));
      }
    }
  }
}

// One tile: rows [m, m + MR) x panel p. xw: the tile's rows widened (widening path only).
template <int MR, bool Widening>
void tile(const Int8GemmProblem& P, int64_t m, int64_t p, const BlockEpilogue (&e)[kBlocks], const int32_t* xw) {
  const PackedWeightsI8& W = *P.W;
  const int8_t* panel = W.panels() + p * W.k_groups() * kGroupBytes;
  __m256i acc[MR][kBlocks];
  if constexpr (Widening)
    accumulate_widening<MR>(xw, 2 * W.k_groups(), W.k_groups(), panel, acc);
  else
    accumulate_maddubs<MR>(P.X + m * P.ldx, P.ldx, W.K(), panel, acc);
  if (P.float_output)
    store_dequantized<MR>(e, acc, P.Y_f32 + m * P.ldy + p * kPanel, P.ldy);
  else
    store_requantized<MR>(P, e, acc, P.Y_u8 + m * P.ldy + p * kPanel, P.ldy);
}

template <bool Widening>
void gemm_blocked(const Int8GemmProblem& P, int64_t m_begin, int64_t m_end, int64_t panel_begin, int64_t panel_end) {
  constexpr int MR = Widening ? kTileRowsWidening : kTileRows;
  const int64_t K = P.W->K(), k_groups = P.W->k_groups();
  // Rows per block: their X (rows x K bytes, twice that widened) stays in L2
  // while every panel passes over it.
  const int64_t row_bytes = Widening ? 2 * 4 * k_groups : K;
  const int64_t row_block = std::max<int64_t>(MR, kRowBlockBytes / row_bytes / MR * MR);
  thread_local CacheAlignedVector<int32_t> widened;  // per thread: threads split the rows
  if constexpr (Widening) widened.resize(static_cast<size_t>(std::min(row_block, m_end - m_begin) * 2 * k_groups));
  BlockEpilogue e[kBlocks];
  for (int64_t m0 = m_begin; m0 < m_end; m0 += row_block) {
    const int64_t m1 = std::min(m_end, m0 + row_block);
    if constexpr (Widening) widen_rows(P.X + m0 * P.ldx, P.ldx, m1 - m0, K, k_groups, widened.data());
    auto xw = [&](int64_t m) { return Widening ? widened.data() + (m - m0) * 2 * k_groups : nullptr; };
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      for (int b = 0; b < kBlocks; ++b) prepare_block(P, p * kPanel + 8 * b, e[b]);
      // Batch 1 (GEMV) and the last rows take the smaller tiles: at M = 1 each
      // panel streams through once with 2 accumulators (docs, "Batch 1").
      int64_t m = m0;
      for (; m + MR <= m1; m += MR) tile<MR, Widening>(P, m, p, e, xw(m));
      switch (m1 - m) {
        case 0: break;
        case 1: tile<1, Widening>(P, m, p, e, xw(m)); break;
        case 2: tile<2, Widening>(P, m, p, e, xw(m)); break;
        case 3: tile<3, Widening>(P, m, p, e, xw(m)); break;
        case 4: tile<4, Widening>(P, m, p, e, xw(m)); break;
        case 5: tile<5, Widening>(P, m, p, e, xw(m)); break;
        default: break;  // MR <= 6, so at most MR - 1 <= 5 rows remain
      }
    }
  }
}

static_assert(kTileRows <= 6 && kTileRowsWidening <= 6, "gemm_blocked handles remainders of up to 5 rows");

}  // namespace

void int8_gemm_avx2(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                    int64_t panel_end) {
  // X: (M, K) u8, W: packed (N, K) i8, Y: (M, N) u8 or f32
  if (problem.widening)
    gemm_blocked<true>(problem, m_begin, m_end, panel_begin, panel_end);
  else
    gemm_blocked<false>(problem, m_begin, m_end, panel_begin, panel_end);
}

// ---------------------------------------------------------------------------
// Dynamic quantization of f32 activations.

bool min_max_avx2(const float* X, int64_t M, int64_t K, int64_t ldx, float* min, float* max) {
  // X: (M, K) f32. Starting from 0 widens the range to include 0 (eq. 11).
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();  // x - x is NaN exactly when x is NaN or infinite
  float lo_s = 0.0f, hi_s = 0.0f;
  bool bad_s = false;
  for (int64_t m = 0; m < M; ++m) {
    const float* x = X + m * ldx;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 v = _mm256_loadu_ps(x + k);
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ));
    }
    for (; k < K; ++k) {
      const float v = x[k];
      bad_s = bad_s || !(v - v == 0.0f);
      lo_s = std::min(lo_s, v);
      hi_s = std::max(hi_s, v);
    }
  }
  if (bad_s || _mm256_movemask_ps(bad) != 0) return false;
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  for (int c = 0; c < 8; ++c) {
    lo_s = std::min(lo_s, l[c]);
    hi_s = std::max(hi_s, h[c]);
  }
  *min = lo_s;
  *max = hi_s;
  return true;
}

void quantize_u8_avx2(const float* X, int64_t M, int64_t K, int64_t ldx, ActivationQParams qparams, int32_t quant_max,
                      uint8_t* Xq, int64_t ldq) {
  // X: (M, K) f32, Xq: (M, K) u8. Same float operations, in the same order,
  // as quantize_activations_u8_reference: round(x / s) + z, then clamp.
  const __m256 scale = _mm256_set1_ps(qparams.scale);
  const __m256 zero_point = _mm256_set1_ps(static_cast<float>(qparams.zero_point));
  const __m256 top = _mm256_set1_ps(static_cast<float>(quant_max));
  const __m256i gather = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
  for (int64_t m = 0; m < M; ++m) {
    const float* x = X + m * ldx;
    uint8_t* q = Xq + m * ldq;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 v =
          _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + k), scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zero_point), _mm256_setzero_ps()), top);
      const __m256i i32 = _mm256_cvttps_epi32(v);
      const __m256i u16 = _mm256_packus_epi32(i32, i32);
      const __m256i u8 = _mm256_packus_epi16(u16, u16);  // dword 0: values 0-3, dword 4: values 4-7
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k),
                       _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(u8, gather)));
    }
    for (; k < K; ++k) {
      const float v = std::nearbyint(x[k] / qparams.scale) + static_cast<float>(qparams.zero_point);
      q[k] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), static_cast<float>(quant_max)));
    }
  }
}

}  // namespace tq::detail

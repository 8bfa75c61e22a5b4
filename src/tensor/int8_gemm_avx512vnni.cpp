// int8_gemm_avx512vnni.cpp — the AVX-512 VNNI int8 GEMM kernel (rung 4 of the
// ladder in docs/int8_kernel.md). Compiled with AVX-512 F/BW/VL/DQ/VNNI;
// int8_gemm.cpp calls it only when cpu_features().avx512_vnni.
//
// The packed panel layout [k_groups][16 ch][4 k] puts one k group of a whole
// 16-channel panel in 64 bytes: exactly one zmm register. vpdpbusd on zmm
// multiplies 16 x 4 u8 by 16 x 4 i8 and adds each channel's four products to
// its int32 lane (64 multiply-adds per instruction, in 32 bits: no
// saturation, so 8-bit activations are exact here at full speed).
//
// A tile is MR rows x NP panels: MR x NP zmm accumulators. Per k group: NP
// weight loads, MR 4-byte broadcasts of X (folded into vpdpbusd as an
// embedded {1to16} broadcast), MR x NP vpdpbusd. The last, partial group of a
// row and the last, partial panel of a layer are handled with masks: a
// masked byte load of X, masked stores of Y; the packed weights are zero
// there. The epilogue (bias fold, requantization with clamps, or the f32
// epilogue) is the shared one of int8_gemm_avx2_common.h on the two ymm
// halves of each accumulator.
#include "tensor/int8_gemm_avx2_common.h"

namespace tq::detail {

namespace {

constexpr int kTileRows = 8;    // MR (docs/int8_kernel.md, "AVX-512 VNNI": 8 x 2 against 6 x 4, 4 x 4, 8 x 3)
constexpr int kTilePanels = 2;  // NP: 8 x 2 = 16 accumulators of 32 registers
static_assert(kTilePanels <= 4, "the panel remainder switch handles up to 3 panels");

TQ_ALWAYS_INLINE __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

// The requantization of one 16-channel panel row in one zmm register: the
// two 8-channel BlockEpilogue halves side by side (their 64-bit "even" /
// "odd" lanes concatenate into the zmm lanes of channels 0 2 .. 14 and
// 1 3 .. 15), the same integer steps as multiply_by_quantized_multiplier8
// and requantize_row16 at twice the width, so the same bytes; the sign is
// put back with a masked negation (AVX-512 has no vpsignd) and the 16
// values, already clamped to 0..255, are narrowed by vpmovusdb.
struct ZmmEpilogue {
  bool scalar = true;  // some multiplier needs the scalar function: use requantize_row16
  __m512i bias, mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
};

TQ_ALWAYS_INLINE __m512i concat(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

TQ_ALWAYS_INLINE void prepare_zmm(const BlockEpilogue (&e)[kBlocks], ZmmEpilogue& z) {
  z.scalar = e[0].needs_scalar || e[1].needs_scalar;
  z.bias = concat(e[0].bias_eff, e[1].bias_eff);
  z.mult_even = concat(e[0].mult_even, e[1].mult_even);
  z.mult_odd = concat(e[0].mult_odd, e[1].mult_odd);
  z.shift_even = concat(e[0].shift_even, e[1].shift_even);
  z.shift_odd = concat(e[0].shift_odd, e[1].shift_odd);
  z.round_even = concat(e[0].round_even, e[1].round_even);
  z.round_odd = concat(e[0].round_odd, e[1].round_odd);
}

TQ_ALWAYS_INLINE __m128i requantize_zmm16(const ZmmEpilogue& z, __m512i acc, __m512i zy, __m512i lo, __m512i hi) {
  const __m512i v = _mm512_add_epi32(acc, z.bias);
  const __m512i magnitude = _mm512_abs_epi32(v);
  const __m512i product_even = _mm512_mul_epu32(magnitude, z.mult_even);
  const __m512i product_odd = _mm512_mul_epu32(_mm512_srli_epi64(magnitude, 32), z.mult_odd);
  const __m512i result_even = _mm512_srlv_epi64(_mm512_add_epi64(product_even, z.round_even), z.shift_even);
  const __m512i result_odd = _mm512_srlv_epi64(_mm512_add_epi64(product_odd, z.round_odd), z.shift_odd);
  __m512i r = _mm512_mask_blend_epi32(__mmask16(0xAAAA), result_even, _mm512_slli_epi64(result_odd, 32));
  const __m512i zero = _mm512_setzero_si512();
  r = _mm512_mask_sub_epi32(r, _mm512_cmplt_epi32_mask(v, zero), zero, r);
  return _mm512_cvtusepi32_epi8(_mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(r, lo), hi), zy));
}

// The k group g of one row of X as a dword; past K the bytes read as 0 and
// are not loaded (a masked load cannot fault on them).
TQ_ALWAYS_INLINE int32_t load_tail(const uint8_t* p, int64_t count) {
  return _mm_cvtsi128_si32(_mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << count) - 1), p));
}

// The last, partial k group (K % 4 != 0), added to the accumulators.
template <int MR, int NP>
TQ_ALWAYS_INLINE void accumulate_tail(const Int8GemmProblem& P, int64_t m, const int8_t* const (&panel)[NP],
                                      __m512i (&acc)[MR][NP]) {
  const uint8_t* x = P.X + m * P.ldx;
  const int64_t g = P.W->K() / 4;
  __m512i w[NP];
  for (int j = 0; j < NP; ++j) w[j] = _mm512_load_si512(panel[j] + g * kGroupBytes);
  for (int i = 0; i < MR; ++i) {
    const __m512i xb = _mm512_set1_epi32(load_tail(x + i * P.ldx + 4 * g, P.W->K() % 4));
    for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xb, w[j]);
  }
}

// The generic tile (the remainder rows, the GEMV tile). It keeps its
// accumulators in an array; GCC 12 allocates them to registers but, in a loop
// over k like this one, copies every accumulator to another register and back
// once per k group (about 30 extra instructions per 16 vpdpbusd). Fine for the
// rare tiles; the full tile below avoids it.
template <int MR, int NP>
TQ_ALWAYS_INLINE void accumulate(const Int8GemmProblem& P, int64_t m, const int8_t* const (&panel)[NP],
                                 __m512i (&acc)[MR][NP]) {
  const uint8_t* x = P.X + m * P.ldx;
  const int64_t ldx = P.ldx, K = P.W->K();
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_si512();
  const int64_t full_groups = K / 4;
  for (int64_t g = 0; g < full_groups; ++g) {
    __m512i w[NP];
    for (int j = 0; j < NP; ++j) w[j] = _mm512_load_si512(panel[j] + g * kGroupBytes);
    for (int i = 0; i < MR; ++i) {
      const __m512i xb = _mm512_set1_epi32(load_group(x + i * ldx + 4 * g));
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xb, w[j]);
    }
  }
  if (K % 4 != 0) accumulate_tail<MR, NP>(P, m, panel, acc);
}

// The full 8 x 2 tile, where all the time goes: the same sum with its sixteen
// accumulators as named variables, which GCC keeps in registers with no
// copies. The loop is then 2 weight loads, 8 broadcasts and 16 vpdpbusd per
// k group; measured 1.3-1.4x faster than the array form (docs/int8_kernel.md,
// "Blocking and prefetch").
#define TQ_DPBUSD_ROW(i)                                                     \
  {                                                                         \
    const __m512i xb = _mm512_set1_epi32(load_group(x + (i) * ldx + 4 * g)); \
    a##i##0 = _mm512_dpbusd_epi32(a##i##0, xb, w0);                          \
    a##i##1 = _mm512_dpbusd_epi32(a##i##1, xb, w1);                          \
  }
template <>
TQ_ALWAYS_INLINE void accumulate<8, 2>(const Int8GemmProblem& P, int64_t m, const int8_t* const (&panel)[2],
                                       __m512i (&acc)[8][2]) {
  const uint8_t* x = P.X + m * P.ldx;
  const int64_t ldx = P.ldx, K = P.W->K();
  __m512i a00 = _mm512_setzero_si512(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00,
          a40 = a00, a41 = a00, a50 = a00, a51 = a00, a60 = a00, a61 = a00, a70 = a00, a71 = a00;
  const int64_t full_groups = K / 4;
  for (int64_t g = 0; g < full_groups; ++g) {
    const __m512i w0 = _mm512_load_si512(panel[0] + g * kGroupBytes);
    const __m512i w1 = _mm512_load_si512(panel[1] + g * kGroupBytes);
    TQ_DPBUSD_ROW(0) TQ_DPBUSD_ROW(1) TQ_DPBUSD_ROW(2) TQ_DPBUSD_ROW(3)
    TQ_DPBUSD_ROW(4) TQ_DPBUSD_ROW(5) TQ_DPBUSD_ROW(6) TQ_DPBUSD_ROW(7)
  }
  const __m512i named[8][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31},
                               {a40, a41}, {a50, a51}, {a60, a61}, {a70, a71}};
  std::memcpy(acc, named, sizeof named);
  if (K % 4 != 0) accumulate_tail<8, 2>(P, m, panel, acc);
}
#undef TQ_DPBUSD_ROW

// Rows [m, m + MR) x panels [p, p + NP): accumulate, then the epilogue.
template <int MR, int NP>
void zmm_tile(const Int8GemmProblem& P, int64_t m, int64_t p, const BlockEpilogue (*e)[kBlocks],
              const ZmmEpilogue* z) {
  const PackedWeightsI8& W = *P.W;
  const int8_t* panel[NP];
  for (int j = 0; j < NP; ++j) panel[j] = W.panels() + (p + j) * W.k_groups() * kGroupBytes;
  __m512i acc[MR][NP];
  accumulate<MR, NP>(P, m, panel, acc);
  // The clamp constants and the output pointers in registers, set once per
  // tile: the byte stores below may alias P, so the compiler would otherwise
  // reload and broadcast them for every row (a third of the epilogue's
  // instructions where K is small, as in a first layer).
  const __m512i zy = _mm512_set1_epi32(P.zy);
  const __m512i y_lo = _mm512_set1_epi32(P.y_min - P.zy), y_hi = _mm512_set1_epi32(P.y_max - P.zy);
  const bool float_output = P.float_output;
  const int64_t ldy = P.ldy;
  uint8_t* const y_u8 = float_output ? nullptr : P.Y_u8 + m * ldy + p * kPanel;
  for (int j = 0; j < NP; ++j) {
    const int64_t valid = e[j][0].valid + e[j][1].valid;
    const __mmask16 store = first_lanes(valid);
    const bool vector_epilogue = !z[j].scalar;
    for (int i = 0; i < MR; ++i) {
      const __m256i lo = _mm512_castsi512_si256(acc[i][j]), hi = _mm512_extracti64x4_epi64(acc[i][j], 1);
      if (float_output) {
        const __m512 y = _mm512_insertf32x8(_mm512_castps256_ps512(dequantize8(e[j][0], lo)), dequantize8(e[j][1], hi), 1);
        _mm512_mask_storeu_ps(P.Y_f32 + (m + i) * ldy + (p + j) * kPanel, store, y);
      } else if (vector_epilogue) {
        _mm_mask_storeu_epi8(y_u8 + i * ldy + j * kPanel, store, requantize_zmm16(z[j], acc[i][j], zy, y_lo, y_hi));
      } else {
        _mm_mask_storeu_epi8(y_u8 + i * ldy + j * kPanel, store, requantize_row16(P, e[j], lo, hi));
      }
    }
  }
}

// All row tiles of rows [m0, m1) for NP panels from p.
template <int NP>
void row_tiles(const Int8GemmProblem& P, int64_t m0, int64_t m1, int64_t p, const BlockEpilogue (*e)[kBlocks],
               const ZmmEpilogue* z) {
  int64_t m = m0;
  for (; m + kTileRows <= m1; m += kTileRows) zmm_tile<kTileRows, NP>(P, m, p, e, z);
  static_assert(kTileRows <= 8, "the remainder switch handles up to 7 rows");
  switch (m1 - m) {
    case 1: zmm_tile<1, NP>(P, m, p, e, z); break;
    case 2: zmm_tile<2, NP>(P, m, p, e, z); break;
    case 3: zmm_tile<3, NP>(P, m, p, e, z); break;
    case 4: zmm_tile<4, NP>(P, m, p, e, z); break;
    case 5: zmm_tile<5, NP>(P, m, p, e, z); break;
    case 6: zmm_tile<6, NP>(P, m, p, e, z); break;
    case 7: zmm_tile<7, NP>(P, m, p, e, z); break;
    default: break;
  }
}

}  // namespace

void int8_gemm_avx512vnni(const Int8GemmProblem& P, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                          int64_t panel_end) {
  // X: (M, K) u8, W: packed (N, K) i8, Y: (M, N) u8 or f32
  // Rows per block: their X stays in L2 while every panel passes over it.
  const int64_t row_block = max64(kTileRows, kRowBlockBytes / P.W->K() / kTileRows * kTileRows);
  // At batch 1 (GEMV) wider tiles give more independent accumulators.
  constexpr int kGemvPanels = 4;
  BlockEpilogue e[kGemvPanels > kTilePanels ? kGemvPanels : kTilePanels][kBlocks];
  ZmmEpilogue z[kGemvPanels > kTilePanels ? kGemvPanels : kTilePanels];
  for (int64_t m0 = m_begin; m0 < m_end; m0 += row_block) {
    const int64_t m1 = min64(m_end, m0 + row_block);
    int64_t p = panel_begin;
    if (m1 - m0 == 1) {
      for (; p + kGemvPanels <= panel_end; p += kGemvPanels) {
        for (int j = 0; j < kGemvPanels; ++j) {
          for (int b = 0; b < kBlocks; ++b) prepare_block(P, (p + j) * kPanel + 8 * b, e[j][b]);
          if (!P.float_output) prepare_zmm(e[j], z[j]);
        }
        zmm_tile<1, kGemvPanels>(P, m0, p, e, z);
      }
    }
    for (; p < panel_end; p += kTilePanels) {
      const int np = static_cast<int>(min64(kTilePanels, panel_end - p));
      for (int j = 0; j < np; ++j) {
        for (int b = 0; b < kBlocks; ++b) prepare_block(P, (p + j) * kPanel + 8 * b, e[j][b]);
        if (!P.float_output) prepare_zmm(e[j], z[j]);
      }
      switch (np) {
        case 1: row_tiles<1>(P, m0, m1, p, e, z); break;
        case 2: row_tiles<kTilePanels >= 2 ? 2 : 1>(P, m0, m1, p, e, z); break;
        case 3: row_tiles<kTilePanels >= 3 ? 3 : 1>(P, m0, m1, p, e, z); break;
        default: row_tiles<kTilePanels>(P, m0, m1, p, e, z); break;
      }
    }
  }
}

}  // namespace tq::detail

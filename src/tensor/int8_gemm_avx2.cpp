// int8_gemm_avx2.cpp — the AVX2 int8 GEMM kernels (rung 2 of the ladder in
// docs/int8_kernel.md). This file alone is compiled with -mavx2 -mfma;
// int8_gemm.cpp calls it only when the CPU has AVX2 (cpu_features.h).
//
// A tile is MR rows of X times one 16-channel panel of packed weights:
// MR x 2 ymm accumulators of 8 int32 each, K walked in groups of 4.
//   maddubs path (exact when eq. 9 holds), per row, group and 8 channels:
//     vpmaddubsw  x(4 u8, broadcast) * w(8 ch x 4 k i8) -> 16 int16 pair sums
//     vpmaddwd    with ones                             -> 8 int32 (sums of 4)
//     vpaddd      into the accumulator
//   widening path (always exact): X widened to i16 pairs once per block of
//     rows, W widened to i16 in the loop (amortized over 4 rows), vpmaddwd.
// The epilogue and the blocked loop are shared with the other x86 paths
// (int8_gemm_avx2_common.h).
#include "tensor/int8_gemm_avx2_common.h"

namespace tq::detail {

namespace {

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

struct Maddubs {
  static constexpr int kRows = 4;  // MR: 4x16 beat 3x16, 5x16, 6x16 (docs)
  static constexpr bool kWidensRows = false;
  static int64_t row_bytes(const PackedWeightsI8& W) { return W.K(); }
  static int32_t* widen(const Int8GemmProblem&, int64_t, int64_t) { return nullptr; }

  template <int MR>
  TQ_ALWAYS_INLINE static void group(const int32_t (&xg)[MR], const int8_t* wg, __m256i (&acc)[MR][kBlocks]) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + 32));
    for (int i = 0; i < MR; ++i) {
      const __m256i x = _mm256_set1_epi32(xg[i]);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones));
    }
  }

  template <int MR>
  TQ_ALWAYS_INLINE static void accumulate(const Int8GemmProblem& P, int64_t m, const int32_t*, const int8_t* w,
                                          __m256i (&acc)[MR][kBlocks]) {
    if constexpr (MR == 4) {
      accumulate_ymm_4x2(P, m, w, acc, [](__m256i a, __m256i x, __m256i w) { return _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1))); });
      return;
    }
    const uint8_t* x = P.X + m * P.ldx;
    const int64_t ldx = P.ldx, K = P.W->K();
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    const int64_t full_groups = K / 4;
    int32_t xg[MR];
    for (int64_t g = 0; g < full_groups; ++g) {
      for (int i = 0; i < MR; ++i) xg[i] = load_group(x + i * ldx + 4 * g);
      group<MR>(xg, w + g * kGroupBytes, acc);
    }
    if (K % 4 != 0) {
      for (int i = 0; i < MR; ++i) xg[i] = load_tail_group(x + i * ldx + 4 * full_groups, K % 4);
      group<MR>(xg, w + full_groups * kGroupBytes, acc);
    }
  }
};

struct Widening {
  static constexpr int kRows = 4;  // MR: 4 beat 2 and 3
  static constexpr bool kWidensRows = true;
  static int64_t row_bytes(const PackedWeightsI8& W) { return 2 * 4 * W.k_groups(); }

  // X pre-widened once per row block: per row and k group two dwords, the i16
  // pairs (x0, x1) and (x2, x3), so that the inner loop broadcasts them
  // straight from memory. One buffer per thread: threads split the rows.
  static int32_t* widen(const Int8GemmProblem& P, int64_t m0, int64_t rows) {
    thread_local CacheAlignedVector<int32_t> widened;
    const int64_t K = P.W->K(), k_groups = P.W->k_groups();
    if (widened.size() < static_cast<size_t>(rows * 2 * k_groups)) widened.resize(static_cast<size_t>(rows * 2 * k_groups));
    for (int64_t m = 0; m < rows; ++m) {
      const uint8_t* x = P.X + (m0 + m) * P.ldx;
      int32_t* o = widened.data() + m * k_groups * 2;
      for (int64_t g = 0; g < k_groups; ++g) {
        const int32_t group = 4 * g + 4 <= K ? load_group(x + 4 * g) : load_tail_group(x + 4 * g, K - 4 * g);
        const uint32_t u = static_cast<uint32_t>(group);
        o[2 * g] = static_cast<int32_t>((u & 0xFFu) | ((u << 8) & 0xFF0000u));              // x0 | x1 << 16
        o[2 * g + 1] = static_cast<int32_t>(((u >> 16) & 0xFFu) | ((u >> 8) & 0xFF0000u));  // x2 | x3 << 16
      }
    }
    return widened.data();
  }

  template <int MR>
  TQ_ALWAYS_INLINE static void accumulate(const Int8GemmProblem& P, int64_t, const int32_t* xw, const int8_t* w,
                                          __m256i (&acc)[MR][kBlocks]) {
    const int64_t k_groups = P.W->k_groups(), xw_stride = 2 * k_groups;
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
};

}  // namespace

void int8_gemm_avx2(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                    int64_t panel_end) {
  // X: (M, K) u8, W: packed (N, K) i8, Y: (M, N) u8 or f32
  if (problem.widening)
    ymm_gemm_blocked<Widening>(problem, m_begin, m_end, panel_begin, panel_end);
  else
    ymm_gemm_blocked<Maddubs>(problem, m_begin, m_end, panel_begin, panel_end);
}

}  // namespace tq::detail

// int8_gemm_avxvnni.cpp — the AVX-VNNI int8 GEMM kernel (rung 3 of the ladder
// in docs/int8_kernel.md): the AVX2 maddubs tile with its three instructions
// per group (vpmaddubsw, vpmaddwd, vpaddd) replaced by one VEX-encoded
// vpdpbusd, which multiplies 4 u8 by 4 i8 and adds the four products to the
// int32 lane in 32 bits: no 16-bit intermediate, so no saturation, and
// 8-bit activations (0..255) are exact on this path at full speed.
// Compiled with -mavx2 -mfma -mavxvnni; int8_gemm.cpp calls it only when
// cpu_features().avx_vnni.
#include "tensor/int8_gemm_avx2_common.h"

namespace tq::detail {

namespace {

struct DpbusdYmm {
  static constexpr int kRows = 4;  // MR: 4 x 16 channels = 8 accumulators
  static constexpr bool kWidensRows = false;
  static int64_t row_bytes(const PackedWeightsI8& W) { return W.K(); }
  static int32_t* widen(const Int8GemmProblem&, int64_t, int64_t) { return nullptr; }

  template <int MR>
  TQ_ALWAYS_INLINE static void group(const int32_t (&xg)[MR], const int8_t* wg, __m256i (&acc)[MR][kBlocks]) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + 32));
    for (int i = 0; i < MR; ++i) {
      const __m256i x = _mm256_set1_epi32(xg[i]);
      acc[i][0] = _mm256_dpbusd_avx_epi32(acc[i][0], x, w0);
      acc[i][1] = _mm256_dpbusd_avx_epi32(acc[i][1], x, w1);
    }
  }

  template <int MR>
  TQ_ALWAYS_INLINE static void accumulate(const Int8GemmProblem& P, int64_t m, const int32_t*, const int8_t* w,
                                          __m256i (&acc)[MR][kBlocks]) {
    if constexpr (MR == 4) {
      accumulate_ymm_4x2(P, m, w, acc, [](__m256i a, __m256i x, __m256i w) { return _mm256_dpbusd_avx_epi32(a, x, w); });
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

}  // namespace

void int8_gemm_avxvnni(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                       int64_t panel_end) {
  // X: (M, K) u8, W: packed (N, K) i8, Y: (M, N) u8 or f32
  ymm_gemm_blocked<DpbusdYmm>(problem, m_begin, m_end, panel_begin, panel_end);
}

}  // namespace tq::detail

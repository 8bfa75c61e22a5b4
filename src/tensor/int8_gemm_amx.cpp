// int8_gemm_amx.cpp — the AMX-INT8 int8 GEMM kernel (rung 5 of the ladder in
// docs/int8_kernel.md). Compiled with AVX-512 and -mamx-tile -mamx-int8;
// int8_gemm.cpp calls it only when cpu_features().amx_permitted (the CPU has
// AMX-TILE and AMX-INT8, the OS enables tile state in XCR0, and Linux granted
// this process the tile data permission, requested once by cpu_features()).
//
// AMX adds eight tile registers tmm0..tmm7 of up to 16 rows x 64 bytes and
// one instruction that matters here, tdpbusd C, A, B:
//   C[m][n] (int32) += sum_{g < 16} sum_{j < 4} A[m][4g + j] (u8) * B[g][4n + j] (i8)
// for a 16 x 16 int32 C, a 16 row x 64 byte A (16 rows of X, 64 k values)
// and a 16 row x 64 byte B (16 k groups x 16 channels x 4 k): 16 x 16 x 64
// = 16384 multiply-adds in one instruction, accumulated in 32 bits (exact,
// like vpdpbusd). B's layout is exactly the packed panel layout
// [k group][16 ch][4 k]; PackedWeightsI8 keeps a copy with the k groups
// padded to whole tiles (amx_panels(), packed once, when AMX is usable).
//
// The blocking: 2 x 2 C tiles (tmm0..3) = 32 rows x 32 channels, two A tiles
// (tmm4, 5) and two B tiles (tmm6, 7) per step of 64 k. A tiles are loaded
// straight from X; where a tile would reach past the last row or past K, it
// is first copied into a zero-padded 16 x 64 buffer, so nothing outside X is
// read and the padding adds zero products. The C tiles are stored to memory
// and go through the shared epilogue (int8_gemm_avx2_common.h) row by row;
// rows and channels past the edges are not stored.
//
// This machine has no AMX: this file is compiled and its tests are written,
// but they run only on a CPU with AMX (Intel Xeon, Sapphire Rapids and later).
#include "tensor/int8_gemm_avx2_common.h"

namespace tq::detail {

namespace {

constexpr int64_t kTileRows = 16;     // rows of an A or C tile
constexpr int64_t kTileKBytes = 64;   // k values in an A tile row (16 groups of 4)
constexpr int64_t kTileBytes = 1024;  // 16 rows x 64 bytes

// The 64-byte tile configuration of palette 1 (Intel SDM, LDTILECFG).
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of tmm0..tmm15
  uint8_t rows[16] = {};    // rows of tmm0..tmm15
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// Every tile used is 16 rows x 64 bytes: C as 16 x 16 int32, A as 16 rows x
// 64 u8, B as 16 k groups x 64 i8.
void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

// The A tile of rows [m, m + 16) and k bytes [k0, k0 + 64) of X: a pointer
// and stride into X itself when the whole tile lies inside it, else a
// zero-padded copy in `buffer`.
const uint8_t* a_tile(const Int8GemmProblem& P, int64_t m, int64_t k0, uint8_t* buffer, int64_t& stride) {
  const int64_t K = P.W->K();
  if (m + kTileRows <= P.M && k0 + kTileKBytes <= K) {
    stride = P.ldx;
    return P.X + m * P.ldx + k0;
  }
  std::memset(buffer, 0, kTileBytes);
  const int64_t rows = P.M - m < 0 ? 0 : min64(kTileRows, P.M - m);
  const int64_t bytes = min64(kTileKBytes, K - k0);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(buffer + r * kTileKBytes, P.X + (m + r) * P.ldx + k0, static_cast<size_t>(bytes));
  stride = kTileKBytes;
  return buffer;
}

// The epilogue of one stored C tile: rows [m, min(m + 16, m_end)) of panel p.
void store_tile(const Int8GemmProblem& P, const int32_t* c, int64_t m, int64_t m_end, int64_t p,
                const BlockEpilogue (&e)[kBlocks]) {
  const int64_t rows = min64(kTileRows, m_end - m);
  const int64_t valid = e[0].valid + e[1].valid;
  const __mmask16 store = valid >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
  for (int64_t i = 0; i < rows; ++i) {
    const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(c + i * 16));
    const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(c + i * 16 + 8));
    if (P.float_output) {
      const __m512 y = _mm512_insertf32x8(_mm512_castps256_ps512(dequantize8(e[0], lo)), dequantize8(e[1], hi), 1);
      _mm512_mask_storeu_ps(P.Y_f32 + (m + i) * P.ldy + p * kPanel, store, y);
    } else {
      _mm_mask_storeu_epi8(P.Y_u8 + (m + i) * P.ldy + p * kPanel, store, requantize_row16(P, e, lo, hi));
    }
  }
}

}  // namespace

void int8_gemm_amx(const Int8GemmProblem& P, int64_t m_begin, int64_t m_end, int64_t panel_begin, int64_t panel_end) {
  // X: (M, K) u8, W: packed (N, K) i8, Y: (M, N) u8 or f32
  const PackedWeightsI8& W = *P.W;
  const int64_t k_tiles = W.amx_k_tiles();
  alignas(64) uint8_t a_buffer[2][kTileBytes];
  alignas(64) int32_t c[2][2][kTileRows * 16];
  BlockEpilogue e[2][kBlocks];
  configure_tiles();
  for (int64_t m = m_begin; m < m_end; m += 2 * kTileRows) {
    const bool second_rows = m + kTileRows < m_end;  // rows m + 16 .. exist in this task
    for (int64_t p = panel_begin; p < panel_end; p += 2) {
      const bool second_panel = p + 1 < panel_end;
      // Without a second panel, B1 repeats panel p; its results are not stored.
      const int8_t* b0 = W.amx_panels() + p * k_tiles * kTileBytes;
      const int8_t* b1 = second_panel ? b0 + k_tiles * kTileBytes : b0;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t t = 0; t < k_tiles; ++t) {
        int64_t stride0 = 0, stride1 = 0;
        const uint8_t* a0 = a_tile(P, m, t * kTileKBytes, a_buffer[0], stride0);
        const uint8_t* a1 = a_tile(P, m + kTileRows, t * kTileKBytes, a_buffer[1], stride1);
        _tile_loadd(4, a0, stride0);
        _tile_loadd(5, a1, stride1);
        _tile_loadd(6, b0 + t * kTileBytes, 64);
        _tile_loadd(7, b1 + t * kTileBytes, 64);
        _tile_dpbusd(0, 4, 6);  // rows m..,      panel p
        _tile_dpbusd(1, 4, 7);  // rows m..,      panel p + 1
        _tile_dpbusd(2, 5, 6);  // rows m + 16.., panel p
        _tile_dpbusd(3, 5, 7);  // rows m + 16.., panel p + 1
      }
      _tile_stored(0, c[0][0], 64);
      _tile_stored(1, c[0][1], 64);
      _tile_stored(2, c[1][0], 64);
      _tile_stored(3, c[1][1], 64);
      for (int j = 0; j < (second_panel ? 2 : 1); ++j) {
        for (int b = 0; b < kBlocks; ++b) prepare_block(P, (p + j) * kPanel + 8 * b, e[j][b]);
        store_tile(P, c[0][j], m, m_end, p + j, e[j]);
        if (second_rows) store_tile(P, c[1][j], m + kTileRows, m_end, p + j, e[j]);
      }
    }
  }
  _tile_release();
}

}  // namespace tq::detail

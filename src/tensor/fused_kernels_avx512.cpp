// AVX-512 builds of the fused batch-norm + ReLU + 2x2 max-pool loops
// (pool_kernels.h): the plain loops of fused_loops.h in intrinsics, and the
// forward's pooling (even and odd columns of two rows are the four taps of
// sixteen windows). Compiled with
// AVX-512 F/BW/VL/DQ; called only when cpu_features() reports them. The same
// bits as the baseline code: the same operations in the same order, with no
// contraction of a multiply and an add into one FMA.
#include "tensor/x86_intrinsics.h"

#include <algorithm>
#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "tensor/fused_loops.h"  // the declarations

namespace tq::detail {

// The loops of fused_loops.h with their sixteen partial sums held in one
// register (lane j sums the elements j, j + 16, ...), the tail added to lane
// 0 and the lanes added in order: the baseline's operations, one for one.
// (Left to the compiler, the sixteen-element arrays become far slower code.)
namespace {

inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1); }

inline float add_lanes_in_order(const float (&lanes)[16]) {
  float s = 0.f;
  for (float v : lanes) s += v;
  return s;
}


void shifted_sums_avx512(const float* p, int64_t n, float shift, float& sum, float& sum_sq) {
  const __m512 vs = _mm512_set1_ps(shift);
  __m512 a = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + i), vs);
    a = _mm512_add_ps(a, d);
    a2 = _mm512_add_ps(a2, _mm512_mul_ps(d, d));
  }
  alignas(64) float la[16], la2[16];
  _mm512_store_ps(la, a);
  _mm512_store_ps(la2, a2);
  for (; i < n; ++i) {
    const float d = p[i] - shift;
    la[0] += d;
    la2[0] += d * d;
  }
  sum = add_lanes_in_order(la);
  sum_sq = add_lanes_in_order(la2);
}

void pooled_gradient_sums_avx512(const float* g, const int32_t* at, const float* y_at, int64_t n, float m, float& s,
                                 float& t) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __mmask16 open = _mm512_cmpge_epi32_mask(_mm512_loadu_si512(at + i), _mm512_setzero_si512());
    const __m512 dz = _mm512_maskz_loadu_ps(open, g + i);
    a = _mm512_add_ps(a, dz);
    b = _mm512_add_ps(b, _mm512_mul_ps(dz, _mm512_sub_ps(_mm512_loadu_ps(y_at + i), vm)));
  }
  alignas(64) float la[16], lb[16];
  _mm512_store_ps(la, a);
  _mm512_store_ps(lb, b);
  for (; i < n; ++i) {
    const float dz = at[i] >= 0 ? g[i] : 0.f;
    la[0] += dz;
    lb[0] += dz * (y_at[i] - m);
  }
  s = add_lanes_in_order(la);
  t = add_lanes_in_order(lb);
}

float batch_norm_backward_plane_avx512(const float* y, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* g,
                                       const int32_t* at, float m, float k, float a, float b, float* dy,
                                       bool want_sum) {
  const int64_t hw = H * W;
  const __m512 vm = _mm512_set1_ps(m), vk = _mm512_set1_ps(k), va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  // The pass over the windows below reads the plane's at and g: they come
  // from memory, a few lines each, too short a stream for the hardware
  // prefetcher, so ask for them now, while the first pass runs.
  for (int64_t i = 0; i < OH * OW; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(at + i), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(g + i), _MM_HINT_T0);
  }
  // The whole plane as (y - m) a + b, in one stream over y (from memory: the
  // prefetch runs 4 KiB ahead).
  for (int64_t i = 0; i < hw; i += 16) {
    const __mmask16 live = first_lanes(hw - i);
    _mm_prefetch(reinterpret_cast<const char*>(y + i + 1024), _MM_HINT_T0);
    const __m512 v = _mm512_maskz_loadu_ps(live, y + i);
    _mm512_mask_storeu_ps(dy + i, live, _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vm), va), vb));
  }
  // Then the windows' rows again, now in cache: sixteen columns c0 .. c0 + 15
  // lie in the eight windows c0 / 2 .. c0 / 2 + 7, so lane j takes window
  // j / 2's g and at, and the lanes that are their window's `at` are
  // rewritten with the k dz term: a masked store, where a branch per window
  // would be mispredicted about half the time (about half are closed).
  const __m512i pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t r = 0; r < 2 * OH; ++r) {
    const int64_t o = (r / 2) * OW;
    for (int64_t c0 = 0; c0 < 2 * OW; c0 += 16) {
      const __mmask16 windows = first_lanes(OW - c0 / 2 < 8 ? OW - c0 / 2 : 8);
      const __m512i where = _mm512_permutexvar_epi32(pairs, _mm512_maskz_loadu_epi32(windows, at + o + c0 / 2));
      const __m512i place = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(r * W + c0)), lane);
      const __mmask16 hit = _mm512_mask_cmpeq_epi32_mask(first_lanes(2 * OW - c0), where, place);
      if (hit == 0) continue;
      const __m512 gv = _mm512_permutexvar_ps(pairs, _mm512_maskz_loadu_ps(windows, g + o + c0 / 2));
      const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(hit, y + r * W + c0), vm), va);
      _mm512_mask_storeu_ps(dy + r * W + c0, hit, _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(vk, gv), t), vb));
    }
  }
  if (!want_sum) return 0.f;
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= hw; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(dy + i));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc);
  for (; i < hw; ++i) lanes[0] += dy[i];
  return add_lanes_in_order(lanes);
}

// One plane (H, W) of y -> (OH, OW) outputs: out = max of relu(y a + b) over
// each 2x2 window (the first maximum in the order (0,0), (0,1), (1,0), (1,1)),
// at = its flat index in the plane or -1 where out is 0, y_at = y there.
void batch_norm_relu_max_pool2x2_plane_avx512(const float* y, int64_t W, int64_t OH, int64_t OW, float a, float b,
                                              float* out, int32_t* at, float* y_at) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), zero = _mm512_setzero_ps();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i none = _mm512_set1_epi32(-1);
  // The three outputs are written a few lines each: fetch them for writing
  // now, so the stores below do not wait on memory one line at a time.
  for (int64_t i = 0; i < OH * OW; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(out + i), _MM_HINT_ET0);
    _mm_prefetch(reinterpret_cast<const char*>(at + i), _MM_HINT_ET0);
    _mm_prefetch(reinterpret_cast<const char*>(y_at + i), _MM_HINT_ET0);
  }
  for (int64_t oh = 0; oh < OH; ++oh) {
    const int64_t row0 = 2 * oh * W;
    const float* y0 = y + row0;
    const float* y1 = y0 + W;
    for (int64_t ow = 0; ow < OW; ow += 16) {
      const int64_t n = OW - ow < 16 ? OW - ow : 16;  // outputs in this block
      const int64_t cols = 2 * n;                      // input columns they read
      const __mmask16 lo = cols >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << cols) - 1);
      const __mmask16 hi = cols >= 32 ? __mmask16(0xFFFF) : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1)
                                                                        : __mmask16(0);
      const __mmask16 valid = n == 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
      const int64_t c = 2 * ow;
      // y comes from memory: fetch the rows of the window row two ahead.
      _mm_prefetch(reinterpret_cast<const char*>(y0 + c + 4 * W), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(y1 + c + 4 * W), _MM_HINT_T0);
      const __m512 a0 = _mm512_maskz_loadu_ps(lo, y0 + c), b0 = _mm512_maskz_loadu_ps(hi, y0 + c + 16);
      const __m512 a1 = _mm512_maskz_loadu_ps(lo, y1 + c), b1 = _mm512_maskz_loadu_ps(hi, y1 + c + 16);
      // The four taps' y, in the order the first maximum is searched.
      const __m512 ys[4] = {_mm512_permutex2var_ps(a0, even, b0), _mm512_permutex2var_ps(a0, odd, b0),
                            _mm512_permutex2var_ps(a1, even, b1), _mm512_permutex2var_ps(a1, odd, b1)};
      const __m512i first = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(row0 + c)), even);
      const int32_t offsets[4] = {0, 1, static_cast<int32_t>(W), static_cast<int32_t>(W + 1)};
      __m512 best = zero, best_y = zero;
      __m512i best_at = first;
      for (int t = 0; t < 4; ++t) {
        // relu(y a + b): max_ps(z, 0) is z > 0 ? z : 0, as kernels::relu.
        const __m512 r = _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(ys[t], va), vb), zero);
        if (t == 0) {
          best = r, best_y = ys[0];
          continue;
        }
        // No NaN survives the ReLU, so "not <= best" is "> best".
        const __mmask16 take = _mm512_cmp_ps_mask(r, best, _CMP_GT_OQ);
        best = _mm512_mask_mov_ps(best, take, r);
        best_y = _mm512_mask_mov_ps(best_y, take, ys[t]);
        best_at = _mm512_mask_mov_epi32(best_at, take, _mm512_add_epi32(first, _mm512_set1_epi32(offsets[t])));
      }
      const __mmask16 open = _mm512_cmp_ps_mask(best, zero, _CMP_GT_OQ);
      _mm512_mask_storeu_ps(out + oh * OW + ow, valid, best);
      _mm512_mask_storeu_epi32(at + oh * OW + ow, valid, _mm512_mask_mov_epi32(none, open, best_at));
      _mm512_mask_storeu_ps(y_at + oh * OW + ow, valid, _mm512_maskz_mov_ps(open, best_y));
    }
  }
}

// conv_kernels.cpp's col2im_assign_3x3_s1_p1 sixteen columns at a time: the
// taps outside the image are loaded as +0, which leaves every sum as it is
// (a sum that starts at +0 is never -0), so the same bits.
void col2im_assign_3x3_s1_p1_avx512(const float* col, int64_t channels, int64_t H, int64_t W, float* dx) {
  const int64_t hw = H * W;
  for (int64_t c = 0; c < channels; ++c) {
    const float* cc = col + c * 9 * hw;
    for (int64_t ih = 0; ih < H; ++ih) {
      float* d = dx + c * hw + ih * W;
      for (int64_t w0 = 0; w0 < W; w0 += 16) {
        const __mmask16 all = first_lanes(W - w0);
        const __mmask16 left = first_lanes(W - 1 - w0);                       // tap kw = 0: iw + 1 < W
        const __mmask16 right = w0 == 0 ? __mmask16(all & ~__mmask16(1)) : all;  // tap kw = 2: iw >= 1
        __m512 acc = _mm512_setzero_ps();
        for (int64_t kh = 0; kh < 3; ++kh) {
          const int64_t oh = ih + 1 - kh;
          if (oh < 0 || oh >= H) continue;
          const float* r0 = cc + kh * 3 * hw + oh * W + w0;
          acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(left, r0 + 1));
          acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(all, r0 + hw));
          acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(right, r0 + 2 * hw - 1));
        }
        _mm512_mask_storeu_ps(d + w0, all, acc);
      }
    }
  }
}

// The range [lo, hi) of columns, clipped to the sixteen lanes from ow0.
inline __mmask16 lanes_between(int64_t lo, int64_t hi, int64_t ow0) {
  const int64_t a = std::clamp<int64_t>(lo - ow0, 0, 16), b = std::clamp<int64_t>(hi - ow0, 0, 16);
  if (a >= b) return 0;
  return static_cast<__mmask16>(((1u << b) - 1u) & ~((1u << a) - 1u));
}

// Bit i of m at bit 2i: which of 32 consecutive floats a stride-2 window reads.
inline uint32_t spread_to_even_bits(uint32_t m) {
  m = (m | (m << 8)) & 0x00FF00FFu;
  m = (m | (m << 4)) & 0x0F0F0F0Fu;
  m = (m | (m << 2)) & 0x33333333u;
  m = (m | (m << 1)) & 0x55555555u;
  return m;
}

// Lane i of the taps kw of one input row: column (ow0 + i) stride_w - pad_w +
// kw dil_w, where `m` says the tap lies inside the image, else 0.
inline __m512 tap_row(const float* row, int64_t first, int64_t stride_w, __mmask16 m) {
  if (stride_w == 1) return _mm512_maskz_loadu_ps(m, row + first);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const uint32_t m32 = spread_to_even_bits(m);
  const __m512 lo = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m32), row + first);
  const __m512 hi = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m32 >> 16), row + first + 16);
  return _mm512_permutex2var_ps(lo, even, hi);
}

// Each lane holds one output; its taps are added in the order (kh, kw) as the
// baseline does, a tap outside the image leaving the lane as it is (a masked
// add, not a zero: an infinite weight times 0 would be NaN). Four output rows at a time
// where all their taps' rows are inside the image: four independent chains
// of adds instead of one. The epilogue is batch_norm_apply's arithmetic: no
// contraction into an FMA, and max / min with the value second, so NaN passes
// and -0 stays -0 as in std::max / min.
void depthwise_plane_forward_avx512(const float* x, const float* w, float* y, int64_t H, int64_t W, int64_t OH,
                                    int64_t OW, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                                    int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, const int64_t* ow_lo,
                                    const int64_t* ow_hi, const ChannelFinish& f) {
  constexpr int kRows = 4;
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.f);
  const __m512 bias = _mm512_set1_ps(f.bias), scale = _mm512_set1_ps(f.scale), shift = _mm512_set1_ps(f.shift);
  const auto finish = [&](__m512 acc) {
    if (f.has_bias) acc = _mm512_add_ps(acc, bias);
    if (f.affine) acc = _mm512_add_ps(_mm512_mul_ps(acc, scale), shift);
    if (f.relu6) acc = _mm512_min_ps(six, _mm512_max_ps(zero, acc));
    return acc;
  };
  // Output row oh reads input rows oh stride_h - pad_h + kh dil_h, kh < KH.
  const auto rows_inside = [&](int64_t oh) {
    const int64_t top = oh * stride_h - pad_h;
    return top >= 0 && top + (KH - 1) * dil_h < H;
  };
  __mmask16 tap[32];
  for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
    const __mmask16 out = first_lanes(OW - ow0);
    for (int64_t kw = 0; kw < KW; ++kw) tap[kw] = lanes_between(ow_lo[kw], ow_hi[kw], ow0);
    int64_t oh = 0;
    while (oh < OH) {
      if (oh + kRows <= OH && rows_inside(oh) && rows_inside(oh + kRows - 1)) {
        __m512 acc[kRows] = {zero, zero, zero, zero};
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            const __mmask16 m = tap[kw];
            if (!m) continue;
            const __m512 wv = _mm512_set1_ps(w[kh * KW + kw]);
            const int64_t first = ow0 * stride_w - pad_w + kw * dil_w;
            for (int r = 0; r < kRows; ++r) {
              const float* row = x + ((oh + r) * stride_h - pad_h + kh * dil_h) * W;
              acc[r] = _mm512_mask_add_ps(acc[r], m, acc[r], _mm512_mul_ps(wv, tap_row(row, first, stride_w, m)));
            }
          }
        for (int r = 0; r < kRows; ++r) _mm512_mask_storeu_ps(y + (oh + r) * OW + ow0, out, finish(acc[r]));
        oh += kRows;
        continue;
      }
      __m512 acc = zero;
      for (int64_t kh = 0; kh < KH; ++kh) {
        const int64_t ih = oh * stride_h - pad_h + kh * dil_h;
        if (ih < 0 || ih >= H) continue;
        for (int64_t kw = 0; kw < KW; ++kw) {
          const __mmask16 m = tap[kw];
          if (!m) continue;
          const int64_t first = ow0 * stride_w - pad_w + kw * dil_w;
          acc = _mm512_mask_add_ps(acc, m, acc,
                                   _mm512_mul_ps(_mm512_set1_ps(w[kh * KW + kw]), tap_row(x + ih * W, first, stride_w, m)));
        }
      }
      _mm512_mask_storeu_ps(y + oh * OW + ow0, out, finish(acc));
      ++oh;
    }
  }
}

// norm_kernels.cpp's batch_norm_apply_plane sixteen values at a time (the
// tail masked): the same operations, so the same bits.
void batch_norm_apply_plane_avx512(const float* p, float* q, int64_t n, float a, float b, bool then_relu6) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + i), va), vb);
    if (then_relu6) v = _mm512_min_ps(six, _mm512_max_ps(zero, v));
    _mm512_mask_storeu_ps(q + i, m, v);
  }
}

}  // namespace

const FusedLoops kFusedLoopsAvx512 = {
    shifted_sums_avx512,
    pooled_gradient_sums_avx512,
    batch_norm_backward_plane_avx512,
    batch_norm_relu_max_pool2x2_plane_avx512,
    batch_norm_apply_plane_avx512,
    col2im_assign_3x3_s1_p1_avx512,
    depthwise_plane_forward_avx512,
};

}  // namespace tq::detail

// AVX2 builds of the loops of fused_loops.h and of the fused forward's
// pooling, called only when cpu_features() reports AVX2 (and the AVX-512
// builds are off or absent). The same float operations in the same order as
// the baseline, so the same bits: the sixteen partial sums of a loop are two
// registers of eight lanes (lanes 0..7 and 8..15), the tail is added to lane
// 0 and the lanes are added in order; the windows of a pooled row are taken
// eight at a time, the columns of a col2im row eight at a time (the rest one
// by one). Multiplies and adds stay apart (no FMA contraction).
#include "tensor/x86_intrinsics.h"

#include <algorithm>
#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "tensor/fused_loops.h"

namespace tq::detail {

namespace loops = kernels::fused_loops;

namespace {

// The sixteen partial sums held in two registers (lanes 0..7, 8..15).
inline void store_lanes(__m256 lo, __m256 hi, float (&lanes)[16]) {
  _mm256_storeu_ps(lanes, lo);
  _mm256_storeu_ps(lanes + 8, hi);
}

// The plain loops' final sum: the sixteen lanes added in order.
inline float add_lanes_in_order(const float (&lanes)[16]) {
  float s = 0.f;
  for (float v : lanes) s += v;
  return s;
}

// Eight floats from 16 consecutive ones at p: the even ones (0, 2, ..., 14)
// or the odd ones.
inline void even_odd(const float* p, __m256& even, __m256& odd) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  // In each 128-bit half: a's two evens then b's; reorder the 64-bit pairs.
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
                                                _MM_SHUFFLE(3, 1, 2, 0)));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))),
                                               _MM_SHUFFLE(3, 1, 2, 0)));
}


void shifted_sums_avx2(const float* p, int64_t n, float shift, float& sum, float& sum_sq) {
  const __m256 vs = _mm256_set1_ps(shift);
  __m256 a_lo = _mm256_setzero_ps(), a_hi = a_lo, q_lo = a_lo, q_hi = a_lo;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 d_lo = _mm256_sub_ps(_mm256_loadu_ps(p + i), vs), d_hi = _mm256_sub_ps(_mm256_loadu_ps(p + i + 8), vs);
    a_lo = _mm256_add_ps(a_lo, d_lo), a_hi = _mm256_add_ps(a_hi, d_hi);
    q_lo = _mm256_add_ps(q_lo, _mm256_mul_ps(d_lo, d_lo)), q_hi = _mm256_add_ps(q_hi, _mm256_mul_ps(d_hi, d_hi));
  }
  // The tail goes into lane 0, as in the plain loop.
  float la[16], lq[16];
  store_lanes(a_lo, a_hi, la);
  store_lanes(q_lo, q_hi, lq);
  for (; i < n; ++i) {
    const float d = p[i] - shift;
    la[0] += d;
    lq[0] += d * d;
  }
  sum = add_lanes_in_order(la);
  sum_sq = add_lanes_in_order(lq);
}

void pooled_gradient_sums_avx2(const float* g, const int32_t* at, const float* y_at, int64_t n, float m, float& s,
                               float& t) {
  const __m256 vm = _mm256_set1_ps(m);
  const __m256i none = _mm256_set1_epi32(-1);
  __m256 a[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, b[2] = {a[0], a[0]};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int h = 0; h < 2; ++h) {
      const int64_t j = i + 8 * h;
      // at >= 0 is at > -1: all ones where the gradient flows.
      const __m256 open = _mm256_castsi256_ps(
          _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(at + j)), none));
      const __m256 dz = _mm256_and_ps(open, _mm256_loadu_ps(g + j));
      a[h] = _mm256_add_ps(a[h], dz);
      b[h] = _mm256_add_ps(b[h], _mm256_mul_ps(dz, _mm256_sub_ps(_mm256_loadu_ps(y_at + j), vm)));
    }
  float la[16], lb[16];
  store_lanes(a[0], a[1], la);
  store_lanes(b[0], b[1], lb);
  for (; i < n; ++i) {
    const float dz = at[i] >= 0 ? g[i] : 0.f;
    la[0] += dz;
    lb[0] += dz * (y_at[i] - m);
  }
  s = add_lanes_in_order(la);
  t = add_lanes_in_order(lb);
}

float batch_norm_backward_plane_avx2(const float* y, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* g,
                                     const int32_t* at, float m, float k, float a, float b, float* dy, bool want_sum) {
  // The plain loop's two passes (the first one vectorised by the compiler),
  // then its lane sum in two registers.
  loops::batch_norm_backward_plane(y, H, W, OH, OW, g, at, m, k, a, b, dy, false);
  if (!want_sum) return 0.f;
  const int64_t hw = H * W;
  __m256 lo = _mm256_setzero_ps(), hi = lo;
  int64_t i = 0;
  for (; i + 16 <= hw; i += 16)
    lo = _mm256_add_ps(lo, _mm256_loadu_ps(dy + i)), hi = _mm256_add_ps(hi, _mm256_loadu_ps(dy + i + 8));
  float lanes[16];
  store_lanes(lo, hi, lanes);
  for (; i < hw; ++i) lanes[0] += dy[i];
  return add_lanes_in_order(lanes);
}

void batch_norm_relu_max_pool2x2_plane_avx2(const float* y, int64_t W, int64_t OH, int64_t OW, float a, float b,
                                            float* out, int32_t* at, float* y_at) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), zero = _mm256_setzero_ps();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i even_cols = _mm256_add_epi32(lane, lane);
  const int32_t offsets[4] = {0, 1, static_cast<int32_t>(W), static_cast<int32_t>(W + 1)};
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
    for (int64_t ow = 0; ow < OW; ow += 8) {
      const int64_t n = OW - ow < 8 ? OW - ow : 8;  // windows in this block
      const int64_t c = 2 * ow;
      // y comes from memory: fetch the rows of the window row two ahead.
      _mm_prefetch(reinterpret_cast<const char*>(y0 + c + 4 * W), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(y1 + c + 4 * W), _MM_HINT_T0);
      __m256 taps[4];
      if (n == 8) {
        even_odd(y0 + c, taps[0], taps[1]);
        even_odd(y1 + c, taps[2], taps[3]);
      } else {
        // The row's last windows read 2n < 16 columns: masked loads (the
        // lanes left out are not read, and give 0), as whole blocks after.
        alignas(32) float r[2][16];
        const __m256i count = _mm256_set1_epi32(static_cast<int32_t>(2 * n));
        const __m256i lo = _mm256_cmpgt_epi32(count, lane);
        const __m256i hi = _mm256_cmpgt_epi32(count, _mm256_add_epi32(lane, _mm256_set1_epi32(8)));
        for (int k = 0; k < 2; ++k) {
          const float* row = (k == 0 ? y0 : y1) + c;
          _mm256_store_ps(r[k], _mm256_maskload_ps(row, lo));
          _mm256_store_ps(r[k] + 8, _mm256_maskload_ps(row + 8, hi));
        }
        even_odd(r[0], taps[0], taps[1]);
        even_odd(r[1], taps[2], taps[3]);
      }
      const __m256i first = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(row0 + c)), even_cols);
      __m256 best = zero, best_y = zero;
      __m256i best_at = first;
      for (int t = 0; t < 4; ++t) {
        // relu(y a + b) as z > 0 ? z : 0: max_ps(z, 0) returns its second
        // operand, 0, when z is NaN, as the plain loop's select does.
        const __m256 r = _mm256_max_ps(_mm256_add_ps(_mm256_mul_ps(taps[t], va), vb), zero);
        if (t == 0) {
          best = r, best_y = taps[0];
          continue;
        }
        const __m256 take = _mm256_cmp_ps(r, best, _CMP_GT_OQ);
        best = _mm256_blendv_ps(best, r, take);
        best_y = _mm256_blendv_ps(best_y, taps[t], take);
        best_at = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(best_at),
            _mm256_castsi256_ps(_mm256_add_epi32(first, _mm256_set1_epi32(offsets[t]))), take));
      }
      const __m256 open = _mm256_cmp_ps(best, zero, _CMP_GT_OQ);
      const __m256i where = _mm256_castps_si256(
          _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(-1)), _mm256_castsi256_ps(best_at), open));
      const __m256 value = _mm256_and_ps(open, best_y);
      float* o = out + oh * OW + ow;
      int32_t* i = at + oh * OW + ow;
      float* v = y_at + oh * OW + ow;
      if (n == 8) {
        _mm256_storeu_ps(o, best);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(i), where);
        _mm256_storeu_ps(v, value);
      } else {  // through the stack: a masked store is slow on some AVX2 CPUs
        alignas(32) float ob[8], vb8[8];
        alignas(32) int32_t ib[8];
        _mm256_store_ps(ob, best);
        _mm256_store_si256(reinterpret_cast<__m256i*>(ib), where);
        _mm256_store_ps(vb8, value);
        for (int64_t j = 0; j < n; ++j) o[j] = ob[j], i[j] = ib[j], v[j] = vb8[j];
      }
    }
  }
}

void batch_norm_apply_plane_avx2(const float* p, float* q, int64_t n, float a, float b, bool then_relu6) {
  loops::batch_norm_apply_plane(p, q, n, a, b, then_relu6);
}

void col2im_assign_3x3_s1_p1_avx2(const float* col, int64_t channels, int64_t H, int64_t W, float* dx) {
  const int64_t hw = H * W;
  const __m256 zero = _mm256_setzero_ps();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t c = 0; c < channels; ++c) {
    const float* cc = col + c * 9 * hw;
    for (int64_t ih = 0; ih < H; ++ih) {
      float* d = dx + c * hw + ih * W;
      int64_t w0 = 0;
      for (; w0 + 8 <= W; w0 += 8) {
        // Tap kw = 0 reads ow = iw + 1 (none for iw = W - 1), tap kw = 2
        // ow = iw - 1 (none for iw = 0): those lanes add 0, which leaves a
        // sum that started at +0 as it was. Their loads stay inside col (the
        // neighbouring row of the same or the next tap).
        const __m256i iw = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(w0)), lane);
        const __m256 left = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(W - 1)), iw));
        const __m256 right = _mm256_castsi256_ps(_mm256_cmpgt_epi32(iw, _mm256_setzero_si256()));
        __m256 acc = zero;
        for (int64_t kh = 0; kh < 3; ++kh) {
          const int64_t oh = ih + 1 - kh;
          if (oh < 0 || oh >= H) continue;
          const float* r0 = cc + kh * 3 * hw + oh * W + w0;
          acc = _mm256_add_ps(acc, _mm256_and_ps(left, _mm256_loadu_ps(r0 + 1)));
          acc = _mm256_add_ps(acc, _mm256_loadu_ps(r0 + hw));
          acc = _mm256_add_ps(acc, _mm256_and_ps(right, _mm256_loadu_ps(r0 + 2 * hw - 1)));
        }
        _mm256_storeu_ps(d + w0, acc);
      }
      // The row's last columns, element by element in the same order.
      for (int64_t iw = w0; iw < W; ++iw) {
        float s = 0.f;
        for (int64_t kh = 0; kh < 3; ++kh) {
          const int64_t oh = ih + 1 - kh;
          if (oh < 0 || oh >= H) continue;
          const float* r0 = cc + kh * 3 * hw + oh * W;
          if (iw + 1 < W) s += r0[iw + 1];
          s += r0[hw + iw];
          if (iw >= 1) s += r0[2 * hw + iw - 1];
        }
        d[iw] = s;
      }
    }
  }
}

// Bit i set: output column ow0 + i has its tap in [lo, hi) (tap_column_ranges).
inline uint32_t lanes_between(int64_t lo, int64_t hi, int64_t ow0) {
  const int64_t a = std::clamp<int64_t>(lo - ow0, 0, 8), b = std::clamp<int64_t>(hi - ow0, 0, 8);
  if (a >= b) return 0;
  return ((1u << b) - 1u) & ~((1u << a) - 1u);
}

// All ones in the lanes whose bit of `bits` `select` names (0: never).
inline __m256i lanes_of(uint32_t bits, __m256i select) {
  return _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int32_t>(bits)), select),
                            _mm256_setzero_si256());
}

// The lanes of one tap kw over eight outputs: `lanes` for stride 1; for
// stride 2 the even places of the two loads of eight (lo, hi) that the
// eight outputs read. Masked loads read only these (and give 0 elsewhere).
struct TapLanes {
  __m256i lanes, lo, hi;
  uint32_t bits;
};

inline __m256 tap_row(const float* row, int64_t first, int64_t stride_w, const TapLanes& m) {
  if (stride_w == 1) return _mm256_maskload_ps(row + first, m.lanes);
  const __m256 lo = _mm256_maskload_ps(row + first, m.lo), hi = _mm256_maskload_ps(row + first + 8, m.hi);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))),
                                                _MM_SHUFFLE(3, 1, 2, 0)));
}

// conv_kernels.cpp's depthwise_plane_forward eight outputs a register, as the
// AVX-512 build does sixteen: the taps added in the order (kh, kw), a tap
// outside the image leaving the lane as it is (a blend, not an add of 0: an
// infinite weight times 0 would be NaN), four output rows at a time where all
// their taps' rows are inside the image. The epilogue is batch_norm_apply's
// arithmetic, max / min with the value second (NaN passes, -0 stays -0).
void depthwise_plane_forward_avx2(const float* x, const float* w, float* y, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                  int64_t pad_w, int64_t dil_h, int64_t dil_w, const int64_t* ow_lo,
                                  const int64_t* ow_hi, const ChannelFinish& f) {
  constexpr int kRows = 4;
  const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.f);
  const __m256 bias = _mm256_set1_ps(f.bias), scale = _mm256_set1_ps(f.scale), shift = _mm256_set1_ps(f.shift);
  const auto finish = [&](__m256 acc) {
    if (f.has_bias) acc = _mm256_add_ps(acc, bias);
    if (f.affine) acc = _mm256_add_ps(_mm256_mul_ps(acc, scale), shift);
    if (f.relu6) acc = _mm256_min_ps(six, _mm256_max_ps(zero, acc));
    return acc;
  };
  const auto rows_inside = [&](int64_t oh) {
    const int64_t top = oh * stride_h - pad_h;
    return top >= 0 && top + (KH - 1) * dil_h < H;
  };
  const __m256i one_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i even_lo = _mm256_setr_epi32(1, 0, 2, 0, 4, 0, 8, 0), even_hi = _mm256_setr_epi32(16, 0, 32, 0, 64, 0, 128, 0);
  TapLanes tap[32];
  for (int64_t ow0 = 0; ow0 < OW; ow0 += 8) {
    const int64_t n = OW - ow0 < 8 ? OW - ow0 : 8;
    for (int64_t kw = 0; kw < KW; ++kw) {
      const uint32_t bits = lanes_between(ow_lo[kw], ow_hi[kw], ow0);
      tap[kw] = {lanes_of(bits, one_bit), lanes_of(bits, even_lo), lanes_of(bits, even_hi), bits};
    }
    const auto store = [&](float* dst, __m256 v) {
      if (n == 8) return _mm256_storeu_ps(dst, v);
      alignas(32) float lanes[8];  // a row's last outputs, through the stack
      _mm256_store_ps(lanes, v);
      for (int64_t j = 0; j < n; ++j) dst[j] = lanes[j];
    };
    const auto add_tap = [&](__m256 acc, float wk, const float* row, int64_t kw) {
      const TapLanes& m = tap[kw];
      const int64_t first = ow0 * stride_w - pad_w + kw * dil_w;
      const __m256 sum = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(wk), tap_row(row, first, stride_w, m)));
      return _mm256_blendv_ps(acc, sum, _mm256_castsi256_ps(m.lanes));
    };
    int64_t oh = 0;
    while (oh < OH) {
      if (oh + kRows <= OH && rows_inside(oh) && rows_inside(oh + kRows - 1)) {
        __m256 acc[kRows] = {zero, zero, zero, zero};
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            if (!tap[kw].bits) continue;
            for (int r = 0; r < kRows; ++r)
              acc[r] = add_tap(acc[r], w[kh * KW + kw], x + ((oh + r) * stride_h - pad_h + kh * dil_h) * W, kw);
          }
        for (int r = 0; r < kRows; ++r) store(y + (oh + r) * OW + ow0, finish(acc[r]));
        oh += kRows;
        continue;
      }
      __m256 acc = zero;
      for (int64_t kh = 0; kh < KH; ++kh) {
        const int64_t ih = oh * stride_h - pad_h + kh * dil_h;
        if (ih < 0 || ih >= H) continue;
        for (int64_t kw = 0; kw < KW; ++kw)
          if (tap[kw].bits) acc = add_tap(acc, w[kh * KW + kw], x + ih * W, kw);
      }
      store(y + oh * OW + ow0, finish(acc));
      ++oh;
    }
  }
}

}  // namespace

const FusedLoops kFusedLoopsAvx2 = {
    shifted_sums_avx2,
    pooled_gradient_sums_avx2,
    batch_norm_backward_plane_avx2,
    batch_norm_relu_max_pool2x2_plane_avx2,
    batch_norm_apply_plane_avx2,
    col2im_assign_3x3_s1_p1_avx2,
    depthwise_plane_forward_avx2,
};

}  // namespace tq::detail

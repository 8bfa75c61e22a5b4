// Pooling kernels (docs/convolution.md §4) and their reference twins.
#include "tensor/pool_kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "tensor/cpu_features.h"
#include "tensor/fused_loops.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tq::kernels {

namespace {

void check_input(const Tensor& t, const char* op) {
  if (!t.defined() || t.dtype() != DType::f32 || !t.is_contiguous() || t.dim() != 4)
    throw std::invalid_argument(fmt::format("{} kernel: expected a contiguous 4-D f32 tensor", op));
}

// The window rows (or columns) [lo, hi) of output index o that lie inside [0, size).
inline void window(int64_t o, int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dil, int64_t& first,
                   int64_t& lo, int64_t& hi) {
  first = o * stride - pad;  // input index of tap 0
  lo = first >= 0 ? 0 : (-first + dil - 1) / dil;
  hi = std::min(k, size - first <= 0 ? 0 : (size - first - 1) / dil + 1);
}

inline int64_t adaptive_start(int64_t o, int64_t in, int64_t out) { return (o * in) / out; }
inline int64_t adaptive_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

// ---- The 2x2 / stride 2 max pool (no padding, no dilation): its windows
// tile the input, so the forward picks one of four taps per output without
// a branch, and the backward writes every dx once (no zero fill, no scatter).

bool is_2x2_stride_2(const Pool2dGeometry& g) {
  return g.KH == 2 && g.KW == 2 && g.stride_h == 2 && g.stride_w == 2 && g.pad_h == 0 && g.pad_w == 0 &&
         g.dil_h == 1 && g.dil_w == 1;
}

// The rule of the general loop, "the first maximum; a NaN wins and ends the
// search", as one predicate: a later tap v replaces best when best is not
// NaN and v is not <= best (true when v > best, or v is NaN).
inline bool takes(float v, float best) { return best == best && !(v <= best); }

// Outputs [ow0, OW) of one output row: r0, r1 are input rows 2 oh and 2 oh + 1,
// `row0` the flat index of r0 in its plane.
void max_pool_2x2_row_scalar(const float* r0, const float* r1, int64_t row0, int64_t W, int64_t ow0, int64_t OW,
                             float* y, int32_t* idx) {
  for (int64_t ow = ow0; ow < OW; ++ow) {
    const int64_t c = 2 * ow;
    float best = r0[c];
    int64_t at = row0 + c;
    if (takes(r0[c + 1], best)) best = r0[c + 1], at = row0 + c + 1;
    if (takes(r1[c], best)) best = r1[c], at = row0 + W + c;
    if (takes(r1[c + 1], best)) best = r1[c + 1], at = row0 + W + c + 1;
    y[ow] = best;
    idx[ow] = static_cast<int32_t>(at);
  }
}

// The same on four outputs at a time: even and odd columns of the two rows
// are the four taps; the predicate above becomes two compares and a mask.
void max_pool_2x2_row(const float* r0, const float* r1, int64_t row0, int64_t W, int64_t OW, float* y, int32_t* idx) {
  int64_t ow = 0;
#if defined(__SSE2__)
  const __m128i lane_cols = _mm_setr_epi32(0, 2, 4, 6);
  for (; ow + 4 <= OW; ow += 4) {
    const int64_t c = 2 * ow;  // reads columns c .. c + 7 < 2 OW <= W
    const __m128 a0 = _mm_loadu_ps(r0 + c), b0 = _mm_loadu_ps(r0 + c + 4);
    const __m128 a1 = _mm_loadu_ps(r1 + c), b1 = _mm_loadu_ps(r1 + c + 4);
    const __m128 taps[4] = {_mm_shuffle_ps(a0, b0, _MM_SHUFFLE(2, 0, 2, 0)), _mm_shuffle_ps(a0, b0, _MM_SHUFFLE(3, 1, 3, 1)),
                            _mm_shuffle_ps(a1, b1, _MM_SHUFFLE(2, 0, 2, 0)), _mm_shuffle_ps(a1, b1, _MM_SHUFFLE(3, 1, 3, 1))};
    const __m128i first = _mm_add_epi32(_mm_set1_epi32(static_cast<int32_t>(row0 + c)), lane_cols);
    const __m128i offsets[4] = {_mm_setzero_si128(), _mm_set1_epi32(1), _mm_set1_epi32(static_cast<int32_t>(W)),
                                _mm_set1_epi32(static_cast<int32_t>(W + 1))};
    __m128 best = taps[0];
    __m128i at = first;
    for (int t = 1; t < 4; ++t) {
      const __m128 take = _mm_and_ps(_mm_cmpord_ps(best, best), _mm_cmpnle_ps(taps[t], best));
      best = _mm_or_ps(_mm_and_ps(take, taps[t]), _mm_andnot_ps(take, best));
      const __m128i take_i = _mm_castps_si128(take);
      at = _mm_or_si128(_mm_and_si128(take_i, _mm_add_epi32(first, offsets[t])), _mm_andnot_si128(take_i, at));
    }
    _mm_storeu_ps(y + ow, best);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + ow), at);
  }
#endif
  max_pool_2x2_row_scalar(r0, r1, row0, W, ow, OW, y, idx);
}

// dx rows 2 oh and 2 oh + 1, columns [0, 2 OW): each dy goes to the tap its
// index names, the other three taps get 0.
void max_pool_2x2_backward_row(const float* dy, const int32_t* idx, int64_t row0, int64_t W, int64_t OW, float* d0,
                               float* d1) {
  int64_t ow = 0;
#if defined(__SSE2__)
  const __m128i lane_cols = _mm_setr_epi32(0, 2, 4, 6);
  for (; ow + 4 <= OW; ow += 4) {
    const int64_t c = 2 * ow;
    const __m128 g = _mm_loadu_ps(dy + ow);
    const __m128i at = _mm_loadu_si128(reinterpret_cast<const __m128i*>(idx + ow));
    const __m128i first = _mm_add_epi32(_mm_set1_epi32(static_cast<int32_t>(row0 + c)), lane_cols);
    auto lands = [&](int32_t offset) {
      return _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(at, _mm_add_epi32(first, _mm_set1_epi32(offset)))), g);
    };
    const __m128 e0 = lands(0), o0 = lands(1), e1 = lands(static_cast<int32_t>(W)), o1 = lands(static_cast<int32_t>(W + 1));
    _mm_storeu_ps(d0 + c, _mm_unpacklo_ps(e0, o0));
    _mm_storeu_ps(d0 + c + 4, _mm_unpackhi_ps(e0, o0));
    _mm_storeu_ps(d1 + c, _mm_unpacklo_ps(e1, o1));
    _mm_storeu_ps(d1 + c + 4, _mm_unpackhi_ps(e1, o1));
  }
#endif
  for (; ow < OW; ++ow) {
    const int64_t c = 2 * ow, at = idx[ow] - row0;
    const float g = dy[ow];
    d0[c] = at == c ? g : 0.f;
    d0[c + 1] = at == c + 1 ? g : 0.f;
    d1[c] = at == W + c ? g : 0.f;
    d1[c + 1] = at == W + c + 1 ? g : 0.f;
  }
}

}  // namespace

Pool2dGeometry pool2d_geometry(const Shape& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int64_t dh, int64_t dw, const std::string& op) {
  if (x.size() != 4)
    throw std::invalid_argument(fmt::format("{}: expected a 4-D input (N, C, H, W), got shape {}", op, x.str()));
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0)
    throw std::invalid_argument(fmt::format("{}: kernel ({}, {}), stride ({}, {}) and dilation ({}, {}) must be >= 1, "
                                            "padding ({}, {}) >= 0",
                                            op, kh, kw, sh, sw, dh, dw, ph, pw));
  if (2 * ph > kh || 2 * pw > kw)
    throw std::invalid_argument(fmt::format("{}: padding ({}, {}) must be at most half the kernel size ({}, {})", op, ph,
                                            pw, kh, kw));
  Pool2dGeometry g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.KH = kh, g.KW = kw, g.stride_h = sh, g.stride_w = sw, g.pad_h = ph, g.pad_w = pw, g.dil_h = dh, g.dil_w = dw;
  const int64_t eh = dh * (kh - 1) + 1, ew = dw * (kw - 1) + 1;
  if (g.H + 2 * ph < eh || g.W + 2 * pw < ew)
    throw std::invalid_argument(fmt::format("{}: the window ({} x {}) is larger than the padded input ({} x {}) of shape {}",
                                            op, eh, ew, g.H + 2 * ph, g.W + 2 * pw, x.str()));
  g.OH = (g.H + 2 * ph - eh) / sh + 1;
  g.OW = (g.W + 2 * pw - ew) / sw + 1;
  return g;
}

void max_pool2d_forward(const Tensor& x, const Pool2dGeometry& g, Tensor& y, Tensor& argmax) {
  check_input(x, "max_pool2d");
  y = empty(g.output_shape());
  argmax = empty(g.output_shape(), DType::i32);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  int32_t* ip = argmax.data<int32_t>();
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
  if (is_2x2_stride_2(g)) {
    // The common 2x2 / stride 2 window, always inside the input; the same
    // taps in the same order as the general loop below (its twin in the tests).
    for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
      const float* xc = xp + plane * hw;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t row0 = 2 * oh * g.W;
        max_pool_2x2_row(xc + row0, xc + row0 + g.W, row0, g.W, g.OW, yp + plane * ohw + oh * g.OW,
                         ip + plane * ohw + oh * g.OW);
      }
    }
    return;
  }
  for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
    const float* xc = xp + plane * hw;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      int64_t h0, kh_lo, kh_hi;
      window(oh, g.H, g.KH, g.stride_h, g.pad_h, g.dil_h, h0, kh_lo, kh_hi);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        int64_t w0, kw_lo, kw_hi;
        window(ow, g.W, g.KW, g.stride_w, g.pad_w, g.dil_w, w0, kw_lo, kw_hi);
        float best = -std::numeric_limits<float>::infinity();
        int64_t best_i = (h0 + kh_lo * g.dil_h) * g.W + w0 + kw_lo * g.dil_w;
        for (int64_t kh = kh_lo; kh < kh_hi; ++kh) {
          const int64_t row = (h0 + kh * g.dil_h) * g.W + w0;
          for (int64_t kw = kw_lo; kw < kw_hi; ++kw) {
            const float v = xc[row + kw * g.dil_w];
            if (v > best || std::isnan(v)) {  // the first maximum; NaN propagates, as in PyTorch
              best = v;
              best_i = row + kw * g.dil_w;
              if (std::isnan(v)) goto done;
            }
          }
        }
      done:
        yp[plane * ohw + oh * g.OW + ow] = best;
        ip[plane * ohw + oh * g.OW + ow] = static_cast<int32_t>(best_i);
      }
    }
  }
}

Tensor max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dGeometry& g) {
  check_input(dy, "max_pool2d_backward");
  const float* gp = dy.data<float>();
  const int32_t* ip = argmax.data<int32_t>();
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
  if (is_2x2_stride_2(g)) {
    // Every input element lies in at most one window: write each once.
    Tensor dx = empty({g.N, g.C, g.H, g.W});
    float* dxp = dx.data<float>();
    for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
      float* dc = dxp + plane * hw;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t row0 = 2 * oh * g.W;
        float* d0 = dc + row0;
        float* d1 = d0 + g.W;
        max_pool_2x2_backward_row(gp + plane * ohw + oh * g.OW, ip + plane * ohw + oh * g.OW, row0, g.W, g.OW, d0, d1);
        if (g.W > 2 * g.OW) d0[g.W - 1] = d1[g.W - 1] = 0.f;  // an odd last column lies in no window
      }
      if (g.H > 2 * g.OH) std::memset(dc + (g.H - 1) * g.W, 0, sizeof(float) * g.W);  // nor does an odd last row
    }
    return dx;
  }
  Tensor dx = zeros({g.N, g.C, g.H, g.W});
  float* dxp = dx.data<float>();
  for (int64_t plane = 0; plane < g.N * g.C; ++plane)
    for (int64_t i = 0; i < ohw; ++i) dxp[plane * hw + ip[plane * ohw + i]] += gp[plane * ohw + i];
  return dx;
}

// The reference twins test every tap of the window against the bounds.
static int64_t reference_argmax(const float* xc, const Pool2dGeometry& g, int64_t oh, int64_t ow, float& best) {
  best = -std::numeric_limits<float>::infinity();
  int64_t best_i = -1;
  for (int64_t kh = 0; kh < g.KH; ++kh)
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dil_h, iw = ow * g.stride_w - g.pad_w + kw * g.dil_w;
      if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
      // The first tap, then each later one that beats the best so far; a NaN
      // beats everything and nothing beats it (PyTorch propagates NaN).
      const float v = xc[ih * g.W + iw];
      if (best_i < 0 || (!std::isnan(best) && (v > best || std::isnan(v)))) {
        best = xc[ih * g.W + iw];
        best_i = ih * g.W + iw;
      }
    }
  return best_i;
}

Tensor max_pool2d_forward_reference(const Tensor& x, const Pool2dGeometry& g) {
  const std::vector<float> xv = to_vector(x);
  Tensor y = empty(g.output_shape());
  float* yp = y.data<float>();
  for (int64_t plane = 0; plane < g.N * g.C; ++plane)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        reference_argmax(xv.data() + plane * g.H * g.W, g, oh, ow, yp[(plane * g.OH + oh) * g.OW + ow]);
  return y;
}

Tensor max_pool2d_backward_reference(const Tensor& dy, const Tensor& x, const Pool2dGeometry& g) {
  const std::vector<float> xv = to_vector(x), gv = to_vector(dy);
  std::vector<float> dx(static_cast<size_t>(g.N * g.C * g.H * g.W), 0.f);
  for (int64_t plane = 0; plane < g.N * g.C; ++plane)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        float best;
        const int64_t i = reference_argmax(xv.data() + plane * g.H * g.W, g, oh, ow, best);
        dx[plane * g.H * g.W + i] += gv[(plane * g.OH + oh) * g.OW + ow];
      }
  return from_vector(dx, {g.N, g.C, g.H, g.W});
}

Tensor avg_pool2d_forward(const Tensor& x, const Pool2dGeometry& g) {
  check_input(x, "avg_pool2d");
  Tensor y = empty(g.output_shape());
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const float inv = 1.f / static_cast<float>(g.KH * g.KW);
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
  for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
    const float* xc = xp + plane * hw;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      int64_t h0, kh_lo, kh_hi;
      window(oh, g.H, g.KH, g.stride_h, g.pad_h, g.dil_h, h0, kh_lo, kh_hi);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        int64_t w0, kw_lo, kw_hi;
        window(ow, g.W, g.KW, g.stride_w, g.pad_w, g.dil_w, w0, kw_lo, kw_hi);
        float s = 0.f;
        for (int64_t kh = kh_lo; kh < kh_hi; ++kh)
          for (int64_t kw = kw_lo; kw < kw_hi; ++kw) s += xc[(h0 + kh) * g.W + w0 + kw];
        yp[plane * ohw + oh * g.OW + ow] = s * inv;
      }
    }
  }
  return y;
}

Tensor avg_pool2d_backward(const Tensor& dy, const Pool2dGeometry& g) {
  check_input(dy, "avg_pool2d_backward");
  Tensor dx = zeros({g.N, g.C, g.H, g.W});
  const float* gp = dy.data<float>();
  float* dxp = dx.data<float>();
  const float inv = 1.f / static_cast<float>(g.KH * g.KW);
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
  for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
    float* dc = dxp + plane * hw;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      int64_t h0, kh_lo, kh_hi;
      window(oh, g.H, g.KH, g.stride_h, g.pad_h, g.dil_h, h0, kh_lo, kh_hi);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        int64_t w0, kw_lo, kw_hi;
        window(ow, g.W, g.KW, g.stride_w, g.pad_w, g.dil_w, w0, kw_lo, kw_hi);
        const float v = gp[plane * ohw + oh * g.OW + ow] * inv;
        for (int64_t kh = kh_lo; kh < kh_hi; ++kh)
          for (int64_t kw = kw_lo; kw < kw_hi; ++kw) dc[(h0 + kh) * g.W + w0 + kw] += v;
      }
    }
  }
  return dx;
}

Tensor avg_pool2d_forward_reference(const Tensor& x, const Pool2dGeometry& g) {
  const std::vector<float> xv = to_vector(x);
  Tensor y = empty(g.output_shape());
  float* yp = y.data<float>();
  for (int64_t plane = 0; plane < g.N * g.C; ++plane)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        double s = 0;
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            const int64_t ih = oh * g.stride_h - g.pad_h + kh, iw = ow * g.stride_w - g.pad_w + kw;
            if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) s += xv[(plane * g.H + ih) * g.W + iw];
          }
        yp[(plane * g.OH + oh) * g.OW + ow] = static_cast<float>(s / (g.KH * g.KW));
      }
  return y;
}

static void check_adaptive(const Shape& x, int64_t OH, int64_t OW) {
  if (x.size() != 4)
    throw std::invalid_argument(fmt::format("adaptive_avg_pool2d: expected a 4-D input (N, C, H, W), got shape {}", x.str()));
  if (OH < 1 || OW < 1 || x[2] < 1 || x[3] < 1)
    throw std::invalid_argument(fmt::format("adaptive_avg_pool2d: output size ({}, {}) and input size ({}, {}) must be "
                                            "positive",
                                            OH, OW, x[2], x[3]));
}

Tensor adaptive_avg_pool2d_forward(const Tensor& x, int64_t OH, int64_t OW) {
  check_adaptive(x.shape(), OH, OW);
  if (OH != 1 || OW != 1) return adaptive_avg_pool2d_forward_reference(x, OH, OW);
  check_input(x, "adaptive_avg_pool2d");
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  Tensor y = empty({x.size(0), x.size(1), 1, 1});
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  for (int64_t p = 0; p < planes; ++p) {
    float s = 0.f;
    for (int64_t i = 0; i < hw; ++i) s += xp[p * hw + i];
    yp[p] = s / static_cast<float>(hw);
  }
  return y;
}

Tensor adaptive_avg_pool2d_forward_reference(const Tensor& x, int64_t OH, int64_t OW) {
  check_adaptive(x.shape(), OH, OW);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const std::vector<float> xv = to_vector(x);
  Tensor y = empty({N, C, OH, OW});
  float* yp = y.data<float>();
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
        const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
        float s = 0.f;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) s += xv[(p * H + ih) * W + iw];
        yp[(p * OH + oh) * OW + ow] = s / static_cast<float>((h1 - h0) * (w1 - w0));
      }
  return y;
}

Tensor adaptive_avg_pool2d_backward(const Tensor& dy, const Shape& x_shape) {
  const int64_t N = x_shape[0], C = x_shape[1], H = x_shape[2], W = x_shape[3];
  const int64_t OH = dy.size(2), OW = dy.size(3);
  check_input(dy, "adaptive_avg_pool2d_backward");
  Tensor dx = zeros(x_shape);
  const float* gp = dy.data<float>();
  float* dxp = dx.data<float>();
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
        const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
        const float v = gp[(p * OH + oh) * OW + ow] / static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) dxp[(p * H + ih) * W + iw] += v;
      }
  return dx;
}

// ---- Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2, 2), fused (training) ----

namespace {

void check_channel_vector(const Tensor& t, int64_t C, const char* what) {
  if (!t.defined() || t.dtype() != DType::f32 || !t.is_contiguous() || t.numel() != C)
    throw std::invalid_argument(fmt::format("batch_norm_relu_max_pool2x2: {} must be a contiguous f32 tensor of {} "
                                            "values",
                                            what, C));
}

Pool2dGeometry pool_2x2_of(const Tensor& y) {
  return pool2d_geometry(y.shape(), 2, 2, 2, 2, 0, 0, 1, 1, "batch_norm_relu_max_pool2x2");
}

std::atomic<SimdLevel> g_level{best_simd_level()};

// The baseline build of FusedLoops::batch_norm_relu_max_pool2x2_plane: the
// windows four at a time (SSE2, max_pool_2x2_row) on two rows of
// relu(y a + b) held in L1, then y at each open window's place.
void batch_norm_relu_max_pool2x2_plane(const float* y, int64_t W, int64_t OH, int64_t OW, float a, float b, float* out,
                                       int32_t* at, float* y_at) {
  thread_local std::vector<float> rows;  // only grows
  if (rows.size() < static_cast<size_t>(2 * W)) rows.resize(static_cast<size_t>(2 * W));
  float* r0 = rows.data();
  float* r1 = r0 + W;
  for (int64_t oh = 0; oh < OH; ++oh) {
    const int64_t row0 = 2 * oh * W;
    const float* y0 = y + row0;
    const float* y1 = y0 + W;
    // batch_norm_apply then relu, element for element the same arithmetic.
    for (int64_t i = 0; i < 2 * OW; ++i) {
      const float z0 = y0[i] * a + b, z1 = y1[i] * a + b;
      r0[i] = z0 > 0.f ? z0 : 0.f;
      r1[i] = z1 > 0.f ? z1 : 0.f;
    }
    float* orow = out + oh * OW;
    int32_t* irow = at + oh * OW;
    float* vrow = y_at + oh * OW;
    max_pool_2x2_row(r0, r1, row0, W, OW, orow, irow);
    for (int64_t ow = 0; ow < OW; ++ow) {
      const bool open = orow[ow] > 0.f;
      vrow[ow] = open ? y[irow[ow]] : 0.f;
      irow[ow] = open ? irow[ow] : -1;
    }
  }
}

const detail::FusedLoops kFusedLoopsBaseline = {
    fused_loops::shifted_sums,
    fused_loops::pooled_gradient_sums,
    fused_loops::batch_norm_backward_plane,
    batch_norm_relu_max_pool2x2_plane,
    fused_loops::batch_norm_apply_plane,
    fused_loops::col2im_assign_3x3_s1_p1,
    nullptr,  // the depthwise walk of conv_kernels.cpp
};

}  // namespace

void set_fused_kernels(SimdLevel level) {
  require_simd_level(level, "set_fused_kernels");
  g_level = level;
}

SimdLevel fused_kernels() { return g_level; }

}  // namespace tq::kernels

namespace tq::detail {

const FusedLoops& fused_loops_build() {
  switch (kernels::fused_kernels()) {
    case SimdLevel::avx512: return kFusedLoopsAvx512;
    case SimdLevel::avx2: return kFusedLoopsAvx2;
    case SimdLevel::scalar: break;
  }
  return kernels::kFusedLoopsBaseline;
}

}  // namespace tq::detail

namespace tq::kernels {

void batch_norm_relu_max_pool2x2_forward(const Tensor& y, const Tensor& scale, const Tensor& shift, Tensor& out,
                                         Tensor& at, Tensor& y_at) {
  check_input(y, "batch_norm_relu_max_pool2x2");
  const Pool2dGeometry g = pool_2x2_of(y);
  check_channel_vector(scale, g.C, "scale");
  check_channel_vector(shift, g.C, "shift");
  out = empty(g.output_shape());
  at = empty(g.output_shape(), DType::i32);
  y_at = empty(g.output_shape());
  const float* yp = y.data<float>();
  const float* sc = scale.data<float>();
  const float* sh = shift.data<float>();
  float* op = out.data<float>();
  int32_t* ip = at.data<int32_t>();
  float* vp = y_at.data<float>();
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
  const auto plane_of = detail::fused_loops_build().batch_norm_relu_max_pool2x2_plane;
  for (int64_t plane = 0; plane < g.N * g.C; ++plane)
    plane_of(yp + plane * hw, g.W, g.OH, g.OW, sc[plane % g.C], sh[plane % g.C], op + plane * ohw, ip + plane * ohw,
             vp + plane * ohw);
}

void batch_norm_relu_max_pool2x2_forward_reference(const Tensor& y, const Tensor& scale, const Tensor& shift,
                                                   Tensor& out, Tensor& at) {
  check_input(y, "batch_norm_relu_max_pool2x2_reference");
  const Pool2dGeometry g = pool_2x2_of(y);
  out = empty(g.output_shape());
  at = empty(g.output_shape(), DType::i32);
  const float* yp = y.data<float>();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          float best = 0.f;
          int64_t best_i = -1;
          for (int64_t i = 0; i < 4; ++i) {  // taps in row-major order; the first maximum wins
            const int64_t idx = (2 * oh + i / 2) * g.W + 2 * ow + i % 2;
            const float z = yp[(n * g.C + c) * g.H * g.W + idx] * scale.data<float>()[c] + shift.data<float>()[c];
            const float r = z > 0.f ? z : 0.f;  // relu as kernels::relu has it
            if (best_i < 0 || r > best) best = r, best_i = idx;
          }
          const int64_t o = ((n * g.C + c) * g.OH + oh) * g.OW + ow;
          out.data<float>()[o] = best;
          at.data<int32_t>()[o] = best > 0.f ? static_cast<int32_t>(best_i) : -1;
        }
}

BatchNormReluMaxPool2x2Backward::BatchNormReluMaxPool2x2Backward(const Tensor& dout, const Tensor& at,
                                                                 const Tensor& y_at, const Tensor& y,
                                                                 const Tensor& mean, const Tensor& invstd,
                                                                 const Tensor& gamma)
    : dout_(dout), at_(at), y_(y), mean_(mean), invstd_(invstd), gamma_(gamma) {
  check_input(y, "batch_norm_relu_max_pool2x2_backward");
  const Pool2dGeometry g = pool_2x2_of(y);
  for (const Tensor* t : {&dout, &at, &y_at})
    if (!t->defined() || !t->is_contiguous() || !(t->shape() == g.output_shape()))
      throw std::invalid_argument(fmt::format("batch_norm_relu_max_pool2x2_backward: dout, at and y_at must be "
                                              "contiguous of shape {}",
                                              g.output_shape().str()));
  if (dout.dtype() != DType::f32 || at.dtype() != DType::i32 || y_at.dtype() != DType::f32)
    throw std::invalid_argument("batch_norm_relu_max_pool2x2_backward: dout and y_at must be f32, at i32");
  check_channel_vector(mean, g.C, "mean");
  check_channel_vector(invstd, g.C, "invstd");
  if (gamma.defined()) check_channel_vector(gamma, g.C, "gamma");
  N_ = g.N, C_ = g.C, H_ = g.H, W_ = g.W, OH_ = g.OH, OW_ = g.OW, hw_ = g.H * g.W, ohw_ = g.OH * g.OW;
  loops_ = &detail::fused_loops_build();
  const float* gp = dout.data<float>();
  const int32_t* ip = at.data<int32_t>();
  const float* vp = y_at.data<float>();
  const float* mp = mean.data<float>();
  const float* sp = invstd.data<float>();

  // Over the pooled tensors only (a quarter of y): dz is dout where at >= 0,
  // so sum dz and sum dz (y - mean) need y at those places, y_at.
  std::vector<double> s(static_cast<size_t>(g.C), 0.0), t(static_cast<size_t>(g.C), 0.0);
  for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
    const int64_t c = plane % g.C;
    const float m = mp[c];
    const float* gr = gp + plane * ohw_;
    const int32_t* ir = ip + plane * ohw_;
    const float* vr = vp + plane * ohw_;
    float sa, sb;
    loops_->pooled_gradient_sums(gr, ir, vr, ohw_, m, sa, sb);
    s[c] += sa;
    t[c] += sb;
  }
  sum_dz_ = empty({g.C});
  sum_dz_xhat_ = empty({g.C});
  for (int64_t c = 0; c < g.C; ++c) {
    sum_dz_.data<float>()[c] = static_cast<float>(s[c]);
    sum_dz_xhat_.data<float>()[c] = static_cast<float>(t[c] * sp[c]);
  }
  norm_dz_ = sum_dz_, norm_dz_xhat_ = sum_dz_xhat_, count_ = N_ * hw_;
}

void BatchNormReluMaxPool2x2Backward::use_global_sums(const Tensor& sum_dz, const Tensor& sum_dz_xhat, int64_t count) {
  check_channel_vector(sum_dz, C_, "sum_dz");
  check_channel_vector(sum_dz_xhat, C_, "sum_dz_xhat");
  if (count <= 0)
    throw std::invalid_argument(fmt::format("batch_norm_relu_max_pool2x2_backward: count {} must be positive", count));
  norm_dz_ = sum_dz, norm_dz_xhat_ = sum_dz_xhat, count_ = count;
}

void BatchNormReluMaxPool2x2Backward::image(int64_t n, float* dy_n, double* bias_sums) const {
  // dy = k dz + (y - m) a + b (batch_norm_backward_input's arithmetic), where
  // dz is 0 except at `at`, so each plane is written as (y - m) a + b and the
  // pooled places are then rewritten with their dz.
  if (n < 0 || n >= N_)
    throw std::out_of_range(fmt::format("batch_norm_relu_max_pool2x2_backward: image {} of {}", n, N_));
  const float inv_m = 1.f / static_cast<float>(count_);
  const float* sp = invstd_.data<float>();
  const float* mp = mean_.data<float>();
  for (int64_t c = 0; c < C_; ++c) {
    const int64_t plane = n * C_ + c;
    const float is = sp[c], m = mp[c];
    const float k = (gamma_.defined() ? gamma_.data<float>()[c] : 1.f) * is;
    const float a = -k * is * norm_dz_xhat_.data<float>()[c] * inv_m;
    const float b = -k * norm_dz_.data<float>()[c] * inv_m;
    const float* p = y_.data<float>() + plane * hw_;
    float* d = dy_n + c * hw_;
    const float* gr = dout_.data<float>() + plane * ohw_;
    const int32_t* ir = at_.data<int32_t>() + plane * ohw_;
    const bool want = bias_sums != nullptr;
    const float sum = loops_->batch_norm_backward_plane(p, H_, W_, OH_, OW_, gr, ir, m, k, a, b, d, want);
    if (want) bias_sums[c] += sum;
  }
}

Tensor batch_norm_relu_max_pool2x2_backward(const Tensor& dout, const Tensor& at, const Tensor& y_at, const Tensor& y,
                                            const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                                            Tensor& sum_dz, Tensor& sum_dz_xhat, Tensor* bias_sum) {
  const BatchNormReluMaxPool2x2Backward pass(dout, at, y_at, y, mean, invstd, gamma);
  sum_dz = pass.sum_dz();
  sum_dz_xhat = pass.sum_dz_xhat();
  Tensor dy = empty(y.shape());
  std::vector<double> bias(bias_sum ? static_cast<size_t>(y.size(1)) : 0, 0.0);
  for (int64_t n = 0; n < pass.images(); ++n)
    pass.image(n, dy.data<float>() + n * pass.image_numel(), bias_sum ? bias.data() : nullptr);
  if (bias_sum) {
    const int64_t C = y.size(1);
    *bias_sum = empty({C});
    for (int64_t c = 0; c < C; ++c) bias_sum->data<float>()[c] = static_cast<float>(bias[static_cast<size_t>(c)]);
  }
  return dy;
}

Tensor batch_norm_relu_max_pool2x2_backward_reference(const Tensor& dout, const Tensor& at, const Tensor& y,
                                                      const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                                                      Tensor& sum_dz, Tensor& sum_dz_xhat, Tensor& bias_sum) {
  check_input(y, "batch_norm_relu_max_pool2x2_backward_reference");
  const Pool2dGeometry g = pool_2x2_of(y);
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
  const std::vector<float> yv = to_vector(y), gv = to_vector(dout);
  std::vector<double> dz(yv.size(), 0.0), dy(yv.size());
  for (int64_t plane = 0; plane < g.N * g.C; ++plane)
    for (int64_t o = 0; o < ohw; ++o) {
      const int32_t i = at.data<int32_t>()[plane * ohw + o];
      if (i >= 0) dz[static_cast<size_t>(plane * hw + i)] = gv[static_cast<size_t>(plane * ohw + o)];
    }
  sum_dz = empty({g.C});
  sum_dz_xhat = empty({g.C});
  bias_sum = empty({g.C});
  const double M = static_cast<double>(g.N * hw);
  for (int64_t c = 0; c < g.C; ++c) {
    const double m = mean.data<float>()[c], is = invstd.data<float>()[c];
    const double gam = gamma.defined() ? gamma.data<float>()[c] : 1.0;
    double s = 0, t = 0;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < hw; ++i) {
        const size_t j = static_cast<size_t>((n * g.C + c) * hw + i);
        s += dz[j];
        t += dz[j] * (yv[j] - m) * is;
      }
    double bs = 0;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < hw; ++i) {
        const size_t j = static_cast<size_t>((n * g.C + c) * hw + i);
        dy[j] = gam * is * (dz[j] - s / M - (yv[j] - m) * is * t / M);  // eq. 4
        bs += dy[j];
      }
    sum_dz.data<float>()[c] = static_cast<float>(s);
    sum_dz_xhat.data<float>()[c] = static_cast<float>(t);
    bias_sum.data<float>()[c] = static_cast<float>(bs);
  }
  return from_vector(std::vector<float>(dy.begin(), dy.end()), y.shape());
}

}  // namespace tq::kernels

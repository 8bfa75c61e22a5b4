// Pooling kernels (docs/convolution.md §4) and their reference twins.
#include "tensor/pool_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

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
  if (g.KH == 2 && g.KW == 2 && g.stride_h == 2 && g.stride_w == 2 && g.pad_h == 0 && g.pad_w == 0 && g.dil_h == 1 &&
      g.dil_w == 1) {
    // The common 2x2 / stride 2 window, always inside the input: four taps
    // in the same order as the general loop (first maximum, NaN wins).
    for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
      const float* xc = xp + plane * hw;
      float* yo = yp + plane * ohw;
      int32_t* io = ip + plane * ohw;
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t i0 = 2 * oh * g.W + 2 * ow;
          const int64_t taps[4] = {i0, i0 + 1, i0 + g.W, i0 + g.W + 1};
          int64_t best_i = taps[0];
          float best = xc[best_i];
          if (!std::isnan(best))
            for (int t = 1; t < 4; ++t) {
              const float v = xc[taps[t]];
              if (v > best || std::isnan(v)) {
                best = v;
                best_i = taps[t];
                if (std::isnan(v)) break;
              }
            }
          yo[oh * g.OW + ow] = best;
          io[oh * g.OW + ow] = static_cast<int32_t>(best_i);
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
  Tensor dx = zeros({g.N, g.C, g.H, g.W});
  const float* gp = dy.data<float>();
  const int32_t* ip = argmax.data<int32_t>();
  float* dxp = dx.data<float>();
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW;
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
      if (best_i < 0 || xc[ih * g.W + iw] > best) {
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

}  // namespace tq::kernels

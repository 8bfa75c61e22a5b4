// Convolution kernels: im2col + sgemm, col2im, the direct depthwise loops and
// the plain reference twins (docs/convolution.md eq. 1-4).
#include "tensor/conv_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "tensor/fused_loops.h"
#include "tensor/norm_kernels.h"
#include "tensor/pool_kernels.h"

namespace tq::kernels {

namespace {

// The im2col / col2im buffer of this thread. It only grows: after the first
// training step every later step finds it large enough.
float* workspace(size_t n) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// The output columns ow whose input column ow * stride - pad + k * dil lies in
// [0, size): [lo, hi). Outside it the receptive field sits in the padding.
inline void valid_range(int64_t size, int64_t out, int64_t stride, int64_t pad, int64_t offset, int64_t& lo,
                        int64_t& hi) {
  // iw = ow * stride + (offset - pad) must satisfy 0 <= iw < size.
  const int64_t shift = offset - pad;
  lo = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
  hi = size - shift <= 0 ? 0 : (size - shift - 1) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

void check_f32_contiguous(const Tensor& t, const char* what) {
  if (!t.defined() || t.dtype() != DType::f32 || !t.is_contiguous())
    throw std::invalid_argument(fmt::format("conv2d kernel: {} must be a contiguous f32 tensor", what));
}

// ---- Depthwise (groups == C == OC): one KH x KW filter per channel ----

// The output columns whose tap kw lies inside the image, for every kw:
// [lo[kw], hi[kw]). Kept per thread; it only grows.
const int64_t* tap_column_ranges(const Conv2dGeometry& g) {
  thread_local std::vector<int64_t> ranges;
  if (ranges.size() < static_cast<size_t>(2 * g.KW)) ranges.resize(static_cast<size_t>(2 * g.KW));
  for (int64_t kw = 0; kw < g.KW; ++kw)
    valid_range(g.W, g.OW, g.stride_w, g.pad_w, kw * g.dil_w, ranges[static_cast<size_t>(kw)],
                ranges[static_cast<size_t>(g.KW + kw)]);
  return ranges.data();
}

// y (OH, OW) = filter (KH, KW) applied to x (H, W) of one channel, then `f`.
// Row by row: each output is the sum of its taps in the order (kh, kw), taps
// in the padding skipped; the row stays in L1 while its taps are added.
// `lo` / `hi`: tap_column_ranges.
void depthwise_plane_forward(const float* x, const float* w, float* y, const Conv2dGeometry& g, const int64_t* lo,
                             const int64_t* hi, const detail::ChannelFinish& f) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    float* __restrict yr = y + oh * g.OW;
    std::fill_n(yr, g.OW, 0.f);
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dil_h;
      if (ih < 0 || ih >= g.H) continue;
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const float wv = w[kh * g.KW + kw];
        const float* __restrict xr = x + ih * g.W + kw * g.dil_w - g.pad_w;
        if (g.stride_w == 1) {
          for (int64_t ow = lo[kw]; ow < hi[kw]; ++ow) yr[ow] += wv * xr[ow];
        } else {
          for (int64_t ow = lo[kw]; ow < hi[kw]; ++ow) yr[ow] += wv * xr[ow * g.stride_w];
        }
      }
    }
    if (f.has_bias)
      for (int64_t ow = 0; ow < g.OW; ++ow) yr[ow] += f.bias;
    if (f.affine) batch_norm_apply_plane(yr, yr, g.OW, f.scale, f.shift, f.relu6);
  }
}

// dx (H, W) += the adjoint of depthwise_plane_forward applied to dy (OH, OW).
void depthwise_plane_backward_input(const float* dy, const float* w, float* dx, const Conv2dGeometry& g) {
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    int64_t oh_lo, oh_hi;
    valid_range(g.H, g.OH, g.stride_h, g.pad_h, kh * g.dil_h, oh_lo, oh_hi);
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const float wv = w[kh * g.KW + kw];
      int64_t ow_lo, ow_hi;
      valid_range(g.W, g.OW, g.stride_w, g.pad_w, kw * g.dil_w, ow_lo, ow_hi);
      const int64_t col0 = kw * g.dil_w - g.pad_w;
      for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
        float* xr = dx + (oh * g.stride_h - g.pad_h + kh * g.dil_h) * g.W + col0;
        const float* yr = dy + oh * g.OW;
        if (g.stride_w == 1) {
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) xr[ow] += wv * yr[ow];
        } else {
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) xr[ow * g.stride_w] += wv * yr[ow];
        }
      }
    }
  }
}

// dw (KH, KW) += correlation of dy (OH, OW) with x (H, W) of one channel.
void depthwise_plane_backward_weight(const float* dy, const float* x, float* dw, const Conv2dGeometry& g) {
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    int64_t oh_lo, oh_hi;
    valid_range(g.H, g.OH, g.stride_h, g.pad_h, kh * g.dil_h, oh_lo, oh_hi);
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      int64_t ow_lo, ow_hi;
      valid_range(g.W, g.OW, g.stride_w, g.pad_w, kw * g.dil_w, ow_lo, ow_hi);
      const int64_t col0 = kw * g.dil_w - g.pad_w;
      float acc = 0.f;
      for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
        const float* xr = x + (oh * g.stride_h - g.pad_h + kh * g.dil_h) * g.W + col0;
        const float* yr = dy + oh * g.OW;
        float row = 0.f;
        if (g.stride_w == 1) {
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) row += yr[ow] * xr[ow];
        } else {
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) row += yr[ow] * xr[ow * g.stride_w];
        }
        acc += row;
      }
      dw[kh * g.KW + kw] += acc;
    }
  }
}

}  // namespace

Conv2dGeometry conv2d_geometry(const Shape& x, const Shape& w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, const std::string& op) {
  if (x.size() != 4)
    throw std::invalid_argument(
        fmt::format("{}: expected a 4-D input (N, C, H, W), got shape {}", op, x.str()));
  if (w.size() != 4)
    throw std::invalid_argument(fmt::format("{}: expected a 4-D weight (out_channels, in_channels / groups, kH, kW), "
                                            "got shape {}",
                                            op, w.str()));
  if (stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1 || pad_h < 0 || pad_w < 0 || groups < 1)
    throw std::invalid_argument(fmt::format("{}: stride ({}, {}) and dilation ({}, {}) must be >= 1, padding ({}, {}) "
                                            ">= 0, groups ({}) >= 1",
                                            op, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w, groups));
  Conv2dGeometry g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.OC = w[0], g.KH = w[2], g.KW = w[3];
  g.stride_h = stride_h, g.stride_w = stride_w, g.pad_h = pad_h, g.pad_w = pad_w;
  g.dil_h = dil_h, g.dil_w = dil_w, g.groups = groups;
  if (g.C % groups != 0 || g.OC % groups != 0)
    throw std::invalid_argument(fmt::format("{}: in_channels ({}) and out_channels ({}) must both be divisible by groups ({})",
                                            op, g.C, g.OC, groups));
  if (w[1] * groups != g.C)
    throw std::invalid_argument(fmt::format("{}: input of shape {} has {} channels, but the weight of shape {} with "
                                            "groups={} expects {} (= {} x {})",
                                            op, x.str(), g.C, w.str(), groups, w[1] * groups, w[1], groups));
  if (g.KH < 1 || g.KW < 1) throw std::invalid_argument(fmt::format("{}: empty kernel in weight of shape {}", op, w.str()));
  const int64_t eff_h = dil_h * (g.KH - 1) + 1, eff_w = dil_w * (g.KW - 1) + 1;
  if (g.H + 2 * pad_h < eff_h || g.W + 2 * pad_w < eff_w)
    throw std::invalid_argument(fmt::format("{}: the padded input ({} x {}) is smaller than the dilated kernel ({} x {}); "
                                            "input shape {}, padding ({}, {})",
                                            op, g.H + 2 * pad_h, g.W + 2 * pad_w, eff_h, eff_w, x.str(), pad_h, pad_w));
  g.OH = (g.H + 2 * pad_h - eff_h) / stride_h + 1;
  g.OW = (g.W + 2 * pad_w - eff_w) / stride_w + 1;
  return g;
}

namespace {

bool is_3x3_stride_1_pad_1(const Conv2dGeometry& g) {
  return g.KH == 3 && g.KW == 3 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 1 && g.pad_w == 1 &&
         g.dil_h == 1 && g.dil_w == 1;
}

// im2col for the 3x3 / stride 1 / padding 1 convolution of the small CNNs
// (OH = H, OW = W). Row (c, kh, kw) of col is input channel c moved by
// (kh - 1) rows and (kw - 1) columns: the rows that stay inside the input
// form one contiguous block of x, copied at once, shifted by one float for
// kw = 0 and 2; the column that came from the padding is then zeroed. The
// same values as the general walk (the tests compare them).
void im2col_3x3_s1_p1(const float* x, const Conv2dGeometry& g, float* col) {
  const int64_t H = g.H, W = g.W, hw = H * W;
  float* row = col;
  for (int64_t c = 0; c < g.in_per_group(); ++c) {
    const float* xc = x + c * hw;
    for (int64_t kh = 0; kh < 3; ++kh) {
      // Output rows [lo, hi) read input rows lo + kh - 1 ... inside [0, H).
      const int64_t lo = kh == 0 ? 1 : 0, hi = kh == 2 ? H - 1 : H;
      const float* src = xc + (lo + kh - 1) * W;
      const int64_t n = hi > lo ? (hi - lo) * W : 0;
      for (int64_t kw = 0; kw < 3; ++kw, row += hw) {
        std::memset(row, 0, sizeof(float) * lo * W);
        std::memset(row + hi * W, 0, sizeof(float) * (H - hi) * W);
        float* dst = row + lo * W;
        if (n == 0) continue;
        if (kw == 1) {
          std::memcpy(dst, src, sizeof(float) * n);
        } else if (kw == 0) {  // dst[oh, ow] = src[oh, ow - 1]; ow = 0 is padding
          std::memcpy(dst + 1, src, sizeof(float) * (n - 1));
          for (int64_t i = 0; i < n; i += W) dst[i] = 0.f;
        } else {  // dst[oh, ow] = src[oh, ow + 1]; ow = W - 1 is padding
          std::memcpy(dst, src + 1, sizeof(float) * (n - 1));
          for (int64_t i = W - 1; i < n; i += W) dst[i] = 0.f;
        }
      }
    }
  }
}

}  // namespace

void col2im_assign(const float* col, const Conv2dGeometry& g, float* dx) {
  if (is_3x3_stride_1_pad_1(g)) {
    detail::fused_loops_build().col2im_assign_3x3_s1_p1(col, g.in_per_group(), g.H, g.W, dx);
    return;
  }
  std::memset(dx, 0, sizeof(float) * g.in_per_group() * g.H * g.W);
  col2im(col, g, dx);
}

void im2col(const float* x, const Conv2dGeometry& g, float* col) {
  if (is_3x3_stride_1_pad_1(g)) {
    im2col_3x3_s1_p1(x, g, col);
    return;
  }
  im2col_general(x, g, col);
}

void im2col_general(const float* x, const Conv2dGeometry& g, float* col) {
  const int64_t ohw = g.OH * g.OW;
  float* row = col;
  for (int64_t c = 0; c < g.in_per_group(); ++c) {
    const float* xc = x + c * g.H * g.W;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_range(g.H, g.OH, g.stride_h, g.pad_h, kh * g.dil_h, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < g.KW; ++kw, row += ohw) {
        int64_t ow_lo, ow_hi;
        valid_range(g.W, g.OW, g.stride_w, g.pad_w, kw * g.dil_w, ow_lo, ow_hi);
        const int64_t col0 = kw * g.dil_w - g.pad_w;
        std::memset(row, 0, sizeof(float) * oh_lo * g.OW);
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          float* __restrict dst = row + oh * g.OW;
          const float* __restrict src = xc + (oh * g.stride_h - g.pad_h + kh * g.dil_h) * g.W + col0;
          for (int64_t ow = 0; ow < ow_lo; ++ow) dst[ow] = 0.f;
          // Rows are short (OW = 14 or 28 in the small CNNs): a loop the
          // compiler vectorises, not a memcpy call per row.
          if (g.stride_w == 1) {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] = src[ow];
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] = src[ow * g.stride_w];
          }
          for (int64_t ow = ow_hi; ow < g.OW; ++ow) dst[ow] = 0.f;
        }
        std::memset(row + oh_hi * g.OW, 0, sizeof(float) * (g.OH - oh_hi) * g.OW);
      }
    }
  }
}

void col2im(const float* col, const Conv2dGeometry& g, float* dx) {
  const int64_t ohw = g.OH * g.OW;
  const float* row = col;
  for (int64_t c = 0; c < g.in_per_group(); ++c) {
    float* xc = dx + c * g.H * g.W;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_range(g.H, g.OH, g.stride_h, g.pad_h, kh * g.dil_h, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < g.KW; ++kw, row += ohw) {
        int64_t ow_lo, ow_hi;
        valid_range(g.W, g.OW, g.stride_w, g.pad_w, kw * g.dil_w, ow_lo, ow_hi);
        const int64_t col0 = kw * g.dil_w - g.pad_w;
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const float* __restrict src = row + oh * g.OW;
          float* __restrict dst = xc + (oh * g.stride_h - g.pad_h + kh * g.dil_h) * g.W + col0;
          if (g.stride_w == 1) {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] += src[ow];
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow * g.stride_w] += src[ow];
          }
        }
      }
    }
  }
}

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dGeometry& g,
                      const ImageCallback& after_image, const ChannelEpilogue& then) {
  check_f32_contiguous(x, "x");
  check_f32_contiguous(weight, "weight");
  if (bias.defined()) check_f32_contiguous(bias, "bias");
  if ((then.scale == nullptr) != (then.shift == nullptr))
    throw std::invalid_argument("conv2d kernel: an epilogue needs both its scale and its shift");
  Tensor y = empty(g.output_shape());
  const float* xp = x.data<float>();
  const float* wp = weight.data<float>();
  float* yp = y.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  const int64_t ohw = g.OH * g.OW, hw = g.H * g.W;
  if (g.is_depthwise()) {
    const int64_t* ranges = tap_column_ranges(g);
    const bool fits = (g.stride_w == 1 || g.stride_w == 2) && g.KW <= 32;  // what the wide builds take
    const auto wide = fits ? detail::fused_loops_build().depthwise_plane_forward : nullptr;
    for (int64_t n = 0; n < g.N; ++n) {
      for (int64_t c = 0; c < g.C; ++c) {
        detail::ChannelFinish f;
        if (bp) f.has_bias = true, f.bias = bp[c];
        if (then.scale) f.affine = true, f.scale = then.scale[c], f.shift = then.shift[c];
        f.relu6 = then.scale && then.relu6;
        const float* xc = xp + (n * g.C + c) * hw;
        const float* wc = wp + c * g.KH * g.KW;
        float* yc = yp + (n * g.OC + c) * ohw;
        if (wide)
          wide(xc, wc, yc, g.H, g.W, g.OH, g.OW, g.KH, g.KW, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w,
               ranges, ranges + g.KW, f);
        else
          depthwise_plane_forward(xc, wc, yc, g, ranges, ranges + g.KW, f);
      }
      if (after_image) after_image(n, yp + n * g.OC * ohw);
    }
    return y;
  }
  const int64_t ocg = g.out_per_group(), cg = g.in_per_group(), k = g.patch();
  float* col = g.is_pointwise() ? nullptr : workspace(static_cast<size_t>(k * ohw));
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      const float* xg = xp + (n * g.C + gr * cg) * hw;
      const float* b = xg;  // (k, ohw)
      if (col) {
        im2col(xg, g, col);
        b = col;
      }
      float* yg = yp + (n * g.OC + gr * ocg) * ohw;
      // With a bias, y starts as the bias and the GEMM adds into it (beta = 1):
      // one pass over y fewer than a GEMM into zeros and a bias pass after it.
      if (bp)
        for (int64_t oc = 0; oc < ocg; ++oc) std::fill_n(yg + oc * ohw, ohw, bp[gr * ocg + oc]);
      // y_n,g (ocg, ohw) = W_g (ocg, k) @ col (k, ohw) [+ bias]   (eq. 2)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ocg, ohw, k, 1.f, wp + gr * ocg * k, k, b, ohw,
                  bp ? 1.f : 0.f, yg, ohw);
    }
    float* yn = yp + n * g.OC * ohw;
    // (Running the GEMM on column chunks that stay in cache, each followed by
    // its epilogue, measured no faster: the epilogue is one pass over y.)
    if (then.scale)
      for (int64_t oc = 0; oc < g.OC; ++oc)
        batch_norm_apply_plane(yn + oc * ohw, yn + oc * ohw, ohw, then.scale[oc], then.shift[oc], then.relu6);
    if (after_image) after_image(n, yn);
  }
  return y;
}

void conv2d_backward_images(const ImageGradient& dy_of, const Tensor& x, const Tensor& weight,
                            const Conv2dGeometry& g, const Tensor& dx, const Tensor& dw, bool accumulate) {
  const bool want_dx = dx.defined(), want_dw = dw.defined();
  if (want_dx) {
    check_f32_contiguous(weight, "weight");
    check_f32_contiguous(dx, "dx");
    if (!(dx.shape() == Shape{g.N, g.C, g.H, g.W}))
      throw std::invalid_argument(fmt::format("conv2d kernel: dx of shape {} is not the input's ({}, {}, {}, {})",
                                              dx.shape().str(), g.N, g.C, g.H, g.W));
  }
  if (want_dw) {
    check_f32_contiguous(x, "x");
    check_f32_contiguous(dw, "dw");
    if (dw.numel() != g.OC * g.in_per_group() * g.KH * g.KW)
      throw std::invalid_argument(fmt::format("conv2d kernel: dw of shape {} is not the weight's ({}, {}, {}, {})",
                                              dw.shape().str(), g.OC, g.in_per_group(), g.KH, g.KW));
    if (!accumulate) std::memset(dw.data<float>(), 0, sizeof(float) * dw.numel());
  }
  const float* wp = want_dx ? weight.data<float>() : nullptr;
  const float* xp = want_dw ? x.data<float>() : nullptr;
  float* dxp = want_dx ? dx.data<float>() : nullptr;
  float* dwp = want_dw ? dw.data<float>() : nullptr;
  const int64_t ohw = g.OH * g.OW, hw = g.H * g.W;
  const int64_t ocg = g.out_per_group(), cg = g.in_per_group(), k = g.patch();
  const bool depthwise = g.is_depthwise(), direct = g.is_pointwise();
  // One buffer serves both GEMMs of an image in turn: first the columns of
  // x_n for dW, then dcol for dx (every geometry but 1x1 / depthwise).
  float* col = depthwise || direct || !(want_dx || want_dw) ? nullptr : workspace(static_cast<size_t>(k * ohw));
  for (int64_t n = 0; n < g.N; ++n) {
    const float* dyn = dy_of(n);
    if (depthwise) {
      for (int64_t c = 0; c < g.C; ++c) {
        const float* dyc = dyn + c * ohw;
        if (want_dw) depthwise_plane_backward_weight(dyc, xp + (n * g.C + c) * hw, dwp + c * g.KH * g.KW, g);
        if (want_dx) {
          float* dxc = dxp + (n * g.C + c) * hw;
          std::memset(dxc, 0, sizeof(float) * hw);
          depthwise_plane_backward_input(dyc, wp + c * g.KH * g.KW, dxc, g);
        }
      }
      continue;
    }
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      const float* dyg = dyn + gr * ocg * ohw;
      if (want_dw) {
        const float* xg = xp + (n * g.C + gr * cg) * hw;
        if (col) im2col(xg, g, col);
        // dW_g (ocg, k) += dy_n,g (ocg, ohw) @ col^T (ohw, k)   (eq. 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ocg, k, ohw, 1.f, dyg, ohw, col ? col : xg, ohw, 1.f,
                    dwp + gr * ocg * k, k);
      }
      if (want_dx) {
        float* dxg = dxp + (n * g.C + gr * cg) * hw;
        // dcol (k, ohw) = W_g^T (k, ocg) @ dy_n,g (ocg, ohw)   (eq. 3); a 1x1 conv writes dx itself.
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, ohw, ocg, 1.f, wp + gr * ocg * k, k, dyg, ohw, 0.f,
                    col ? col : dxg, ohw);
        if (col) col2im_assign(col, g, dxg);
      }
    }
  }
}

Tensor conv2d_backward_input(const Tensor& dy, const Tensor& weight, const Conv2dGeometry& g) {
  check_f32_contiguous(dy, "dy");
  Tensor dx = empty({g.N, g.C, g.H, g.W});
  const float* dyp = dy.data<float>();
  const int64_t image = g.OC * g.OH * g.OW;
  conv2d_backward_images([&](int64_t n) { return dyp + n * image; }, Tensor(), weight, g, dx, Tensor(), false);
  return dx;
}

void conv2d_backward_weight(const Tensor& dy, const Tensor& x, const Conv2dGeometry& g, const Tensor& dw,
                            bool accumulate) {
  check_f32_contiguous(dy, "dy");
  const float* dyp = dy.data<float>();
  const int64_t image = g.OC * g.OH * g.OW;
  conv2d_backward_images([&](int64_t n) { return dyp + n * image; }, x, Tensor(), g, Tensor(), dw, accumulate);
}

void conv2d_backward_bias(const Tensor& dy, const Tensor& db, bool accumulate) {
  check_f32_contiguous(dy, "dy");
  check_f32_contiguous(db, "db");
  const int64_t N = dy.size(0), OC = dy.size(1), plane = dy.numel() / (N * OC);
  const float* dyp = dy.data<float>();
  float* dbp = db.data<float>();
  for (int64_t oc = 0; oc < OC; ++oc) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) {
      // 16 partial sums (vector registers) rather than one chain of dependent adds.
      const float* p = dyp + (n * OC + oc) * plane;
      float lanes[16] = {};
      int64_t i = 0;
      for (; i + 16 <= plane; i += 16)
        for (int64_t j = 0; j < 16; ++j) lanes[j] += p[i + j];
      for (; i < plane; ++i) lanes[0] += p[i];
      float row = 0.f;
      for (float v : lanes) row += v;
      s += row;
    }
    dbp[oc] = static_cast<float>(accumulate ? dbp[oc] + s : s);
  }
}

// ---- Reference twins: the definition, eq. 1, read literally ----

namespace {

// Every tap of eq. 1 that lands inside the input: f(y, x, w) with the flat
// NCHW indices of the output element, the input element and the weight.
template <class F>
void for_each_tap(const Conv2dGeometry& g, F&& f) {
  const int64_t ocg = g.out_per_group(), cg = g.in_per_group();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oc = 0; oc < g.OC; ++oc)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t yi = ((n * g.OC + oc) * g.OH + oh) * g.OW + ow;
          const int64_t gr = oc / ocg;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t kh = 0; kh < g.KH; ++kh)
              for (int64_t kw = 0; kw < g.KW; ++kw) {
                const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dil_h;
                const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dil_w;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                f(yi, ((n * g.C + gr * cg + ci) * g.H + ih) * g.W + iw, ((oc * cg + ci) * g.KH + kh) * g.KW + kw);
              }
        }
}

Tensor to_f32(const std::vector<double>& v, const Shape& shape) {
  return from_vector(std::vector<float>(v.begin(), v.end()), shape);
}

}  // namespace

Tensor conv2d_forward_reference(const Tensor& x_in, const Tensor& w_in, const Tensor& bias, const Conv2dGeometry& g) {
  const std::vector<float> x = to_vector(x_in), w = to_vector(w_in);
  const std::vector<float> b = bias.defined() ? to_vector(bias) : std::vector<float>(g.OC, 0.f);
  std::vector<double> y(static_cast<size_t>(g.N * g.OC * g.OH * g.OW));
  for (size_t i = 0; i < y.size(); ++i) y[i] = b[(i / (g.OH * g.OW)) % g.OC];
  for_each_tap(g, [&](int64_t yi, int64_t xi, int64_t wi) { y[yi] += static_cast<double>(w[wi]) * x[xi]; });
  return to_f32(y, g.output_shape());
}

Tensor conv2d_backward_input_reference(const Tensor& dy_in, const Tensor& w_in, const Conv2dGeometry& g) {
  const std::vector<float> dy = to_vector(dy_in), w = to_vector(w_in);
  std::vector<double> dx(static_cast<size_t>(g.N * g.C * g.H * g.W), 0.0);
  for_each_tap(g, [&](int64_t yi, int64_t xi, int64_t wi) { dx[xi] += static_cast<double>(dy[yi]) * w[wi]; });
  return to_f32(dx, {g.N, g.C, g.H, g.W});
}

Tensor conv2d_backward_weight_reference(const Tensor& dy_in, const Tensor& x_in, const Conv2dGeometry& g) {
  const std::vector<float> dy = to_vector(dy_in), x = to_vector(x_in);
  std::vector<double> dw(static_cast<size_t>(g.OC * g.in_per_group() * g.KH * g.KW), 0.0);
  for_each_tap(g, [&](int64_t yi, int64_t xi, int64_t wi) { dw[wi] += static_cast<double>(dy[yi]) * x[xi]; });
  return to_f32(dw, {g.OC, g.in_per_group(), g.KH, g.KW});
}

}  // namespace tq::kernels

// The inner loops of the batch-norm statistics, of the fused
// batch-norm + ReLU + max-pool backward (pool_kernels.h), of the eval batch
// norm and of the 3x3 col2im, in plain C++ for baseline x86-64, and the table
// of their builds (FusedLoops: baseline in pool_kernels.cpp, with the fused
// forward's pooling four windows at a time in SSE2; AVX2 in
// fused_kernels_avx2.cpp; AVX-512 in fused_kernels_avx512.cpp). Every build
// runs the same float operations in the same order (the sixteen partial sums
// are sixteen lanes of registers; no multiply and add are contracted into an
// FMA), so all give the same bits.
#pragma once

#include <algorithm>
#include <cstdint>

namespace tq::kernels::fused_loops {
namespace {

constexpr int64_t kLanes = 16;

// sum (p - shift) and sum (p - shift)^2 over n values, in kLanes partial sums:
// one float accumulator is a chain of dependent adds the compiler may not
// reorder, kLanes of them are vector registers.
inline void shifted_sums(const float* p, int64_t n, float shift, float& sum, float& sum_sq) {
  float a[kLanes] = {}, a2[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const float d = p[i + j] - shift;
      a[j] += d;
      a2[j] += d * d;
    }
  for (; i < n; ++i) {
    const float d = p[i] - shift;
    a[0] += d;
    a2[0] += d * d;
  }
  sum = sum_sq = 0.f;
  for (int64_t j = 0; j < kLanes; ++j) sum += a[j], sum_sq += a2[j];
}

// Sum of n values in kLanes partial sums (as conv2d_backward_bias takes it).
inline float lane_sum(const float* p, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += p[i + j];
  for (; i < n; ++i) lanes[0] += p[i];
  float s = 0.f;
  for (float v : lanes) s += v;
  return s;
}

// Over one pooled plane of n outputs: sum dz and sum dz (y_at - m), dz = g
// where the gradient flows (at >= 0), 0 elsewhere.
inline void pooled_gradient_sums(const float* g, const int32_t* at, const float* y_at, int64_t n, float m, float& s,
                                 float& t) {
  float a[kLanes] = {}, b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const float dz = at[i + j] >= 0 ? g[i + j] : 0.f;
      a[j] += dz;
      b[j] += dz * (y_at[i + j] - m);
    }
  for (; i < n; ++i) {
    const float dz = at[i] >= 0 ? g[i] : 0.f;
    a[0] += dz;
    b[0] += dz * (y_at[i] - m);
  }
  s = t = 0.f;
  for (int64_t j = 0; j < kLanes; ++j) s += a[j], t += b[j];
}

// One plane (H, W) of the batch norm's input gradient, dy = k dz + (y - m) a + b
// (batch_norm_backward_input's arithmetic), dz being g at the place `at`
// names in each of the (OH, OW) windows (-1: none) and 0 elsewhere. Two
// passes: the whole plane as (y - m) a + b (a loop the compiler vectorises),
// then each window's place rewritten with its k dz term. That rewrite is a
// select, not a branch: about half the windows are closed, so a branch would
// be mispredicted half the time; a closed window rewrites place 0 with the
// value it already holds. Returns the plane's sum of dy when `want_sum` (the
// convolution bias's gradient), else 0.
inline float batch_norm_backward_plane(const float* y, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* g,
                                       const int32_t* at, float m, float k, float a, float b, float* dy,
                                       bool want_sum) {
  const int64_t hw = H * W, windows = OH * OW;
  // The second pass reads the plane's at and g: they come from memory, a
  // few lines each, too short a stream for the hardware prefetcher, so ask
  // for them now, while the first pass runs.
  for (int64_t o = 0; o < windows; o += 16) __builtin_prefetch(at + o), __builtin_prefetch(g + o);
  for (int64_t i = 0; i < hw; ++i) dy[i] = (y[i] - m) * a + b;
  for (int64_t o = 0; o < windows; ++o) {
    const int32_t p = at[o];
    const int64_t q = p >= 0 ? p : 0;
    const float hit = k * g[o] + (y[q] - m) * a + b;
    dy[q] = p >= 0 ? hit : dy[q];
  }
  return want_sum ? lane_sum(dy, hw) : 0.f;
}


// col2im_assign of a 3x3 / stride 1 / padding 1 convolution (conv_kernels.h):
// `channels` planes (H, W) of dx from their nine rows of col each. dx (ih, iw)
// gathers col (kh, kw) at (oh, ow) = (ih + 1 - kh, iw + 1 - kw) for the taps
// inside the image, in the order (kh, kw) = (0, 0), (0, 1), ..., (2, 2) in
// which col2im's walk adds them, starting from 0 as col2im does after dx is
// zeroed: the same bits, in one write of each row.
inline void col2im_assign_3x3_s1_p1(const float* col, int64_t channels, int64_t H, int64_t W, float* dx) {
  const int64_t hw = H * W;
  for (int64_t c = 0; c < channels; ++c) {
    const float* cc = col + c * 9 * hw;
    for (int64_t ih = 0; ih < H; ++ih) {
      float* __restrict d = dx + c * hw + ih * W;
      for (int64_t iw = 0; iw < W; ++iw) d[iw] = 0.f;
      for (int64_t kh = 0; kh < 3; ++kh) {
        const int64_t oh = ih + 1 - kh;
        if (oh < 0 || oh >= H) continue;
        const float* __restrict r0 = cc + kh * 3 * hw + oh * W;  // tap (kh, 0): ow = iw + 1
        const float* __restrict r1 = r0 + hw;                    // tap (kh, 1): ow = iw
        const float* __restrict r2 = r1 + hw;                    // tap (kh, 2): ow = iw - 1
        for (int64_t iw = 0; iw + 1 < W; ++iw) d[iw] += r0[iw + 1];
        for (int64_t iw = 0; iw < W; ++iw) d[iw] += r1[iw];
        for (int64_t iw = 1; iw < W; ++iw) d[iw] += r2[iw - 1];
      }
    }
  }
}

// norm_kernels.h's batch_norm_apply_plane: q = p a + b, then the clamp to
// [0, 6] when then_relu6 (min(max(v, 0), 6): a NaN stays NaN).
inline void batch_norm_apply_plane(const float* p, float* q, int64_t n, float a, float b, bool then_relu6) {
  if (then_relu6) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = p[i] * a + b;
      q[i] = std::min(std::max(v, 0.f), 6.f);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) q[i] = p[i] * a + b;
  }
}

}  // namespace
}  // namespace tq::kernels::fused_loops

namespace tq::detail {

// What a depthwise output channel does after its sum, in this order: + bias,
// * scale + shift, the clamp to [0, 6] (conv_kernels.h, ChannelEpilogue).
struct ChannelFinish {
  float bias = 0.f, scale = 1.f, shift = 0.f;
  bool has_bias = false, affine = false, relu6 = false;
};

// One build of the fused loops: the loops above (and the fused forward's
// pooling) for one instruction set. The kernels call the build that
// kernels::fused_kernels() (pool_kernels.h) names, through fused_loops_build().
struct FusedLoops {
  void (*shifted_sums)(const float* p, int64_t n, float shift, float& sum, float& sum_sq);
  void (*pooled_gradient_sums)(const float* g, const int32_t* at, const float* y_at, int64_t n, float m, float& s,
                               float& t);
  float (*batch_norm_backward_plane)(const float* y, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* g,
                                     const int32_t* at, float m, float k, float a, float b, float* dy, bool want_sum);
  // One plane (H, W) of y -> (OH, OW) outputs: out = the first maximum, in the
  // order (0,0), (0,1), (1,0), (1,1), of relu(y a + b) over each 2x2 window,
  // at = its flat index in the plane or -1 where out is 0, y_at = y there (0
  // where closed).
  void (*batch_norm_relu_max_pool2x2_plane)(const float* y, int64_t W, int64_t OH, int64_t OW, float a, float b,
                                            float* out, int32_t* at, float* y_at);
  // norm_kernels.h's batch_norm_apply_plane.
  void (*batch_norm_apply_plane)(const float* p, float* q, int64_t n, float a, float b, bool then_relu6);
  // col2im_assign of a 3x3 / stride 1 / padding 1 convolution (conv_kernels.h):
  // `channels` planes (H, W) of dx from their nine rows of col each.
  void (*col2im_assign_3x3_s1_p1)(const float* col, int64_t channels, int64_t H, int64_t W, float* dx);
  // One channel of a depthwise convolution (conv_kernels.cpp's
  // depthwise_plane_forward): x (H, W) -> y (OH, OW) with the filter w
  // (KH, KW), a register of outputs at a time. [ow_lo[kw], ow_hi[kw]) are the
  // output columns whose tap kw lies inside the image. Needs stride_w 1 or 2
  // and KW <= 32. Null in the baseline build, which walks the plane in
  // conv_kernels.cpp.
  void (*depthwise_plane_forward)(const float* x, const float* w, float* y, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                                  int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, const int64_t* ow_lo,
                                  const int64_t* ow_hi, const ChannelFinish& f);
};

extern const FusedLoops kFusedLoopsAvx2;    // fused_kernels_avx2.cpp
extern const FusedLoops kFusedLoopsAvx512;  // fused_kernels_avx512.cpp
// The build kernels::fused_kernels() names (pool_kernels.cpp, with the baseline's).
const FusedLoops& fused_loops_build();

}  // namespace tq::detail

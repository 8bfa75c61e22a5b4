// 2-D convolution kernels on NCHW float tensors (docs/convolution.md).
//
// The fast path turns a convolution into matrix products (eq. 2 of
// docs/convolution.md): im2col copies, for one image and one group, every
// receptive field into a column of a (C/g * KH * KW, OH * OW) matrix, so that
//   y_n,g (OC/g, OH*OW) = W_g (OC/g, C/g*KH*KW) @ col_n,g
// is one cblas_sgemm. The backward is two more products:
//   dcol_n,g = W_g^T @ dy_n,g   then col2im scatters dcol back onto dx (eq. 3),
//   dW_g    += dy_n,g @ col_n,g^T                                       (eq. 4).
// A depthwise convolution (groups == C == OC) has a K of only KH*KW per
// group: a GEMM would be all overhead, so it runs a direct loop instead, row
// by row, each output the sum of its taps in the order (kh, kw) (the AVX2 and
// AVX-512 builds, eight and sixteen outputs a register, give the same bits).
//
// Every fast kernel has a plain reference twin (seven nested loops in double)
// that the tests compare it with. The im2col workspace is one per thread and
// only grows, so a training loop allocates nothing for it after the first step.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "tensor/tensor.h"

namespace tq::kernels {

// Everything a convolution kernel needs to know about its shapes.
// x: (N, C, H, W), weight: (OC, C / groups, KH, KW), y: (N, OC, OH, OW) with
//   OH = (H + 2 pad_h - dil_h (KH - 1) - 1) / stride_h + 1   (eq. 1), same for OW.
struct Conv2dGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t OC = 0, KH = 0, KW = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t groups = 1;
  int64_t OH = 0, OW = 0;

  int64_t in_per_group() const { return C / groups; }
  int64_t out_per_group() const { return OC / groups; }
  int64_t patch() const { return in_per_group() * KH * KW; }  // rows of the im2col matrix
  bool is_depthwise() const { return groups == C && groups == OC && groups > 1; }
  bool is_pointwise() const {  // 1x1, stride 1, no padding: the input already is the im2col matrix
    return KH == 1 && KW == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
  Shape output_shape() const { return {N, OC, OH, OW}; }
};

// Validates the shapes and hyper-parameters, naming `op` and the values at
// fault: x must be (N, C, H, W), weight (OC, C / groups, KH, KW), C and OC
// divisible by groups, the padded input at least as large as the dilated kernel.
Conv2dGeometry conv2d_geometry(const Shape& x, const Shape& weight, int64_t stride_h, int64_t stride_w,
                               int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                               const std::string& op = "conv2d");

// ---- im2col / col2im for one image and one group ----
// x: (C/g, H, W) of that group -> col: (C/g * KH * KW, OH * OW); zero where the
// receptive field reaches into the padding.
// The 3x3 / stride 1 / padding 1 case takes a faster walk (contiguous block
// copies); im2col_general is the walk for every geometry, its twin in the tests.
void im2col(const float* x, const Conv2dGeometry& g, float* col);
void im2col_general(const float* x, const Conv2dGeometry& g, float* col);
// The adjoint: dx (C/g, H, W) += the entries of col back where im2col read them.
void col2im(const float* col, const Conv2dGeometry& g, float* dx);
// dx (C/g, H, W) = the same adjoint, overwriting dx: zeroing dx, then col2im.
// The 3x3 / stride 1 / padding 1 case takes a faster walk: each row of dx is
// written once, the sum of its (up to) nine taps added in the order col2im
// adds them, so the same bits (the tests compare them); its AVX2 and AVX-512
// builds run as fused_kernels() (pool_kernels.h) says.
void col2im_assign(const float* col, const Conv2dGeometry& g, float* dx);

// ---- Fast kernels (all tensors contiguous f32) ----
// x: (N, C, H, W), weight: (OC, C/g, KH, KW), bias: (OC) or undefined -> y: (N, OC, OH, OW)
// `after_image`, when given, is called with n and y_n (OC, OH, OW) as soon as
// image n is done, in order n = 0, 1, ...: while y_n is still in cache (the
// fused training path takes the batch-norm sums there).
// `then`, when its scale and shift are given, is applied to every output after
// the bias: y = y scale[oc] + shift[oc], then with relu6 the clamp to [0, 6]
// (an eval batch norm and ReLU6 in the convolution's own pass): element for
// element batch_norm_apply's arithmetic (norm_kernels.h), so the same bits as
// the convolution followed by it. A depthwise convolution applies it to each
// row of outputs as it finishes it (the AVX2 and AVX-512 builds: while they
// are in a register), the others to each image after its GEMM.
using ImageCallback = std::function<void(int64_t n, const float* y_n)>;
struct ChannelEpilogue {
  const float* scale = nullptr;  // (OC)
  const float* shift = nullptr;  // (OC)
  bool relu6 = false;
};
Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dGeometry& g,
                      const ImageCallback& after_image = {}, const ChannelEpilogue& then = {});
// Both gradients, one image at a time: dy_of(n) returns image n's output
// gradient (OC, OH, OW), contiguous and valid until the next call; it is
// called once for every n = 0, 1, ..., N - 1 in order, even when neither
// gradient is wanted, and its values are used while they are in cache.
//   dx (N, C, H, W), when defined, is overwritten with W^T dy col2im'd (eq. 3);
//     `weight` is read only then;
//   dw (OC, C/g, KH, KW), when defined, = (accumulate ? dw : 0) + sum_n dy_n (x) col_n
//     (eq. 4); `x` is read only then.
// conv2d_backward_input and conv2d_backward_weight below are this function
// on a dy tensor with one of the two gradients.
using ImageGradient = std::function<const float*(int64_t n)>;
void conv2d_backward_images(const ImageGradient& dy_of, const Tensor& x, const Tensor& weight,
                            const Conv2dGeometry& g, const Tensor& dx, const Tensor& dw, bool accumulate);
// dy: (N, OC, OH, OW), weight -> dx: (N, C, H, W)
Tensor conv2d_backward_input(const Tensor& dy, const Tensor& weight, const Conv2dGeometry& g);
// dw (OC, C/g, KH, KW) = (accumulate ? dw : 0) + sum_n dy_n (x) col_n
void conv2d_backward_weight(const Tensor& dy, const Tensor& x, const Conv2dGeometry& g, const Tensor& dw,
                            bool accumulate);
// db (OC) = (accumulate ? db : 0) + sum over n, oh, ow of dy
void conv2d_backward_bias(const Tensor& dy, const Tensor& db, bool accumulate);

// ---- Plain reference twins (direct loops, double accumulation) ----
Tensor conv2d_forward_reference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dGeometry& g);
Tensor conv2d_backward_input_reference(const Tensor& dy, const Tensor& weight, const Conv2dGeometry& g);
Tensor conv2d_backward_weight_reference(const Tensor& dy, const Tensor& x, const Conv2dGeometry& g);

}  // namespace tq::kernels

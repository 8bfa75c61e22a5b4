// Pooling kernels on NCHW float tensors (docs/convolution.md §4): max and
// average pooling over a sliding window, and adaptive average pooling, whose
// window for output index o along a size-`in` axis is
//   [floor(o * in / out), ceil((o + 1) * in / out))           (PyTorch's rule).
// Each fast kernel walks only the part of the window inside the input; its
// plain reference twin tests every position against the bounds.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/cpu_features.h"
#include "tensor/tensor.h"

namespace tq::detail {
struct FusedLoops;  // fused_loops.h
}  // namespace tq::detail

namespace tq::kernels {

// A sliding window over (H, W): y (N, C, OH, OW), OH = (H + 2 pad_h - dil_h (KH - 1) - 1) / stride_h + 1.
struct Pool2dGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t KH = 1, KW = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t OH = 0, OW = 0;
  Shape output_shape() const { return {N, C, OH, OW}; }
};

// Validates (x must be 4-D; padding at most half the kernel, as PyTorch asks;
// the window must fit the padded input), naming `op` and the values at fault.
Pool2dGeometry pool2d_geometry(const Shape& x, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                               int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, const std::string& op);

// x (N, C, H, W) -> y (N, C, OH, OW) and, for the backward, argmax (N, C, OH, OW) i32:
// the flat index ih * W + iw in its plane of the first maximum (padding is -inf).
void max_pool2d_forward(const Tensor& x, const Pool2dGeometry& g, Tensor& y, Tensor& argmax);
// dx (N, C, H, W): each dy lands on its argmax.
Tensor max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dGeometry& g);
Tensor max_pool2d_forward_reference(const Tensor& x, const Pool2dGeometry& g);
Tensor max_pool2d_backward_reference(const Tensor& dy, const Tensor& x, const Pool2dGeometry& g);

// Average with zero padding counted (PyTorch's count_include_pad=True): divisor KH * KW.
Tensor avg_pool2d_forward(const Tensor& x, const Pool2dGeometry& g);
Tensor avg_pool2d_backward(const Tensor& dy, const Pool2dGeometry& g);
Tensor avg_pool2d_forward_reference(const Tensor& x, const Pool2dGeometry& g);

// x (N, C, H, W) -> (N, C, OH, OW) with the adaptive windows above. Output 1x1
// (a global average) has its own loop; the general windows are its twin.
Tensor adaptive_avg_pool2d_forward(const Tensor& x, int64_t OH, int64_t OW);
Tensor adaptive_avg_pool2d_backward(const Tensor& dy, const Shape& x_shape);
// The general-window path even for 1x1 (the twin of the global average).
Tensor adaptive_avg_pool2d_forward_reference(const Tensor& x, int64_t OH, int64_t OW);

// ---- Training's Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2, 2) tail, fused ----
// (docs/convolution.md §6). y (N, C, H, W) is the convolution's output, the
// batch norm's input; scale_c = gamma_c invstd_c, shift_c = beta_c - mean_c scale_c.
// Forward, one pass over y:
//   out = max_pool_2x2(relu(y * scale_c + shift_c))      (N, C, H / 2, W / 2)
//   at (N, C, OH, OW) i32: the flat index in its plane of the window's first
//     maximum (the same as max_pool2d_forward's), or -1 where out is 0 (the
//     ReLU passes no gradient there);
//   y_at (N, C, OH, OW): y at that index (0 where at is -1).
// The same values as batch_norm_apply, relu and max_pool2d_forward in a row,
// without the two full-size tensors between them.
void batch_norm_relu_max_pool2x2_forward(const Tensor& y, const Tensor& scale, const Tensor& shift, Tensor& out,
                                         Tensor& at, Tensor& y_at);
// Twin: the same in plain loops, one output at a time.
void batch_norm_relu_max_pool2x2_forward_reference(const Tensor& y, const Tensor& scale, const Tensor& shift,
                                                   Tensor& out, Tensor& at);

// Backward with batch statistics (mean, invstd of y, the ones the forward used):
// dz, the gradient at the batch norm's output, is dout at `at` and 0 elsewhere.
//   sum_dz (C) = sum dz,  sum_dz_xhat (C) = sum dz (y - mean) invstd: the
//     gradients of beta and gamma;
//   returns dy (N, C, H, W), the batch norm's input gradient (eq. 4 of
//     docs/batchnorm.md) with dz, computed in one pass over y;
//   bias_sum (C), when not null: sum of dy over n, h, w, the gradient of a
//     convolution bias in front of the batch norm, taken while dy is in cache.
// gamma may be undefined (affine=False).
Tensor batch_norm_relu_max_pool2x2_backward(const Tensor& dout, const Tensor& at, const Tensor& y_at, const Tensor& y,
                                            const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                                            Tensor& sum_dz, Tensor& sum_dz_xhat, Tensor* bias_sum);
// The same backward in two steps, for a caller that uses dy one image at a
// time while it is in cache (the fused convolution's backward): the
// constructor takes the sums over the pooled tensors (sum_dz, sum_dz_xhat);
// image(n, ...) then writes image n's dy (C, H, W). The function above is
// the constructor and image() for every n, so both give the same bits.
class BatchNormReluMaxPool2x2Backward {
 public:
  BatchNormReluMaxPool2x2Backward(const Tensor& dout, const Tensor& at, const Tensor& y_at, const Tensor& y,
                                  const Tensor& mean, const Tensor& invstd, const Tensor& gamma);
  const Tensor& sum_dz() const { return sum_dz_; }
  const Tensor& sum_dz_xhat() const { return sum_dz_xhat_; }
  // Data parallelism: dy then takes these sums, over `count` values per
  // channel of every rank (eq. 4 of docs/batchnorm.md with M = count), in
  // place of this rank's; sum_dz() and sum_dz_xhat() stay this rank's (the
  // gradients of beta and gamma, averaged with the other parameters').
  void use_global_sums(const Tensor& sum_dz, const Tensor& sum_dz_xhat, int64_t count);
  int64_t images() const { return N_; }
  int64_t image_numel() const { return C_ * hw_; }
  // dy_n: image_numel() floats. bias_sums, when not null: C doubles, each
  // plane's sum of dy added to its channel's (images taken in order n = 0, 1, ...
  // give the bias_sum of the function above).
  void image(int64_t n, float* dy_n, double* bias_sums) const;

 private:
  Tensor dout_, at_, y_, mean_, invstd_, gamma_, sum_dz_, sum_dz_xhat_;
  Tensor norm_dz_, norm_dz_xhat_;  // the sums dy is made from: sum_dz_ and sum_dz_xhat_, or the global ones
  int64_t N_ = 0, C_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, hw_ = 0, ohw_ = 0, count_ = 0;
  const detail::FusedLoops* loops_ = nullptr;  // the build of the loops, fixed when made
};
// Twin: dz spelled out as a full tensor, every sum and eq. 4 in double.
Tensor batch_norm_relu_max_pool2x2_backward_reference(const Tensor& dout, const Tensor& at, const Tensor& y,
                                                      const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                                                      Tensor& sum_dz, Tensor& sum_dz_xhat, Tensor& bias_sum);

// The fused kernels above, batch_norm_stats, batch_norm_apply, the 3x3
// col2im and the depthwise forward run their loops in one of three builds
// (fused_loops.h's FusedLoops): AVX-512, AVX2 or baseline x86-64, by default
// the best the CPU has. All give the same bits. Tests and benchmarks switch
// between them; asking for a build the CPU cannot run throws.
void set_fused_kernels(SimdLevel level);
SimdLevel fused_kernels();

}  // namespace tq::kernels

// Pooling kernels on NCHW float tensors (docs/convolution.md §4): max and
// average pooling over a sliding window, and adaptive average pooling, whose
// window for output index o along a size-`in` axis is
//   [floor(o * in / out), ceil((o + 1) * in / out))           (PyTorch's rule).
// Each fast kernel walks only the part of the window inside the input; its
// plain reference twin tests every position against the bounds.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/tensor.h"

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

}  // namespace tq::kernels

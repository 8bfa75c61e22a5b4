// The differentiable 2-D convolution (docs/convolution.md): forward through
// im2col + sgemm (or the direct depthwise loop), backward through col2im and
// two more GEMMs (eq. 3-4). PyTorch's torch.nn.functional.conv2d semantics.
#pragma once

#include <array>
#include <cstdint>

#include "autograd/node.h"
#include "tensor/conv_kernels.h"

namespace tq {

struct Conv2dOptions {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};

// x: (N, C, H, W), weight: (OC, C / groups, KH, KW), bias: (OC) or undefined
// -> (N, OC, OH, OW). Errors name the shapes at fault (channel mismatch,
// groups that do not divide, an input smaller than the kernel).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& options = {});

// The input and weight gradients of a convolution (eq. 3-4), inside the
// backward of `node`, whose inputs[0] and inputs[1] are the convolution's x
// and weight: grad_in[0] = dx when x requires a gradient; dw goes straight
// into the weight's .grad when that is a leaf's (else into grad_in[1]).
// dy_of(n) gives image n's output gradient, as for
// kernels::conv2d_backward_images (called once per image, in order, even
// when neither gradient is wanted). conv2d's node and the fused ops' share it.
void conv2d_input_weight_backward(const Node& node, const kernels::ImageGradient& dy_of,
                                  const kernels::Conv2dGeometry& g, Tensor* grad_in);

}  // namespace tq

// The differentiable 2-D convolution (docs/convolution.md): forward through
// im2col + sgemm (or the direct depthwise loop), backward through col2im and
// two more GEMMs (eq. 3-4). PyTorch's torch.nn.functional.conv2d semantics.
#pragma once

#include <array>
#include <cstdint>

#include "autograd/node.h"

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

}  // namespace tq

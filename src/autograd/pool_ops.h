// Differentiable pooling over (N, C, H, W) tensors, PyTorch semantics
// (ceil_mode=False; average pooling counts the zero padding).
#pragma once

#include <array>
#include <cstdint>

#include "autograd/node.h"

namespace tq {

// Window kernel (KH, KW); stride defaults to the kernel (PyTorch's stride=None).
struct Pool2dOptions {
  std::array<int64_t, 2> kernel{2, 2};
  std::array<int64_t, 2> stride{0, 0};  // 0 = the kernel size
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};  // max pooling only
};

// The gradient goes to the first maximum of each window.
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
// x (N, C, H, W) -> (N, C, out_h, out_w), windows [floor(o In / Out), ceil((o+1) In / Out)).
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace tq

// Pooling modules over (N, C, H, W), PyTorch's nn.MaxPool2d, nn.AvgPool2d and
// nn.AdaptiveAvgPool2d (docs/convolution.md §4). stride 0 means "the kernel size"
// (PyTorch's stride=None).
#pragma once

#include "autograd/pool_ops.h"
#include "nn/conv.h"  // Pair2d
#include "nn/module.h"

namespace tq::nn {

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pair2d kernel_size, Pair2d stride = 0, Pair2d padding = 0, Pair2d dilation = 1);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Pair2d kernel_size, stride, padding, dilation;
};

// Zero padding counts in the average (count_include_pad=True).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pair2d kernel_size, Pair2d stride = 0, Pair2d padding = 0);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Pair2d kernel_size, stride, padding;
};

// Any output size; 1 is the global average pooling of classification heads.
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Pair2d output_size);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Pair2d output_size;
};

}  // namespace tq::nn

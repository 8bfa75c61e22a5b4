// Conv2d: a 2-D convolution over (N, C, H, W) inputs, PyTorch's nn.Conv2d
// (docs/convolution.md). groups == in == out is the depthwise convolution of
// MobileNet; kernel 1 the pointwise one.
#pragma once

#include <array>

#include "autograd/conv_ops.h"
#include "nn/module.h"

namespace tq::nn {

// A (height, width) pair that a single integer also converts to: Conv2d(3, 8, 3)
// and Conv2d(3, 8, {3, 1}) both work, as in PyTorch.
struct Pair2d {
  Pair2d(int64_t v) : h(v), w(v) {}  // NOLINT: implicit on purpose
  Pair2d(int64_t h, int64_t w) : h(h), w(w) {}
  int64_t h, w;
  std::array<int64_t, 2> array() const { return {h, w}; }
  std::string str() const;  // "(3, 3)"
};

class Conv2d : public Module {
 public:
  // PyTorch's default initialisation: weight and bias uniform in
  // [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = in/groups * kH * kW, from the global generator.
  Conv2d(int64_t in_channels, int64_t out_channels, Pair2d kernel_size, Pair2d stride = 1, Pair2d padding = 0,
         Pair2d dilation = 1, int64_t groups = 1, bool bias = true);
  // A layer with `like`'s geometry that shares the given weight and bias
  // tensors (bias may be undefined): what fused and quantization-aware forms
  // of a convolution are built on, so that training them trains the float layer.
  Conv2d(const Conv2d& like, Tensor shared_weight, Tensor shared_bias);

  // x: (N, in_channels, H, W) -> (N, out_channels, OH, OW)
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Conv2dOptions options() const { return {stride.array(), padding.array(), dilation.array(), groups}; }

  int64_t in_channels, out_channels;
  Pair2d kernel_size, stride, padding, dilation;
  int64_t groups;
  Tensor weight;  // (out_channels, in_channels / groups, kH, kW)
  Tensor bias;    // (out_channels), undefined when bias=false
};

}  // namespace tq::nn

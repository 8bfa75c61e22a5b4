// Activation modules and small shape helpers.
#pragma once

#include "nn/module.h"

namespace tq::nn {

// min(max(x, 0), 6), differentiable: the gradient passes where 0 < x < 6.
// On a quantized tensor the result stays quantized: its integers are clamped
// to [z, z + round(6 / s)] (the codes of real 0 and 6), within the range.
Tensor relu6(const Tensor& x);

// max(x, 0). On a quantized tensor the result stays quantized.
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return tq::relu(x); }
};

// min(max(x, 0), 6), as PyTorch's nn.ReLU6. `inplace` only changes the
// printout (torchvision's MobileNetV2 prints ReLU6(inplace=True)); the result
// is always a new tensor.
class ReLU6 : public Module {
 public:
  explicit ReLU6(bool inplace = false) : inplace(inplace) {}
  Tensor forward(const Tensor& x) override { return relu6(x); }
  std::string extra_repr() const override { return inplace ? "inplace=True" : ""; }
  bool inplace = false;
};

// (N, d1, d2, ...) -> (N, d1 * d2 * ...) for start_dim = 1: dimensions from start_dim on become one.
class Flatten : public Module {
 public:
  explicit Flatten(int start_dim = 1) : start_dim(start_dim) {}
  Tensor forward(const Tensor& x) override { return tq::flatten(x, start_dim); }
  std::string extra_repr() const override { return "start_dim=" + std::to_string(start_dim) + ", end_dim=-1"; }
  int start_dim = 1;
};

}  // namespace tq::nn

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

// min(max(x, 0), 6), as PyTorch's nn.ReLU6.
class ReLU6 : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu6(x); }
};

// (N, d1, d2, ...) -> (N, d1 * d2 * ...)
class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override { return tq::flatten(x, 1); }
};

}  // namespace tq::nn

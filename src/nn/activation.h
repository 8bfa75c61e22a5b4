// Activation modules and small shape helpers.
#pragma once

#include "nn/module.h"

namespace tq::nn {

// max(x, 0). On a quantized tensor the result stays quantized.
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return tq::relu(x); }
};

// (N, d1, d2, ...) -> (N, d1 * d2 * ...)
class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override { return tq::flatten(x, 1); }
};

}  // namespace tq::nn

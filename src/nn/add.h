// Add: the sum of two tensors as a module, for residual connections
//
//     y = skip_add(x, block(x));
//
// A module rather than a bare `+`, so that a quantization pass can find the
// sum in the module tree and observe / quantize it the way it does a Linear
// (PyTorch needs FloatFunctional for this).
#pragma once

#include "nn/module.h"

namespace tq::nn {

class Add : public Module {
 public:
  using Module::forward;
  // a, b: the same shape (or broadcastable) -> a + b
  Tensor forward(const Tensor& a, const Tensor& b) override { return tq::add(a, b); }
};

}  // namespace tq::nn

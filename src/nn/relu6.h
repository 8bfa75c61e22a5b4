// ReLU6: min(max(x, 0), 6), MobileNet's activation (its range suits 8-bit
// quantization: it is known before any data is seen).
#pragma once

#include "autograd/activation_ops.h"
#include "nn/module.h"

namespace tq::nn {

class ReLU6 : public Module {
 public:
  // `inplace` only changes the printout, to match models that ask for it
  // (torchvision's MobileNetV2); tinyqat always returns a new tensor.
  explicit ReLU6(bool inplace = false) : inplace(inplace) {}
  Tensor forward(const Tensor& x) override { return tq::relu6(x); }
  std::string extra_repr() const override { return inplace ? "inplace=True" : ""; }
  bool inplace;
};

}  // namespace tq::nn

// Fusion (docs/ptq.md §4): a Linear followed by a ReLU becomes one LinearReLU
// module. In float it computes exactly what the pair computes; quantized, the
// ReLU disappears into requantization (the output is clamped at its zero
// point, which stands for real 0), and the output observer sees the values
// after the ReLU, so no quantization levels are spent on negatives.
#pragma once

#include <string>
#include <vector>

#include "nn/linear.h"
#include "nn/sequential.h"

namespace tq::quant {

class LinearReLU : public nn::Linear {
 public:
  // Shares weight and bias with `linear`.
  explicit LinearReLU(const nn::Linear& linear) : nn::Linear(linear.weight, linear.bias) { train(linear.is_training()); }
  Tensor forward(const Tensor& x) override { return tq::relu(nn::Linear::forward(x)); }
};

// Passes its input through; takes the place of a module that was fused away.
class Identity : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

// Fuses each group of dotted paths, e.g. {{"fc1", "relu1"}, {"fc2", "relu2"}}:
// the first slot gets the fused module, the others an Identity. Supported
// groups: (Linear, ReLU). Throws naming the group otherwise.
void fuse_modules(nn::Module& model, const std::vector<std::vector<std::string>>& groups);

// Fuses every Linear directly followed by a ReLU inside a Sequential, and in
// Sequentials nested anywhere below `model`. Returns how many pairs were fused.
int fuse_linear_relu(nn::Module& model);

}  // namespace tq::quant

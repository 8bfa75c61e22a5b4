// Fusion (docs/ptq.md §4): a Linear followed by a ReLU (or a ReLU6) becomes
// one LinearReLU (LinearReLU6) module. In float it computes exactly what the
// pair computes; quantized, the activation disappears into requantization
// (the output is clamped at its zero point, which stands for real 0, and for
// ReLU6 also at the code of real 6), and the output observer sees the values
// after the activation, so no quantization levels are spent outside its range.
#pragma once

#include <string>
#include <vector>

#include "nn/linear.h"
#include "nn/sequential.h"
#include "quant/layer.h"

namespace tq::quant {

// A float Linear with an activation fused into its output; shares weight and
// bias with the Linear it was made from.
class FusedLinear : public nn::Linear {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("Linear") + fused_activation_suffix(activation); }
  const FusedActivation activation;

 protected:
  FusedLinear(const nn::Linear& linear, FusedActivation activation);
};

// One class per kind, so that the mapping tables (keyed by type) tell them apart.
class LinearReLU : public FusedLinear {
 public:
  explicit LinearReLU(const nn::Linear& linear) : FusedLinear(linear, FusedActivation::relu) {}
};
class LinearReLU6 : public FusedLinear {
 public:
  explicit LinearReLU6(const nn::Linear& linear) : FusedLinear(linear, FusedActivation::relu6) {}
};

// The activation fused into a float module: that of a FusedLinear, else none.
FusedActivation fused_activation_of(const nn::Module& m);

// Passes its input through; takes the place of a module that was fused away.
class Identity : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

// Fuses each group of dotted paths, e.g. {{"fc1", "relu1"}, {"fc2", "relu2"}}:
// the first slot gets the fused module, the others an Identity. Supported
// groups: (Linear, ReLU), (Linear, ReLU6). Throws naming the group otherwise.
void fuse_modules(nn::Module& model, const std::vector<std::vector<std::string>>& groups);

// Fuses every Linear directly followed by a ReLU or a ReLU6 inside a
// Sequential, and in Sequentials nested anywhere below `model`. Returns how
// many pairs were fused.
int fuse_linear_relu(nn::Module& model);

}  // namespace tq::quant

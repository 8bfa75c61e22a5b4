// Dropout (inverted): in training, zero each element with probability p and
// scale the rest by 1 / (1 - p); identity in eval. The mask comes from the
// global generator, so manual_seed makes it reproducible.
#pragma once

#include "autograd/activation_ops.h"
#include "nn/module.h"

namespace tq::nn {

class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override { return tq::dropout(x, p, is_training()); }
  std::string extra_repr() const override;
  double p;
};

}  // namespace tq::nn

// Loss modules (mean reduction), thin wrappers over the fused autograd ops.
#pragma once

#include "autograd/functions.h"

namespace tq::nn {

// logits: (N, C) f32, target: (N) i64. Log-softmax fused with the negative
// log-likelihood (docs/autograd.md eq. 10).
struct CrossEntropyLoss {
  Tensor operator()(const Tensor& logits, const Tensor& target) const { return tq::cross_entropy(logits, target); }
};

struct MSELoss {
  Tensor operator()(const Tensor& input, const Tensor& target) const { return tq::mse_loss(input, target); }
};

}  // namespace tq::nn

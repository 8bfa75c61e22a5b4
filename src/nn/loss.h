// Loss modules, thin wrappers over the fused autograd ops. As in PyTorch the
// reduction is the mean unless asked otherwise:
//   nn::CrossEntropyLoss criterion;                      // mean over the batch
//   nn::CrossEntropyLoss per_sample{Reduction::none};    // one loss per row
#pragma once

#include "autograd/functions.h"

namespace tq::nn {

// logits: (N, C) f32, target: (N) i64. Log-softmax fused with the negative
// log-likelihood (docs/autograd.md eq. 10).
struct CrossEntropyLoss {
  Reduction reduction = Reduction::mean;
  Tensor operator()(const Tensor& logits, const Tensor& target) const {
    return tq::cross_entropy(logits, target, reduction);
  }
};

// input, target: the same shape; (input - target)^2 reduced.
struct MSELoss {
  Reduction reduction = Reduction::mean;
  Tensor operator()(const Tensor& input, const Tensor& target) const { return tq::mse_loss(input, target, reduction); }
};

}  // namespace tq::nn

// Linear: y = x W^T + b (docs/autograd.md eq. 7-8 for its gradients).
#pragma once

#include "nn/module.h"

namespace tq::nn {

class Linear : public Module {
 public:
  // PyTorch's default initialisation (docs/nn.md eq. 1): weight and bias uniform in
  // [-1/sqrt(in_features), 1/sqrt(in_features)], from the global generator.
  Linear(int64_t in_features, int64_t out_features, bool bias = true);

  // x: (N, in_features) or (in_features) -> (N, out_features) or (out_features)
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  int64_t in_features = 0;
  int64_t out_features = 0;
  Tensor weight;  // (out_features, in_features)
  Tensor bias;    // (out_features), undefined when bias=false

 protected:
  // For modules derived from a float Linear (QAT): registers the given
  // weight and bias tensors themselves, so both modules share them.
  Linear(Tensor shared_weight, Tensor shared_bias);
  // Checks x against in_features and views a 1-D input as one row.
  Tensor as_batch(const Tensor& x) const;
};

}  // namespace tq::nn

// Stochastic gradient descent with the semantics of torch.optim.SGD
// (docs/sgd.md eq. 1-4): weight decay, momentum with dampening, Nesterov.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace tq::nn {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

// Throws std::invalid_argument naming `who` and the setting unless lr and
// weight_decay are finite and >= 0, momentum and dampening are in [0, 1], and
// Nesterov has a momentum and no dampening.
void validate(const SGDOptions& options, const char* who);

class SGD {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  SGD(std::vector<Tensor> params, double lr) : SGD(std::move(params), SGDOptions{.lr = lr}) {}

  // One update of every parameter that has a gradient. Throws if none has one.
  void step();
  // Zeroes the gradients in place (their buffers are reused).
  void zero_grad();

  const SGDOptions& options() const { return options_; }
  SGDOptions& options() { return options_; }
  const std::vector<Tensor>& params() const { return params_; }
  // Momentum buffers (undefined until the first step that used them), for checkpoints.
  std::vector<Tensor>& momentum_buffers() { return buffers_; }
  // Restores momentum buffers (one per parameter, undefined = none yet), e.g.
  // from a checkpoint: each must be f32 of its parameter's shape and finite;
  // throws std::invalid_argument naming the buffer, and changes nothing, otherwise.
  void set_momentum_buffers(std::vector<Tensor> buffers);

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> buffers_;
  SGDOptions options_;
};

}  // namespace tq::nn

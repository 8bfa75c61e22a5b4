// Stochastic gradient descent with the semantics of torch.optim.SGD
// (docs/sgd.md eq. 1-4): weight decay, momentum with dampening, Nesterov;
// parameter groups with their own lr and weight decay (nn/optimizer.h).
#pragma once

#include <vector>

#include "nn/optimizer.h"
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

// options.lr and options.weight_decay are the defaults of the groups; the
// momentum settings apply to all of them.
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SGDOptions options);
  SGD(std::vector<Tensor> params, SGDOptions options) : SGD(single_group(std::move(params)), options) {}
  SGD(std::vector<Tensor> params, double lr) : SGD(std::move(params), SGDOptions{.lr = lr}) {}

  const char* type_name() const override { return "SGD"; }
  // One update of every parameter that has a gradient. Throws if none has one.
  void step() override;

  const SGDOptions& options() const { return options_; }
  SGDOptions& options() { return options_; }
  // Momentum buffers, one per params() entry (undefined until the first step that used them).
  std::vector<Tensor>& momentum_buffers() { return buffers_; }
  // Restores momentum buffers (one per parameter, undefined = none yet), e.g.
  // from a checkpoint: each must be f32 of its parameter's shape and finite;
  // throws std::invalid_argument naming the buffer, and changes nothing, otherwise.
  void set_momentum_buffers(std::vector<Tensor> buffers);

 protected:
  void save_state(StateDict& state) const override;
  void load_state(const StateDict& state) override;

 private:
  std::vector<Tensor> buffers_;
  SGDOptions options_;
};

}  // namespace tq::nn

// Optimizer: what SGD, Adam and AdamW share (docs/optim.md §1), as
// torch.optim.Optimizer: parameter groups with their own learning rate and
// weight decay, zero_grad(), step(), and a state that a checkpoint saves and
// restores exactly.
//
//   // LSQ: quantizer step sizes learn at their own rate, without weight decay.
//   nn::AdamW opt({{.name = "weights", .params = weights},
//                  {.name = "quantizers", .params = scales, .lr = 1e-4, .weight_decay = 0.0}},
//                 {.lr = 1e-3, .weight_decay = 0.01});
//
// A group's unset lr / weight_decay take the optimizer's. Learning-rate
// schedules (nn/lr_scheduler.h) change the groups' lr between steps.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace tq::nn {

struct ParamGroup {
  std::string name = {};  // for messages ("group 1 'quantizers'")
  std::vector<Tensor> params = {};
  std::optional<double> lr = std::nullopt;            // unset: the optimizer's lr
  std::optional<double> weight_decay = std::nullopt;  // unset: the optimizer's weight_decay
  // PyTorch's 'initial_lr': the rate the first schedule attached found here;
  // every schedule computes from it (nn/lr_scheduler.h).
  std::optional<double> initial_lr = std::nullopt;
};

// A flat, named state, for checkpoints: tensors are written as tensors,
// scalars as exact numbers (doubles: integer counts stay exact below 2^53).
// io/training_state.h puts one into a safetensors file and back.
struct StateDict {
  std::string kind;  // "SGD", "Adam", "StepLR", ...: checked on load
  std::map<std::string, double> scalars;
  std::map<std::string, Tensor> tensors;

  // The scalar `key`; throws naming the kind and the key when it is missing.
  double scalar(const std::string& key) const;
  // The tensor `key`, or an undefined tensor.
  Tensor tensor(const std::string& key) const;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;  // a schedule holds a reference: do not move one it is attached to
  Optimizer& operator=(Optimizer&&) = default;

  // "SGD", "Adam", "AdamW".
  virtual const char* type_name() const = 0;
  // One update of every parameter that has a gradient. Throws if none has one.
  virtual void step() = 0;
  // Zeroes the gradients in place (their buffers are reused, as PyTorch 1.13 does).
  void zero_grad();

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  // Every parameter, group after group: the index a checkpoint's state uses.
  const std::vector<Tensor>& params() const { return params_; }
  // Group g's learning rate and weight decay (always set after construction).
  double lr(size_t g) const { return *groups_.at(g).lr; }
  void set_lr(size_t g, double lr);
  double weight_decay(size_t g) const { return *groups_.at(g).weight_decay; }

  // Everything a resumed run needs to continue bit for bit: per group the
  // learning rate, weight decay and initial rate, per parameter the
  // algorithm's buffers and counters, and the algorithm's settings.
  StateDict state_dict() const;
  // Restores a state saved from an optimizer of the same kind over
  // parameters of the same shapes, in the same groups. The settings must
  // agree (an error names the one that differs); group rates are taken from
  // the state, as a schedule may have changed them.
  void load_state_dict(const StateDict& state);

 protected:
  // Fills each group's unset lr / weight_decay with these defaults and checks
  // every group and parameter (an error names `kind`, e.g. "SGD", and the group).
  Optimizer(const char* kind, std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);

  // The subclass's own part of the state: settings and per-parameter buffers.
  virtual void save_state(StateDict& state) const = 0;
  virtual void load_state(const StateDict& state) = 0;

  // For subclasses' load_state: throws unless the saved setting equals ours.
  void check_setting(const StateDict& state, const std::string& key, double ours) const;
  // A saved per-parameter buffer, checked against parameter i's shape; an
  // undefined tensor when the state has none (the buffer was not made yet).
  Tensor load_buffer(const StateDict& state, const std::string& key, size_t i) const;
  // The group's label for messages: "group 1 ('quantizers')".
  std::string group_label(size_t g) const;

  std::vector<ParamGroup> groups_;
  std::vector<Tensor> params_;       // groups_' parameters, flattened
  std::vector<size_t> group_index_;  // the group of each params_ entry
};

// Groups for the common case of one set of parameters.
inline std::vector<ParamGroup> single_group(std::vector<Tensor> params) {
  std::vector<ParamGroup> g(1);
  g[0].params = std::move(params);
  return g;
}

}  // namespace tq::nn

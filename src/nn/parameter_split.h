// Splitting a model's parameters by name into two sets, e.g. to give them
// different learning rates or weight decay in two optimizer parameter groups
// (docs/optim.md §1). quant/qat_schedule.h uses it to put LSQ's quantizer
// step sizes in a group of their own.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "nn/optimizer.h"

namespace tq::nn {

struct ParameterSplit {
  std::vector<std::pair<std::string, Tensor>> selected;  // select(name) was true
  std::vector<std::pair<std::string, Tensor>> rest;      // the others, in model order

  static std::vector<Tensor> tensors(const std::vector<std::pair<std::string, Tensor>>& named);
};

// `select` sees each dotted parameter name ("fc1.weight_fake_quant.scale").
ParameterSplit split_parameters(const Module& model, const std::function<bool(const std::string&)>& select);

// Does the last part of a dotted name equal `leaf` ("fc1.bias" ends in "bias")?
bool name_ends_with(const std::string& name, const std::string& leaf);

// Names whose last part is "bias" (recipes often exclude biases from weight
// decay): a `select` for split_parameters.
bool is_bias_name(const std::string& name);

}  // namespace tq::nn

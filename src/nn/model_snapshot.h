// A copy of a model's parameters and buffers, to keep the best epoch's
// weights while training goes on and put them back at the end (docs/optim.md
// §6), as PyTorch users do with copy.deepcopy(model.state_dict()):
//
//   nn::ModelSnapshot best = nn::ModelSnapshot::take(model);
//   ... if (val_accuracy > best_accuracy) best = nn::ModelSnapshot::take(model);
//   best.restore(model);   // in place: the optimizer's handles stay valid
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace tq::nn {

class ModelSnapshot {
 public:
  ModelSnapshot() = default;
  // Deep copies of every parameter and buffer, under their dotted names.
  static ModelSnapshot take(const Module& model);
  // A snapshot of named values kept elsewhere (a checkpoint's copy of the
  // best epoch); restore() checks them against the model.
  static ModelSnapshot from(std::vector<std::pair<std::string, Tensor>> parameters,
                            std::vector<std::pair<std::string, Tensor>> buffers);

  // Copies the values back into `model`, which must have the same parameter
  // names and shapes (an error names the first that differs; nothing is
  // changed then). Parameters are written in place; a buffer whose shape
  // changed since is replaced. Every module's on_state_loaded() runs after,
  // so fake-quant modules use the restored qparams.
  void restore(Module& model) const;

  bool empty() const { return parameters_.empty() && buffers_.empty(); }
  const std::vector<std::pair<std::string, Tensor>>& parameters() const { return parameters_; }
  const std::vector<std::pair<std::string, Tensor>>& buffers() const { return buffers_; }

 private:
  std::vector<std::pair<std::string, Tensor>> parameters_, buffers_;
};

}  // namespace tq::nn

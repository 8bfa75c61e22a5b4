// Sequential: children named "0", "1", ... run one after another.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nn/module.h"

namespace tq::nn {

class Sequential : public Module {
 public:
  Sequential() = default;
  template <class... Ms>
  explicit Sequential(Ms&&... modules) {
    (push_back(std::forward<Ms>(modules)), ...);
  }

  template <class M>
  void push_back(M&& m) {
    register_module(std::to_string(slots_.size()), std::forward<M>(m));
  }
  void push_back(std::shared_ptr<Module> m) { register_slot(std::to_string(slots_.size()), std::move(m)); }
  // A named child ("fc1"), so the model prints and saves with readable names.
  template <class M>
  void push_back(const std::string& name, M&& m) {
    register_module(name, std::forward<M>(m));
  }

  // The children one after another. In training, a run Conv2d -> BatchNorm2d
  // -> ReLU -> MaxPool2d(2) of exactly these module types goes through one
  // fused op (conv2d_batch_norm_relu_max_pool2x2: the same results in fewer
  // passes over memory); any other module, e.g. a quantization-aware
  // replacement, breaks the run and is called as usual.
  Tensor forward(const Tensor& x) override;
  size_t size() const { return slots_.size(); }
  Module& operator[](size_t i) const { return *slots_.at(i)->module; }
};

// An MLP: Linear layers sizes[0] -> sizes[1] -> ... -> sizes.back(), a ReLU
// between each two, named fc1, relu1, fc2, relu2, ..., fcN (the model of the
// command line and of the benchmarks). Needs at least two sizes.
std::shared_ptr<Sequential> make_mlp(const std::vector<int64_t>& sizes);

}  // namespace tq::nn

// Sequential: children named "0", "1", ... run one after another.
#pragma once

#include <atomic>
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

  // The children one after another. Some runs of children of exactly these
  // module types go through one fused op (the same results in fewer passes
  // over memory):
  //   training: Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2)
  //             (conv2d_batch_norm_relu_max_pool2x2);
  //   eval, no gradient recorded: Conv2d -> BatchNorm2d [-> ReLU6]
  //             (conv2d_batch_norm_eval, the same bits), else BatchNorm2d ->
  //             ReLU6 (batch_norm_relu6_eval, the same bits).
  // Any other module, e.g. a quantization-aware replacement, breaks the run
  // and is called as usual.
  Tensor forward(const Tensor& x) override;
  size_t size() const { return slots_.size(); }
  Module& operator[](size_t i) const { return *slots_.at(i)->module; }
  // How many times a run of children went through a fused op (since made).
  int64_t fused_runs() const { return fused_runs_.n.load(std::memory_order_relaxed); }

 private:
  // A counter that moves with the Sequential (a bare atomic would delete its
  // move constructor); forward may run on several threads at once.
  struct Counter {
    std::atomic<int64_t> n{0};
    Counter() = default;
    Counter(Counter&& other) noexcept : n(other.n.load(std::memory_order_relaxed)) {}
    Counter& operator=(Counter&& other) noexcept {
      n.store(other.n.load(std::memory_order_relaxed), std::memory_order_relaxed);
      return *this;
    }
    void add() { n.fetch_add(1, std::memory_order_relaxed); }
  };
  Counter fused_runs_;
};

// An MLP: Linear layers sizes[0] -> sizes[1] -> ... -> sizes.back(), a ReLU
// between each two, named fc1, relu1, fc2, relu2, ..., fcN (the model of the
// command line and of the benchmarks). Needs at least two sizes.
std::shared_ptr<Sequential> make_mlp(const std::vector<int64_t>& sizes);

}  // namespace tq::nn

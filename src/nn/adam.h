// Adam and AdamW with the semantics of torch.optim.Adam / AdamW in PyTorch
// 1.13 (docs/optim.md §2-3). Per parameter, with gradient g and step t:
//
//   Adam:  g <- g + λ w                       (L2 weight decay, eq. 5)
//   AdamW: w <- w (1 - lr λ)                  (decoupled weight decay, eq. 6)
//   m <- β1 m + (1 - β1) g                    (eq. 1)
//   v <- β2 v + (1 - β2) g²                   (eq. 2)
//   v̂ <- max(v̂, v) with amsgrad, else v̂ = v  (eq. 4)
//   w <- w - lr / (1 - β1^t) · m / (sqrt(v̂) / sqrt(1 - β2^t) + ε)   (eq. 3)
//
// ε is added after the bias-corrected square root, as PyTorch does. Each
// operation is rounded to f32 in PyTorch's order, so the trajectories match
// its own to the last bits (tests/test_optim_golden.cpp).
#pragma once

#include <vector>

#include "nn/optimizer.h"

namespace tq::nn {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // Adam: L2 (added to the gradient); AdamW: decoupled
  bool amsgrad = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  Adam(std::vector<Tensor> params, AdamOptions options = {}) : Adam(single_group(std::move(params)), options) {}

  const char* type_name() const override { return decoupled_ ? "AdamW" : "Adam"; }
  void step() override;

  const AdamOptions& options() const { return options_; }

  // Per parameter (one entry per params() entry; undefined / 0 before its first step).
  const std::vector<Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  const std::vector<Tensor>& max_exp_avg_sq() const { return max_exp_avg_sq_; }
  const std::vector<int64_t>& steps() const { return steps_; }

 protected:
  Adam(std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);
  void save_state(StateDict& state) const override;
  void load_state(const StateDict& state) override;

 private:
  AdamOptions options_;
  bool decoupled_ = false;
  std::vector<Tensor> exp_avg_, exp_avg_sq_, max_exp_avg_sq_;
  std::vector<int64_t> steps_;
};

// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter). The same
// settings as AdamOptions, but weight_decay defaults to 0.01, as in PyTorch.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions o = {})
      : Adam(std::move(groups), {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad}, /*decoupled=*/true) {}
  AdamW(std::vector<Tensor> params, AdamWOptions options = {}) : AdamW(single_group(std::move(params)), options) {}
};

}  // namespace tq::nn

// BatchNorm2d: per-channel normalisation of (N, C, H, W) inputs, PyTorch's
// nn.BatchNorm2d (docs/batchnorm.md). Training normalises with the batch's
// statistics and updates the running ones; eval uses the running ones.
#pragma once

#include "autograd/norm_ops.h"
#include "nn/module.h"

namespace tq::nn {

class BatchNorm2d : public Module {
 public:
  // weight (gamma) = 1, bias (beta) = 0; buffers running_mean = 0,
  // running_var = 1, num_batches_tracked = 0 (i64), named as in PyTorch.
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true);

  // x: (N, num_features, H, W) -> the same shape
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  // Checks the running statistics a file or a state_dict restored: (C) f32
  // running_mean (finite) and running_var (finite, >= 0), a 0-d i64
  // num_batches_tracked >= 0. A negative or NaN variance would make every
  // output NaN in eval mode; the count is incremented by every training batch.
  void on_state_loaded() override;

  int64_t num_features;
  double eps, momentum;
  bool affine, track_running_stats;
  Tensor weight;  // (C) gamma, undefined when affine=false
  Tensor bias;    // (C) beta
  // The buffers are read through buffer(name) on every call, so a loader that
  // replaces them (set_buffer) is seen at once.
  Tensor running_mean() const { return buffer("running_mean"); }
  Tensor running_var() const { return buffer("running_var"); }
  int64_t num_batches_tracked() const;
  // One more training batch in num_batches_tracked (when tracked), saturating
  // rather than overflowing (a loaded count may be anything up to the maximum).
  void count_batch();
};

}  // namespace tq::nn

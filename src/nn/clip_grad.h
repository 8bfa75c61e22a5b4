// Gradient clipping by global norm, torch.nn.utils.clip_grad_norm_
// (docs/optim.md §5): the norm of all gradients taken together,
//
//     total = || (||g_1||_p, ||g_2||_p, ...) ||_p          (max |g| for p = inf)
//
// and, when it exceeds max_norm, every gradient scaled in place by
// max_norm / (total + 1e-6), so the direction of the step is kept and only
// its length is capped. Call it between backward() and the optimizer's step.
#pragma once

#include <vector>

#include "nn/module.h"

namespace tq::nn {

struct ClipGradOptions {
  double norm_type = 2.0;  // p > 0, or INFINITY for the largest |g|
  // A non-finite total norm (a nan or inf in some gradient): true throws,
  // naming the first parameter whose gradient is not finite. false leaves
  // every gradient as it is and returns the norm, so the caller can skip the
  // step (PyTorch would multiply the gradients by nan or 0 instead).
  bool error_if_nonfinite = false;
};

// Returns the total norm of the gradients (before clipping). Parameters
// without a gradient are skipped; with none at all the norm is 0.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, const ClipGradOptions& options = {});
inline double clip_grad_norm_(const Module& model, double max_norm, const ClipGradOptions& options = {}) {
  return clip_grad_norm_(model.parameters(), max_norm, options);
}

}  // namespace tq::nn

// Differentiable batch normalisation (docs/batchnorm.md), PyTorch's
// torch.nn.functional.batch_norm semantics over (N, C, ...) tensors.
#pragma once

#include <utility>

#include "autograd/node.h"

namespace tq {

// training: normalise with the batch's mean and biased variance (eq. 1-2) and,
//   when running_mean / running_var are defined, update them in place:
//   running = (1 - momentum) running + momentum batch, with the *unbiased*
//   variance M / (M - 1) var for running_var (eq. 3). Needs M = N H W > 1.
// eval: normalise with running_mean / running_var (both required).
// weight (gamma) and bias (beta): (C) or undefined (affine=False).
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum = 0.1, double eps = 1e-5);

// Inference only (nothing is recorded for autograd): eval-mode batch_norm
// with the running statistics, then ReLU6, in one pass over x -- the same
// bits as batch_norm then relu6 (nn::Sequential runs BatchNorm2d -> ReLU6
// this way when no gradient is being recorded).
Tensor batch_norm_relu6_eval(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// Eval: invstd (C) = 1 / sqrt(running_var + eps), computed in double.
Tensor batch_norm_eval_invstd(const Tensor& running_var, double eps);

// scale = gamma invstd, shift = beta - mean scale (C): y = x scale + shift is
// eq. 2; gamma and beta may be undefined (1 and 0).
void batch_norm_scale_shift(const Tensor& weight, const Tensor& bias, const Tensor& mean, const Tensor& invstd,
                            Tensor& scale, Tensor& shift);

// The statistics half of training-mode batch_norm, for callers that took the
// batch's mean and biased variance (C) themselves over M values per channel:
// returns invstd = 1 / sqrt(var + eps) and, when running_mean / running_var are
// defined, updates them in place as batch_norm does (eq. 3).
Tensor batch_norm_training_invstd(const Tensor& mean, const Tensor& var, int64_t M, const Tensor& running_mean,
                                  const Tensor& running_var, double momentum, double eps);

// Data parallel (docs/distributed.md eq. 2): mean and var (C), this rank's
// statistics over local_count values per channel, <- those of every rank's
// values together (an all-reduce over dist::world(), which every rank must
// call); returns their count, the global M.
int64_t batch_norm_all_reduce_stats(Tensor& mean, Tensor& var, int64_t local_count);

// Data parallel, the backward's half: two per-channel sums (C) of this rank
// -> their sums over every rank, in one all-reduce (every rank must call it).
std::pair<Tensor, Tensor> batch_norm_all_reduce_sums(const Tensor& a, const Tensor& b);

}  // namespace tq

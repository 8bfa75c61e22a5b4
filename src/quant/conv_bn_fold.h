// Folding a BatchNorm into the convolution before it (docs/quantized_cnn.md §6):
// with f = gamma / sqrt(running_var + eps) per output channel,
//   W' = W f        (output channel oc's filter times f[oc])
//   b' = (b - running_mean) f + beta
// so that conv(x, W', b') = BatchNorm_eval(conv(x, W, b)). Eval-time fusion
// and convert use it; a gamma of 0 gives a zero filter and b' = beta (no NaN).
#pragma once

#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace tq::quant {

struct FoldedConv {
  Tensor weight;  // (out, in / groups, kH, kW) f32
  Tensor bias;    // (out) f32
};

// weight: (out, ...) f32 (any rank >= 2: a Linear folds the same way); bias:
// (out) f32 or undefined (= 0); gamma, beta, running_mean, running_var: (out)
// f32 (gamma / beta undefined = BatchNorm without affine: 1 / 0). Throws
// std::invalid_argument on a shape mismatch, eps <= 0, a negative or
// non-finite running_var. Computed in double, rounded once to f32.
FoldedConv fold_batch_norm(const Tensor& weight, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                           const Tensor& running_mean, const Tensor& running_var, double eps);

// The per-channel factor f = gamma / sqrt(var + eps) in double (gamma undefined = 1).
std::vector<double> batch_norm_factor(const Tensor& gamma, const Tensor& var, double eps);

}  // namespace tq::quant

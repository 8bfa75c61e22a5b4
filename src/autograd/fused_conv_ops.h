// Training's Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2, 2) as one
// differentiable op (docs/convolution.md §6): the same values and gradients
// as conv2d, batch_norm (batch statistics), relu and max_pool2d called one
// after another, up to the order of float sums, in fewer passes over the
// convolution's output:
//   forward:  the GEMM of each image, its batch-norm sums taken while it is
//             still in cache, then one pass normalise + ReLU + pool;
//   backward: a pass over the pooled tensors (the batch-norm sums), then
//             image by image: the convolution's output gradient written
//             (and added up: its bias gradient) and, while it is in cache,
//             the convolution's GEMMs and col2im on it.
// nn::Sequential hands its Conv2d, BatchNorm2d, ReLU, MaxPool2d(2) children
// to it in training; the modules themselves stay as they are.
#pragma once

#include "autograd/conv_ops.h"

namespace tq {

// x, conv_weight, conv_bias (or undefined) and options as for conv2d; the
// batch norm's running statistics (updated in place, or undefined), weight
// and bias (or undefined), momentum and eps as for batch_norm with
// training = true. Returns the pooled output (N, OC, OH / 2, OW / 2).
Tensor conv2d_batch_norm_relu_max_pool2x2(const Tensor& x, const Tensor& conv_weight, const Tensor& conv_bias,
                                          const Conv2dOptions& options, const Tensor& running_mean,
                                          const Tensor& running_var, const Tensor& bn_weight, const Tensor& bn_bias,
                                          double momentum = 0.1, double eps = 1e-5);

// Inference only (nothing recorded; throws if a gradient would be): eval
// Conv2d -> BatchNorm2d (running statistics) [-> ReLU6] in the convolution's
// own pass (kernels::conv2d_forward's epilogue): the same bits as conv2d,
// batch_norm (training = false) and relu6 one after another, without the two
// extra passes over the output. nn::Sequential runs these children this way
// when no gradient is being recorded.
Tensor conv2d_batch_norm_eval(const Tensor& x, const Tensor& conv_weight, const Tensor& conv_bias,
                              const Conv2dOptions& options, const Tensor& running_mean, const Tensor& running_var,
                              const Tensor& bn_weight, const Tensor& bn_bias, double eps = 1e-5,
                              bool then_relu6 = false);

}  // namespace tq

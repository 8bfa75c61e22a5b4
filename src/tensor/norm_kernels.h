// Batch normalisation kernels on (N, C, ...) float tensors (docs/batchnorm.md).
// Per channel c, over the M = N * H * W values of that channel:
//   mean_c = sum x / M,  var_c = sum (x - mean_c)^2 / M  (biased)          (eq. 1)
//   y = (x - mean_c) * invstd_c * gamma_c + beta_c,  invstd_c = 1 / sqrt(var_c + eps)   (eq. 2)
// and, with batch statistics (training), the input gradient             (eq. 4)
//   dx = gamma_c invstd_c (dy - sum(dy) / M - xhat sum(dy xhat) / M),  xhat = (x - mean_c) invstd_c.
// Every fast kernel (one pass over the data where the reference takes two,
// float lanes where it takes double) has a reference twin.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace tq::kernels {

// x (N, C, ...) contiguous f32 -> mean (C) and biased variance (C).
void batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var);
void batch_norm_stats_reference(const Tensor& x, Tensor& mean, Tensor& var);

// batch_norm_stats one image at a time, so a caller can add an image's
// channel sums while that image is still in cache (the convolution that
// produced it, kernels::conv2d_forward's per-image callback). Images must be
// added in order n = 0, 1, ..., N - 1; the result is that of
// batch_norm_stats (the same sums in the same order).
class BatchNormStats {
 public:
  BatchNormStats(int64_t channels, int64_t plane);
  void add(const float* image);  // (channels, plane) contiguous
  void finish(Tensor& mean, Tensor& var) const;  // at least one image added

 private:
  int64_t C_, plane_, images_ = 0;
  std::vector<float> shift_;
  std::vector<double> sum_, sum_sq_;
};

// y = x * scale_c + shift_c: eq. 2 with scale = gamma invstd, shift = beta - mean scale.
// then_relu6: y = min(max(y, 0), 6) in the same pass, as relu6 computes it
// (the same bits as the two ops one after the other).
Tensor batch_norm_apply(const Tensor& x, const Tensor& scale, const Tensor& shift, bool then_relu6 = false);
// One plane of it: q[i] = p[i] * a + b (then the clamp), n values; p may be q.
void batch_norm_apply_plane(const float* p, float* q, int64_t n, float a, float b, bool then_relu6);

// Per channel: sum_dy (C) = sum dy, sum_dy_xhat (C) = sum dy (x - mean) invstd.
void batch_norm_backward_sums(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                              Tensor& sum_dy, Tensor& sum_dy_xhat);
// The input gradient of eq. 4 (training: the statistics depend on x), or with
// `training` false dx = dy gamma invstd (eval: running statistics are constants).
// gamma may be undefined (affine=False: gamma = 1). `count` is the M the sums
// were taken over: 0 means this x's N * H * W; data-parallel BatchNorm passes
// the global batch's, with sums all-reduced over the ranks.
Tensor batch_norm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                 const Tensor& gamma, const Tensor& sum_dy, const Tensor& sum_dy_xhat, bool training,
                                 int64_t count = 0);
// Eq. 4 in double with two passes, straight from the definition.
Tensor batch_norm_backward_input_reference(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                           const Tensor& invstd, const Tensor& gamma, bool training);

}  // namespace tq::kernels

#include "quant/conv_bn_fold.h"

#include <cmath>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::quant {

namespace {

std::vector<float> channel_values(const Tensor& t, int64_t out, const char* what, float missing) {
  if (!t.defined()) return std::vector<float>(static_cast<size_t>(out), missing);
  if (t.dtype() != DType::f32 || !(t.shape() == Shape{out}))
    throw std::invalid_argument(fmt::format("fold_batch_norm: {} must be f32 of shape ({}), got {} {}", what, out,
                                            dtype_name(t.dtype()), t.shape().str()));
  return to_vector(t);
}

}  // namespace

std::vector<double> batch_norm_factor(const Tensor& gamma, const Tensor& var, double eps) {
  if (!(eps > 0) || !std::isfinite(eps))
    throw std::invalid_argument(fmt::format("fold_batch_norm: eps must be positive and finite, got {}", eps));
  if (!var.defined()) throw std::invalid_argument("fold_batch_norm: running_var is undefined");
  const int64_t out = var.numel();
  const std::vector<float> v = channel_values(var, out, "running_var", 1.f);
  const std::vector<float> g = channel_values(gamma, out, "gamma (the BN weight)", 1.f);
  std::vector<double> f(static_cast<size_t>(out));
  for (size_t c = 0; c < f.size(); ++c) {
    if (!(v[c] >= 0) || !std::isfinite(v[c]))
      throw std::invalid_argument(fmt::format("fold_batch_norm: running_var[{}] is {}; it must be >= 0 and finite", c, v[c]));
    f[c] = double(g[c]) / std::sqrt(double(v[c]) + eps);
  }
  return f;
}

FoldedConv fold_batch_norm(const Tensor& weight, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                           const Tensor& running_mean, const Tensor& running_var, double eps) {
  if (!weight.defined() || weight.dtype() != DType::f32 || weight.dim() < 2)
    throw std::invalid_argument("fold_batch_norm: the weight must be an f32 tensor of rank >= 2 (out, ...)");
  const int64_t out = weight.size(0);
  if (!running_var.defined() || !(running_var.shape() == Shape{out}))
    throw std::invalid_argument(fmt::format("fold_batch_norm: running_var must have shape ({}) like the weight's output "
                                            "channels", out));
  const std::vector<double> f = batch_norm_factor(gamma, running_var, eps);
  const std::vector<float> b = channel_values(bias, out, "bias", 0.f);
  const std::vector<float> be = channel_values(beta, out, "beta (the BN bias)", 0.f);
  const std::vector<float> mean = channel_values(running_mean, out, "running_mean", 0.f);
  const Tensor w = kernels::contiguous(weight.detach());
  const int64_t per = w.numel() / out;
  FoldedConv r;
  r.weight = empty(w.shape(), DType::f32);
  r.bias = empty(Shape{out}, DType::f32);
  const float* src = w.data<float>();
  float* dst = r.weight.data<float>();
  for (int64_t o = 0; o < out; ++o) {
    const double fo = f[static_cast<size_t>(o)];
    for (int64_t i = 0; i < per; ++i) dst[o * per + i] = static_cast<float>(double(src[o * per + i]) * fo);
    r.bias.data<float>()[o] =
        static_cast<float>((double(b[static_cast<size_t>(o)]) - mean[static_cast<size_t>(o)]) * fo + be[static_cast<size_t>(o)]);
  }
  return r;
}

}  // namespace tq::quant

// Gradient clipping by global norm (docs/optim.md §5), as PyTorch 1.13's
// clip_grad_norm_: each gradient's norm in f32, the norm of those norms, then
// one f32 scale factor max_norm / (total + 1e-6), clamped to at most 1.
#include "nn/clip_grad.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace tq::nn {

namespace {

// The p-norm of n values (the largest |x| for p = inf), summed in double.
double p_norm(const float* x, int64_t n, double p) {
  double acc = 0;
  if (std::isinf(p)) {
    for (int64_t j = 0; j < n; ++j) {
      const double a = std::fabs(static_cast<double>(x[j]));
      if (std::isnan(a)) return NAN;
      acc = std::max(acc, a);
    }
    return acc;
  }
  if (p == 2) {
    for (int64_t j = 0; j < n; ++j) acc += static_cast<double>(x[j]) * x[j];
    return std::sqrt(acc);
  }
  if (p == 1) {
    for (int64_t j = 0; j < n; ++j) acc += std::fabs(static_cast<double>(x[j]));
    return acc;
  }
  for (int64_t j = 0; j < n; ++j) acc += std::pow(std::fabs(static_cast<double>(x[j])), p);
  return std::pow(acc, 1 / p);
}

}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, const ClipGradOptions& o) {
  if (std::isnan(max_norm) || max_norm < 0)
    throw std::invalid_argument(fmt::format("clip_grad_norm_: max_norm must be >= 0, got {}", max_norm));
  if (!(o.norm_type > 0))
    throw std::invalid_argument(fmt::format("clip_grad_norm_: norm_type must be > 0 (or inf), got {}", o.norm_type));
  std::vector<Tensor> grads;
  std::vector<size_t> index;  // of each gradient's parameter, for messages
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].defined()) continue;
    const Tensor g = params[i].grad();
    if (!g.defined()) continue;
    if (g.dtype() != DType::f32 || !g.is_contiguous())
      throw std::invalid_argument(fmt::format("clip_grad_norm_: the gradient of parameter {} is not a contiguous f32 "
                                              "tensor",
                                              i));
    grads.push_back(g);
    index.push_back(i);
  }
  if (grads.empty()) return 0.0;

  // Each gradient's norm is an f32 tensor in PyTorch; so is their norm.
  std::vector<float> norms;
  for (const Tensor& g : grads) norms.push_back(static_cast<float>(p_norm(g.data<float>(), g.numel(), o.norm_type)));
  const float total = static_cast<float>(p_norm(norms.data(), static_cast<int64_t>(norms.size()), o.norm_type));

  if (!std::isfinite(total)) {
    if (!o.error_if_nonfinite) return total;  // gradients untouched: the caller decides (skip the step)
    for (size_t k = 0; k < grads.size(); ++k)
      if (!std::isfinite(norms[k]))
        throw std::runtime_error(fmt::format(
            "clip_grad_norm_: the total gradient norm is {}: the gradient of parameter {} is not finite ({} norm)",
            total, index[k], norms[k]));
    throw std::runtime_error(fmt::format("clip_grad_norm_: the total gradient norm overflows f32 ({})", total));
  }
  const float coef = std::min(static_cast<float>(max_norm) / (total + 1e-6f), 1.0f);
  if (coef < 1.0f)
    for (const Tensor& g : grads) {
      float* x = g.data<float>();
      for (int64_t j = 0, j_end = g.numel(); j < j_end; ++j) x[j] *= coef;
    }
  return total;
}

}  // namespace tq::nn

#include "quant/checks.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::quant {

void require_finite(const Tensor& t, const std::string& who, const std::string& what) {
  if (!t.defined() || t.dtype() != DType::f32) return;
  const Tensor c = kernels::contiguous(t.detach());
  const float* p = c.data<float>();
  const int64_t n = c.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(p[i])) continue;
    // The multi-index of element i, row-major.
    std::string index;
    int64_t rest = i;
    for (int d = c.dim() - 1; d >= 0; --d) {
      const int64_t size = c.shape()[d];
      index = std::to_string(rest % size) + (index.empty() ? "" : ", ") + index;
      rest /= size;
    }
    throw std::invalid_argument(fmt::format("{}: {}[{}] is {}; an int8 layer needs finite {}{}", who, what, index, p[i], what,
                                            what.ends_with("s") ? "es" : "s"));
  }
}

void require_valid_qparams(const QParams& q, const std::string& who, const std::string& what) {
  if (q.quant_min >= q.quant_max)
    throw std::invalid_argument(
        fmt::format("{}: {}: quant_min ({}) must be less than quant_max ({})", who, what, q.quant_min, q.quant_max));
  if (q.scale.empty() || q.scale.size() != q.zero_point.size() || (!is_per_channel(q.scheme) && q.scale.size() != 1))
    throw std::invalid_argument(fmt::format("{}: {}: {} scales and {} zero points for {} qparams", who, what,
                                            q.scale.size(), q.zero_point.size(), qscheme_name(q.scheme)));
  for (size_t c = 0; c < q.scale.size(); ++c) {
    // A subnormal scale has an infinite reciprocal (x * (1/s) is then NaN for x = 0).
    if (!(q.scale[c] >= std::numeric_limits<float>::min()) || !std::isfinite(q.scale[c]))
      throw std::invalid_argument(fmt::format("{}: {}: scale[{}] is {}; scales must be positive, finite and normal "
                                              "(at least {})",
                                              who, what, c, q.scale[c], std::numeric_limits<float>::min()));
    if (q.zero_point[c] < q.quant_min || q.zero_point[c] > q.quant_max)
      throw std::invalid_argument(fmt::format("{}: {}: zero_point[{}] is {}, outside [{}, {}]", who, what, c,
                                              q.zero_point[c], q.quant_min, q.quant_max));
  }
}

}  // namespace tq::quant

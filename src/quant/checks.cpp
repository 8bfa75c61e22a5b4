#include "quant/checks.h"

#include <cmath>
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
    throw std::invalid_argument(fmt::format("{}: {}[{}] is {}; an int8 layer needs finite {}s", who, what, index, p[i], what));
  }
}

}  // namespace tq::quant

#include "nn/activation.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq::nn {

namespace {

// d relu6 / dx = 1 where 0 < x < 6, else 0 (at the kinks the gradient is 0, as PyTorch's hardtanh).
struct ReLU6Backward final : Node {
  const char* name() const override { return "ReLU6Backward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = kernels::contiguous(g_in), x = kernels::contiguous(inputs[0]);
    Tensor out = empty(x.shape());
    const float* xp = x.data<float>();
    const float* gp = g.data<float>();
    float* op = out.data<float>();
    for (int64_t i = 0, i_end = x.numel(); i < i_end; ++i) op[i] = xp[i] > 0.f && xp[i] < 6.f ? gp[i] : 0.f;
    gi[0] = out;
  }
};

// The integers of real 0 and real 6, kept inside the range.
template <class T>
Tensor quantized_relu6(const Tensor& q) {
  const QParams& qp = q.qparams();
  const int32_t z = qp.zero_point[0];
  const int32_t lo = std::clamp(z, qp.quant_min, qp.quant_max);
  const int32_t hi = static_cast<int32_t>(std::clamp<double>(z + std::nearbyint(6.0 / qp.scale[0]), lo, qp.quant_max));
  Tensor out = kernels::clone(kernels::contiguous(q.detach()));
  T* p = out.data<T>();
  for (int64_t i = 0, i_end = out.numel(); i < i_end; ++i) p[i] = static_cast<T>(std::clamp<int32_t>(p[i], lo, hi));
  return with_qparams(out, q.qparams_ptr());
}

}  // namespace

Tensor relu6(const Tensor& x) {
  if (x.is_quantized()) {
    if (is_per_channel(x.qparams().scheme))
      throw std::invalid_argument(fmt::format("relu6: quantized input must be per tensor, got {}",
                                              qscheme_name(x.qparams().scheme)));
    return x.dtype() == DType::u8 ? quantized_relu6<uint8_t>(x) : quantized_relu6<int8_t>(x);
  }
  if (x.dtype() != DType::f32) throw std::invalid_argument(fmt::format("relu6: expected f32, got {}", dtype_name(x.dtype())));
  const Tensor c = kernels::contiguous(x.detach());
  Tensor out = empty(c.shape());
  // Pointers and count taken once: data<T>() checks the dtype on every call,
  // and numel() multiplies the dimensions with overflow checks; in the loop's
  // condition it ran once per element and kept the loop from vectorising
  // (ReLU6 was then 60% of MobileNetV2's forward).
  const float* xp = c.data<float>();
  float* op = out.data<float>();
  for (int64_t i = 0, i_end = c.numel(); i < i_end; ++i) op[i] = std::min(std::max(xp[i], 0.f), 6.f);
  if (any_requires_grad(x)) record<ReLU6Backward>(out, {x});
  return out;
}

}  // namespace tq::nn

// dropout: forward and backward.
#include "autograd/activation_ops.h"

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq {

namespace k = kernels;

namespace {

struct DropoutBackward final : Node {
  explicit DropoutBackward(Tensor mask) : mask(std::move(mask)) {}
  Tensor mask;  // 0 or 1 / (1 - p) per element
  const char* name() const override { return "NativeDropoutBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::mul(g, mask); }
};

Tensor float_contiguous(const Tensor& t, const char* op) {
  if (!t.defined()) throw std::invalid_argument(fmt::format("{}: received an undefined tensor", op));
  return k::contiguous(t.dtype() == DType::f32 ? t : k::to_float(t));
}

}  // namespace

Tensor dropout(const Tensor& x_in, double p, bool training, Generator& gen) {
  if (!(p >= 0.0 && p <= 1.0))
    throw std::invalid_argument(fmt::format("dropout: probability has to be between 0 and 1, but got {}", p));
  if (!x_in.defined()) throw std::invalid_argument("dropout: received an undefined tensor");
  if (!training || p == 0.0) return x_in;
  const Tensor x = float_contiguous(x_in, "dropout");
  Tensor mask = empty(x.shape());
  const float keep_scale = p == 1.0 ? 0.f : static_cast<float>(1.0 / (1.0 - p));
  float* m = mask.data<float>();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) m[i] = gen.uniform() < p ? 0.f : keep_scale;
  Tensor out = k::mul(x, mask);
  if (any_requires_grad(x)) record<DropoutBackward>(out, {x}, std::move(mask));
  return out;
}

}  // namespace tq

// Linear layer: PyTorch's default initialisation (docs/nn.md eq. 1) and the
// forward pass through the fused tq::linear op.
#include "nn/linear.h"

#include <cmath>

#include <fmt/format.h>

#include "tensor/random.h"

namespace tq::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  if (in <= 0 || out <= 0)
    throw std::invalid_argument(fmt::format("Linear: in_features ({}) and out_features ({}) must be positive", in, out));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", rand_uniform({out, in}, -bound, bound));
  if (with_bias) bias = register_parameter("bias", rand_uniform({out}, -bound, bound));
}

Linear::Linear(Tensor shared_weight, Tensor shared_bias)
    : in_features(shared_weight.size(1)), out_features(shared_weight.size(0)) {
  weight = register_parameter("weight", shared_weight);
  if (shared_bias.defined()) bias = register_parameter("bias", shared_bias);
}

Tensor Linear::as_batch(const Tensor& x) const {
  const int64_t last = x.dim() ? x.shape().back() : 0;
  if ((x.dim() != 1 && x.dim() != 2) || last != in_features)
    throw std::invalid_argument(fmt::format("{}: input of shape {} does not match in_features={} (expected (N, {}))",
                                            type_name(), x.shape().str(), in_features, in_features));
  return x.dim() == 1 ? tq::reshape(x, {1, in_features}) : x;
}

Tensor Linear::forward(const Tensor& x) {
  Tensor y = tq::linear(as_batch(x), weight, bias);
  return x.dim() == 1 ? tq::reshape(y, {out_features}) : y;
}

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", in_features, out_features,
                     bias.defined() ? "True" : "False");
}

}  // namespace tq::nn

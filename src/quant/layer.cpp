#include "quant/layer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "nn/activation.h"

namespace tq::quant {

const char* fused_activation_suffix(FusedActivation a) {
  switch (a) {
    case FusedActivation::none: return "";
    case FusedActivation::relu: return "ReLU";
    case FusedActivation::relu6: return "ReLU6";
  }
  return "";
}

const char* fused_activation_name(FusedActivation a) {
  switch (a) {
    case FusedActivation::none: return "none";
    case FusedActivation::relu: return "relu";
    case FusedActivation::relu6: return "relu6";
  }
  return "none";
}

FusedActivation parse_fused_activation(const std::string& name) {
  for (FusedActivation a : {FusedActivation::none, FusedActivation::relu, FusedActivation::relu6})
    if (name == fused_activation_name(a)) return a;
  throw std::invalid_argument(fmt::format("unknown fused activation '{}' (expected none, relu or relu6)", name));
}

Tensor apply_fused_activation(FusedActivation a, const Tensor& x) {
  switch (a) {
    case FusedActivation::none: return x;
    case FusedActivation::relu: return tq::relu(x);
    case FusedActivation::relu6: return nn::relu6(x);
  }
  return x;
}

OutputRange fused_output_range(FusedActivation a, const QParams& out) {
  OutputRange r{out.quant_min, out.quant_max};
  const int32_t z = out.zero_point[0];
  if (a != FusedActivation::none) r.min = std::clamp(z, out.quant_min, out.quant_max);  // real 0
  if (a == FusedActivation::relu6) {                                                      // real 6 (eq. 14)
    const double six = z + std::nearbyint(6.0 / static_cast<double>(out.scale[0]));
    r.max = static_cast<int32_t>(std::clamp<double>(six, r.min, out.quant_max));
  }
  return r;
}

const char* quant_role_name(QuantRole role) {
  switch (role) {
    case QuantRole::input: return "input";
    case QuantRole::weight: return "weight";
    case QuantRole::output: return "output";
  }
  return "";
}

std::optional<QParams> PreparedLayer::qparams(QuantRole role) const {
  const QParamsSource* q = quantizer(role);
  if (!q || !q->has_data()) return std::nullopt;
  return q->calculate_qparams();
}

Tensor PreparedLayer::effective_weight() {
  QParamsSource* q = quantizer(QuantRole::weight);
  const Tensor w = float_weight();
  if (!q || !w.defined()) return w;
  NoGradGuard no_grad;
  const bool was_training = q->is_training();
  q->eval();  // fake-quantize without updating the observer
  Tensor out = (*q)(w);
  q->train(was_training);
  return out;
}

void PreparedLayer::check_convertible(const std::string& path) const {
  // Each range the int8 layer will be made from must give valid qparams:
  // no data yet, or a range that is not finite, stops here, naming the layer.
  try {
    for (QuantRole role : {QuantRole::output, QuantRole::weight, QuantRole::input}) {
      const QParamsSource* q = quantizer(role);
      if (!q || (role == QuantRole::input && !q->has_data())) continue;
      q->calculate_qparams();
    }
  } catch (const std::invalid_argument& e) {  // from calculate_qparams, which knows no layer names
    throw std::invalid_argument(fmt::format("convert: layer '{}': {}", path, e.what()));
  }  // "has seen no data" (logic_error) names the observer by its path already
}

}  // namespace tq::quant

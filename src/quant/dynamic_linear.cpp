#include "quant/dynamic_linear.h"

#include <stdexcept>

#include <fmt/format.h>

#include "quant/checks.h"
#include "quant/observer.h"
#include "quant/quantize.h"
#include "tensor/ops.h"

namespace tq::quant {

DynamicQuantizedLinear::DynamicQuantizedLinear(const Tensor& weight, const Tensor& bias, bool pc, int32_t act_qmax)
    : per_channel(pc), activation_quant_max(act_qmax) {
  if (weight.dim() != 2 || weight.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("DynamicQuantizedLinear: weight must be 2-D f32, got {} {}",
                                            dtype_name(weight.dtype()), weight.shape().str()));
  if (act_qmax < 1 || act_qmax > 255)
    throw std::invalid_argument(fmt::format("DynamicQuantizedLinear: activation range 0..{} does not fit u8", act_qmax));
  out_features = weight.size(0);
  in_features = weight.size(1);
  require_finite(weight, "DynamicQuantizedLinear", "weight");
  // Offline: the weights' own range gives their scales (symmetric, z = 0).
  QParams wq;
  if (per_channel) {
    PerChannelMinMaxObserver obs(weight_spec(8, QScheme::per_channel_symmetric, 0));
    obs.observe(weight);
    wq = obs.calculate_qparams();
  } else {
    MinMaxObserver obs(weight_spec(8, QScheme::per_tensor_symmetric));
    obs.observe(weight);
    wq = obs.calculate_qparams();
  }
  weight_ = quantize(weight.detach(), wq, DType::i8);
  finish(bias);
}

std::shared_ptr<DynamicQuantizedLinear> DynamicQuantizedLinear::from_quantized(const Tensor& weight_q, const Tensor& bias,
                                                                               int32_t act_qmax) {
  if (!weight_q.is_quantized() || weight_q.dtype() != DType::i8 || weight_q.dim() != 2)
    throw std::invalid_argument("DynamicQuantizedLinear::from_quantized: weight must be a 2-D i8 quantized tensor");
  const QParams& q = weight_q.qparams();
  if (q.scheme != QScheme::per_tensor_symmetric && !(q.scheme == QScheme::per_channel_symmetric && q.axis == 0))
    throw std::invalid_argument(fmt::format("DynamicQuantizedLinear::from_quantized: weights must be symmetric "
                                            "(per tensor, or per channel along axis 0), got {}",
                                            qscheme_name(q.scheme)));
  if (act_qmax < 1 || act_qmax > 255)
    throw std::invalid_argument(fmt::format("DynamicQuantizedLinear: activation range 0..{} does not fit u8", act_qmax));
  std::shared_ptr<DynamicQuantizedLinear> d(new DynamicQuantizedLinear());
  d->per_channel = is_per_channel(q.scheme);
  d->activation_quant_max = act_qmax;
  d->out_features = weight_q.size(0);
  d->in_features = weight_q.size(1);
  d->weight_ = kernels::clone(weight_q);
  d->finish(bias);
  return d;
}

std::shared_ptr<DynamicQuantizedLinear> DynamicQuantizedLinear::from_float(const nn::Linear& linear, const QConfig& qconfig,
                                                                           int32_t act_qmax) {
  auto observer = qconfig.weight ? std::dynamic_pointer_cast<ObserverBase>(qconfig.weight()) : nullptr;
  if (!observer)
    throw std::invalid_argument("DynamicQuantizedLinear::from_float: the qconfig's weight factory must make an observer");
  observer->observe(linear.weight.detach());
  return from_quantized(quantize(linear.weight.detach(), observer->calculate_qparams(), DType::i8), linear.bias, act_qmax);
}

std::optional<QParams> DynamicQuantizedLinear::qparams(QuantRole role) const {
  if (role == QuantRole::weight) return weight_.qparams();
  return std::nullopt;
}

void DynamicQuantizedLinear::finish(const Tensor& bias) {
  const QParams& wq = weight_.qparams();
  require_valid_qparams(wq, "DynamicQuantizedLinear", "weight qparams");
  if (per_channel && static_cast<int64_t>(wq.scale.size()) != out_features)
    throw std::invalid_argument(fmt::format("DynamicQuantizedLinear: {} weight scales for {} output features",
                                            wq.scale.size(), out_features));
  if (bias.defined()) require_finite(bias, "DynamicQuantizedLinear", "bias");
  weight_scales_.clear();
  for (int64_t n = 0; n < out_features; ++n)
    weight_scales_.push_back(per_channel ? wq.scale[static_cast<size_t>(n)] : wq.scale[0]);
  packed_ = PackedWeightsI8(weight_.data<int8_t>(), out_features, in_features);
  if (bias.defined()) {
    if (!(bias.shape() == Shape{out_features}))
      throw std::invalid_argument(fmt::format("DynamicQuantizedLinear: bias of shape {} does not match {} outputs",
                                              bias.shape().str(), out_features));
    bias_ = kernels::clone(bias.detach());
  }
  register_buffer("weight", weight_);
  if (bias_.defined()) register_buffer("bias", bias_);
}

Tensor DynamicQuantizedLinear::forward(const Tensor& x_in) {
  const Tensor xf = kernels::to_float(x_in);  // a quantized input is dequantized first
  if ((xf.dim() != 1 && xf.dim() != 2) || xf.shape().back() != in_features)
    throw std::invalid_argument(fmt::format("DynamicQuantizedLinear: input of shape {} does not match in_features={} "
                                            "(expected (N, {}))",
                                            xf.shape().str(), in_features, in_features));
  const Tensor x = kernels::contiguous(xf);
  const int64_t M = x.dim() == 1 ? 1 : x.size(0);
  Tensor y = empty(x.dim() == 1 ? Shape{out_features} : Shape{M, out_features});
  // Quantize this batch with its own range, multiply in int8, scale back (docs/dynamic.md eq. 1-3).
  gemm_f32_dynamic(x.data<float>(), M, in_features, activation_quant_max, packed_, weight_scales_.data(),
                   bias_.defined() ? bias_.data<float>() : nullptr, y.data<float>(), out_features, threads);
  return y;
}

std::string DynamicQuantizedLinear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, dtype=qint8, qscheme={}, activation_quant_max={}", in_features,
                     out_features, per_channel ? "per_channel_symmetric" : "per_tensor_symmetric", activation_quant_max);
}

}  // namespace tq::quant

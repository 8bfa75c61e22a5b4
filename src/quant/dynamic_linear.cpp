#include "quant/dynamic_linear.h"

#include <stdexcept>

#include <fmt/format.h>

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

#include "quant/quantized_linear.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "quant/checks.h"
#include "quant/quantize.h"
#include "tensor/ops.h"

namespace tq::quant {

QuantizedLinear::QuantizedLinear(const Tensor& weight, const Tensor& bias, const QParams& wq_in, const QParams& oq,
                                 std::shared_ptr<const QParams> iq, FusedActivation activation, std::string layer_name)
    : fused_relu(activation == FusedActivation::relu),
      name(std::move(layer_name)),
      activation_(activation),
      input_qparams_(std::move(iq)) {
  if (weight.dim() != 2) throw std::invalid_argument(fmt::format("{}: weight must be 2-D, got {}", name, weight.shape().str()));
  out_features = weight.size(0);
  in_features = weight.size(1);
  const QParams& wq = weight.is_quantized() ? weight.qparams() : wq_in;
  if (wq.scheme != QScheme::per_tensor_symmetric && wq.scheme != QScheme::per_channel_symmetric)
    throw std::invalid_argument(fmt::format("{}: int8 weights must be symmetric (zero point 0), got {}", name,
                                            qscheme_name(wq.scheme)));
  if (is_per_channel(wq.scheme) && wq.axis != 0)
    throw std::invalid_argument(fmt::format("{}: per-channel weights must use axis 0 (output channels), got {}", name, wq.axis));
  if (oq.scheme != QScheme::per_tensor_affine && oq.scheme != QScheme::per_tensor_symmetric)
    throw std::invalid_argument(fmt::format("{}: output qparams must be per-tensor", name));
  if (oq.quant_min < 0 || oq.quant_max > 255)
    throw std::invalid_argument(fmt::format("{}: output range [{}, {}] does not fit u8", name, oq.quant_min, oq.quant_max));
  if (bias.defined() && !(bias.shape() == Shape{out_features}))
    throw std::invalid_argument(fmt::format("{}: bias of shape {} does not match {} output features", name,
                                            bias.shape().str(), out_features));
  // Every value the layer is built from is checked here, once: a model file
  // or a diverged training may hold a NaN, a zero scale or a zero point off
  // its range, which the integer kernels would turn into garbage silently.
  require_valid_qparams(wq, name, "weight qparams");
  if (is_per_channel(wq.scheme) && static_cast<int64_t>(wq.scale.size()) != out_features)
    throw std::invalid_argument(fmt::format("{}: {} weight scales for {} output features", name, wq.scale.size(),
                                            out_features));
  require_valid_qparams(oq, name, "output qparams");
  if (input_qparams_) require_valid_qparams(*input_qparams_, name, "input qparams");
  if (!weight.is_quantized()) require_finite(weight, name, "weight");
  if (bias.defined()) require_finite(bias, name, "bias");
  // Offline: quantize and pack the weights once (float math allowed here).
  // Weights that are already quantized (a loaded model file) are used as they are.
  weight_ = weight.is_quantized() ? kernels::clone(weight) : quantize(weight.detach(), wq, DType::i8);
  if (weight_.dtype() != DType::i8)
    throw std::invalid_argument(fmt::format("{}: quantized weights must be i8, got {}", name, dtype_name(weight_.dtype())));
  for (int64_t n = 0; n < out_features; ++n)
    weight_scales_.push_back(is_per_channel(wq.scheme) ? wq.scale[static_cast<size_t>(n)] : wq.scale[0]);
  packed_ = PackedWeightsI8(weight_.data<int8_t>(), out_features, in_features);
  if (bias.defined()) bias_ = kernels::clone(bias.detach());
  output_qparams_ = std::make_shared<const QParams>(oq);
  register_buffer("weight", weight_);
  if (bias_.defined()) register_buffer("bias", bias_);
}

void QuantizedLinear::prepare_for_input(float x_scale, int32_t x_zero_point) {
  if (x_scale == cached_x_scale_ && x_zero_point == cached_x_zero_point_ && !multipliers_.empty()) return;
  const double s_y = output_qparams_->scale[0];
  multipliers_.resize(static_cast<size_t>(out_features));
  bias_q_.assign(static_cast<size_t>(out_features), 0);
  for (int64_t n = 0; n < out_features; ++n) {
    const double s_acc = static_cast<double>(x_scale) * weight_scales_[static_cast<size_t>(n)];  // eq. 12
    multipliers_[static_cast<size_t>(n)] = quantize_multiplier(s_acc / s_y);                      // eq. 13
    if (bias_.defined()) {
      // A NaN bias (from a model file, or a training that diverged) would
      // reach the integer conversion below as NaN: undefined behaviour.
      const float bias_value = bias_.data<float>()[n];
      if (!std::isfinite(bias_value))
        throw std::invalid_argument(fmt::format("{}: bias[{}] is {}; an int8 layer needs finite biases", name, n, bias_value));
      const double b = std::nearbyint(bias_value / s_acc);
      const double limit = 1 << 30;  // the kernel's bound on |bias_q|
      bias_q_[static_cast<size_t>(n)] = static_cast<int32_t>(std::clamp(b, -limit, limit));
    }
  }
  cached_x_scale_ = x_scale;
  cached_x_zero_point_ = x_zero_point;
}

Tensor QuantizedLinear::forward(const Tensor& x_in) {
  Tensor xq;
  if (x_in.is_quantized()) {
    xq = x_in;
  } else if (x_in.dtype() == DType::f32) {
    if (!input_qparams_)
      throw std::logic_error(fmt::format(
          "{}: received a float tensor, but this layer never saw float input during training / calibration, so it "
          "has no input qparams. Feed it the quantized output of the previous layer, or let a float input reach it "
          "during QAT / calibration",
          name));
    xq = quantize(x_in, *input_qparams_, DType::u8);
  } else {
    throw std::invalid_argument(fmt::format("{}: expected a u8 quantized or f32 tensor, got {}", name, dtype_name(x_in.dtype())));
  }
  const QParams& iq = xq.qparams();
  if (xq.dtype() != DType::u8 || is_per_channel(iq.scheme))
    throw std::invalid_argument(fmt::format("{}: the input must be u8 quantized per tensor, got {} {}", name,
                                            dtype_name(xq.dtype()), qscheme_name(iq.scheme)));
  const bool one_row = xq.dim() == 1;
  if ((xq.dim() != 1 && xq.dim() != 2) || xq.shape().back() != in_features)
    throw std::invalid_argument(fmt::format("{}: input of shape {} does not match in_features={} (expected (N, {}))",
                                            name, xq.shape().str(), in_features, in_features));
  const Tensor x = kernels::contiguous(xq);
  const int64_t M = one_row ? 1 : x.size(0);
  prepare_for_input(iq.scale[0], iq.zero_point[0]);
  const QParams& oq = *output_qparams_;
  const int32_t zy = oq.zero_point[0];
  const OutputRange y_range = fused_output_range(activation_, oq);  // eq. 13-14
  Tensor y = empty(one_row ? Shape{out_features} : Shape{M, out_features}, DType::u8);
  gemm_u8i8_requant(x.data<uint8_t>(), M, in_features, iq.zero_point[0], iq.quant_max, packed_,
                    bias_.defined() ? bias_q_.data() : nullptr, multipliers_.data(), zy, y_range.min, y_range.max,
                    y.data<uint8_t>(), out_features, threads);
  return with_qparams(y, output_qparams_);
}

std::optional<QParams> QuantizedLinear::qparams(QuantRole role) const {
  switch (role) {
    case QuantRole::input: return input_qparams_ ? std::optional<QParams>(*input_qparams_) : std::nullopt;
    case QuantRole::weight: return weight_.qparams();
    case QuantRole::output: return *output_qparams_;
  }
  return std::nullopt;
}

std::string QuantizedLinear::extra_repr() const {
  const QParams& oq = *output_qparams_;
  std::string s = fmt::format("in_features={}, out_features={}, scale={:.6g}, zero_point={}, quant_min={}, quant_max={}, "
                              "qscheme={}",
                              in_features, out_features, oq.scale[0], oq.zero_point[0], oq.quant_min, oq.quant_max,
                              qscheme_name(weight_.qparams().scheme));
  if (input_qparams_)
    s += fmt::format(", input_scale={:.6g}, input_zero_point={}", input_qparams_->scale[0], input_qparams_->zero_point[0]);
  return s;
}

}  // namespace tq::quant

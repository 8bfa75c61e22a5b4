#include "quant/quantized_conv.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "quant/checks.h"
#include "quant/quantize.h"
#include "tensor/channels_last.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

void check_output_qparams(const std::string& name, const QParams& oq) {
  if (oq.scheme != QScheme::per_tensor_affine && oq.scheme != QScheme::per_tensor_symmetric)
    throw std::invalid_argument(fmt::format("{}: output qparams must be per-tensor", name));
  if (oq.quant_min < 0 || oq.quant_max > 255)
    throw std::invalid_argument(fmt::format("{}: output range [{}, {}] does not fit u8", name, oq.quant_min, oq.quant_max));
  require_valid_qparams(oq, name, "output qparams");
}

// A u8 quantized per-tensor input, or a float one quantized with the recorded
// qparams; in the layout it came in.
Tensor quantized_input_as_is(const std::string& name, const Tensor& x_in, const std::shared_ptr<const QParams>& iq) {
  Tensor xq;
  if (x_in.is_quantized()) {
    xq = x_in;
  } else if (x_in.dtype() == DType::f32) {
    if (!iq)
      throw std::logic_error(fmt::format(
          "{}: received a float tensor, but this layer never saw float input during training / calibration, so it "
          "has no input qparams. Feed it the quantized output of the previous layer",
          name));
    xq = quantize(x_in, *iq, DType::u8);
  } else {
    throw std::invalid_argument(
        fmt::format("{}: expected a u8 quantized or f32 tensor, got {}", name, dtype_name(x_in.dtype())));
  }
  if (xq.dtype() != DType::u8 || is_per_channel(xq.qparams().scheme))
    throw std::invalid_argument(fmt::format("{}: the input must be u8 quantized per tensor, got {} {}", name,
                                            dtype_name(xq.dtype()), qscheme_name(xq.qparams().scheme)));
  return xq;
}

}  // namespace

QuantizedConv2d::QuantizedConv2d(const Tensor& weight, const Tensor& bias, const QParams& wq_in, const QParams& oq,
                                 std::shared_ptr<const QParams> iq, FusedActivation activation, Conv2dGeometry g,
                                 std::string layer_name)
    : geometry(g), name(std::move(layer_name)), activation_(activation), input_qparams_(std::move(iq)) {
  if (weight.dim() != 4)
    throw std::invalid_argument(fmt::format("{}: weight must be 4-D (out, in / groups, kH, kW), got {}", name,
                                            weight.shape().str()));
  out_channels = weight.size(0);
  kernel_h = weight.size(2);
  kernel_w = weight.size(3);
  if (g.groups < 1) throw std::invalid_argument(fmt::format("{}: groups must be >= 1, got {}", name, g.groups));
  in_channels = weight.size(1) * g.groups;
  if (g.groups != 1) {
    depthwise_ = g.groups == in_channels && g.groups == out_channels && kernel_h == 3 && kernel_w == 3 &&
                 g.stride_h == g.stride_w && (g.stride_h == 1 || g.stride_h == 2) && g.pad_h == g.pad_w &&
                 g.pad_h >= 0 && g.pad_h <= 2 && g.dilation_h == 1 && g.dilation_w == 1;
    if (!depthwise_)
      throw std::invalid_argument(fmt::format(
          "{}: an int8 convolution with groups={} must be depthwise 3x3 (groups == in == out), stride 1 or 2, "
          "equal padding <= 2, dilation 1; got in={}, out={}, kernel {}x{}, stride ({}, {}), padding ({}, {})",
          name, g.groups, in_channels, out_channels, kernel_h, kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w));
  }
  const QParams& wq = weight.is_quantized() ? weight.qparams() : wq_in;
  if (wq.scheme != QScheme::per_tensor_symmetric && wq.scheme != QScheme::per_channel_symmetric)
    throw std::invalid_argument(fmt::format("{}: int8 weights must be symmetric (zero point 0), got {}", name,
                                            qscheme_name(wq.scheme)));
  if (is_per_channel(wq.scheme) && wq.axis != 0)
    throw std::invalid_argument(
        fmt::format("{}: per-channel weights must use axis 0 (output channels), got {}", name, wq.axis));
  check_output_qparams(name, oq);
  if (bias.defined() && !(bias.shape() == Shape{out_channels}))
    throw std::invalid_argument(fmt::format("{}: bias of shape {} does not match {} output channels", name,
                                            bias.shape().str(), out_channels));
  // Every value the layer is built from is checked once, here (as QuantizedLinear).
  require_valid_qparams(wq, name, "weight qparams");
  if (is_per_channel(wq.scheme) && static_cast<int64_t>(wq.scale.size()) != out_channels)
    throw std::invalid_argument(fmt::format("{}: {} weight scales for {} output channels", name, wq.scale.size(),
                                            out_channels));
  if (input_qparams_) require_valid_qparams(*input_qparams_, name, "input qparams");
  if (!weight.is_quantized()) require_finite(weight, name, "weight");
  if (bias.defined()) require_finite(bias, name, "bias");
  weight_ = weight.is_quantized() ? kernels::clone(weight) : quantize(weight.detach(), wq, DType::i8);
  if (weight_.dtype() != DType::i8)
    throw std::invalid_argument(fmt::format("{}: quantized weights must be i8, got {}", name, dtype_name(weight_.dtype())));
  for (int64_t n = 0; n < out_channels; ++n)
    weight_scales_.push_back(is_per_channel(wq.scheme) ? wq.scale[static_cast<size_t>(n)] : wq.scale[0]);
  const Tensor w = kernels::contiguous(weight_);
  if (depthwise_) {
    taps_.resize(static_cast<size_t>(9 * out_channels));
    depthwise_weight_to_taps(w.data<int8_t>(), out_channels, taps_.data());
  } else {
    if (conv_uses_padded_rows(in_channels, kernel_h, kernel_w, g.dilation_w)) {
      // Kernel rows padded to whole k groups (int8_conv.h): e.g. a first
      // layer with one input channel, whose 3x3 patch then is 3 groups of 4.
      const int64_t row4 = (kernel_w * in_channels + 3) / 4 * 4;
      std::vector<int8_t> ohwi(static_cast<size_t>(out_channels * kernel_h * row4));
      conv_weight_to_ohwi_padded_rows(w.data<int8_t>(), out_channels, in_channels, kernel_h, kernel_w, ohwi.data());
      packed_ = PackedWeightsI8(ohwi.data(), out_channels, kernel_h * row4);
    } else {
      std::vector<int8_t> ohwi(static_cast<size_t>(w.numel()));
      conv_weight_to_ohwi(w.data<int8_t>(), out_channels, in_channels, kernel_h, kernel_w, ohwi.data());
      packed_ = PackedWeightsI8(ohwi.data(), out_channels, in_channels * kernel_h * kernel_w);
    }
  }
  if (bias.defined()) bias_ = kernels::clone(bias.detach());
  output_qparams_ = std::make_shared<const QParams>(oq);
  register_buffer("weight", weight_);
  if (bias_.defined()) register_buffer("bias", bias_);
}

void QuantizedConv2d::prepare_for_input(float x_scale, int32_t x_zero_point) {
  if (x_scale == cached_x_scale_ && x_zero_point == cached_x_zero_point_ && !multipliers_.empty()) return;
  const double s_y = output_qparams_->scale[0];
  multipliers_.resize(static_cast<size_t>(out_channels));
  bias_q_.assign(static_cast<size_t>(out_channels), 0);
  for (int64_t n = 0; n < out_channels; ++n) {
    const double s_acc = static_cast<double>(x_scale) * weight_scales_[static_cast<size_t>(n)];
    multipliers_[static_cast<size_t>(n)] = quantize_multiplier(s_acc / s_y);
    if (bias_.defined()) {
      const float bias_value = bias_.data<float>()[n];
      if (!std::isfinite(bias_value))
        throw std::invalid_argument(
            fmt::format("{}: bias[{}] is {}; an int8 layer needs finite biases", name, n, bias_value));
      const double limit = 1 << 30;  // the kernels' bound on |bias_q|
      bias_q_[static_cast<size_t>(n)] =
          static_cast<int32_t>(std::clamp(std::nearbyint(bias_value / s_acc), -limit, limit));
    }
  }
  cached_x_scale_ = x_scale;
  cached_x_zero_point_ = x_zero_point;
}

Tensor QuantizedConv2d::forward(const Tensor& x_in) {
  const Tensor xq = quantized_input_as_is(name, x_in, input_qparams_);
  if (xq.dim() != 4 || xq.size(1) != in_channels)
    throw std::invalid_argument(fmt::format("{}: input of shape {} does not match in_channels={} (expected (N, {}, H, W))",
                                            name, xq.shape().str(), in_channels, in_channels));
  // The kernels read and write NHWC: a channels-last input (the output of
  // the quantized layer before) is used as it is, any other is transposed
  // once; the output stays channels-last for the next layer (docs/quantized_cnn.md §1).
  const Tensor x = to_channels_last_bytes(xq);
  const QParams& iq = x.qparams();
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  prepare_for_input(iq.scale[0], iq.zero_point[0]);
  const QParams& oq = *output_qparams_;
  const OutputRange range = fused_output_range(activation_, oq);
  const int32_t zx = iq.zero_point[0], zy = oq.zero_point[0];
  const int32_t* bias_q = bias_.defined() ? bias_q_.data() : nullptr;
  const uint8_t* x_nhwc = static_cast<const uint8_t*>(x.raw_data());
  Tensor y;
  if (depthwise_) {
    Depthwise3x3ShapeU8 s;
    s.batch = N;
    s.in_h = H;
    s.in_w = W;
    s.channels = in_channels;
    s.stride = geometry.stride_h;
    s.pad = geometry.pad_h;
    s.validate(name.c_str());
    y = empty_channels_last(N, out_channels, s.out_h(), s.out_w(), DType::u8);
    depthwise3x3_u8i8_requant(x_nhwc, s, zx, taps_.data(), bias_q, multipliers_.data(), zy, range.min, range.max,
                              static_cast<uint8_t*>(y.raw_data()));
  } else {
    Conv2dShapeU8 s;
    s.batch = N;
    s.in_h = H;
    s.in_w = W;
    s.in_channels = in_channels;
    s.out_channels = out_channels;
    s.kernel_h = kernel_h;
    s.kernel_w = kernel_w;
    s.stride_h = geometry.stride_h;
    s.stride_w = geometry.stride_w;
    s.pad_h = geometry.pad_h;
    s.pad_w = geometry.pad_w;
    s.dilation_h = geometry.dilation_h;
    s.dilation_w = geometry.dilation_w;
    s.validate(name.c_str());
    y = empty_channels_last(N, out_channels, s.out_h(), s.out_w(), DType::u8);
    conv2d_u8i8_requant(x_nhwc, s, zx, iq.quant_max, packed_, bias_q, multipliers_.data(), zy, range.min, range.max,
                        static_cast<uint8_t*>(y.raw_data()), threads);
  }
  return with_qparams(y, output_qparams_);
}

std::optional<QParams> QuantizedConv2d::qparams(QuantRole role) const {
  switch (role) {
    case QuantRole::input: return input_qparams_ ? std::optional<QParams>(*input_qparams_) : std::nullopt;
    case QuantRole::weight: return weight_.qparams();
    case QuantRole::output: return *output_qparams_;
  }
  return std::nullopt;
}

std::string QuantizedConv2d::extra_repr() const {
  const QParams& oq = *output_qparams_;
  std::string s = fmt::format(
      "{}, {}, kernel_size=({}, {}), stride=({}, {}), scale={:.6g}, zero_point={}", in_channels, out_channels,
      kernel_h, kernel_w, geometry.stride_h, geometry.stride_w, oq.scale[0], oq.zero_point[0]);
  if (geometry.pad_h != 0 || geometry.pad_w != 0) s += fmt::format(", padding=({}, {})", geometry.pad_h, geometry.pad_w);
  if (geometry.dilation_h != 1 || geometry.dilation_w != 1)
    s += fmt::format(", dilation=({}, {})", geometry.dilation_h, geometry.dilation_w);
  if (geometry.groups != 1) s += fmt::format(", groups={}", geometry.groups);
  if (!bias_.defined()) s += ", bias=False";
  s += fmt::format(", qscheme={}", qscheme_name(weight_.qparams().scheme));
  return s;
}

// ---------------------------------------------------------------------------

QuantizedAdd::QuantizedAdd(const QParams& oq, FusedActivation activation, std::string layer_name)
    : name(std::move(layer_name)), activation_(activation), output_qparams_(std::make_shared<const QParams>(oq)) {
  check_output_qparams(name, oq);
}

Tensor QuantizedAdd::forward(const Tensor& a_in, const Tensor& b_in) {
  if (!a_in.is_quantized() || !b_in.is_quantized())
    throw std::invalid_argument(fmt::format("{}: both inputs must be u8 quantized tensors", name));
  Tensor a = quantized_input_as_is(name, a_in, nullptr);
  Tensor b = quantized_input_as_is(name, b_in, nullptr);
  if (!(a.shape() == b.shape()))
    throw std::invalid_argument(fmt::format("{}: the inputs have different shapes {} and {}", name, a.shape().str(),
                                            b.shape().str()));
  // Elementwise over memory: both channels-last (the outputs of quantized
  // convolutions) stay so, anything else is made contiguous.
  const bool nhwc = is_channels_last(a) && is_channels_last(b);
  if (nhwc) {
    a = to_channels_last_bytes(a);
    b = to_channels_last_bytes(b);
  } else {
    a = kernels::contiguous(a);
    b = kernels::contiguous(b);
  }
  const QParams& qa = a.qparams();
  const QParams& qb = b.qparams();
  const QParams& oq = *output_qparams_;
  const OutputRange range = fused_output_range(activation_, oq);
  const QuantizedAddParams p = QuantizedAddParams::make(qa.scale[0], qa.zero_point[0], qb.scale[0], qb.zero_point[0],
                                                        oq.scale[0], oq.zero_point[0], range.min, range.max);
  Tensor y = nhwc ? empty_channels_last(a.size(0), a.size(1), a.size(2), a.size(3), DType::u8) : empty(a.shape(), DType::u8);
  add_u8_requant(static_cast<const uint8_t*>(a.raw_data()), static_cast<const uint8_t*>(b.raw_data()), a.numel(), p,
                 static_cast<uint8_t*>(y.raw_data()));
  return with_qparams(y, output_qparams_);
}

std::optional<QParams> QuantizedAdd::qparams(QuantRole role) const {
  if (role == QuantRole::output) return *output_qparams_;
  return std::nullopt;
}

std::string QuantizedAdd::extra_repr() const {
  return fmt::format("scale={:.6g}, zero_point={}", output_qparams_->scale[0], output_qparams_->zero_point[0]);
}

}  // namespace tq::quant

// Integer-only layers of quantized CNNs (docs/quantized_cnn.md):
// QuantizedConv2d (im2col on u8 + the int8 GEMM; a 3x3 depthwise convolution
// through the direct depthwise kernel) and QuantizedAdd (the residual add).
//
// Tensors between layers are u8 quantized (N, C, H, W), like the float ones,
// with channels-last memory (tensor/channels_last.h): the kernels work on
// NHWC, so a layer takes the previous one's output as it is and returns its
// own in the same layout; an input in any other layout is transposed once.
//
// QuantizedConv2d is QuantizedLinear with a convolution: offline (at
// construction, floats allowed) the weight is quantized to i8 (symmetric,
// per-tensor or per-channel along the output channels) and packed; the bias
// becomes i32 on the accumulator grid s_x s_w[oc] and the multipliers
// M = s_x s_w[oc] / s_y become Q31 fixed point once the input scale is known.
// Run time: integers only, with the fused ReLU / ReLU6 clamp.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/module.h"
#include "quant/layer.h"
#include "tensor/int8_conv.h"
#include "tensor/int8_gemm.h"

namespace tq::quant {

struct Conv2dGeometry {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
};

class QuantizedConv2d : public nn::Module, public QuantizedLayer {
 public:
  // weight: (out, in / groups, kH, kW) f32, quantized here with
  // weight_qparams (symmetric, per-tensor or per-channel along axis 0), or an
  // i8 quantized tensor used as it is; bias: (out) f32 or undefined.
  // groups must be 1, or equal to in == out with a 3x3 kernel, stride 1 or 2,
  // padding <= 2 and dilation 1 (the depthwise kernel); else
  // std::invalid_argument says which.
  QuantizedConv2d(const Tensor& weight, const Tensor& bias, const QParams& weight_qparams,
                  const QParams& output_qparams, std::shared_ptr<const QParams> input_qparams,
                  FusedActivation activation, Conv2dGeometry geometry, std::string name);

  // x: (N, in, H, W) u8 quantized per tensor, or f32 (quantized with the
  // recorded input qparams) -> (N, out, OH, OW) u8 with output_qparams,
  // channels-last.
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("QuantizedConv2d") + fused_activation_suffix(activation_); }
  std::string extra_repr() const override;

  int64_t in_channels = 0, out_channels = 0, kernel_h = 0, kernel_w = 0;
  Conv2dGeometry geometry;
  std::string name;
  bool depthwise() const { return depthwise_; }

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  const QParams& output_qparams() const { return *output_qparams_; }
  const std::shared_ptr<const QParams>& input_qparams() const { return input_qparams_; }

  FusedActivation activation() const override { return activation_; }
  std::optional<QParams> qparams(QuantRole role) const override;
  Tensor effective_weight() override { return weight_; }

 private:
  void prepare_for_input(float x_scale, int32_t x_zero_point);

  FusedActivation activation_;
  bool depthwise_ = false;
  Tensor weight_;  // i8, (out, in / groups, kH, kW)
  Tensor bias_;
  std::vector<float> weight_scales_;
  std::shared_ptr<const QParams> output_qparams_;
  std::shared_ptr<const QParams> input_qparams_;
  PackedWeightsI8 packed_;     // groups = 1: OHWI rows
  std::vector<int8_t> taps_;   // depthwise: (9, C)
  float cached_x_scale_ = -1.f;
  int32_t cached_x_zero_point_ = 0;
  std::vector<int32_t> bias_q_;
  std::vector<FixedPointMultiplier> multipliers_;
};

// The residual add of two u8 quantized tensors of one shape, each with its
// own per-tensor (scale, zero point), onto the output grid (int8_conv.h,
// QuantizedAddParams): integer-only; an optional fused ReLU / ReLU6.
class QuantizedAdd : public nn::Module, public QuantizedLayer {
 public:
  QuantizedAdd(const QParams& output_qparams, FusedActivation activation, std::string name);

  using nn::Module::forward;
  // a, b: u8 quantized per tensor, one shape -> u8 with output_qparams.
  Tensor forward(const Tensor& a, const Tensor& b) override;
  std::string type_name() const override { return std::string("QuantizedAdd") + fused_activation_suffix(activation_); }
  std::string extra_repr() const override;

  std::string name;
  const QParams& output_qparams() const { return *output_qparams_; }
  FusedActivation activation() const override { return activation_; }
  std::optional<QParams> qparams(QuantRole role) const override;
  Tensor effective_weight() override { return Tensor(); }

 private:
  FusedActivation activation_;
  std::shared_ptr<const QParams> output_qparams_;
};

}  // namespace tq::quant

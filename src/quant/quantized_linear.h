// QuantizedLinear: the integer-only Linear that convert produces
// (docs/quantization.md §7, docs/int8_kernel.md).
//
// Offline (here, at construction, floats allowed): the weights are quantized
// to i8 with their per-channel scales and packed for the kernel; the bias
// stays float until the input scale is known, then becomes i32 with scale
// s_x s_w (docs/quantization.md eq. 12); the multipliers M = s_x s_w / s_y (docs/quantization.md eq. 13) become Q31 fixed point.
// Run time (forward, integers only): u8 input, i32 accumulation with the
// zero-point term folded out of the inner loop, fixed-point requantization,
// + z_y, clamp (raised to z_y when a ReLU is fused, and lowered to the code of
// real 6 for a ReLU6: docs/quantization.md eq. 14); u8 output that the next layer takes as it is.
#pragma once

#include <memory>
#include <optional>

#include "nn/module.h"
#include "quant/layer.h"
#include "tensor/int8_gemm.h"

namespace tq::quant {

class QuantizedLinear : public nn::Module, public QuantizedLayer {
 public:
  // weight: (out, in) f32, quantized here with weight_qparams (symmetric,
  // per-tensor or per-channel along axis 0) — or an already quantized i8
  // tensor, used as it is (weight_qparams is then ignored);
  // bias: (out) f32 or undefined;
  // output_qparams: per-tensor affine u8; input_qparams: the qparams to
  // quantize a float input with, or nullptr if this layer never saw one.
  QuantizedLinear(const Tensor& weight, const Tensor& bias, const QParams& weight_qparams,
                  const QParams& output_qparams, std::shared_ptr<const QParams> input_qparams,
                  FusedActivation activation, std::string name);
  // The same with a fused ReLU or none (the form before FusedActivation existed).
  QuantizedLinear(const Tensor& weight, const Tensor& bias, const QParams& weight_qparams,
                  const QParams& output_qparams, std::shared_ptr<const QParams> input_qparams, bool fused_relu,
                  std::string name)
      : QuantizedLinear(weight, bias, weight_qparams, output_qparams, std::move(input_qparams),
                        fused_relu ? FusedActivation::relu : FusedActivation::none, std::move(name)) {}

  // x: (N, in) u8 quantized (used as it is), or f32 (quantized with the
  // recorded input qparams) -> (N, out) u8 quantized with output_qparams.
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("QuantizedLinear") + fused_activation_suffix(activation_); }
  std::string extra_repr() const override;

  int64_t in_features = 0, out_features = 0;
  // True when the fused activation is relu (for callers written before
  // activation() existed; read activation() instead).
  const bool fused_relu;
  std::string name;

  const Tensor& weight() const { return weight_; }  // (out, in) i8, quantized
  const Tensor& bias() const { return bias_; }      // (out) f32 or undefined
  const QParams& output_qparams() const { return *output_qparams_; }
  const std::shared_ptr<const QParams>& input_qparams() const { return input_qparams_; }
  const PackedWeightsI8& packed_weights() const { return packed_; }

  // ---- QuantizedLayer (threads: of the int8 GEMM, 0 = the library default) ----
  FusedActivation activation() const override { return activation_; }
  std::optional<QParams> qparams(QuantRole role) const override;
  Tensor effective_weight() override { return weight_; }

 private:
  FusedActivation activation_;
  // The i32 bias and the multipliers depend on the input's (scale, zero
  // point); they are computed once per distinct input qparams (docs/quantization.md eq. 12-13).
  void prepare_for_input(float x_scale, int32_t x_zero_point);

  Tensor weight_;  // i8 with per-channel qparams
  Tensor bias_;
  std::vector<float> weight_scales_;  // one per output channel
  std::shared_ptr<const QParams> output_qparams_;
  std::shared_ptr<const QParams> input_qparams_;
  PackedWeightsI8 packed_;
  // Cache for the last input qparams.
  float cached_x_scale_ = -1.f;
  int32_t cached_x_zero_point_ = 0;
  std::vector<int32_t> bias_q_;
  std::vector<FixedPointMultiplier> multipliers_;
};

}  // namespace tq::quant

// QATLinear: a Linear trained with fake quantization (docs/quantization.md §5).
//   y = fq_out( act( x' W_fq^T + b ) )   (act: the fused activation, if any)
// where W_fq is the weight fake-quantized per channel, and x' is the input:
//   - used as it is when it already lies on a fake-quant grid (the output of
//     an earlier fake quant, through relu): quantizing it again would change
//     nothing but cost time;
//   - fake-quantized by `input_fake_quant` when a plain float tensor enters
//     (the model's input), so that after convert this layer can quantize a
//     float input itself — no QuantStub needed.
// It shares weight and bias with the float Linear it replaced.
//
// The bias is rounded to the accumulator grid s_x s_w (eq. 12) in the
// forward, so the fake-quant model adds exactly the integer bias the
// converted layer adds: the two agree even at 2-4 bits, where one bias
// rounding is a sizeable part of an output step.
//
// ObservedLinear is the same layer for post-training quantization
// (docs/ptq.md): its three places hold observers instead of fake quants, so
// it computes the float result and only records ranges.
#pragma once

#include "nn/linear.h"
#include "quant/layer.h"
#include "quant/qconfig.h"

namespace tq::quant {

// The fake_quant_grid mark on the output of an observed (not fake-quantized)
// layer: after convert that output is a quantized tensor, so the next layer
// must not fake-quantize it as a float input. Shared by every prepared layer.
const std::shared_ptr<const QParams>& observed_grid_marker();

// The bias rounded to the accumulator grid x_scale * s_w (per channel when wq
// is), clamped to the int8 kernels' |bias_q| <= 2^30 (docs/quantization.md
// eq. 12); the gradient passes straight through.
Tensor fake_quantize_bias(const Tensor& bias, float x_scale, const QParams& wq);

class QATLinear : public nn::Linear, public PreparedLayer {
 public:
  QATLinear(const nn::Linear& float_linear, const QConfig& qconfig,
            FusedActivation activation = FusedActivation::none);

  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("QATLinear") + fused_activation_suffix(activation_); }

  // Did a plain float tensor ever enter this layer (so its input qparams are known)?
  bool saw_float_input() const { return input_quant->has_data(); }

  // The three places where a tensor is observed / fake-quantized.
  nn::Slot<QParamsSource> input_quant;   // float inputs
  nn::Slot<QParamsSource> weight_quant;  // the weight
  nn::Slot<QParamsSource> output_quant;  // the output ("activation_post_process")
  std::string name = "QATLinear";  // its path in the model, set by the pass
  // True when the fused activation is relu (for callers written before
  // activation() existed; read activation() instead).
  const bool fused_relu;

  // ---- PreparedLayer ----
  FusedActivation activation() const override { return activation_; }
  QParamsSource* quantizer(QuantRole role) const override;
  Tensor float_weight() const override { return weight; }
  // A QuantizedLinear with the last qparams (or the observed ranges).
  std::shared_ptr<nn::Module> to_quantized(const std::string& path) const override;

 protected:
  // The bias the forward adds: on the accumulator grid s_x * s_w when fake
  // quantizing (what the int8 layer adds), the float bias otherwise.
  Tensor quantized_bias(const Tensor& x_q) const;
  mutable QParams weight_qparams_;  // scratch for quantized_bias
  QATLinear(const nn::Linear& float_linear, const QConfig& qconfig, FusedActivation activation, const char* input_slot,
            const char* weight_slot);

 private:
  FusedActivation activation_;
};

class ObservedLinear : public QATLinear {
 public:
  ObservedLinear(const nn::Linear& float_linear, const QConfig& qconfig,
                 FusedActivation activation = FusedActivation::none)
      : QATLinear(float_linear, qconfig, activation, "input_observer", "weight_observer") {}
  std::string type_name() const override { return std::string("ObservedLinear") + fused_activation_suffix(activation()); }
};

}  // namespace tq::quant

// DynamicQuantizedLinear (docs/dynamic.md): weights quantized to i8 and
// packed once; at run time each batch's activations are quantized with
// qparams chosen from that batch's own min / max, the product is accumulated
// in i32, and the result is returned as float with the float bias added.
// Float in, float out: it drops into any model, no calibration needed.
#pragma once

#include "nn/linear.h"
#include "quant/layer.h"
#include "quant/qconfig.h"
#include "tensor/int8_gemm.h"

namespace tq::quant {

class DynamicQuantizedLinear : public nn::Module, public QuantizedLayer {
 public:
  // weight: (out, in) f32; bias: (out) f32 or undefined. Weights symmetric i8
  // in -128..127, per output channel (per_channel) or one scale for all.
  // Activations are quantized to 0..activation_quant_max (127 keeps the
  // AVX2 kernel's fast path exact, as fbgemm's reduce_range does).
  DynamicQuantizedLinear(const Tensor& weight, const Tensor& bias, bool per_channel = true,
                         int32_t activation_quant_max = 127);

  // From weights already quantized to i8 (symmetric, per-tensor or per-channel
  // along axis 0), e.g. read from a model file.
  static std::shared_ptr<DynamicQuantizedLinear> from_quantized(const Tensor& weight_q, const Tensor& bias,
                                                                int32_t activation_quant_max = 127);

  // quantize_dynamic's mapping: the weight's qparams come from the qconfig's
  // weight observer (it must be an observer, not a fake quant).
  static std::shared_ptr<DynamicQuantizedLinear> from_float(const nn::Linear& linear, const QConfig& qconfig,
                                                            int32_t activation_quant_max = 127);

  // x: (N, in) or (in) f32 -> (N, out) or (out) f32.
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  int64_t in_features = 0, out_features = 0;
  bool per_channel = true;
  int32_t activation_quant_max = 127;

  const Tensor& weight() const { return weight_; }  // (out, in) i8, quantized
  const Tensor& bias() const { return bias_; }
  const std::vector<float>& weight_scales() const { return weight_scales_; }
  const PackedWeightsI8& packed_weights() const { return packed_; }

  // ---- QuantizedLayer (threads: of the int8 GEMM, 0 = the library default) ----
  // No fused activation, and only weight qparams: the input's are chosen per
  // batch, and the output is float.
  FusedActivation activation() const override { return FusedActivation::none; }
  std::optional<QParams> qparams(QuantRole role) const override;
  Tensor effective_weight() override { return weight_; }

 private:
  DynamicQuantizedLinear() = default;
  // Packs weight_ and checks / keeps bias (shared by both constructors).
  void finish(const Tensor& bias);
  Tensor weight_, bias_;
  std::vector<float> weight_scales_;  // one per output channel
  PackedWeightsI8 packed_;
};

}  // namespace tq::quant

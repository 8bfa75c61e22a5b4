// The prepared forms of convolutions and of the residual add
// (docs/quantized_cnn.md §6, §8): what prepare_qat / prepare put in place of
// Conv2d, ConvReLU2d, ConvBn2d, ... and Add, and what convert turns into
// QuantizedConv2d and QuantizedAdd.
//
// QATConv2d: a Conv2d trained with fake quantization, like QATLinear:
//   y = fq_out( act( conv(x', W_fq) + b_q ) )
// with x' the input (fake-quantized only when a plain float tensor enters),
// W_fq the weight fake-quantized per output channel and b_q the bias on the
// accumulator grid s_x s_w (what the int8 layer adds).
//
// With a BatchNorm2d (child "bn"; QATConvBn2d, QATConvBnReLU2d,
// QATConvBnReLU62d, from ConvBn2d and its activation forms) the BN folding is
// simulated. With f = gamma / sqrt(running_var + eps) per output channel:
//   batch statistics (training, BN not frozen):
//     y = act( BN_batch( conv(x', fq(W f)) / f + b ) )     (BN updates its running statistics)
//   running statistics (eval, or after freeze_bn_stats):
//     y = act( conv(x', fq(W f)) + q((b - running_mean) f + beta) )
// The second is exactly the folded int8 layer that convert builds; it equals
// BN_running(conv(x', fq(W f)) / f + b) up to rounding of the bias to the
// accumulator grid. A channel with gamma = 0 has f = 0: its folded filter is
// zero, and the division by f uses 1 instead (the channel's output is beta
// either way), so no NaN.
//
// ObservedConv2d is the same layer for post-training quantization: observers
// instead of fake quants; a BatchNorm met at prepare is folded there (from
// its running statistics), as eval-time fusion folds it.
//
// QATAdd / ObservedAdd: the residual add a + b, its output observed or
// fake-quantized (and the fused activation, none here). Both inputs must
// already lie on quantization grids (outputs of prepared layers), as the
// integer-only QuantizedAdd takes two u8 tensors.
#pragma once

#include "nn/add.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "quant/fused.h"
#include "quant/layer.h"
#include "quant/qconfig.h"

namespace tq::quant {

class QATConv2d : public nn::Conv2d, public PreparedLayer {
 public:
  // From a Conv2d, a ConvReLU2d / ConvReLU62d (activation given), or a
  // ConvBn2d / ConvBnReLU2d / ConvBnReLU62d (its BatchNorm2d is shared).
  QATConv2d(const nn::Conv2d& float_conv, const QConfig& qconfig, FusedActivation activation = FusedActivation::none);
  QATConv2d(const FusedConvBn2d& float_conv_bn, const QConfig& qconfig, FusedActivation activation);

  Tensor forward(const Tensor& x) override;
  std::string type_name() const override;
  std::string extra_repr() const override;

  bool has_bn() const { return bn_slot_ != nullptr; }
  nn::BatchNorm2d* bn() const;  // nullptr without BatchNorm
  // freeze_bn_stats: from now on the running statistics are used (and no
  // longer updated) in training too. update_bn_stats undoes it.
  bool bn_frozen = false;
  void freeze_bn_stats() { bn_frozen = true; }
  void update_bn_stats() { bn_frozen = false; }
  // Does this forward normalise with batch statistics?
  bool uses_batch_stats() const;

  bool saw_float_input() const { return input_quant->has_data(); }
  nn::Slot<QParamsSource> input_quant, weight_quant, output_quant;
  std::string name = "QATConv2d";  // its path in the model, set by the pass

  // The weight and bias the int8 layer is built from: W f and
  // (b - running_mean) f + beta with BatchNorm, else W and b. Differentiable.
  std::pair<Tensor, Tensor> folded_weight_and_bias() const;

  // ---- PreparedLayer ----
  FusedActivation activation() const override { return activation_; }
  QParamsSource* quantizer(QuantRole role) const override;
  // The float weight the weight quantizer sees: W f with BatchNorm, else W.
  Tensor float_weight() const override;
  std::shared_ptr<nn::Module> to_quantized(const std::string& path) const override;

 protected:
  QATConv2d(const nn::Conv2d& float_conv, const QConfig& qconfig, FusedActivation activation,
            std::shared_ptr<nn::BatchNorm2d> bn, const char* input_slot, const char* weight_slot);
  // "QAT" or "Observed": the first part of the type name.
  virtual const char* kind() const { return "QAT"; }

 private:
  // The bias on the accumulator grid when fake quantizing (else as it is).
  Tensor quantized_bias(const Tensor& x_q, const Tensor& bias) const;
  // f = gamma / sqrt(running_var + eps), (C); and the same with 1 where f = 0.
  std::pair<Tensor, Tensor> bn_factor() const;

  FusedActivation activation_;
  std::shared_ptr<nn::ModuleSlot> bn_slot_;
  mutable QParams weight_qparams_;
};

class ObservedConv2d : public QATConv2d {
 public:
  ObservedConv2d(const nn::Conv2d& float_conv, const QConfig& qconfig, FusedActivation activation = FusedActivation::none)
      : QATConv2d(float_conv, qconfig, activation, nullptr, "input_observer", "weight_observer") {}
  // A ConvBn2d form: its BatchNorm2d folded from the running statistics.
  ObservedConv2d(const FusedConvBn2d& float_conv_bn, const QConfig& qconfig, FusedActivation activation)
      : ObservedConv2d(*fold_conv_bn(float_conv_bn, *float_conv_bn.bn), qconfig, activation) {}

 protected:
  const char* kind() const override { return "Observed"; }
};

class QATAdd : public nn::Add, public PreparedLayer {
 public:
  QATAdd(const nn::Add& float_add, const QConfig& qconfig, FusedActivation activation = FusedActivation::none);
  using nn::Add::forward;
  Tensor forward(const Tensor& a, const Tensor& b) override;
  std::string type_name() const override { return std::string(kind()) + "Add" + fused_activation_suffix(activation_); }

  nn::Slot<QParamsSource> output_quant;
  std::string name = "QATAdd";

  FusedActivation activation() const override { return activation_; }
  QParamsSource* quantizer(QuantRole role) const override;
  Tensor float_weight() const override { return Tensor(); }
  std::shared_ptr<nn::Module> to_quantized(const std::string& path) const override;

 protected:
  virtual const char* kind() const { return "QAT"; }

 private:
  FusedActivation activation_;
};

class ObservedAdd : public QATAdd {
 public:
  ObservedAdd(const nn::Add& float_add, const QConfig& qconfig, FusedActivation activation = FusedActivation::none)
      : QATAdd(float_add, qconfig, activation) {}

 protected:
  const char* kind() const override { return "Observed"; }
};

// freeze_bn_stats / update_bn_stats on every QATConv2d with a BatchNorm in
// `model`; each returns how many layers it switched. (freeze_bn_stats is
// also reached through quant::freeze_bn_stats and the QAT schedule.)
int freeze_conv_bn_stats(nn::Module& model);
int update_conv_bn_stats(nn::Module& model);

}  // namespace tq::quant

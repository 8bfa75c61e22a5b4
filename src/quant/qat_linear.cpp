#include "quant/qat_linear.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "quant/quantized_linear.h"

namespace tq::quant {

const std::shared_ptr<const QParams>& observed_grid_marker() {
  static const std::shared_ptr<const QParams> marker = std::make_shared<const QParams>();
  return marker;
}

namespace {
// Marks the output of an observed (not fake-quantized) layer: after convert
// it will be a quantized tensor, so the next layer must not treat it as a
// float input. Its values are not used.
const std::shared_ptr<const QParams>& kObservedGrid = observed_grid_marker();
}  // namespace

QATLinear::QATLinear(const nn::Linear& f, const QConfig& qconfig, FusedActivation activation)
    : QATLinear(f, qconfig, activation, "input_fake_quant", "weight_fake_quant") {}

QATLinear::QATLinear(const nn::Linear& f, const QConfig& qconfig, FusedActivation activation, const char* input_slot,
                     const char* weight_slot)
    : nn::Linear(f.weight, f.bias), fused_relu(activation == FusedActivation::relu), activation_(activation) {
  if (!qconfig.activation || !qconfig.weight)
    throw std::invalid_argument("QATLinear: the qconfig needs both an activation and a weight factory");
  input_quant = register_module(input_slot, qconfig.activation());
  weight_quant = register_module(weight_slot, qconfig.weight());
  output_quant = register_module("activation_post_process", qconfig.activation());
  train(f.is_training());
}

namespace {

// The bias rounded to the accumulator's grid, s_x * s_w[n] per output channel
// (docs/quantization.md eq. 12): exactly the i32 bias the int8 layer adds,
// so the fake-quant model and the converted one compute the same sum. The
// gradient passes straight through, as for any fake quant inside its range.
struct BiasFakeQuantBackward final : Node {
  const char* name() const override { return "BiasFakeQuantizeBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = g; }
};

}  // namespace

Tensor fake_quantize_bias(const Tensor& bias, float x_scale, const QParams& wq) {
  const int64_t n = bias.numel();
  Tensor out = empty(bias.shape());
  const float* b = bias.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const double s_acc = static_cast<double>(x_scale) * wq.scale[is_per_channel(wq.scheme) ? static_cast<size_t>(i) : 0];
    const double limit = 1 << 30;  // the int8 kernel's bound on |bias_q|
    out.data<float>()[i] = static_cast<float>(std::clamp(std::nearbyint(b[i] / s_acc), -limit, limit) * s_acc);
  }
  if (any_requires_grad(bias)) record<BiasFakeQuantBackward>(out, {bias});
  return out;
}

Tensor QATLinear::quantized_bias(const Tensor& x_q) const {
  if (!bias.defined()) return bias;
  const auto& grid = x_q.impl()->fake_quant_grid;
  // Only fake quants round; observers (post-training quantization) watch the float model.
  if (!grid || grid == kObservedGrid || grid->scale.size() != 1) return bias;
  if (dynamic_cast<const ObserverBase*>(&weight_quant.module()) || !weight_quant->has_data()) return bias;
  weight_quant->calculate_qparams_into(weight_qparams_);  // no allocation after the first step
  return fake_quantize_bias(bias, grid->scale[0], weight_qparams_);
}

Tensor QATLinear::forward(const Tensor& x_in) {
  if (x_in.is_quantized())
    throw std::invalid_argument(fmt::format("{}: this layer takes float input, got a quantized {} tensor", name,
                                            dtype_name(x_in.dtype())));
  const Tensor x = as_batch(x_in);
  const Tensor x_q = x.impl()->fake_quant_grid ? x : input_quant(x);
  const Tensor w_q = weight_quant(weight);
  Tensor y = tq::linear(x_q, w_q, quantized_bias(x_q));
  y = apply_fused_activation(activation_, y);
  y = output_quant(y);
  if (!y.impl()->fake_quant_grid) y.impl()->fake_quant_grid = kObservedGrid;
  return x_in.dim() == 1 ? tq::reshape(y, {out_features}) : y;
}

QParamsSource* QATLinear::quantizer(QuantRole role) const {
  switch (role) {
    case QuantRole::input: return &input_quant.get();
    case QuantRole::weight: return &weight_quant.get();
    case QuantRole::output: return &output_quant.get();
  }
  return nullptr;
}

// Exactly the qparams the prepared layer last used (docs/design.md §2:
// convert uses the qparams of the last fake-quant forward).
std::shared_ptr<nn::Module> QATLinear::to_quantized(const std::string& path) const {
  const QParams wq = weight_quant->calculate_qparams();
  const QParams oq = output_quant->calculate_qparams();
  std::shared_ptr<const QParams> iq;
  if (saw_float_input()) iq = std::make_shared<const QParams>(input_quant->calculate_qparams());
  auto q = std::make_shared<QuantizedLinear>(weight, bias, wq, oq, iq, activation_, path);
  q->train(false);
  return q;
}

}  // namespace tq::quant

#include "quant/qat_linear.h"

#include <stdexcept>

#include <fmt/format.h>

namespace tq::quant {

namespace {
// Marks the output of an observed (not fake-quantized) layer: after convert
// it will be a quantized tensor, so the next layer must not treat it as a
// float input. Its values are not used.
const std::shared_ptr<const QParams> kObservedGrid = std::make_shared<const QParams>();
}  // namespace

QATLinear::QATLinear(const nn::Linear& f, const QConfig& qconfig, bool relu)
    : QATLinear(f, qconfig, relu, "input_fake_quant", "weight_fake_quant") {}

QATLinear::QATLinear(const nn::Linear& f, const QConfig& qconfig, bool relu, const char* input_slot,
                     const char* weight_slot)
    : nn::Linear(f.weight, f.bias), fused_relu(relu) {
  if (!qconfig.activation || !qconfig.weight)
    throw std::invalid_argument("QATLinear: the qconfig needs both an activation and a weight factory");
  input_quant = register_module(input_slot, qconfig.activation());
  weight_quant = register_module(weight_slot, qconfig.weight());
  output_quant = register_module("activation_post_process", qconfig.activation());
  train(f.is_training());
}

Tensor QATLinear::forward(const Tensor& x_in) {
  if (x_in.is_quantized())
    throw std::invalid_argument(fmt::format("{}: this layer takes float input, got a quantized {} tensor", name,
                                            dtype_name(x_in.dtype())));
  const Tensor x = as_batch(x_in);
  const Tensor x_q = x.impl()->fake_quant_grid ? x : input_quant(x);
  const Tensor w_q = weight_quant(weight);
  Tensor y = tq::linear(x_q, w_q, bias);
  if (fused_relu) y = tq::relu(y);
  y = output_quant(y);
  if (!y.impl()->fake_quant_grid) y.impl()->fake_quant_grid = kObservedGrid;
  return x_in.dim() == 1 ? tq::reshape(y, {out_features}) : y;
}

}  // namespace tq::quant

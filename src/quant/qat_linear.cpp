#include "quant/qat_linear.h"

#include <stdexcept>

#include <fmt/format.h>

namespace tq::quant {

QATLinear::QATLinear(const nn::Linear& f, const QConfig& qconfig, bool relu)
    : nn::Linear(f.weight, f.bias), fused_relu(relu) {
  if (!qconfig.activation || !qconfig.weight)
    throw std::invalid_argument("QATLinear: the qconfig needs both an activation and a weight factory");
  input_fake_quant = register_module("input_fake_quant", qconfig.activation());
  weight_fake_quant = register_module("weight_fake_quant", qconfig.weight());
  activation_post_process = register_module("activation_post_process", qconfig.activation());
  train(f.is_training());
}

Tensor QATLinear::forward(const Tensor& x_in) {
  if (x_in.is_quantized())
    throw std::invalid_argument(fmt::format("{}: a QAT layer takes float input, got a quantized {} tensor", name,
                                            dtype_name(x_in.dtype())));
  const Tensor x = as_batch(x_in);
  const Tensor x_q = x.impl()->fake_quant_grid ? x : input_fake_quant(x);
  const Tensor w_q = weight_fake_quant(weight);
  Tensor y = tq::linear(x_q, w_q, bias);
  if (fused_relu) y = tq::relu(y);
  y = activation_post_process(y);
  return x_in.dim() == 1 ? tq::reshape(y, {out_features}) : y;
}

}  // namespace tq::quant

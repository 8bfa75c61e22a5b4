#include "quant/qat_conv.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "quant/qat_linear.h"
#include "quant/quantized_conv.h"

namespace tq::quant {

namespace {

void check_qconfig(const QConfig& qconfig, const char* what) {
  if (!qconfig.activation || !qconfig.weight)
    throw std::invalid_argument(fmt::format("{}: the qconfig needs both an activation and a weight factory", what));
}

}  // namespace

QATConv2d::QATConv2d(const nn::Conv2d& f, const QConfig& qconfig, FusedActivation activation)
    : QATConv2d(f, qconfig, activation, nullptr, "input_fake_quant", "weight_fake_quant") {}

QATConv2d::QATConv2d(const FusedConvBn2d& f, const QConfig& qconfig, FusedActivation activation)
    : QATConv2d(f, qconfig, activation, std::static_pointer_cast<nn::BatchNorm2d>(f.find_slot("bn")->module),
                "input_fake_quant", "weight_fake_quant") {}

QATConv2d::QATConv2d(const nn::Conv2d& f, const QConfig& qconfig, FusedActivation activation,
                     std::shared_ptr<nn::BatchNorm2d> bn_module, const char* input_slot, const char* weight_slot)
    : nn::Conv2d(f, f.weight, f.bias), activation_(activation) {
  check_qconfig(qconfig, "QATConv2d");
  if (bn_module) {
    if (bn_module->num_features != out_channels || !bn_module->track_running_stats)
      throw std::invalid_argument(fmt::format("QATConv2d: the BatchNorm2d must have {} features and running statistics",
                                              out_channels));
    bn_slot_ = register_slot("bn", bn_module);
  }
  input_quant = register_module(input_slot, qconfig.activation());
  weight_quant = register_module(weight_slot, qconfig.weight());
  output_quant = register_module("activation_post_process", qconfig.activation());
  train(f.is_training());
}

std::string QATConv2d::type_name() const {
  return std::string(kind()) + (has_bn() ? "ConvBn" : "Conv") + fused_activation_suffix(activation_) + "2d";
}

std::string QATConv2d::extra_repr() const {
  std::string s = nn::Conv2d::extra_repr();
  if (has_bn() && bn_frozen) s += ", bn_frozen=True";
  return s;
}

nn::BatchNorm2d* QATConv2d::bn() const {
  if (!bn_slot_) return nullptr;
  auto* b = dynamic_cast<nn::BatchNorm2d*>(bn_slot_->module.get());
  if (!b) throw std::logic_error(fmt::format("{}: its 'bn' slot holds a {}, not a BatchNorm2d", name, bn_slot_->module->type_name()));
  return b;
}

bool QATConv2d::uses_batch_stats() const { return has_bn() && is_training() && bn()->is_training() && !bn_frozen; }

std::pair<Tensor, Tensor> QATConv2d::bn_factor() const {
  const nn::BatchNorm2d& b = *bn();
  const Tensor var = b.running_var();
  if (!var.defined() || !(var.shape() == Shape{out_channels}))
    throw std::logic_error(fmt::format("{}: the BatchNorm2d has no running variance of {} channels", name, out_channels));
  // In f32 as PyTorch computes it (sqrt(running_var + eps), then gamma
  // divided by it), so that weights on a rounding tie of the weight fake
  // quant fall the same way.
  std::vector<float> std_dev(static_cast<size_t>(out_channels));
  for (int64_t c = 0; c < out_channels; ++c) {
    const float v = var.data<float>()[c];
    if (!(v >= 0) || !std::isfinite(v))
      throw std::invalid_argument(fmt::format("{}: running_var[{}] is {}; it must be >= 0 and finite", name, c, v));
    std_dev[static_cast<size_t>(c)] = std::sqrt(v + static_cast<float>(b.eps));
  }
  const Tensor running_std = from_vector(std_dev, {out_channels});
  const Tensor f = b.weight.defined() ? b.weight / running_std : 1.f / running_std;
  // Where gamma = 0 (f = 0) the rescaling divides by 1: that channel's
  // folded filter is zero and BN gives beta whatever it receives.
  std::vector<float> one_where_zero(static_cast<size_t>(out_channels), 0.f);
  for (int64_t c = 0; c < out_channels; ++c)
    if (f.data<float>()[c] == 0.f) one_where_zero[static_cast<size_t>(c)] = 1.f;
  return {f, f + from_vector(one_where_zero, {out_channels})};
}

std::pair<Tensor, Tensor> QATConv2d::folded_weight_and_bias() const {
  if (!has_bn()) return {weight, bias};
  const nn::BatchNorm2d& b = *bn();
  const Tensor f = bn_factor().first;
  const Tensor w = weight * tq::reshape(f, {out_channels, 1, 1, 1});
  const Tensor centred = bias.defined() ? bias - b.running_mean() : tq::neg(b.running_mean());
  Tensor folded_bias = centred * f;
  if (b.bias.defined()) folded_bias = folded_bias + b.bias;
  return {w, folded_bias};
}

Tensor QATConv2d::float_weight() const {
  NoGradGuard no_grad;
  return folded_weight_and_bias().first.detach();
}

Tensor QATConv2d::quantized_bias(const Tensor& x_q, const Tensor& b) const {
  if (!b.defined()) return b;
  const auto& grid = x_q.impl()->fake_quant_grid;
  // Only fake quants round; observers (post-training quantization) watch the float model.
  if (!grid || grid == observed_grid_marker() || grid->scale.size() != 1) return b;
  if (dynamic_cast<const ObserverBase*>(&weight_quant.module()) || !weight_quant->has_data()) return b;
  weight_quant->calculate_qparams_into(weight_qparams_);
  return fake_quantize_bias(b, grid->scale[0], weight_qparams_);
}

Tensor QATConv2d::forward(const Tensor& x) {
  if (x.is_quantized())
    throw std::invalid_argument(fmt::format("{}: this layer takes float input, got a quantized {} tensor", name,
                                            dtype_name(x.dtype())));
  if (x.defined() && (x.dim() != 4 || x.size(1) != in_channels))
    throw std::invalid_argument(fmt::format("{}: input of shape {} does not match in_channels={} (expected (N, {}, H, W))",
                                            name, x.shape().str(), in_channels, in_channels));
  const Tensor x_q = x.impl()->fake_quant_grid ? x : input_quant(x);
  Tensor y;
  if (uses_batch_stats()) {
    // The weight quantized as it will be folded, the output scaled back, the
    // real BatchNorm with batch statistics (which updates the running ones).
    const auto [f, f_safe] = bn_factor();
    const Tensor w_q = weight_quant(weight * tq::reshape(f, {out_channels, 1, 1, 1}));
    Tensor z = tq::conv2d(x_q, w_q, Tensor(), options()) / tq::reshape(f_safe, {1, out_channels, 1, 1});
    if (bias.defined()) z = z + tq::reshape(bias, {1, out_channels, 1, 1});
    y = bn()->forward(z);
  } else {
    // Running statistics (or no BN): the folded layer, as the int8 one computes it.
    const auto [w, b] = folded_weight_and_bias();
    const Tensor w_q = weight_quant(w);
    y = tq::conv2d(x_q, w_q, quantized_bias(x_q, b), options());
  }
  y = apply_fused_activation(activation_, y);
  y = output_quant(y);
  if (!y.impl()->fake_quant_grid) y.impl()->fake_quant_grid = observed_grid_marker();
  return y;
}

QParamsSource* QATConv2d::quantizer(QuantRole role) const {
  switch (role) {
    case QuantRole::input: return &input_quant.get();
    case QuantRole::weight: return &weight_quant.get();
    case QuantRole::output: return &output_quant.get();
  }
  return nullptr;
}

std::shared_ptr<nn::Module> QATConv2d::to_quantized(const std::string& path) const {
  NoGradGuard no_grad;
  const auto [w, b] = folded_weight_and_bias();
  const QParams wq = weight_quant->calculate_qparams();
  const QParams oq = output_quant->calculate_qparams();
  std::shared_ptr<const QParams> iq;
  if (saw_float_input()) iq = std::make_shared<const QParams>(input_quant->calculate_qparams());
  Conv2dGeometry g;
  g.stride_h = stride.h, g.stride_w = stride.w, g.pad_h = padding.h, g.pad_w = padding.w;
  g.dilation_h = dilation.h, g.dilation_w = dilation.w, g.groups = groups;
  auto q = std::make_shared<QuantizedConv2d>(w.detach(), b.defined() ? b.detach() : b, wq, oq, iq, activation_, g, path);
  q->train(false);
  return q;
}

// ---- The residual add ----

QATAdd::QATAdd(const nn::Add&, const QConfig& qconfig, FusedActivation activation) : activation_(activation) {
  if (!qconfig.activation) throw std::invalid_argument("QATAdd: the qconfig needs an activation factory");
  output_quant = register_module("activation_post_process", qconfig.activation());
}

Tensor QATAdd::forward(const Tensor& a, const Tensor& b) {
  for (const Tensor* t : {&a, &b})
    if (t->defined() && (t->is_quantized() || !t->impl()->fake_quant_grid))
      throw std::invalid_argument(fmt::format("{}: both inputs of a quantized add must be outputs of quantized layers "
                                              "(a tensor on a quantization grid); got a {} tensor{}",
                                              name, t->is_quantized() ? "quantized" : "float",
                                              t->is_quantized() ? "" : " that no layer quantized"));
  Tensor y = apply_fused_activation(activation_, tq::add(a, b));
  y = output_quant(y);
  if (!y.impl()->fake_quant_grid) y.impl()->fake_quant_grid = observed_grid_marker();
  return y;
}

QParamsSource* QATAdd::quantizer(QuantRole role) const { return role == QuantRole::output ? &output_quant.get() : nullptr; }

std::shared_ptr<nn::Module> QATAdd::to_quantized(const std::string& path) const {
  auto q = std::make_shared<QuantizedAdd>(output_quant->calculate_qparams(), activation_, path);
  q->train(false);
  return q;
}

int freeze_conv_bn_stats(nn::Module& model) {
  int n = 0;
  for (auto& [path, m] : model.named_modules())
    if (auto* c = dynamic_cast<QATConv2d*>(m); c && c->has_bn() && !c->bn_frozen) c->freeze_bn_stats(), ++n;
  return n;
}

int update_conv_bn_stats(nn::Module& model) {
  int n = 0;
  for (auto& [path, m] : model.named_modules())
    if (auto* c = dynamic_cast<QATConv2d*>(m); c && c->has_bn() && c->bn_frozen) c->update_bn_stats(), ++n;
  return n;
}

}  // namespace tq::quant

#include "onnx_io/onnx_export.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include "models/mobilenet_v2.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/pooling.h"
#include "nn/sequential.h"
#include "quant/dynamic_linear.h"
#include "quant/fused.h"
#include "quant/layer.h"
#include "quant/quantized_conv.h"
#include "quant/quantized_linear.h"
#include "quant/quantized_pool.h"
#include "tensor/ops.h"

namespace tq::onnx_io {

namespace {

using ::onnx::TensorProto;

void set_int(::onnx::NodeProto& n, const std::string& name, int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(::onnx::AttributeProto::INT);
  a->set_i(v);
}


std::string join(const std::string& path, const std::string& child) { return path.empty() ? child : path + "." + child; }

// "fc1" -> "/fc1/" as a node-name prefix (PyTorch's exporter names nodes so).
std::string scope(const std::string& path) { return "/" + path + "/"; }

template <class T>
std::vector<T> values_of(const Tensor& t) {
  const Tensor c = kernels::contiguous(t);
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

std::vector<int64_t> dims_of(const Tensor& t) {
  std::vector<int64_t> d;
  for (int64_t i = 0; i < t.dim(); ++i) d.push_back(t.size(i));
  return d;
}

// Float Gemm y = x W^T + b for a float weight (out, in) and bias (or undefined).
std::string float_gemm(GraphWriter& g, const std::string& path, const std::string& x, const Tensor& weight,
                       const Tensor& bias) {
  std::vector<std::string> in = {x, g.floats(join(path, "weight"), values_of<float>(weight.detach()), dims_of(weight))};
  if (bias.defined()) in.push_back(g.floats(join(path, "bias"), values_of<float>(bias.detach()), dims_of(bias)));
  const std::string y = g.fresh(scope(path) + "Gemm_output_0");
  set_int(g.node("Gemm", in, {y}, scope(path) + "Gemm"), "transB", 1);
  return y;
}

// Runs the table's entry for `module` (at `path`).
Value export_module(const nn::Module& module, const std::string& path, const Value& input, GraphWriter& g) {
  auto& table = onnx_exporters();
  auto it = table.find(module.type_name());
  if (it == table.end())
    throw std::invalid_argument(fmt::format("ONNX export: module '{}' of type {} has no exporter (supported: {})", path,
                                            module.type_name(), [&] {
                                              std::string s;
                                              for (const auto& [k, _] : table) s += (s.empty() ? "" : ", ") + k;
                                              return s;
                                            }()));
  return it->second(module, path, input, g);
}

Value export_sequential(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  Value v = input;
  for (const auto& slot : m.children()) v = export_module(*slot->module, join(path, slot->name), v, g);
  return v;
}

// Relu, or Clip(0, 6) for ReLU6, on a float tensor; `x` itself for none.
std::string float_activation(GraphWriter& g, const std::string& path, const std::string& x, quant::FusedActivation a) {
  if (a == quant::FusedActivation::none) return x;
  if (a == quant::FusedActivation::relu) {
    const std::string r = g.fresh(scope(path) + "Relu_output_0");
    g.node("Relu", {x}, {r}, scope(path) + "Relu");
    return r;
  }
  const std::string r = g.fresh(scope(path) + "Clip_output_0");
  g.node("Clip", {x, g.floats(join(path, "relu6_min"), {0.f}, {}), g.floats(join(path, "relu6_max"), {6.f}, {})}, {r},
         scope(path) + "Clip");
  return r;
}

// The integer codes a fused activation keeps (docs/quantization.md eq. 14), as a pair.
std::pair<int32_t, int32_t> codes_of(quant::FusedActivation a, const QParams& q) {
  const quant::OutputRange r = quant::fused_output_range(a, q);
  return {r.min, r.max};
}

Value export_linear(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& l = dynamic_cast<const nn::Linear&>(m);
  const std::string y = float_gemm(g, path, input.name, l.weight, l.bias);
  return {float_activation(g, path, y, quant::fused_activation_of(m)), std::nullopt};
}

// ReLU and ReLU6 modules. On a quantized tensor tinyqat clamps the codes
// (max(q, z); ReLU6 also min(q, z + round(6 / s))): the values stay on the
// grid with the same qparams; Q/DQ after keeps the QDQ form for the runtime.
Value export_activation(const nn::Module&, const std::string& path, const Value& input, GraphWriter& g,
                        quant::FusedActivation a) {
  const std::string y = float_activation(g, path, input.name, a);
  if (input.qparams) return g.quantize_dequantize(y, *input.qparams, scope(path), codes_of(a, *input.qparams));
  return {y, std::nullopt};
}

Value export_flatten(const nn::Module&, const std::string& path, const Value& input, GraphWriter& g) {
  const std::string y = g.fresh(scope(path) + "Flatten_output_0");
  set_int(g.node("Flatten", {input.name}, {y}, scope(path) + "Flatten"), "axis", 1);
  return {y, input.qparams};
}

// A static int8 layer (Linear or Conv2d) as QDQ:
//   DQ(x_q) -> op(., DQ(W_q, per channel), DQ(b_i32 on s_x s_w)) [-> Relu | Clip] -> Q(y) -> DQ
// `op` emits the float operator (Gemm or Conv) on its inputs and returns its output.
Value export_qdq_layer(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g,
                       const Tensor& bias,
                       const std::function<std::string(const std::vector<std::string>&)>& op) {
  // qparams, activation and weight through the layer interface (quant/layer.h).
  auto& layer = *quant::as_quant_layer(const_cast<nn::Module*>(&m));
  Value x = input;
  if (!x.qparams) {
    const std::optional<QParams> in_q = layer.qparams(quant::QuantRole::input);
    if (!in_q)
      throw std::invalid_argument(fmt::format("ONNX export: int8 layer '{}' receives a float tensor but has no input "
                                              "qparams (it never saw float input during QAT / calibration)",
                                              path));
    x = g.quantize_dequantize(input.name, *in_q, scope(path) + "input_");
  }
  const QParams& iq = *x.qparams;
  const Tensor w = layer.effective_weight();
  const QParams& wq = w.qparams();
  const QParams oq = layer.qparams(quant::QuantRole::output).value();
  const quant::FusedActivation act = layer.activation();
  const bool per_channel = is_per_channel(wq.scheme);
  const int64_t out = w.size(0);
  std::vector<float> w_scales;
  for (int64_t n = 0; n < out; ++n) w_scales.push_back(per_channel ? wq.scale[static_cast<size_t>(n)] : wq.scale[0]);
  const std::vector<int64_t> qdims = per_channel ? std::vector<int64_t>{out} : std::vector<int64_t>{};
  const size_t nq = per_channel ? static_cast<size_t>(out) : 1;

  const std::string wq_name = g.int8s(join(path, "weight_quantized"), values_of<int8_t>(w), dims_of(w));
  const std::string ws_name =
      g.floats(join(path, "weight_scale"), std::vector<float>(w_scales.begin(), w_scales.begin() + nq), qdims);
  const std::string wz_name = g.int8s(join(path, "weight_zero_point"), std::vector<int8_t>(nq, 0), qdims);
  const std::string w_dq = g.fresh(scope(path) + "weight_DequantizeLinear_output_0");
  auto& wnode = g.node("DequantizeLinear", {wq_name, ws_name, wz_name}, {w_dq}, scope(path) + "weight_DequantizeLinear");
  if (per_channel) set_int(wnode, "axis", 0);

  std::vector<std::string> op_in = {x.name, w_dq};
  if (bias.defined()) {
    // The i32 bias exactly as the int8 layer computes it (docs/quantization.md eq. 12).
    const std::vector<float> b = values_of<float>(bias);
    std::vector<int32_t> bq(static_cast<size_t>(out));
    std::vector<float> bs(nq);
    for (int64_t n = 0; n < out; ++n) {
      const double s_acc = static_cast<double>(iq.scale[0]) * w_scales[static_cast<size_t>(n)];
      if (!std::isfinite(b[static_cast<size_t>(n)]))
        throw std::invalid_argument(fmt::format("ONNX export: '{}' bias[{}] is not finite", path, n));
      const double limit = 1 << 30;
      bq[static_cast<size_t>(n)] =
          static_cast<int32_t>(std::clamp(std::nearbyint(b[static_cast<size_t>(n)] / s_acc), -limit, limit));
      if (static_cast<size_t>(n) < nq) bs[static_cast<size_t>(n)] = static_cast<float>(s_acc);
    }
    const std::string bq_name = g.int32s(join(path, "bias_quantized"), bq, {out});
    const std::string bs_name = g.floats(join(path, "bias_scale"), bs, qdims);
    const std::string bz_name = g.int32s(join(path, "bias_zero_point"), std::vector<int32_t>(nq, 0), qdims);
    const std::string b_dq = g.fresh(scope(path) + "bias_DequantizeLinear_output_0");
    auto& bnode = g.node("DequantizeLinear", {bq_name, bs_name, bz_name}, {b_dq}, scope(path) + "bias_DequantizeLinear");
    if (per_channel) set_int(bnode, "axis", 0);
    op_in.push_back(b_dq);
  }
  std::string y = op(op_in);
  // tinyqat clamps the output codes to the fused activation's range (docs/quantization.md eq. 14):
  // Relu (Clip(0, 6) for ReLU6) before QuantizeLinear computes the same, and
  // Relu -> QuantizeLinear is a pattern the runtime fuses.
  y = float_activation(g, path, y, act);
  return g.quantize_dequantize(y, oq, scope(path) + "output_", codes_of(act, oq));
}

Value export_quantized_linear(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& l = dynamic_cast<const quant::QuantizedLinear&>(m);
  return export_qdq_layer(m, path, input, g, l.bias(), [&](const std::vector<std::string>& in) {
    const std::string y = g.fresh(scope(path) + "Gemm_output_0");
    set_int(g.node("Gemm", in, {y}, scope(path) + "Gemm"), "transB", 1);
    return y;
  });
}

// ---- Convolutional layers ----

void set_ints(::onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(::onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

// Conv with ONNX's attributes: pads are (top, left, bottom, right).
std::string conv_node(GraphWriter& g, const std::string& path, const std::vector<std::string>& in, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  const std::string y = g.fresh(scope(path) + "Conv_output_0");
  auto& n = g.node("Conv", in, {y}, scope(path) + "Conv");
  set_ints(n, "dilations", {dh, dw});
  set_int(n, "group", groups);
  set_ints(n, "kernel_shape", {kh, kw});
  set_ints(n, "pads", {ph, pw, ph, pw});
  set_ints(n, "strides", {sh, sw});
  return y;
}

Value export_conv(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& c = dynamic_cast<const nn::Conv2d&>(m);
  std::vector<std::string> in = {input.name,
                                 g.floats(join(path, "weight"), values_of<float>(c.weight.detach()), dims_of(c.weight))};
  if (c.bias.defined()) in.push_back(g.floats(join(path, "bias"), values_of<float>(c.bias.detach()), dims_of(c.bias)));
  return {conv_node(g, path, in, c.kernel_size.h, c.kernel_size.w, c.stride.h, c.stride.w, c.padding.h, c.padding.w,
                    c.dilation.h, c.dilation.w, c.groups),
          std::nullopt};
}

Value export_quantized_conv(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& c = dynamic_cast<const quant::QuantizedConv2d&>(m);
  const quant::Conv2dGeometry& k = c.geometry;
  return export_qdq_layer(m, path, input, g, c.bias(), [&](const std::vector<std::string>& in) {
    return conv_node(g, path, in, c.kernel_h, c.kernel_w, k.stride_h, k.stride_w, k.pad_h, k.pad_w, k.dilation_h,
                     k.dilation_w, k.groups);
  });
}

// BatchNormalization with the running statistics (inference form).
Value export_batch_norm(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& bn = dynamic_cast<const nn::BatchNorm2d&>(m);
  const int64_t c = bn.num_features;
  if (!bn.track_running_stats)
    throw std::invalid_argument(fmt::format("ONNX export: BatchNorm2d '{}' keeps no running statistics", path));
  const std::vector<float> gamma = bn.weight.defined() ? values_of<float>(bn.weight.detach()) : std::vector<float>(c, 1.f);
  const std::vector<float> beta = bn.bias.defined() ? values_of<float>(bn.bias.detach()) : std::vector<float>(c, 0.f);
  const std::string y = g.fresh(scope(path) + "BatchNormalization_output_0");
  auto& n = g.node("BatchNormalization",
                   {input.name, g.floats(join(path, "weight"), gamma, {c}), g.floats(join(path, "bias"), beta, {c}),
                    g.floats(join(path, "running_mean"), values_of<float>(bn.running_mean()), {c}),
                    g.floats(join(path, "running_var"), values_of<float>(bn.running_var()), {c})},
                   {y}, scope(path) + "BatchNormalization");
  auto* eps = n.add_attribute();
  eps->set_name("epsilon");
  eps->set_type(::onnx::AttributeProto::FLOAT);
  eps->set_f(static_cast<float>(bn.eps));
  return {y, std::nullopt};
}

// A pooling node; on a quantized input followed by a Q/DQ pair with the
// input's qparams (tinyqat's u8 pooling keeps them).
Value pool(GraphWriter& g, const std::string& path, const Value& input, const std::string& op,
           const std::function<void(::onnx::NodeProto&)>& attributes) {
  const std::string y = g.fresh(scope(path) + op + "_output_0");
  attributes(g.node(op, {input.name}, {y}, scope(path) + op));
  if (input.qparams) return g.quantize_dequantize(y, *input.qparams, scope(path) + "output_");
  return {y, std::nullopt};
}

int64_t or_kernel(int64_t stride, int64_t kernel) { return stride == 0 ? kernel : stride; }

Value export_max_pool(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& p = dynamic_cast<const nn::MaxPool2d&>(m);
  return pool(g, path, input, "MaxPool", [&](::onnx::NodeProto& n) {
    set_ints(n, "dilations", {p.dilation.h, p.dilation.w});
    set_ints(n, "kernel_shape", {p.kernel_size.h, p.kernel_size.w});
    set_ints(n, "pads", {p.padding.h, p.padding.w, p.padding.h, p.padding.w});
    set_ints(n, "strides", {or_kernel(p.stride.h, p.kernel_size.h), or_kernel(p.stride.w, p.kernel_size.w)});
  });
}

Value export_quantized_max_pool(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& o = dynamic_cast<const quant::QuantizedMaxPool2d&>(m).options;
  if (!input.qparams) throw std::invalid_argument(fmt::format("ONNX export: '{}' (u8 pooling) receives a float tensor", path));
  return pool(g, path, input, "MaxPool", [&](::onnx::NodeProto& n) {
    set_ints(n, "kernel_shape", {o.kernel_h, o.kernel_w});
    set_ints(n, "pads", {o.pad_h, o.pad_w, o.pad_h, o.pad_w});
    set_ints(n, "strides", {o.stride_h, o.stride_w});
  });
}

Value export_avg_pool(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& p = dynamic_cast<const nn::AvgPool2d&>(m);
  return pool(g, path, input, "AveragePool", [&](::onnx::NodeProto& n) {
    set_int(n, "count_include_pad", 1);
    set_ints(n, "kernel_shape", {p.kernel_size.h, p.kernel_size.w});
    set_ints(n, "pads", {p.padding.h, p.padding.w, p.padding.h, p.padding.w});
    set_ints(n, "strides", {or_kernel(p.stride.h, p.kernel_size.h), or_kernel(p.stride.w, p.kernel_size.w)});
  });
}

Value export_quantized_avg_pool(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& p = dynamic_cast<const quant::QuantizedAvgPool2d&>(m);
  const auto& o = p.options;
  if (!input.qparams) throw std::invalid_argument(fmt::format("ONNX export: '{}' (u8 pooling) receives a float tensor", path));
  return pool(g, path, input, "AveragePool", [&](::onnx::NodeProto& n) {
    set_int(n, "count_include_pad", p.count_include_pad ? 1 : 0);
    set_ints(n, "kernel_shape", {o.kernel_h, o.kernel_w});
    set_ints(n, "pads", {o.pad_h, o.pad_w, o.pad_h, o.pad_w});
    set_ints(n, "strides", {o.stride_h, o.stride_w});
  });
}

// Adaptive average pooling to 1x1 is GlobalAveragePool; other output sizes
// depend on the input size, which the graph does not fix.
Value export_global_pool(const std::string& path, const Value& input, GraphWriter& g, int64_t oh, int64_t ow) {
  if (oh != 1 || ow != 1)
    throw std::invalid_argument(fmt::format("ONNX export: '{}' pools to {}x{}; only adaptive pooling to 1x1 "
                                            "(GlobalAveragePool) is exported",
                                            path, oh, ow));
  return pool(g, path, input, "GlobalAveragePool", [](::onnx::NodeProto&) {});
}

// The residual sum of two values: float Add, or for a QuantizedAdd
// DQ(a) + DQ(b) [-> Relu | Clip] -> Q(y) -> DQ with the add's output qparams.
Value export_add(const nn::Module& m, const std::string& path, const Value& a, const Value& b, GraphWriter& g) {
  std::string y = g.fresh(scope(path) + "Add_output_0");
  g.node("Add", {a.name, b.name}, {y}, scope(path) + "Add");
  if (const auto* q = dynamic_cast<const quant::QuantizedAdd*>(&m)) {
    if (!a.qparams || !b.qparams)
      throw std::invalid_argument(fmt::format("ONNX export: '{}' (QuantizedAdd) receives a float tensor", path));
    y = float_activation(g, path, y, q->activation());
    return g.quantize_dequantize(y, q->output_qparams(), scope(path) + "output_",
                                 codes_of(q->activation(), q->output_qparams()));
  }
  if (m.type_name() != "Add")
    throw std::invalid_argument(fmt::format("ONNX export: '{}' of type {} is not a residual add", path, m.type_name()));
  return {y, std::nullopt};
}

Value export_child(const nn::Module& parent, const std::string& path, const std::string& name, const Value& input,
                   GraphWriter& g);

// MobileNetV2's block: conv(x), plus x when the shapes allow.
Value export_inverted_residual(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& block = dynamic_cast<const models::InvertedResidual&>(m);
  const Value y = export_child(m, path, "conv", input, g);
  if (!block.use_res_connect) return y;
  return export_add(block.skip_add.module(), join(path, "skip_add"), input, y, g);
}

// MobileNetV2: features, global average pooling, flatten, classifier.
Value export_mobilenet_v2(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  Value v = export_child(m, path, "features", input, g);
  // The model pools in float: a quantized feature map is dequantized first,
  // so the pooled values leave without qparams.
  const std::string pooled = g.fresh(scope(join(path, "pool")) + "GlobalAveragePool_output_0");
  g.node("GlobalAveragePool", {v.name}, {pooled}, scope(join(path, "pool")) + "GlobalAveragePool");
  const std::string flat = g.fresh(scope(join(path, "flatten")) + "Flatten_output_0");
  set_int(g.node("Flatten", {pooled}, {flat}, scope(join(path, "flatten")) + "Flatten"), "axis", 1);
  return export_child(m, path, "classifier", {flat, std::nullopt}, g);
}

// Dynamic int8 Linear: the per-batch activation qparams of tinyqat
// (docs/dynamic.md: range widened to contain 0, scale (max - min) / qmax
// floored at float epsilon, zero point round(-min / scale) clamped to
// 0..qmax), then MatMulInteger and the float rescale + bias.
Value export_dynamic_linear(const nn::Module& m, const std::string& path, const Value& input, GraphWriter& g) {
  const auto& l = dynamic_cast<const quant::DynamicQuantizedLinear&>(m);
  const std::string s = scope(path);
  const int64_t out = l.out_features, in = l.in_features;
  const float qmax = static_cast<float>(l.activation_quant_max);
  auto op = [&](const std::string& type, const std::vector<std::string>& ins, const std::string& label) {
    const std::string y = g.fresh(s + label + "_output_0");
    g.node(type, ins, {y}, s + label);
    return y;
  };
  const std::string zero = g.floats(join(path, "zero"), {0.f}, {});
  const std::string lo_raw = g.fresh(s + "ReduceMin_output_0");
  set_int(g.node("ReduceMin", {input.name}, {lo_raw}, s + "ReduceMin"), "keepdims", 0);
  const std::string hi_raw = g.fresh(s + "ReduceMax_output_0");
  set_int(g.node("ReduceMax", {input.name}, {hi_raw}, s + "ReduceMax"), "keepdims", 0);
  const std::string lo = op("Min", {lo_raw, zero}, "Min");
  const std::string hi = op("Max", {hi_raw, zero}, "Max");
  const std::string range = op("Sub", {hi, lo}, "Sub");
  const std::string scale_raw = op("Div", {range, g.floats(join(path, "activation_quant_max"), {qmax}, {})}, "Div");
  const std::string x_scale =
      op("Max", {scale_raw, g.floats(join(path, "scale_floor"), {std::numeric_limits<float>::epsilon()}, {})}, "ScaleFloor");
  const std::string neg = op("Neg", {lo}, "Neg");
  const std::string ratio = op("Div", {neg, x_scale}, "ZeroPointDiv");
  const std::string rounded = op("Round", {ratio}, "Round");  // half to even, as tinyqat
  const std::string zp_f = op("Clip", {rounded, zero, g.floats(join(path, "zero_point_max"), {qmax}, {})}, "ZeroPointClip");
  const std::string zp = g.fresh(s + "ZeroPointCast_output_0");
  set_int(g.node("Cast", {zp_f}, {zp}, s + "ZeroPointCast"), "to", TensorProto::UINT8);
  std::string xq = op("QuantizeLinear", {input.name, x_scale, zp}, "QuantizeLinear");
  if (l.activation_quant_max < 255) {
    // QuantizeLinear saturates at 255; tinyqat's range ends at quant_max.
    xq = op("Clip", {xq, g.uint8s(join(path, "q_min"), {0}, {}),
                     g.uint8s(join(path, "q_max"), {static_cast<uint8_t>(l.activation_quant_max)}, {})},
            "QuantizedClip");
  }
  // W^T (in, out) for MatMulInteger; weight zero point 0 (symmetric), left out.
  const std::vector<int8_t> w = values_of<int8_t>(l.weight());
  std::vector<int8_t> wt(w.size());
  for (int64_t n = 0; n < out; ++n)
    for (int64_t k = 0; k < in; ++k) wt[static_cast<size_t>(k * out + n)] = w[static_cast<size_t>(n * in + k)];
  const std::string acc = op("MatMulInteger", {xq, g.int8s(join(path, "weight_quantized_t"), wt, {in, out}), zp}, "MatMulInteger");
  const std::string acc_f = g.fresh(s + "Cast_output_0");
  set_int(g.node("Cast", {acc}, {acc_f}, s + "Cast"), "to", TensorProto::FLOAT);
  const std::string out_scale = op("Mul", {x_scale, g.floats(join(path, "weight_scale"), l.weight_scales(), {out})}, "ScaleMul");
  std::string y = op("Mul", {acc_f, out_scale}, "Mul");
  if (l.bias().defined())
    y = op("Add", {y, g.floats(join(path, "bias"), values_of<float>(l.bias()), {out})}, "Add");
  return {y, std::nullopt};
}

Value export_child(const nn::Module& parent, const std::string& path, const std::string& name, const Value& input,
                   GraphWriter& g) {
  const auto slot = parent.find_slot(name);
  if (!slot) throw std::invalid_argument(fmt::format("ONNX export: '{}' has no child '{}'", path, name));
  return export_module(*slot->module, join(path, name), input, g);
}

// The input's shape after N, from the first layer that knows it.
std::vector<int64_t> first_input_shape(const nn::Module& model) {
  for (const auto& [name, m] : model.named_modules()) {
    if (auto* l = dynamic_cast<const nn::Linear*>(m)) return {l->in_features};
    if (auto* q = dynamic_cast<const quant::QuantizedLinear*>(m)) return {q->in_features};
    if (auto* d = dynamic_cast<const quant::DynamicQuantizedLinear*>(m)) return {d->in_features};
    if (auto* c = dynamic_cast<const nn::Conv2d*>(m)) return {c->in_channels, -1, -1};
    if (auto* c = dynamic_cast<const quant::QuantizedConv2d*>(m)) return {c->in_channels, -1, -1};
  }
  return {-1};
}

}  // namespace

void check_input_shape(const nn::Module& model, const std::vector<int64_t>& shape) {
  const std::vector<int64_t> first = first_input_shape(model);
  const auto str = [](const std::vector<int64_t>& v) { return fmt::format("({})", fmt::join(v, ", ")); };
  if (first.size() == 1 && first[0] > 0) {  // a Linear of F inputs
    const int64_t F = first[0];
    int64_t product = 1;  // stops growing past F: no overflow
    for (int64_t d : shape) product = d > 0 && product <= F ? product * d : F + 1;
    if (!shape.empty() && shape.back() != F && product != F)
      throw std::invalid_argument(fmt::format("the input shape {} does not fit the first Linear layer's {} inputs "
                                              "(its last dimension, or the product of all, must be {})",
                                              str(shape), F, F));
  } else if (first.size() == 3 && first[0] > 0) {  // a Conv2d of C channels
    if (shape.size() != 3 || shape[0] != first[0])
      throw std::invalid_argument(fmt::format("the input shape {} does not fit the first convolution: it takes "
                                              "({}, H, W)",
                                              str(shape), first[0]));
  }
}

namespace {

// A float tensor (N, dims...); a dim < 0 is symbolic.
void set_float_io(::onnx::ValueInfoProto& v, const std::string& name, const std::vector<int64_t>& dims) {
  v.set_name(name);
  auto* tt = v.mutable_type()->mutable_tensor_type();
  tt->set_elem_type(TensorProto::FLOAT);
  auto* shape = tt->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  static const char* const kNames[] = {"C", "H", "W"};
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] > 0)
      shape->add_dim()->set_dim_value(dims[i]);
    else
      shape->add_dim()->set_dim_param(dims.size() == 3 ? name + "_" + kNames[i] : fmt::format("{}_dim{}", name, i + 1));
  }
}

}  // namespace

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> dims;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) throw std::invalid_argument(fmt::format("'{}' is not a shape like 784 or 1,28,28", text));
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(cur, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != cur.size() || v < 1 || v > (1LL << 31))
      throw std::invalid_argument(fmt::format("'{}' in '{}' is not a positive dimension", cur, text));
    dims.push_back(v);
    cur.clear();
  };
  for (char ch : text) {
    if (ch == ',' || ch == 'x') flush();
    else if (ch != ' ') cur += ch;
  }
  flush();
  if (dims.size() > 3) throw std::invalid_argument(fmt::format("'{}' has more than 3 dimensions after the batch", text));
  return dims;
}

// ---- GraphWriter ----

std::string GraphWriter::fresh(const std::string& base) {
  int& n = used_[base];
  const std::string name = n == 0 ? base : fmt::format("{}_{}", base, n);
  ++n;
  if (n > 1) used_[name] = 1;
  return name;
}

::onnx::NodeProto& GraphWriter::node(const std::string& op_type, const std::vector<std::string>& inputs,
                                     const std::vector<std::string>& outputs, const std::string& name) {
  auto* n = graph_.add_node();
  n->set_op_type(op_type);
  n->set_name(fresh(name));
  for (const auto& i : inputs) n->add_input(i);
  for (const auto& o : outputs) n->add_output(o);
  return *n;
}

namespace {
template <class T>
std::string add_initializer(GraphWriter& g, ::onnx::GraphProto& graph, const std::string& name, const std::vector<T>& v,
                            const std::vector<int64_t>& dims, int elem_type) {
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  if (count != static_cast<int64_t>(v.size()))
    throw std::logic_error(fmt::format("ONNX export: initializer '{}' has {} values for {} elements", name, v.size(), count));
  auto* t = graph.add_initializer();
  const std::string fresh_name = g.fresh(name);
  t->set_name(fresh_name);
  t->set_data_type(elem_type);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)));  // little-endian
  return fresh_name;
}
}  // namespace

std::string GraphWriter::floats(const std::string& name, const std::vector<float>& v, const std::vector<int64_t>& dims) {
  return add_initializer(*this, graph_, name, v, dims, TensorProto::FLOAT);
}
std::string GraphWriter::int8s(const std::string& name, const std::vector<int8_t>& v, const std::vector<int64_t>& dims) {
  return add_initializer(*this, graph_, name, v, dims, TensorProto::INT8);
}
std::string GraphWriter::uint8s(const std::string& name, const std::vector<uint8_t>& v, const std::vector<int64_t>& dims) {
  return add_initializer(*this, graph_, name, v, dims, TensorProto::UINT8);
}
std::string GraphWriter::int32s(const std::string& name, const std::vector<int32_t>& v, const std::vector<int64_t>& dims) {
  return add_initializer(*this, graph_, name, v, dims, TensorProto::INT32);
}
std::string GraphWriter::int64s(const std::string& name, const std::vector<int64_t>& v, const std::vector<int64_t>& dims) {
  return add_initializer(*this, graph_, name, v, dims, TensorProto::INT64);
}

Value GraphWriter::quantize_dequantize(const std::string& x, const QParams& q, const std::string& prefix,
                                       std::optional<std::pair<int32_t, int32_t>> codes) {
  if (is_per_channel(q.scheme) || q.scale.empty() || q.zero_point.empty())
    throw std::invalid_argument(fmt::format("ONNX export: activations must be quantized per tensor ({})", prefix));
  if (q.quant_min < 0 || q.quant_max > 255 || q.zero_point[0] < 0 || q.zero_point[0] > 255)
    throw std::invalid_argument(fmt::format("ONNX export: activation range [{}, {}] with zero point {} does not fit u8 ({})",
                                            q.quant_min, q.quant_max, q.zero_point[0], prefix));
  const float s = q.scale[0];
  const int32_t z = q.zero_point[0];
  std::string in = x;
  const auto [cmin, cmax] = codes.value_or(std::pair<int32_t, int32_t>{q.quant_min, q.quant_max});
  if (exact_ranges_ && (cmin > 0 || cmax < 255)) {
    // Low bit widths (and fused clamps): QuantizeLinear saturates at 0..255,
    // so clip the float input to the real interval of the narrower codes.
    const float lo = s * static_cast<float>(cmin - z), hi = s * static_cast<float>(cmax - z);
    const std::string c = fresh(prefix + "Clip_output_0");
    node("Clip", {x, floats(prefix + "clip_min", {lo}, {}), floats(prefix + "clip_max", {hi}, {})}, {c}, prefix + "Clip");
    in = c;
  }
  const std::string sn = floats(prefix + "scale", {s}, {});
  const std::string zn = uint8s(prefix + "zero_point", {static_cast<uint8_t>(z)}, {});
  const std::string xq = fresh(prefix + "QuantizeLinear_output_0");
  node("QuantizeLinear", {in, sn, zn}, {xq}, prefix + "QuantizeLinear");
  const std::string xdq = fresh(prefix + "DequantizeLinear_output_0");
  node("DequantizeLinear", {xq, sn, zn}, {xdq}, prefix + "DequantizeLinear");
  return {xdq, q};
}

// ---- The table ----

std::map<std::string, ExportFunction>& onnx_exporters() {
  static std::map<std::string, ExportFunction> table = {
      {"Sequential", export_sequential},
      {"Linear", export_linear},
      {"LinearReLU", export_linear},
      {"LinearReLU6", export_linear},
      {"ReLU", [](auto& m, auto& p, auto& x, auto& g) { return export_activation(m, p, x, g, quant::FusedActivation::relu); }},
      {"ReLU6", [](auto& m, auto& p, auto& x, auto& g) { return export_activation(m, p, x, g, quant::FusedActivation::relu6); }},
      {"Identity", [](const nn::Module&, const std::string&, const Value& x, GraphWriter&) { return x; }},
      {"Flatten", export_flatten},
      {"QuantizedLinear", export_quantized_linear},
      {"QuantizedLinearReLU", export_quantized_linear},
      {"QuantizedLinearReLU6", export_quantized_linear},
      {"DynamicQuantizedLinear", export_dynamic_linear},
      {"Dropout", [](const nn::Module&, const std::string&, const Value& x, GraphWriter&) { return x; }},
      {"Conv2d", export_conv},
      {"BatchNorm2d", export_batch_norm},
      {"MaxPool2d", export_max_pool},
      {"AvgPool2d", export_avg_pool},
      {"AdaptiveAvgPool2d",
       [](const nn::Module& m, const std::string& p, const Value& x, GraphWriter& g) {
         const auto& a = dynamic_cast<const nn::AdaptiveAvgPool2d&>(m);
         return export_global_pool(p, x, g, a.output_size.h, a.output_size.w);
       }},
      {"QuantizedConv2d", export_quantized_conv},
      {"QuantizedConv2dReLU", export_quantized_conv},
      {"QuantizedConv2dReLU6", export_quantized_conv},
      {"QuantizedMaxPool2d", export_quantized_max_pool},
      {"QuantizedAvgPool2d", export_quantized_avg_pool},
      {"QuantizedAdaptiveAvgPool2d",
       [](const nn::Module& m, const std::string& p, const Value& x, GraphWriter& g) {
         const auto& a = dynamic_cast<const quant::QuantizedAdaptiveAvgPool2d&>(m);
         if (!x.qparams) throw std::invalid_argument(fmt::format("ONNX export: '{}' (u8 pooling) receives a float tensor", p));
         return export_global_pool(p, x, g, a.out_h, a.out_w);
       }},
      // MobileNetV2's containers (the residual add is inside its block).
      {"Conv2dNormActivation", export_sequential},
      {"InvertedResidual", export_inverted_residual},
      {"MobileNetV2", export_mobilenet_v2},
  };
  return table;
}

::onnx::ModelProto to_onnx(const nn::Module& model, const ExportOptions& options) {
  ::onnx::ModelProto proto;
  proto.set_ir_version(::onnx::IR_VERSION);
  proto.set_producer_name("tinyqat");
  proto.set_producer_version("0.1.0");
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  auto* graph = proto.mutable_graph();
  graph->set_name("tinyqat");
  GraphWriter g(*graph, options.exact_ranges);
  g.fresh(options.input_name);
  g.fresh(options.output_name);

  if (!options.input_shape.empty()) check_input_shape(model, options.input_shape);
  set_float_io(*graph->add_input(), options.input_name,
               options.input_shape.empty() ? first_input_shape(model) : options.input_shape);

  auto& table = onnx_exporters();
  auto it = table.find(model.type_name());
  if (it == table.end())
    throw std::invalid_argument(fmt::format("ONNX export: the model's root module of type {} has no exporter{}",
                                            model.type_name(),
                                            model.type_name().rfind("QAT", 0) == 0 || model.type_name().rfind("Observed", 0) == 0
                                                ? " (convert the QAT / observed model to int8 first)"
                                                : ""));
  const Value y = it->second(model, "", {options.input_name, std::nullopt}, g);
  g.node("Identity", {y.name}, {options.output_name}, "/output/Identity");
  set_float_io(*graph->add_output(), options.output_name, {-1});
  return proto;
}

void export_onnx(const nn::Module& model, const std::string& path, const ExportOptions& options) {
  save_onnx(to_onnx(model, options), path);
}

void save_onnx(const ::onnx::ModelProto& proto, const std::string& path) {
  try {
    ::onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    throw std::logic_error(fmt::format("ONNX export: the ONNX checker refuses the graph: {}", e.what()));
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) throw std::runtime_error("ONNX export: could not serialize the model");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error(fmt::format("ONNX export: cannot write '{}'", tmp));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error(fmt::format("ONNX export: write to '{}' failed", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error(fmt::format("ONNX export: cannot rename '{}' to '{}'", tmp, path));
}

}  // namespace tq::onnx_io

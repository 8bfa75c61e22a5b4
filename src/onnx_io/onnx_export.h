// ONNX export (docs/onnx.md): a tinyqat model as an ONNX graph that a
// standard runtime runs.
//   - float layers become standard operators (Gemm, Conv, BatchNormalization,
//     Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Add, Flatten);
//   - static int8 layers (from QAT or PTQ) become QDQ: QuantizeLinear /
//     DequantizeLinear pairs with the layer's own scales and zero points
//     around a float operator, per-channel weights with `axis`, the bias as
//     int32 on the accumulator grid s_x * s_w;
//   - dynamic int8 layers become a composition of standard operators that
//     computes the per-batch activation qparams exactly as tinyqat does,
//     then MatMulInteger.
// The exporter is a table keyed by Module::type_name(): one entry per layer
// kind. A model holding a module type without an entry is refused with an
// error naming the type and its path.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/tensor.h"

namespace onnx {
class ModelProto;
class GraphProto;
class NodeProto;
}

namespace tq::onnx_io {

// Opset 13: QuantizeLinear / DequantizeLinear with `axis` (per-channel),
// ReduceMin / ReduceMax with an `axes` attribute, Clip with min / max inputs.
inline constexpr int kOpset = 13;

struct ExportOptions {
  std::string input_name = "input";
  std::string output_name = "output";
  // The input's shape after the batch dimension N: {784} for an MLP,
  // {1, 28, 28} for a CNN. Empty = from the first layer that knows its input
  // size (a Linear's in_features; a Conv2d's channels, with symbolic H and W);
  // a dimension < 0 is written as a symbolic dimension.
  std::vector<int64_t> input_shape;
  // Activation ranges narrower than 0..255 (the x86 preset's 7 bits, low
  // bit widths) are enforced by a Clip before each QuantizeLinear: exact,
  // but ONNX Runtime then leaves those layers as float Gemm on dequantized
  // values. false leaves the Clips out: the runtime fuses each layer into one
  // integer QGemm, and outputs tinyqat clamps at quant_max may come out
  // larger (docs/onnx.md measures what that costs).
  bool exact_ranges = true;
};

// "784" or "1,28,28" (also "1x28x28") -> {784} / {1, 28, 28}; throws
// std::invalid_argument naming what is wrong.
std::vector<int64_t> parse_shape(const std::string& text);

// Throws std::invalid_argument when `shape` (after N) cannot be the input of
// `model`'s first layer: a Linear of F inputs takes a last dimension of F or
// dimensions whose product is F (flattened first); a Conv2d of C channels
// takes (C, H, W). A first layer of another kind accepts any shape.
void check_input_shape(const nn::Module& model, const std::vector<int64_t>& shape);

// Builds the ONNX model of `model` (in eval mode). Throws
// std::invalid_argument naming the module path and type that cannot be
// exported (a QAT model must be converted first).
::onnx::ModelProto to_onnx(const nn::Module& model, const ExportOptions& options = {});
// to_onnx, checked by ONNX's own checker, written to `path`.
void export_onnx(const nn::Module& model, const std::string& path, const ExportOptions& options = {});
// `proto` checked by ONNX's own checker and written to `path` (through a
// temporary file renamed into place, so a failure leaves `path` as it was).
void save_onnx(const ::onnx::ModelProto& proto, const std::string& path);

// ---- The exporter table ----

// What flows between layers: the name of a float tensor in the graph, and,
// when that float tensor is the dequantized form of a tinyqat u8 tensor, the
// qparams of that u8 tensor (so the next int8 layer takes it as it is).
struct Value {
  std::string name;
  std::optional<QParams> qparams;
};

// The entries' view of the graph being built.
class GraphWriter {
 public:
  explicit GraphWriter(::onnx::GraphProto& graph, bool exact_ranges = true) : graph_(graph), exact_ranges_(exact_ranges) {}
  // A name not used yet in the graph, made from `base` ("fc1/Gemm" -> "fc1/Gemm_1" if taken).
  std::string fresh(const std::string& base);
  // Appends a node; its name is made fresh from `name`.
  ::onnx::NodeProto& node(const std::string& op_type, const std::vector<std::string>& inputs,
                          const std::vector<std::string>& outputs, const std::string& name);
  // Constant tensors (initializers); the returned name is fresh from `name`.
  std::string floats(const std::string& name, const std::vector<float>& values, const std::vector<int64_t>& dims);
  std::string int8s(const std::string& name, const std::vector<int8_t>& values, const std::vector<int64_t>& dims);
  std::string uint8s(const std::string& name, const std::vector<uint8_t>& values, const std::vector<int64_t>& dims);
  std::string int32s(const std::string& name, const std::vector<int32_t>& values, const std::vector<int64_t>& dims);
  std::string int64s(const std::string& name, const std::vector<int64_t>& values, const std::vector<int64_t>& dims);

  // x (float) -> QuantizeLinear(q) -> DequantizeLinear: the float tensor the
  // runtime sees for tinyqat's u8 tensor. A range narrower than 0..255 (low
  // bit widths) is enforced by a Clip before QuantizeLinear (unless the
  // export asked for exact_ranges = false). `prefix` names the nodes.
  // `codes` narrows the integer range further (a fused ReLU / ReLU6 clamp,
  // docs/quantization.md eq. 14); default [quant_min, quant_max].
  Value quantize_dequantize(const std::string& x, const QParams& q, const std::string& prefix,
                            std::optional<std::pair<int32_t, int32_t>> codes = std::nullopt);

 private:
  ::onnx::GraphProto& graph_;
  bool exact_ranges_ = true;
  std::map<std::string, int> used_;
};

// One entry: emits the nodes of a module of its type. `path` is the module's
// dotted name in the model ("fc1"), used for node and initializer names.
using ExportFunction = std::function<Value(const nn::Module& module, const std::string& path, const Value& input,
                                           GraphWriter& graph)>;
// Keyed by Module::type_name(): Sequential, Linear, LinearReLU, LinearReLU6,
// ReLU, ReLU6, Identity, Dropout, Flatten, QuantizedLinear(ReLU, ReLU6),
// DynamicQuantizedLinear, Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d,
// AdaptiveAvgPool2d (to 1x1), QuantizedConv2d(ReLU, ReLU6), QuantizedMaxPool2d,
// QuantizedAvgPool2d, QuantizedAdaptiveAvgPool2d, and MobileNetV2's
// Conv2dNormActivation, InvertedResidual (with its Add or QuantizedAdd) and
// MobileNetV2. Users may add their own entries.
std::map<std::string, ExportFunction>& onnx_exporters();

}  // namespace tq::onnx_io

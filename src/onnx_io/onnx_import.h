// ONNX import of float models (docs/onnx.md §6): a chain of standard
// operators (Gemm, MatMul + Add, Relu, Clip(0, 6), Flatten, Conv,
// BatchNormalization, MaxPool, AveragePool (also after a Pad),
// GlobalAveragePool) becomes an nn::Sequential of
// tinyqat modules with PyTorch-like names — a layer whose weight initializer
// is "fc1.weight" becomes the child "fc1", the Relu node "/relu1/Relu" the
// child "relu1" — ready for QAT or PTQ like a model built in tinyqat.
// A residual sum whose branch is MobileNetV2's inverted residual block
// becomes a models::InvertedResidual. The importer is a table keyed by ONNX
// op type; an operator without an entry, or a graph that is neither a chain
// nor such residual sums, is refused with an error naming the node.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nn/sequential.h"

namespace onnx {
class ModelProto;
class NodeProto;
}

namespace tq::onnx_io {

std::shared_ptr<nn::Sequential> import_onnx(const std::string& path);
std::shared_ptr<nn::Sequential> import_onnx(const ::onnx::ModelProto& model, const std::string& what = "model");

// What an import entry sees: the node, the graph's constants by name, and
// the nodes after it (an entry may consume some, e.g. MatMul takes the Add
// of its bias). It returns how many following nodes it consumed.
struct ImportContext {
  const ::onnx::NodeProto& node;
  const std::map<std::string, Tensor>& constants;
  // The graph's int64 constants (Pad's pads) by name.
  const std::map<std::string, std::vector<int64_t>>& int_constants;
  std::span<const ::onnx::NodeProto* const> rest;  // the nodes after `node`, in order
  nn::Sequential& model;
  // A PyTorch-like child name for this node: the module prefix of its first
  // constant input ("fc1.weight" -> "fc1"), else of its node name
  // ("/relu1/Relu" -> "relu1"), else `fallback` + a counter.
  std::string child_name(const std::string& fallback) const;
};
using ImportFunction = std::function<int(ImportContext& context)>;
// Keyed by ONNX op type: Gemm, MatMul, Relu, Clip (as ReLU6), Flatten, Identity, Dropout,
// Conv, BatchNormalization, MaxPool, AveragePool, Pad (before an AveragePool), GlobalAveragePool.
std::map<std::string, ImportFunction>& onnx_importers();

}  // namespace tq::onnx_io

// tinyqat export: a model file (float, int8 from QAT / PTQ, dynamic) written
// as an ONNX file that ONNX Runtime runs (docs/onnx.md, docs/cli.md "export").
#include <map>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "onnx_io/onnx_export.h"

namespace tq::cli {

int run_export(int argc, char** argv) {
  cxxopts::Options o("tinyqat export", "Write a model file (float, int8 or dynamic) as ONNX (opset 13, QDQ for int8).");
  o.add_options()("model", "model file", cxxopts::value<std::string>())("out", "ONNX file to write",
                                                                       cxxopts::value<std::string>())(
      "input-shape", "the input's shape after the batch dimension, e.g. 784 or 1,28,28 (default: from the first layer)",
      cxxopts::value<std::string>())(
      "fast-ranges", "no Clip for activation ranges narrower than 0..255: ONNX Runtime fuses every layer into an integer "
                     "kernel, but values tinyqat clamps may come out larger");
  add_common(o);
  auto r = parse(o, argc, argv);
  const std::string model_path = require(r, "model"), out = require(r, "out");
  onnx_io::ExportOptions options;
  options.exact_ranges = r.count("fast-ranges") == 0;
  if (r.count("input-shape")) {
    try {
      options.input_shape = onnx_io::parse_shape(r["input-shape"].as<std::string>());
    } catch (const std::invalid_argument& e) {
      throw UsageError(fmt::format("--input-shape: {}", e.what()));
    }
  }
  auto model = io::load_model(model_path);
  model->eval();
  if (!options.input_shape.empty()) {
    try {
      onnx_io::check_input_shape(*model, options.input_shape);
    } catch (const std::invalid_argument& e) {
      throw UsageError(fmt::format("--input-shape: {}", e.what()));
    }
  }
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model, options);
  onnx_io::save_onnx(proto, out);
  std::map<std::string, int> ops;
  for (const auto& n : proto.graph().node()) ++ops[n.op_type()];
  std::string op_list;
  for (const auto& [op, count] : ops) op_list += fmt::format("{}{} {}", op_list.empty() ? "" : ", ", count, op);
  const json j = {{"model", model_path},  {"out", out}, {"opset", onnx_io::kOpset}, {"nodes", proto.graph().node_size()},
                  {"initializers", proto.graph().initializer_size()}, {"ops", ops}, {"onnx_bytes", file_bytes(out)},
                  {"exact_ranges", options.exact_ranges}};
  finish(r, j,
         fmt::format("{} -> {} (opset {}, checked by the ONNX checker, {} bytes)\n{} nodes: {}\n", model_path, out,
                     onnx_io::kOpset, file_bytes(out), proto.graph().node_size(), op_list));
  return 0;
}

}  // namespace tq::cli

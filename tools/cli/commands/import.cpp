// tinyqat import: a float ONNX model (e.g. from torch.onnx.export) read into a
// model file that qat, ptq, dynamic, eval and export take (docs/onnx.md §6,
// docs/cli.md "import").
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "onnx_io/onnx_import.h"

namespace tq::cli {

int run_import(int argc, char** argv) {
  cxxopts::Options o("tinyqat import", "Read a float ONNX model into a tinyqat model file, with PyTorch's module names.");
  o.add_options()("onnx", "ONNX file", cxxopts::value<std::string>())("out", "model file to write",
                                                                     cxxopts::value<std::string>());
  add_common(o);
  auto r = parse(o, argc, argv);
  const std::string in = require(r, "onnx"), out = require(r, "out");
  auto model = onnx_io::import_onnx(in);
  io::save_model(*model, out, {{"source", "onnx"}});
  json modules = json::array();
  for (const auto& slot : model->children()) modules.push_back({{"name", slot->name}, {"type", slot->module->type_name()}});
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  const json j = {{"onnx", in},          {"out", out},           {"modules", modules},
                  {"parameters", parameters}, {"model_bytes", file_bytes(out)}};
  finish(r, j, fmt::format("{} -> {} ({} parameters)\n{}\n", in, out, parameters, model->repr()));
  return 0;
}

}  // namespace tq::cli

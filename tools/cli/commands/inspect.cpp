// tinyqat inspect: a model file's module tree, element count and bytes per
// dtype (docs/cli.md "inspect").
#include <map>

#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "io/safetensors.h"

namespace tq::cli {

int run_inspect(int argc, char** argv) {
  cxxopts::Options o("tinyqat inspect", "Print a model file's module tree, parameter count and bytes per dtype.");
  o.add_options()("model", "model file", cxxopts::value<std::string>());
  add_common(o);
  auto r = parse(o, argc, argv);
  const std::string path = require(r, "model");
  const io::SafetensorsFile file = io::load_safetensors(path);
  auto model = io::build_model(file, path);
  std::map<std::string, int64_t> bytes;
  int64_t params = 0;
  for (auto& [name, t] : file.tensors) {
    bytes[dtype_name(t.dtype())] += t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
    params += t.numel();
  }
  json j = {{"model", model->repr()}, {"tensors", file.tensors.size()}, {"elements", params}, {"bytes_per_dtype", bytes},
            {"file_bytes", file_bytes(path)}};
  std::string s = model->repr() + "\n\n" + fmt::format("{} tensors, {} elements, file {} bytes\n", file.tensors.size(), params,
                                                       file_bytes(path));
  for (auto& [dt, n] : bytes) s += fmt::format("  {:>4}: {} bytes\n", dt, n);
  finish(r, j, s);
  return 0;
}

}  // namespace tq::cli

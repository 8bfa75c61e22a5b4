// tinyqat-onnx: the runtime check of an exported model (docs/onnx.md): the
// test set through tinyqat and through ONNX Runtime, and their agreement.
// Export and import are commands of the main program (`tinyqat export`,
// `tinyqat import`, tools/cli/commands/).
//   tinyqat-onnx agree --model M.safetensors --onnx M.onnx [--samples N] [--check]
#include <cstdio>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "io/dataset.h"
#include "io/model_file.h"
#include "onnx_io/runtime_check.h"

#ifndef TINYQAT_SOURCE_DIR
#define TINYQAT_SOURCE_DIR "."
#endif

using namespace tq;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string need(const cxxopts::ParseResult& r, const char* name) {
  if (!r.count(name)) throw UsageError(fmt::format("--{} is required", name));
  return r[name].as<std::string>();
}

int cmd_agree(int argc, char** argv) {
  cxxopts::Options o("tinyqat-onnx agree", "Run a model in tinyqat and its ONNX export in ONNX Runtime on the test set.");
  o.add_options()("model", "model file", cxxopts::value<std::string>())("onnx", "its ONNX export",
                                                                       cxxopts::value<std::string>())(
      "samples", "test samples (0 = all)", cxxopts::value<int64_t>()->default_value("0"))(
      "batch-size", "batch size (both sides)", cxxopts::value<int64_t>()->default_value("1000"))(
      "data", "dataset directory", cxxopts::value<std::string>()->default_value(io::kFashionMnistDir))(
      "check", "also run onnx.checker (python3-onnx) on the file");
  const auto r = o.parse(argc, argv);
  const std::string model_path = need(r, "model"), onnx_path = need(r, "onnx");
  auto model = io::load_model(model_path);
  io::Dataset test = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const int64_t n = r["samples"].as<int64_t>();
  if (n > 0 && n < test.size()) test = test.slice(0, n);
  onnx_io::RuntimeTools tools;
  tools.runner = std::string(TINYQAT_SOURCE_DIR) + "/tools/onnx/run.js";
  tools.work_dir = "/tmp";
  if (r.count("check")) onnx_io::check_with_python_onnx(tools, onnx_path);
  const auto a = onnx_io::compare_with_onnxruntime(*model, tools, onnx_path, test, r["batch-size"].as<int64_t>());
  std::printf("%s: %lld samples; predictions agree %.2f%%; accuracy tinyqat %.2f%%, ONNX Runtime %.2f%%; max output "
              "difference %.3g (%.3g relative",
              onnx_path.c_str(), static_cast<long long>(a.samples), a.prediction_agreement, a.tinyqat_accuracy,
              a.runtime_accuracy, a.max_abs_diff, a.max_rel_diff);
  if (a.output_step > 0) std::printf(", %.2f output steps of %.4g", a.max_steps, a.output_step);
  std::printf("; %.3f%% of output values differ)%s\n", a.differing_outputs, r.count("check") ? "; onnx.checker ok" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: tinyqat-onnx agree --model M --onnx F [--samples N] [--batch-size B] [--check]\n"
      "(export and import: tinyqat export --model M --out F, tinyqat import --onnx F --out M)\n";
  if (argc < 2) {
    std::fputs(usage.c_str(), stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "agree") return cmd_agree(argc - 1, argv + 1);
    if (cmd == "-h" || cmd == "--help") {
      std::fputs(usage.c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "tinyqat-onnx: unknown command '%s'\n%s", cmd.c_str(), usage.c_str());
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tinyqat-onnx %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tinyqat-onnx %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}

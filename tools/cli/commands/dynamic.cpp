// tinyqat dynamic: dynamic quantization, int8 weights and activations
// quantized per batch (docs/cli.md "dynamic").
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "quant/evaluate.h"
#include "quant/passes.h"

namespace tq::cli {

int run_dynamic(int argc, char** argv) {
  cxxopts::Options o("tinyqat dynamic", "Dynamic quantization: int8 weights, activations quantized per batch.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())(
      "per-tensor", "one weight scale per layer (as PyTorch) instead of one per output channel")("out", "model file to write", cxxopts::value<std::string>());
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string from = require(r, "from"), out = require(r, "out");
  check_output_path(out);
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_float(from, "dynamic");
  memory_grows_with(fmt::format("the model of --from {}", from), 1);
  check_model_fits(*model, test_set, from);
  const quant::Evaluation fl = evaluate(*model, test_set);
  quant::quantize_dynamic(*model, {}, DType::i8, !r.count("per-tensor"));
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const quant::Evaluation dyn = evaluate(*model, test_set);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", dyn.accuracy)}});
  const double agree = quant::agreement(fl, dyn);
  json j = {{"float_accuracy", fl.accuracy}, {"accuracy", dyn.accuracy}, {"agreement", agree},
            {"model_bytes", file_bytes(out)}, {"seconds", seconds_since(t0)}, {"model", out}};
  finish(r, j, fmt::format("float {:.2f}% -> dynamic int8 {:.2f}%; agreement with float {:.2f}%; {} bytes -> {}\n", fl.accuracy,
                           dyn.accuracy, agree, file_bytes(out), out));
  return 0;
}

}  // namespace tq::cli

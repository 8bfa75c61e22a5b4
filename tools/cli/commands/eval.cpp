// tinyqat eval: test-set accuracy and latency of any model file (docs/cli.md "eval").
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "quant/evaluate.h"
#include "quant/passes.h"

namespace tq::cli {

int run_eval(int argc, char** argv) {
  cxxopts::Options o("tinyqat eval", "Test-set accuracy and latency of a model file (float, QAT or int8).");
  o.add_options()("model", "model file", cxxopts::value<std::string>())("batch-size", "evaluation batch size", cxxopts::value<int64_t>()->default_value("1000"));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string path = require(r, "model");
  if (r["batch-size"].as<int64_t>() < 1) throw UsageError("--batch-size must be at least 1");
  auto model = io::load_model(path);
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const quant::Evaluation ev = evaluate(*model, test_set, r["batch-size"].as<int64_t>());
  const double l1 = latency_us(*model, test_set, 1), l256 = latency_us(*model, test_set, 256);
  json j = {{"accuracy", ev.accuracy}, {"samples", ev.samples}, {"latency_us", {{"batch_1", l1}, {"batch_256", l256}}},
            {"model_bytes", file_bytes(path)}};
  finish(r, j,
         fmt::format("{}: test accuracy {:.2f}% on {} samples; latency {:.1f} us at batch 1, {:.1f} us at batch 256\n",
                     path, ev.accuracy, ev.samples, l1, l256));
  return 0;
}

}  // namespace tq::cli

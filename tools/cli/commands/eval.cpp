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
  o.add_options()("model", "model file", cxxopts::value<std::string>())("batch-size", "evaluation batch size", cxxopts::value<int64_t>()->default_value("1000"))(
      "limit-test", "evaluate on the first N test images only (0 = all)", cxxopts::value<int64_t>()->default_value("0"))(
      "latency-repeats", "forward passes per latency sample (0 = chosen by batch size)", cxxopts::value<int>()->default_value("0"));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string path = require(r, "model");
  if (r["batch-size"].as<int64_t>() < 1) throw UsageError("--batch-size must be at least 1");
  const int64_t limit = r["limit-test"].as<int64_t>();
  const int repeats = r["latency-repeats"].as<int>();
  if (limit < 0) throw UsageError("--limit-test must not be negative");
  if (repeats < 0) throw UsageError("--latency-repeats must not be negative");
  if (repeats > kMaxLatencyRepeats)
    throw UsageError(fmt::format("--latency-repeats {} is more than the limit of {} (kMaxLatencyRepeats)", repeats,
                                 kMaxLatencyRepeats));
  auto model = io::load_model(path);
  quant::set_int8_threads(*model, r["threads"].as<int>());
  io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  if (limit > 0 && limit < test_set.size()) test_set = test_set.slice(0, limit);
  memory_grows_with(fmt::format("--batch-size {} (the model of --model {})", r["batch-size"].as<int64_t>(), path));
  check_model_fits(*model, test_set, path);
  const quant::Evaluation ev = evaluate(*model, test_set, r["batch-size"].as<int64_t>());
  const double l1 = latency_us(*model, test_set, 1, repeats), l256 = latency_us(*model, test_set, 256, repeats);
  json j = {{"accuracy", ev.accuracy}, {"samples", ev.samples}, {"latency_us", {{"batch_1", l1}, {"batch_256", l256}}},
            {"model_bytes", file_bytes(path)}};
  finish(r, j,
         fmt::format("{}: test accuracy {:.2f}% on {} samples; latency {:.1f} us at batch 1, {:.1f} us at batch 256\n",
                     path, ev.accuracy, ev.samples, l1, l256));
  return 0;
}

}  // namespace tq::cli

// tinyqat compare: per-layer SQNR of a quantized model against its float
// model, weights and layer outputs (docs/cli.md "compare", docs/ptq.md §5).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/data_loader.h"
#include "io/model_file.h"
#include "quant/compare.h"
#include "quant/fused.h"
#include "quant/layer.h"

namespace tq::cli {

int run_compare(int argc, char** argv) {
  cxxopts::Options o("tinyqat compare", "Per-layer SQNR of a quantized model against its float model, on test data.");
  o.add_options()("float", "float model file", cxxopts::value<std::string>())("quantized", "quantized model file", cxxopts::value<std::string>())(
      "samples", "test samples to run", cxxopts::value<int64_t>()->default_value("1000"));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  if (r["samples"].as<int64_t>() < 1) throw UsageError("--samples must be at least 1");
  const std::string float_path = require(r, "float"), quantized_path = require(r, "quantized");
  // --float is a float model, --quantized one made from it (swapped, or two
  // of a kind, gave empty tables and exit 0).
  auto fl = load_float(float_path, "compare --float");
  auto qm = io::load_model(quantized_path);
  bool quantized = false;
  for (auto& [path, m] : qm->named_modules()) quantized |= quant::as_quant_layer(m) != nullptr;
  if (!quantized)
    throw std::runtime_error(fmt::format("{}: holds no quantized layer; compare --quantized takes the int8 model made "
                                         "from --float {}",
                                         quantized_path, float_path));
  // A fused layer's output is taken after its ReLU: fuse the float model the
  // same way, so that each layer is compared with the same quantity.
  // An int8 convolution has its BatchNorm folded in: so does the float
  // model's, fused in eval mode.
  bool fused = false;
  for (auto& [path, m] : qm->named_modules())
    if (const std::string t = m->type_name();
        t.starts_with("QuantizedConv2d") || (t.starts_with("Quantized") && (t.ends_with("ReLU") || t.ends_with("ReLU6"))))
      fused = true;
  if (fused) {
    fl->eval();
    quant::fuse_known_modules(*fl);
  }
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const int64_t n = std::min<int64_t>(r["samples"].as<int64_t>(), test_set.size());
  memory_grows_with(fmt::format("--samples {} (run as one batch)", n));
  check_model_fits(*fl, test_set, float_path);
  check_model_fits(*qm, test_set, quantized_path);
  io::DataLoader loader(test_set.slice(0, n), {.batch_size = n, .shuffle = false, .as_images = takes_images(*fl)});
  io::Batch b;
  loader.next(b);
  std::vector<quant::LayerComparison> weights, outputs;
  try {
    weights = quant::compare_weights(*fl, *qm);
    outputs = quant::compare_model_outputs(*fl, *qm, b.images);
  } catch (const std::bad_alloc&) {
    throw;  // out of memory, not a mismatch: main.cpp names --samples
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("--float {} and --quantized {} do not match: {}", float_path, quantized_path, e.what()));
  }
  if (weights.empty())
    throw std::runtime_error(fmt::format("--float {} and --quantized {}: no layer of the one matches a layer of the other",
                                         float_path, quantized_path));
  auto rows = [](const std::vector<quant::LayerComparison>& v) {
    json a = json::array();
    for (auto& c : v)
      a.push_back({{"layer", c.name}, {"float_type", c.float_type}, {"quant_type", c.quant_type},
                   {"sqnr_db", std::isfinite(c.sqnr_db) ? json(c.sqnr_db) : json(nullptr)}, {"max_abs_error", c.max_abs_error}});
    return a;
  };
  json j = {{"weights", rows(weights)}, {"outputs", rows(outputs)}, {"samples", n}};
  finish(r, j,
         quant::format_comparison(weights, "weights") + "\n" +
             quant::format_comparison(outputs, fmt::format("layer outputs on {} test samples", n)));
  return 0;
}

}  // namespace tq::cli

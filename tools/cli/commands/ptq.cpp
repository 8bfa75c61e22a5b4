// tinyqat ptq: post-training static quantization (docs/cli.md "ptq",
// docs/ptq.md): quant::quantize_static with calibration batches from the
// training set.
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "quant/evaluate.h"
#include "quant/passes.h"
#include "quant/recipe.h"

namespace tq::cli {

int run_ptq(int argc, char** argv) {
  cxxopts::Options o("tinyqat ptq", "Post-training static quantization: calibrate observers, convert to int8.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())(
      "calibration-batches", "training batches run through the observers", cxxopts::value<int64_t>()->default_value("32"))(
      "batch-size", "calibration batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "observer", "minmax | moving_average | histogram", cxxopts::value<std::string>()->default_value("histogram"))(
      "qconfig", "x86 | fbgemm | qnnpack (activation range and weight scheme)", cxxopts::value<std::string>()->default_value("x86"))(
      "seed", "calibration sample seed", cxxopts::value<uint64_t>()->default_value("0"))("no-fuse", "keep Linear and ReLU (Conv2d, BatchNorm2d, ReLU) apart")(
      "arch", "check that --from holds this architecture: mlp, cnn or mobilenet_v2", cxxopts::value<std::string>())(
      "limit-test", "evaluate on the first N test images only (0 = all)", cxxopts::value<int64_t>()->default_value("0"))(
      "out", "int8 model file to write", cxxopts::value<std::string>());
  add_common(o);
  add_bits(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  if (r.count("arch")) check_arch_name(r["arch"].as<std::string>());
  const std::string from = require(r, "from"), out = require(r, "out");
  const int64_t batches = r["calibration-batches"].as<int64_t>();
  if (batches < 1) throw UsageError("--calibration-batches must be at least 1");
  if (r["batch-size"].as<int64_t>() < 1) throw UsageError("--batch-size must be at least 1");
  const std::string backend = r["qconfig"].as<std::string>();
  if (backend != "x86" && backend != "fbgemm" && backend != "qnnpack")
    throw UsageError(fmt::format("--qconfig '{}': use x86, fbgemm or qnnpack", backend));
  const Bits bits = parse_bits(r, backend);
  const std::string observer = r["observer"].as<std::string>();
  auto make_qconfig = [&](int w, int a) { return quant::make_ptq_qconfig(observer, w, a, backend != "qnnpack"); };
  auto qconfig = make_qconfig(bits.weight, bits.activation);
  check_output_path(out);
  if (r["limit-test"].as<int64_t>() < 0) throw UsageError("--limit-test must not be negative");
  FashionMnist data = load_data(r);
  if (const int64_t n = r["limit-test"].as<int64_t>(); n > 0 && n < data.test.size()) data.test = data.test.slice(0, n);
  // A batch larger than the training set, or more batches than it holds,
  // were cut short without a word (and a batch of 1048576 images through the
  // cnn asked for 5.6 GiB at once).
  const int64_t batch_size = r["batch-size"].as<int64_t>(), n_train = data.train.size();
  if (batch_size > n_train)
    throw UsageError(fmt::format("--batch-size {} is more than the {} training samples; use at most {}", batch_size,
                                 n_train, n_train));
  if (const int64_t most = (n_train + batch_size - 1) / batch_size; batches > most)
    throw UsageError(fmt::format("--calibration-batches {} is more than the {} batches of {} that the {} training "
                                 "samples make; use at most {}",
                                 batches, most, batch_size, n_train, most));
  memory_grows_with(fmt::format("--batch-size {} (the model of --from {})", batch_size, from));

  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_float(from, "ptq");
  check_model_fits(*model, data.test, from);
  check_model_arch(r, *model, from);
  const quant::Evaluation fl = evaluate(*model, data.test);
  quant::quantize_static(
      *model,
      [&](nn::Module& m) {
        calibrate(m, data.train, batches, {.batch_size = batch_size, .seed = r["seed"].as<uint64_t>()},
                  progress_wanted(r.count("progress") > 0));
      },
      {.fuse = !r.count("no-fuse"),
       .qconfig = qconfig,
       .configure = [&](nn::Module& m) { apply_layer_bits(m, bits.layers, make_qconfig); }});
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const quant::Evaluation int8 = evaluate(*model, data.test);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", int8.accuracy)}});
  const double agree = quant::agreement(fl, int8);
  json j = {{"float_accuracy", fl.accuracy}, {"accuracy", int8.accuracy}, {"agreement", agree},
            {"model_bytes", file_bytes(out)}, {"seconds", seconds_since(t0)}, {"model", out},
            {"weight_bits", bits.weight}, {"activation_bits", bits.activation}};
  finish(r, j,
         fmt::format("float {:.2f}% -> PTQ int8 {:.2f}% ({} observer, {} calibration batches); agreement with float "
                     "{:.2f}%; {} bytes -> {}\n",
                     fl.accuracy, int8.accuracy, r["observer"].as<std::string>(), batches, agree, file_bytes(out), out));
  return 0;
}

}  // namespace tq::cli

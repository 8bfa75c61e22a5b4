// tinyqat pipeline, the README's main job: train the float network (the MLP
// by default, or --arch cnn / mobilenet_v2), make QAT, PTQ and dynamic int8
// models from it, print one comparison table, and with
// --report draw the HTML report (docs/cli.md "pipeline", docs/report.md).
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/data_loader.h"
#include "io/model_file.h"
#include "quant/evaluate.h"
#include "quant/passes.h"
#include "quant/recipe.h"
#include "report.h"
#include "tensor/random.h"

namespace tq::cli {

namespace {

// The comparison table as text, and as JSON rows into `rows`.
std::string format_table(const std::vector<SummaryRow>& table, const std::string& network, int64_t test_samples,
                         double seconds, json& rows) {
  std::string s = fmt::format("\nFashion-MNIST, {}, {} test images ({:.0f} s in all)\n\n", network, test_samples, seconds);
  s += fmt::format("| {:<12} | {:>9} | {:>22} | {:>11} | {:>15} | {:>16} |\n", "method", "accuracy", "agreement",
                   "model bytes", "latency batch 1", "latency batch 64");
  s += "|--------------|-----------|------------------------|-------------|-----------------|------------------|\n";
  for (auto& row : table) {
    s += fmt::format("| {:<12} | {:>8.2f}% | {:>7.2f}% vs {:<11} | {:>11} | {:>12.1f} us | {:>13.1f} us |\n", row.method,
                     row.accuracy, row.agreement, row.agreement_with, row.model_bytes, row.latency_us_batch_1,
                     row.latency_us_batch_64);
    rows.push_back({{"method", row.method}, {"accuracy", row.accuracy}, {"agreement", row.agreement},
                    {"agreement_with", row.agreement_with}, {"model_bytes", row.model_bytes},
                    {"latency_us_batch_1", row.latency_us_batch_1}, {"latency_us_batch_64", row.latency_us_batch_64}});
  }
  s += "(latency: one forward pass on float input, one thread, median of 7 repeats)\n";
  return s;
}

}  // namespace

int run_pipeline(int argc, char** argv) {
  cxxopts::Options o("tinyqat pipeline",
                     "Train a float network, then QAT, PTQ and dynamic int8 models from it, and print one comparison table.");
  o.add_options()("workdir", "where the model files go", cxxopts::value<std::string>()->default_value("models"))(
      "arch", "architecture: mlp, cnn or mobilenet_v2", cxxopts::value<std::string>()->default_value("mlp"))(
      "width", "width multiplier of mobilenet_v2", cxxopts::value<double>()->default_value("1.0"))(
      "limit-train", "train on the first N training images only (0 = all)", cxxopts::value<int64_t>()->default_value("0"))(
      "limit-test", "evaluate on the first N test images only (0 = all)", cxxopts::value<int64_t>()->default_value("0"))(
      "epochs", "float training epochs", cxxopts::value<int>()->default_value("5"))(
      "qat-epochs", "QAT fine-tuning epochs", cxxopts::value<int>()->default_value("1"))(
      "qat-lr", "QAT learning rate", cxxopts::value<double>()->default_value("0.01"))(
      "seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "latency-repeats", "forward passes per latency sample (0 = chosen by batch size; a MobileNetV2 wants few)",
      cxxopts::value<int>()->default_value("0"))(
      "report", "also write DIR/report.html: pictures of training, weights, activation ranges, per-layer SQNR",
      cxxopts::value<std::string>());
  add_common(o);
  add_qat_schedule(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  if (r["epochs"].as<int>() < 1) throw UsageError("--epochs must be at least 1 (the float model is trained first)");
  if (r["qat-epochs"].as<int>() < 1) throw UsageError("--qat-epochs must be at least 1");
  if (!(r["qat-lr"].as<double>() > 0) || !std::isfinite(r["qat-lr"].as<double>()))
    throw UsageError("--qat-lr must be a positive number");
  const std::string arch = r["arch"].as<std::string>();
  check_arch_name(arch);
  if (arch != "mobilenet_v2" && r.count("width")) throw UsageError(fmt::format("--width is for --arch mobilenet_v2, not {}", arch));
  if (!(r["width"].as<double>() > 0) || r["width"].as<double>() > 4)
    throw UsageError(fmt::format("--width must be in (0, 4], not {}", r["width"].as<double>()));
  if (r["latency-repeats"].as<int>() < 0) throw UsageError("--latency-repeats must not be negative");
  if (r["latency-repeats"].as<int>() > kMaxLatencyRepeats)
    throw UsageError(fmt::format("--latency-repeats {} is more than the limit of {} (kMaxLatencyRepeats)",
                                 r["latency-repeats"].as<int>(), kMaxLatencyRepeats));
  if (r["limit-train"].as<int64_t>() < 0 || r["limit-test"].as<int64_t>() < 0)
    throw UsageError("--limit-train and --limit-test must not be negative");
  json schedule;
  read_qat_schedule(r, schedule);
  const std::string report_dir = r.count("report") ? r["report"].as<std::string>() : "";
  std::vector<std::string> files = {"float.safetensors", "qat_int8.safetensors", "ptq_int8.safetensors",
                                    "dynamic_int8.safetensors"};
  if (!report_dir.empty()) files.insert(files.end(), {kQatPreparedFile, kPtqCalibratedFile, kReportRunFile});
  const std::string wd = prepare_workdir(r, files);
  if (std::error_code ec; !report_dir.empty() && std::filesystem::is_directory(report_dir, ec))
    check_output_path((std::filesystem::path(report_dir) / kReportFile).string(), "--report's file");
  FashionMnist data = load_data(r);
  if (const int64_t n = r["limit-train"].as<int64_t>(); n > 0 && n < data.train.size()) data.train = data.train.slice(0, n);
  if (const int64_t n = r["limit-test"].as<int64_t>(); n > 0 && n < data.test.size()) data.test = data.test.slice(0, n);
  const io::Dataset& test_set = data.test;
  memory_grows_with(arch == "mobilenet_v2" ? fmt::format("--width {} (--arch mobilenet_v2)", r["width"].as<double>())
                                           : fmt::format("--arch {}", arch));
  const bool progress = progress_wanted(r.count("progress") > 0);
  const uint64_t seed = r["seed"].as<uint64_t>();
  const int threads = r["threads"].as<int>();
  const auto t0 = std::chrono::steady_clock::now();

  ReportRun report_run;  // training curves and the table (saved for --report)
  std::vector<SummaryRow>& table = report_run.table;
  // The row of a finished model: its file's size and one-thread latencies.
  auto add_row = [&](const std::string& method, nn::Module& model, const std::string& path, double accuracy,
                     double agreement, const std::string& agreement_with) {
    const int repeats = r["latency-repeats"].as<int>();
    table.push_back({method, accuracy, agreement, agreement_with, file_bytes(path),
                     latency_us_one_thread(model, test_set, 1, repeats), latency_us_one_thread(model, test_set, 64, repeats)});
  };

  // 1. Float model.
  manual_seed(seed);
  auto float_model = make_model(arch, r["width"].as<double>(), "256,128",
                                data.train.images.size(1) * data.train.images.size(2), data.train.num_classes);
  const bool images = takes_images(*float_model);
  const std::string network =
      arch == "mlp" ? std::string("MLP 784-256-128-10")
                    : arch == "cnn" ? std::string("the cnn (2 conv + BN + ReLU, 2 Linear)")
                                    : fmt::format("MobileNetV2 for 28x28 images, width {}", r["width"].as<double>());
  {
    io::DataLoader loader(data.train, {.batch_size = 64, .seed = seed, .as_images = images});
    report_run.float_history =
        train(*float_model, loader, test_set,
              {.epochs = r["epochs"].as<int>(), .lr = 0.01, .momentum = 0.9, .progress = progress, .label = "float"});
  }
  const std::string float_path = wd + "/float.safetensors";
  io::save_model(*float_model, float_path);
  const quant::Evaluation fl = evaluate(*float_model, test_set);
  add_row("float", *float_model, float_path, fl.accuracy, 100.0, "itself");

  // 2. QAT from the float model.
  auto qat = io::load_model(float_path);
  quant::Evaluation fq;  // the fake-quant model, before convert
  quant::quantize_qat(
      *qat,
      [&](nn::Module& m) {
        io::DataLoader loader(data.train, {.batch_size = 64, .seed = seed + 1, .as_images = images});
        report_run.qat_history = train(m, loader, test_set,
                                       {.epochs = r["qat-epochs"].as<int>(), .lr = r["qat-lr"].as<double>(), .momentum = 0.9,
                                        .progress = progress, .label = "qat", .before_step = qat_schedule_hook(schedule)});
        return true;
      },
      {.qconfig = quant::get_default_qat_qconfig("x86"), .before_convert = [&](nn::Module& m) {
         fq = evaluate(m, test_set);
         // convert works in place: the report needs the fake-quant model as it was.
         if (!report_dir.empty()) io::save_model(m, wd + "/" + kQatPreparedFile);
       }});
  quant::set_int8_threads(*qat, threads);
  const quant::Evaluation qat8 = evaluate(*qat, test_set);
  const double qat_steps = quant::max_step_difference(fq, qat8, output_step(*qat));
  io::save_model(*qat, wd + "/qat_int8.safetensors");
  add_row("QAT int8", *qat, wd + "/qat_int8.safetensors", qat8.accuracy, quant::agreement(fq, qat8), "fake quant");

  // 3. PTQ (histogram observer, 32 calibration batches).
  auto ptq = io::load_model(float_path);
  quant::quantize_static(
      *ptq, [&](nn::Module& m) { calibrate(m, data.train, 32, {.batch_size = 64, .seed = seed + 2}); },
      {.qconfig = quant::get_default_qconfig("x86"), .before_convert = [&](nn::Module& m) {
         if (!report_dir.empty()) io::save_model(m, wd + "/" + kPtqCalibratedFile);  // the observers, before convert
       }});
  quant::set_int8_threads(*ptq, threads);
  const quant::Evaluation ptq8 = evaluate(*ptq, test_set);
  io::save_model(*ptq, wd + "/ptq_int8.safetensors");
  add_row("PTQ int8", *ptq, wd + "/ptq_int8.safetensors", ptq8.accuracy, quant::agreement(fl, ptq8), "float");

  // 4. Dynamic.
  auto dyn = io::load_model(float_path);
  quant::quantize_dynamic(*dyn);
  quant::set_int8_threads(*dyn, threads);
  const quant::Evaluation dyn8 = evaluate(*dyn, test_set);
  io::save_model(*dyn, wd + "/dynamic_int8.safetensors");
  add_row("dynamic int8", *dyn, wd + "/dynamic_int8.safetensors", dyn8.accuracy, quant::agreement(fl, dyn8), "float");

  json rows = json::array();
  std::string s = format_table(table, network, test_set.size(), seconds_since(t0), rows);
  s += fmt::format("\nQAT: fake-quant accuracy {:.2f}%, int8 vs fake quant max difference {:.2f} output steps\n", fq.accuracy, qat_steps);
  json j = {{"rows", rows}, {"fake_quant_accuracy", fq.accuracy}, {"max_step_diff", qat_steps}, {"seconds", seconds_since(t0)}};
  if (!report_dir.empty()) {
    report_run.title = "tinyqat pipeline report";
    report_run.subtitle = fmt::format("Fashion-MNIST, {}, {} float + {} QAT epochs, {} test images",
                                      arch == "mlp" ? std::string("MLP 784-256-128-10 (fc1, fc2, fc3)") : network,
                                      report_run.float_history.size(), report_run.qat_history.size(), test_set.size());
    report_run.fake_quant_accuracy = fq.accuracy;
    save_report_run(report_run, wd + "/" + kReportRunFile);
    const ReportModels models{float_model, io::load_model(wd + "/" + kQatPreparedFile), qat,
                              io::load_model(wd + "/" + kPtqCalibratedFile), ptq, dyn};
    const std::string page = write_report(report_dir, report_run, models, report_inputs(test_set, 1000));
    j["report"] = page;
    s += fmt::format("report: {}\n", page);
  }
  finish(r, j, s);
  return 0;
}

}  // namespace tq::cli

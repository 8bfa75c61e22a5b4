// tinyqat lowbit: accuracy and size as bits fall (docs/cli.md "lowbit",
// docs/low-bit.md): for each WxAy, PTQ, QAT with moving-average fake quant
// and QAT with learned step sizes (LSQ), all from one float model.
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/data_loader.h"
#include "io/model_file.h"
#include "quant/evaluate.h"
#include "quant/passes.h"
#include "quant/recipe.h"

namespace tq::cli {

namespace {

struct Result {
  double accuracy = 0, fake_quant_accuracy = 0, agreement = 0;
  int64_t bytes = 0;
  int best_epoch = 0;  // with --val: the QAT epoch kept
};

// "sgd, lr 0.01, batch 64" and whatever else the recipe sets: the table's heading.
std::string recipe_summary(const json& cmd) {
  std::string s = fmt::format("{}, lr {}, batch {}", cmd["optimizer"].get<std::string>(), cmd["lr"].get<double>(),
                              cmd["batch_size"].get<int64_t>());
  if (cmd["weight_decay"].get<double>() > 0) s += fmt::format(", weight decay {}", cmd["weight_decay"].get<double>());
  if (cmd["lr_schedule"] != "constant") s += ", " + cmd["lr_schedule"].get<std::string>() + " schedule";
  if (cmd["warmup"].get<double>() > 0) s += fmt::format(", warm-up {} epoch(s)", cmd["warmup"].get<double>());
  if (cmd["val"].get<double>() > 0) s += fmt::format(", best of --val {}", cmd["val"].get<double>());
  if (cmd["augment"].get<bool>()) s += ", augmented";
  if (cmd["clip_grad"].get<double>() > 0) s += fmt::format(", gradients clipped to {}", cmd["clip_grad"].get<double>());
  return s;
}

}  // namespace

int run_lowbit(int argc, char** argv) {
  cxxopts::Options o("tinyqat lowbit",
                     "For W8A8, W4A8, W4A4, W3A3, W2A8: PTQ, QAT with moving-average fake quant, and QAT with "
                     "learned step sizes (LSQ), from one float model; accuracy, agreement and file sizes.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())(
      "epochs", "QAT epochs for each run", cxxopts::value<int>()->default_value("2"))(
      "lr", "QAT learning rate", cxxopts::value<double>()->default_value("0.01"))(
      "configs", "comma-separated WxAy list", cxxopts::value<std::string>()->default_value("w8a8,w4a8,w4a4,w3a3,w2a8"))(
      "workdir", "where the model files go", cxxopts::value<std::string>()->default_value("models/lowbit"))(
      "seed", "shuffling seed (and the validation split's)", cxxopts::value<uint64_t>()->default_value("0"))(
      "layer-bits", "layers kept at other widths in every run, e.g. fc1=8,fc3=8 (the LSQ paper keeps first and last at 8)",
      cxxopts::value<std::string>()->default_value(""));
  add_limits(o);
  add_common(o);
  add_recipe(o);
  add_qat_schedule(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string from = require(r, "from");
  const std::string layer_bits = r["layer-bits"].as<std::string>();
  const int epochs = r["epochs"].as<int>();
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  // Was refused by the optimizer after the data was read: exit 1, "SGD: invalid learning rate".
  if (const double lr = r["lr"].as<double>(); !(lr >= 0 && std::isfinite(lr)))
    throw UsageError(fmt::format("--lr {} must be a finite number >= 0", lr));
  // Every QAT run of the table trains with this recipe (docs/cli.md "Training recipes").
  json cmd = {{"command", "lowbit"}, {"epochs", epochs}, {"batch_size", r["batch-size"].as<int64_t>()},
              {"lr", r["lr"].as<double>()}, {"momentum", r["momentum"].as<double>()}, {"seed", r["seed"].as<uint64_t>()}};
  limits_to_command(r, cmd, false);
  recipe_to_command(r, cmd);
  read_qat_schedule(r, cmd);
  check_command(cmd);
  const std::vector<std::pair<int, int>> configs = parse_configs(r["configs"].as<std::string>());
  std::vector<std::string> files;
  for (auto [w, a] : configs)
    for (const char* method : {"ptq", "qat", "lsq"}) files.push_back(fmt::format("w{}a{}_{}.safetensors", w, a, method));
  const std::string wd = prepare_workdir(r, files);
  FashionMnist data = load_data(r);
  apply_limits(cmd, data);
  check_batch_fits(cmd, data.train.size());  // a bad --val or --batch-size stops the command before its first run
  const io::Dataset& test_set = data.test;
  const int threads = r["threads"].as<int>();
  const uint64_t seed = r["seed"].as<uint64_t>();
  auto float_model = load_float(from, "lowbit");
  memory_grows_with(fmt::format("--batch-size {} (the model of --from {})", cmd["batch_size"].get<int64_t>(), from));
  check_model_fits(*float_model, test_set, from);
  check_training_memory(*float_model, data.train, cmd["batch_size"].get<int64_t>());
  const double float_acc = evaluate(*float_model, test_set).accuracy;
  const int64_t float_bytes = file_bytes(from);

  auto run_qat = [&](int w, int a, bool lsq, const std::string& path) {
    auto m = io::load_model(from);
    auto make = [lsq](int wb, int ab) { return lsq ? quant::make_lsq_qat_qconfig(wb, ab) : quant::make_qat_qconfig(wb, ab); };
    quant::Evaluation fq;
    TrainState st;
    quant::quantize_qat(
        *m,
        [&](nn::Module& prepared) {
          TrainOptions topt;
          topt.label = fmt::format("W{}A{} {}", w, a, lsq ? "LSQ" : "QAT");
          topt.before_step = qat_schedule_hook(cmd);
          st = run_training(r, prepared, data, cmd, std::nullopt, topt);
          return true;
        },
        {.qconfig = make(w, a),
         .configure = [&](nn::Module& model) { apply_layer_bits(model, layer_bits, make); },
         .before_convert = [&](nn::Module& prepared) { fq = evaluate(prepared, test_set); }});
    quant::set_int8_threads(*m, threads);
    const quant::Evaluation q = evaluate(*m, test_set);
    io::save_model(*m, path);
    return Result{q.accuracy, fq.accuracy, quant::agreement(fq, q), file_bytes(path), st.best_epoch};
  };
  auto run_ptq = [&](int w, int a, const std::string& path) {
    auto m = io::load_model(from);
    auto make = [](int wb, int ab) { return quant::make_ptq_qconfig("histogram", wb, ab); };
    quant::quantize_static(
        *m, [&](nn::Module& prepared) { calibrate(prepared, data.train, 32, {.batch_size = 64, .seed = seed}); },
        {.qconfig = make(w, a), .configure = [&](nn::Module& model) { apply_layer_bits(model, layer_bits, make); }});
    quant::set_int8_threads(*m, threads);
    const quant::Evaluation q = evaluate(*m, test_set);
    io::save_model(*m, path);
    return Result{q.accuracy, 0, 0, file_bytes(path)};
  };

  json rows = json::array();
  std::string s = fmt::format(
      "\nFashion-MNIST MLP from {} (float {:.2f}%, {} bytes); QAT {} epoch(s) from the float model ({}){}\n\n"
      "| weights/acts | PTQ (histogram) | QAT moving avg | QAT LSQ  | agreement MA / LSQ | int8 file | of float |\n"
      "|--------------|-----------------|----------------|----------|--------------------|-----------|----------|\n",
      from, float_acc, float_bytes, epochs, recipe_summary(cmd), layer_bits.empty() ? "" : "; layers kept apart: " + layer_bits);
  for (auto [w, a] : configs) {
    const std::string tag = fmt::format("w{}a{}", w, a);
    const Result ptq = run_ptq(w, a, wd + "/" + tag + "_ptq.safetensors");
    const Result ma = run_qat(w, a, false, wd + "/" + tag + "_qat.safetensors");
    const Result lsq = run_qat(w, a, true, wd + "/" + tag + "_lsq.safetensors");
    s += fmt::format("| W{}A{}         | {:>14.2f}% | {:>13.2f}% | {:>7.2f}% | {:>7.2f}% / {:>6.2f}% | {:>9} | {:>7.1f}% |\n", w, a,
                     ptq.accuracy, ma.accuracy, lsq.accuracy, ma.agreement, lsq.agreement, lsq.bytes,
                     100.0 * static_cast<double>(lsq.bytes) / static_cast<double>(float_bytes));
    rows.push_back({{"config", fmt::format("W{}A{}", w, a)}, {"weight_bits", w}, {"activation_bits", a},
                    {"ptq_accuracy", ptq.accuracy}, {"qat_accuracy", ma.accuracy}, {"qat_fake_quant_accuracy", ma.fake_quant_accuracy},
                    {"qat_agreement", ma.agreement}, {"lsq_accuracy", lsq.accuracy},
                    {"lsq_fake_quant_accuracy", lsq.fake_quant_accuracy}, {"lsq_agreement", lsq.agreement},
                    {"ptq_bytes", ptq.bytes}, {"qat_bytes", ma.bytes}, {"lsq_bytes", lsq.bytes}});
    if (cmd["val"].get<double>() > 0) rows.back().update({{"qat_best_epoch", ma.best_epoch}, {"lsq_best_epoch", lsq.best_epoch}});
  }
  json recipe = cmd;
  recipe.erase("command");
  json j = {{"float_accuracy", float_acc}, {"float_bytes", float_bytes}, {"epochs", epochs}, {"layer_bits", layer_bits},
            {"recipe", recipe}, {"rows", rows}};
  finish(r, j, s);
  return 0;
}

}  // namespace tq::cli

// tinyqat: the command line over the whole workflow (README "Command line").
//   tinyqat train | qat | ptq | dynamic | eval | inspect | compare | pipeline
// Exit status: 0 success, 2 usage error, 1 any other error (message on stderr).
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/model_file.h"
#include "suite.h"
#include "quant/quant.h"
#include "tensor/random.h"
#include "report.h"
#include "workflow.h"

using json = nlohmann::json;
using namespace tq;

namespace {

// A usage error: exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Options every subcommand has.
void add_common(cxxopts::Options& o) {
  o.add_options("common")("data", "Fashion-MNIST directory (IDX files)", cxxopts::value<std::string>()->default_value(io::kFashionMnistDir))(
      "threads", "threads for float and int8 kernels (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "json", "print one JSON object on stdout instead of the summary")("progress", "draw a progress bar on stderr even when it is not a terminal")(
      "h,help", "show this help");
}

cxxopts::ParseResult parse(cxxopts::Options& o, int argc, char** argv) {
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::cout << o.help() << "\n";
    std::exit(0);
  }
  if (!r.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}'", r.unmatched()[0]));
  return r;
}

void apply_threads(const cxxopts::ParseResult& r) {
  const int t = r["threads"].as<int>();
  if (t < 0) throw UsageError("--threads must be 0 (all cores) or positive");
  if (t > 0) openblas_set_num_threads(t);
}

void finish(const cxxopts::ParseResult& r, const json& j, const std::string& summary) {
  if (r.count("json")) std::cout << j.dump() << "\n";
  else std::cout << summary;
}

std::string require(const cxxopts::ParseResult& r, const char* name) {
  if (!r.count(name)) throw UsageError(fmt::format("--{} is required", name));
  return r[name].as<std::string>();
}

std::shared_ptr<nn::Module> load(const std::string& path) { return io::load_model(path); }

// A model file that qat, ptq, dynamic and lowbit can start from: float
// layers only (LinearReLU counts as float).
std::shared_ptr<nn::Module> load_float(const std::string& path, const char* command) {
  auto model = load(path);
  for (auto& [name, m] : model->named_modules())
    if (dynamic_cast<quant::QuantizedLinear*>(m) || dynamic_cast<quant::DynamicQuantizedLinear*>(m) ||
        dynamic_cast<quant::QATLinear*>(m))
      throw std::runtime_error(fmt::format("{}: holds a model that is already prepared or quantized ('{}' is a {}); "
                                           "{} starts from a float model, such as the one `tinyqat train` writes",
                                           path, name, m->type_name(), command));
  return model;
}

void add_checkpointing(cxxopts::Options& o) {
  o.add_options("checkpoints")("checkpoint-every", "save a checkpoint every N training steps (0 = never)",
                               cxxopts::value<int64_t>()->default_value("0"))(
      "checkpoint", "checkpoint file (default: <out>.ckpt)", cxxopts::value<std::string>())(
      "resume", "continue the run saved in this checkpoint (its options are used)", cxxopts::value<std::string>())(
      "stop-after", "stop after N steps as if interrupted (for testing resume)", cxxopts::value<int64_t>()->default_value("0"));
}

cli::TrainOptions checkpoint_options(const cxxopts::ParseResult& r, const std::string& out, const json& command) {
  cli::TrainOptions t;
  t.checkpoint_every = r["checkpoint-every"].as<int64_t>();
  if (t.checkpoint_every < 0) throw UsageError("--checkpoint-every must be 0 or positive");
  t.checkpoint_path = r.count("checkpoint") ? r["checkpoint"].as<std::string>() : out + ".ckpt";
  if (t.checkpoint_every > 0) cli::check_output_path(t.checkpoint_path);
  t.stop_after = r["stop-after"].as<int64_t>();
  t.command_json = command.dump();
  return t;
}

// What an interrupted run prints (nothing is written to --out).
int report_interrupted(const cxxopts::ParseResult& r, const cli::TrainState& st, const cli::TrainOptions& t) {
  json j = {{"interrupted", true}, {"global_step", st.global_step}, {"checkpoint", t.checkpoint_path}};
  finish(r, j, fmt::format("stopped after step {}; continue with --resume {}\n", st.global_step, t.checkpoint_path));
  return 0;
}

// With --resume: the checkpoint, whose stored settings replace `cmd`; it
// must come from `command`. Without: nothing.
std::optional<cli::Checkpoint> resume_checkpoint(const cxxopts::ParseResult& r, const char* command, json& cmd) {
  if (!r.count("resume")) return std::nullopt;
  const std::string path = r["resume"].as<std::string>();
  cli::Checkpoint ck = cli::load_checkpoint(path);
  cmd = json::parse(ck.command_json);
  if (cmd.value("command", "") != command)
    throw UsageError(fmt::format("--resume {}: a checkpoint of '{}', not of '{}'", path, cmd.value("command", "?"), command));
  return ck;
}

// The training loop of train and qat: SGD and the loader as `cmd` says,
// restored from `ck` when resuming, then cli::train. `topt` holds the
// checkpointing options; epochs and progress are set here.
cli::TrainState run_training(const cxxopts::ParseResult& r, nn::Module& model, const io::Dataset& train_set,
                             const io::Dataset& test_set, const json& cmd, const std::optional<cli::Checkpoint>& ck,
                             cli::TrainOptions& topt) {
  io::DataLoader loader(train_set, {.batch_size = cmd["batch_size"].get<int64_t>(), .seed = cmd["seed"].get<uint64_t>()});
  nn::SGD optimizer(model.parameters(), {.lr = cmd["lr"].get<double>(), .momentum = cmd["momentum"].get<double>()});
  cli::TrainState st;
  if (ck) {
    loader.set_state(ck->loader);
    cli::restore_optimizer(optimizer, *ck, r["resume"].as<std::string>());
    st = ck->state;
  }
  topt.epochs = cmd["epochs"].get<int>();
  topt.progress = cli::progress_wanted(r.count("progress") > 0);
  cli::train(model, optimizer, loader, test_set, topt, st);
  return st;
}


// ---- bit widths (qat, ptq) ----

void add_bits(cxxopts::Options& o) {
  o.add_options("bit widths")("bits", "weight and activation bits, 2..8", cxxopts::value<int>())(
      "weight-bits", "weight bits, 2..8 (default 8)", cxxopts::value<int>())(
      "activation-bits", "activation bits, 2..8 (default: the preset's, 7 for x86)", cxxopts::value<int>())(
      "layer-bits", "per-layer bits or float, e.g. fc1=8,fc2=w4a8,fc3=float", cxxopts::value<std::string>());
}

struct Bits {
  int weight = 8, activation = 7;
  bool given = false;  // any bit option on the command line
  std::string layers;  // the --layer-bits text
};

int check_bits(int b, const char* what) {
  if (b < 2 || b > 8) throw UsageError(fmt::format("{} {} is outside 2..8", what, b));
  return b;
}

Bits parse_bits(const cxxopts::ParseResult& r, const std::string& backend) {
  Bits b;
  b.activation = backend == "qnnpack" ? 8 : 7;
  if (r.count("bits")) b.weight = b.activation = check_bits(r["bits"].as<int>(), "--bits");
  if (r.count("weight-bits")) b.weight = check_bits(r["weight-bits"].as<int>(), "--weight-bits");
  if (r.count("activation-bits")) b.activation = check_bits(r["activation-bits"].as<int>(), "--activation-bits");
  b.given = r.count("bits") || r.count("weight-bits") || r.count("activation-bits");
  if (r.count("layer-bits")) b.layers = r["layer-bits"].as<std::string>();
  return b;
}

// Applies "fc1=8,fc2=w4a8,fc3=float" with `make(weight_bits, activation_bits)`.
void apply_layer_bits(nn::Module& model, const std::string& spec,
                      const std::function<quant::QConfigPtr(int, int)>& make) {
  if (spec.empty()) return;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw UsageError(fmt::format("--layer-bits '{}': expected name=bits, name=wXaY or name=float", item));
    const std::string name = item.substr(0, eq), value = item.substr(eq + 1);
    nn::Module* layer = nullptr;
    try {
      layer = &model.get_submodule(name);
    } catch (const std::exception&) {
      throw UsageError(fmt::format("--layer-bits: the model has no layer '{}'", name));
    }
    if (value == "float") {
      layer->qconfig = quant::QConfigPtr(nullptr);
      continue;
    }
    int w = 0, a = 0;
    char tail = 0;
    if (std::sscanf(value.c_str(), "w%da%d%c", &w, &a, &tail) == 2) {
    } else if (std::sscanf(value.c_str(), "%d%c", &w, &tail) == 1) {
      a = w;
    } else {
      throw UsageError(fmt::format("--layer-bits '{}': expected a bit width (e.g. 8), wXaY (e.g. w4a8) or float", item));
    }
    layer->qconfig = make(check_bits(w, "--layer-bits weight bits"), check_bits(a, "--layer-bits activation bits"));
  }
}

// ---- train ----

int cmd_train(int argc, char** argv) {
  cxxopts::Options o("tinyqat train", "Train the float MLP on Fashion-MNIST and save it.");
  o.add_options()("hidden", "hidden layer sizes", cxxopts::value<std::string>()->default_value("256,128"))(
      "epochs", "epochs", cxxopts::value<int>()->default_value("5"))("batch-size", "batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "lr", "learning rate", cxxopts::value<double>()->default_value("0.01"))("momentum", "SGD momentum", cxxopts::value<double>()->default_value("0.9"))(
      "seed", "random seed (initialisation and shuffling)", cxxopts::value<uint64_t>()->default_value("0"))(
      "out", "model file to write", cxxopts::value<std::string>());
  add_common(o);
  add_checkpointing(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string out = require(r, "out");
  cli::check_output_path(out);

  // The run's options: from the command line, or from the checkpoint being resumed.
  json cmd = {{"command", "train"}, {"hidden", r["hidden"].as<std::string>()}, {"epochs", r["epochs"].as<int>()},
              {"batch_size", r["batch-size"].as<int64_t>()}, {"lr", r["lr"].as<double>()},
              {"momentum", r["momentum"].as<double>()}, {"seed", r["seed"].as<uint64_t>()}};
  const std::optional<cli::Checkpoint> ck = resume_checkpoint(r, "train", cmd);
  const auto hidden = cli::parse_hidden(cmd["hidden"].get<std::string>());
  const int epochs = cmd["epochs"].get<int>();
  const int64_t batch_size = cmd["batch_size"].get<int64_t>();
  const uint64_t seed = cmd["seed"].get<uint64_t>();
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  if (batch_size < 1) throw UsageError("--batch-size must be at least 1");
  const std::string dir = r["data"].as<std::string>();
  const io::Dataset train_set = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test_set = io::load_fashion_mnist(dir, io::Split::test);

  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<nn::Module> model;
  if (ck) {
    model = ck->model;
    default_generator().set_state(ck->global_rng);
  } else {
    manual_seed(seed);
    model = cli::make_mlp(train_set.images.size(1) * train_set.images.size(2), hidden, train_set.num_classes);
  }
  cli::TrainOptions topt = checkpoint_options(r, out, cmd);
  topt.label = "train";
  const cli::TrainState st = run_training(r, *model, train_set, test_set, cmd, ck, topt);
  if (st.interrupted) return report_interrupted(r, st, topt);
  const auto& stats = st.history;
  const double secs = seconds_since(t0);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", stats.back().test_accuracy)}});
  json j = {{"accuracy", stats.back().test_accuracy}, {"seconds", secs}, {"model_bytes", cli::file_bytes(out)}, {"model", out}};
  json epochs_j = json::array();
  std::string summary;
  for (size_t e = 0; e < stats.size(); ++e) {
    epochs_j.push_back({{"epoch", e + 1}, {"loss", stats[e].loss}, {"accuracy", stats[e].test_accuracy}, {"seconds", stats[e].seconds}});
    summary += fmt::format("epoch {:>2}  loss {:.4f}  test accuracy {:.2f}%  ({:.1f} s)\n", e + 1, stats[e].loss,
                           stats[e].test_accuracy, stats[e].seconds);
  }
  j["epochs"] = epochs_j;
  summary += fmt::format("float model: test accuracy {:.2f}%, {} bytes, {:.1f} s -> {}\n", stats.back().test_accuracy,
                         cli::file_bytes(out), secs, out);
  finish(r, j, summary);
  return 0;
}

// ---- qat ----

int cmd_qat(int argc, char** argv) {
  cxxopts::Options o("tinyqat qat", "Fine-tune a float model with fake quantization, convert it to int8 and save it.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())("epochs", "epochs", cxxopts::value<int>()->default_value("1"))(
      "qconfig", "x86 | fbgemm | qnnpack", cxxopts::value<std::string>()->default_value("x86"))(
      "batch-size", "batch size", cxxopts::value<int64_t>()->default_value("64"))("lr", "learning rate", cxxopts::value<double>()->default_value("0.01"))(
      "momentum", "SGD momentum", cxxopts::value<double>()->default_value("0.9"))("seed", "shuffling seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "no-fuse", "keep Linear and ReLU apart (by default they are fused)")(
      "learnable-scale", "LSQ: learn the quantizers' scales (and activation zero points) with the weights")(
      "out", "int8 model file to write", cxxopts::value<std::string>());
  add_common(o);
  add_bits(o);
  add_checkpointing(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string out = require(r, "out");
  cli::check_output_path(out);
  json cmd = {{"command", "qat"}, {"epochs", r["epochs"].as<int>()}, {"qconfig", r["qconfig"].as<std::string>()},
              {"batch_size", r["batch-size"].as<int64_t>()}, {"lr", r["lr"].as<double>()},
              {"momentum", r["momentum"].as<double>()}, {"seed", r["seed"].as<uint64_t>()}, {"fuse", !r.count("no-fuse")},
              {"learnable_scale", r.count("learnable-scale") > 0}};
  const Bits bits = parse_bits(r, r["qconfig"].as<std::string>());
  cmd["weight_bits"] = bits.weight;
  cmd["activation_bits"] = bits.activation;
  const std::optional<cli::Checkpoint> ck = resume_checkpoint(r, "qat", cmd);
  if (cmd["epochs"].get<int>() < 1) throw UsageError("--epochs must be at least 1");
  const bool lsq = cmd.value("learnable_scale", false);
  auto make_qconfig = [lsq](int w, int a) {
    return lsq ? quant::make_lsq_qat_qconfig(w, a) : quant::make_qat_qconfig(w, a);
  };
  // The preset itself unless bit widths or LSQ were asked for.
  auto qconfig = (bits.given || lsq) ? make_qconfig(bits.weight, bits.activation)
                                     : quant::get_default_qat_qconfig(cmd["qconfig"].get<std::string>());
  const std::string dir = r["data"].as<std::string>();
  const io::Dataset train_set = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test_set = io::load_fashion_mnist(dir, io::Split::test);

  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<nn::Module> model;
  if (ck) {
    model = ck->model;  // already prepared for QAT, with its observers' state
    default_generator().set_state(ck->global_rng);
  } else {
    model = load_float(require(r, "from"), "qat");
    cmd["float_accuracy"] = cli::evaluate(*model, test_set).accuracy;
    if (cmd["fuse"].get<bool>()) quant::fuse_linear_relu(*model);
    model->qconfig = qconfig;
    apply_layer_bits(*model, bits.layers, make_qconfig);
    quant::prepare_qat(*model);
  }
  cli::TrainOptions topt = checkpoint_options(r, out, cmd);
  topt.label = "qat";
  const cli::TrainState st = run_training(r, *model, train_set, test_set, cmd, ck, topt);
  if (st.interrupted) return report_interrupted(r, st, topt);
  const auto& stats = st.history;
  const double float_acc = cmd["float_accuracy"].get<double>();
  const cli::Evaluation fq = cli::evaluate(*model, test_set);
  quant::convert(*model);
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const cli::Evaluation int8 = cli::evaluate(*model, test_set);
  const double step = cli::output_step(*model);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", int8.accuracy)}});
  const double agree = cli::agreement(fq, int8), steps = cli::max_step_difference(fq, int8, step);
  json j = {{"float_accuracy", float_acc}, {"fake_quant_accuracy", fq.accuracy}, {"accuracy", int8.accuracy},
            {"agreement", agree}, {"max_step_diff", steps}, {"model_bytes", cli::file_bytes(out)},
            {"seconds", seconds_since(t0)}, {"model", out}, {"weight_bits", cmd["weight_bits"]},
            {"activation_bits", cmd["activation_bits"]}, {"learnable_scale", lsq}};
  json epochs_j = json::array();
  for (size_t e = 0; e < stats.size(); ++e)
    epochs_j.push_back({{"epoch", e + 1}, {"loss", stats[e].loss}, {"accuracy", stats[e].test_accuracy}});
  j["epochs"] = epochs_j;
  finish(r, j,
         fmt::format("float {:.2f}% -> fake quant {:.2f}% -> int8 {:.2f}%; fake-quant vs int8 agreement {:.2f}%, "
                     "max difference {:.2f} steps; {} bytes -> {}\n",
                     float_acc, fq.accuracy, int8.accuracy, agree, steps, cli::file_bytes(out), out));
  return 0;
}

// ---- ptq ----

int cmd_ptq(int argc, char** argv) {
  cxxopts::Options o("tinyqat ptq", "Post-training static quantization: calibrate observers, convert to int8.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())(
      "calibration-batches", "training batches run through the observers", cxxopts::value<int64_t>()->default_value("32"))(
      "batch-size", "calibration batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "observer", "minmax | moving_average | histogram", cxxopts::value<std::string>()->default_value("histogram"))(
      "qconfig", "x86 | fbgemm | qnnpack (activation range and weight scheme)", cxxopts::value<std::string>()->default_value("x86"))(
      "seed", "calibration sample seed", cxxopts::value<uint64_t>()->default_value("0"))("no-fuse", "keep Linear and ReLU apart")(
      "out", "int8 model file to write", cxxopts::value<std::string>());
  add_common(o);
  add_bits(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string from = require(r, "from"), out = require(r, "out");
  const int64_t batches = r["calibration-batches"].as<int64_t>();
  if (batches < 1) throw UsageError("--calibration-batches must be at least 1");
  const std::string backend = r["qconfig"].as<std::string>();
  if (backend != "x86" && backend != "fbgemm" && backend != "qnnpack")
    throw UsageError(fmt::format("--qconfig '{}': use x86, fbgemm or qnnpack", backend));
  const Bits bits = parse_bits(r, backend);
  const std::string observer = r["observer"].as<std::string>();
  auto make_qconfig = [&](int w, int a) { return quant::make_ptq_qconfig(observer, w, a, backend != "qnnpack"); };
  auto qconfig = make_qconfig(bits.weight, bits.activation);
  cli::check_output_path(out);
  const std::string dir = r["data"].as<std::string>();
  const io::Dataset train_set = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test_set = io::load_fashion_mnist(dir, io::Split::test);

  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_float(from, "ptq");
  const cli::Evaluation fl = cli::evaluate(*model, test_set);
  if (!r.count("no-fuse")) quant::fuse_linear_relu(*model);
  model->qconfig = qconfig;
  apply_layer_bits(*model, bits.layers, make_qconfig);
  quant::prepare(*model);
  {
    NoGradGuard no_grad;
    model->eval();
    io::DataLoader loader(train_set, {.batch_size = r["batch-size"].as<int64_t>(), .seed = r["seed"].as<uint64_t>()});
    io::Batch b;
    cli::Progress bar("calibrate", batches, cli::progress_wanted(r.count("progress") > 0));
    for (int64_t i = 0; i < batches && loader.next(b); ++i) {
      (*model)(b.images);
      bar.advance();
    }
  }
  quant::convert(*model);
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const cli::Evaluation int8 = cli::evaluate(*model, test_set);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", int8.accuracy)}});
  const double agree = cli::agreement(fl, int8);
  json j = {{"float_accuracy", fl.accuracy}, {"accuracy", int8.accuracy}, {"agreement", agree},
            {"model_bytes", cli::file_bytes(out)}, {"seconds", seconds_since(t0)}, {"model", out},
            {"weight_bits", bits.weight}, {"activation_bits", bits.activation}};
  finish(r, j,
         fmt::format("float {:.2f}% -> PTQ int8 {:.2f}% ({} observer, {} calibration batches); agreement with float "
                     "{:.2f}%; {} bytes -> {}\n",
                     fl.accuracy, int8.accuracy, r["observer"].as<std::string>(), batches, agree, cli::file_bytes(out), out));
  return 0;
}

// ---- dynamic ----

int cmd_dynamic(int argc, char** argv) {
  cxxopts::Options o("tinyqat dynamic", "Dynamic quantization: int8 weights, activations quantized per batch.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())(
      "per-tensor", "one weight scale per layer (as PyTorch) instead of one per output channel")("out", "model file to write", cxxopts::value<std::string>());
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string from = require(r, "from"), out = require(r, "out");
  cli::check_output_path(out);
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_float(from, "dynamic");
  const cli::Evaluation fl = cli::evaluate(*model, test_set);
  quant::quantize_dynamic(*model, {}, DType::i8, !r.count("per-tensor"));
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const cli::Evaluation dyn = cli::evaluate(*model, test_set);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", dyn.accuracy)}});
  const double agree = cli::agreement(fl, dyn);
  json j = {{"float_accuracy", fl.accuracy}, {"accuracy", dyn.accuracy}, {"agreement", agree},
            {"model_bytes", cli::file_bytes(out)}, {"seconds", seconds_since(t0)}, {"model", out}};
  finish(r, j, fmt::format("float {:.2f}% -> dynamic int8 {:.2f}%; agreement with float {:.2f}%; {} bytes -> {}\n", fl.accuracy,
                           dyn.accuracy, agree, cli::file_bytes(out), out));
  return 0;
}

// ---- eval ----

int cmd_eval(int argc, char** argv) {
  cxxopts::Options o("tinyqat eval", "Test-set accuracy and latency of a model file (float, QAT or int8).");
  o.add_options()("model", "model file", cxxopts::value<std::string>())("batch-size", "evaluation batch size", cxxopts::value<int64_t>()->default_value("1000"));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string path = require(r, "model");
  if (r["batch-size"].as<int64_t>() < 1) throw UsageError("--batch-size must be at least 1");
  auto model = load(path);
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const cli::Evaluation ev = cli::evaluate(*model, test_set, r["batch-size"].as<int64_t>());
  const double l1 = cli::latency_us(*model, test_set, 1), l256 = cli::latency_us(*model, test_set, 256);
  json j = {{"accuracy", ev.accuracy}, {"samples", ev.samples}, {"latency_us", {{"batch_1", l1}, {"batch_256", l256}}},
            {"model_bytes", cli::file_bytes(path)}};
  finish(r, j,
         fmt::format("{}: test accuracy {:.2f}% on {} samples; latency {:.1f} us at batch 1, {:.1f} us at batch 256\n",
                     path, ev.accuracy, ev.samples, l1, l256));
  return 0;
}

// ---- inspect ----

int cmd_inspect(int argc, char** argv) {
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
            {"file_bytes", cli::file_bytes(path)}};
  std::string s = model->repr() + "\n\n" + fmt::format("{} tensors, {} elements, file {} bytes\n", file.tensors.size(), params,
                                                       cli::file_bytes(path));
  for (auto& [dt, n] : bytes) s += fmt::format("  {:>4}: {} bytes\n", dt, n);
  finish(r, j, s);
  return 0;
}

// ---- compare ----

int cmd_compare(int argc, char** argv) {
  cxxopts::Options o("tinyqat compare", "Per-layer SQNR of a quantized model against its float model, on test data.");
  o.add_options()("float", "float model file", cxxopts::value<std::string>())("quantized", "quantized model file", cxxopts::value<std::string>())(
      "samples", "test samples to run", cxxopts::value<int64_t>()->default_value("1000"));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  auto fl = load(require(r, "float"));
  auto qm = load(require(r, "quantized"));
  // A fused layer's output is taken after its ReLU: fuse the float model the
  // same way, so that each layer is compared with the same quantity.
  bool fused = false;
  for (auto& [path, m] : qm->named_modules()) fused |= m->type_name().ends_with("LinearReLU");
  if (fused) quant::fuse_linear_relu(*fl);
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const int64_t n = std::min<int64_t>(std::max<int64_t>(1, r["samples"].as<int64_t>()), test_set.size());
  io::DataLoader loader(test_set.slice(0, n), {.batch_size = n, .shuffle = false});
  io::Batch b;
  loader.next(b);
  const auto weights = quant::compare_weights(*fl, *qm);
  const auto outputs = quant::compare_model_outputs(*fl, *qm, b.images);
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

// ---- pipeline: the README's main job ----

int cmd_pipeline(int argc, char** argv) {
  cxxopts::Options o("tinyqat pipeline",
                     "Train the float MLP, then QAT, PTQ and dynamic int8 models from it, and print one comparison table.");
  o.add_options()("workdir", "where the model files go", cxxopts::value<std::string>()->default_value("models"))(
      "epochs", "float training epochs", cxxopts::value<int>()->default_value("5"))(
      "qat-epochs", "QAT fine-tuning epochs", cxxopts::value<int>()->default_value("1"))(
      "qat-lr", "QAT learning rate", cxxopts::value<double>()->default_value("0.01"))(
      "seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "report", "also write DIR/report.html: pictures of training, weights, activation ranges, per-layer SQNR",
      cxxopts::value<std::string>());
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string wd = r["workdir"].as<std::string>();
  std::filesystem::create_directories(wd);
  const std::string report_dir = r.count("report") ? r["report"].as<std::string>() : "";
  const std::string dir = r["data"].as<std::string>();
  const io::Dataset train_set = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test_set = io::load_fashion_mnist(dir, io::Split::test);
  const bool progress = cli::progress_wanted(r.count("progress") > 0);
  const uint64_t seed = r["seed"].as<uint64_t>();
  const int threads = r["threads"].as<int>();
  const auto t0 = std::chrono::steady_clock::now();

  cli::ReportRun report_run;  // training curves and table for --report

  // 1. Float model.
  manual_seed(seed);
  auto float_model = cli::make_mlp(784, {256, 128}, 10);
  {
    io::DataLoader loader(train_set, {.batch_size = 64, .seed = seed});
    report_run.float_history =
        cli::train(*float_model, loader, test_set,
                   {.epochs = r["epochs"].as<int>(), .lr = 0.01, .momentum = 0.9, .progress = progress, .label = "float"});
  }
  const std::string float_path = wd + "/float.safetensors";
  io::save_model(*float_model, float_path);
  const cli::Evaluation fl = cli::evaluate(*float_model, test_set);

  struct Row {
    std::string method;
    double accuracy, agreement;
    std::string agreement_with;
    int64_t bytes;
    double lat1, lat64;
  };
  std::vector<Row> table;
  table.push_back({"float", fl.accuracy, 100.0, "itself", cli::file_bytes(float_path),
                   cli::latency_us_one_thread(*float_model, test_set, 1), cli::latency_us_one_thread(*float_model, test_set, 64)});

  // 2. QAT from the float model.
  auto qat = io::load_model(float_path);
  quant::fuse_linear_relu(*qat);
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);
  {
    io::DataLoader loader(train_set, {.batch_size = 64, .seed = seed + 1});
    report_run.qat_history =
        cli::train(*qat, loader, test_set,
                   {.epochs = r["qat-epochs"].as<int>(), .lr = r["qat-lr"].as<double>(), .momentum = 0.9, .progress = progress, .label = "qat"});
  }
  const cli::Evaluation fq = cli::evaluate(*qat, test_set);
  // convert works in place: the report needs the fake-quant model as it was.
  if (!report_dir.empty()) io::save_model(*qat, wd + "/" + cli::kQatPreparedFile);
  quant::convert(*qat);
  quant::set_int8_threads(*qat, threads);
  const cli::Evaluation qat8 = cli::evaluate(*qat, test_set);
  const double qat_steps = cli::max_step_difference(fq, qat8, cli::output_step(*qat));
  io::save_model(*qat, wd + "/qat_int8.safetensors");
  table.push_back({"QAT int8", qat8.accuracy, cli::agreement(fq, qat8), "fake quant", cli::file_bytes(wd + "/qat_int8.safetensors"),
                   cli::latency_us_one_thread(*qat, test_set, 1), cli::latency_us_one_thread(*qat, test_set, 64)});

  // 3. PTQ (histogram observer, 32 calibration batches).
  auto ptq = io::load_model(float_path);
  quant::fuse_linear_relu(*ptq);
  ptq->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*ptq);
  {
    NoGradGuard no_grad;
    ptq->eval();
    io::DataLoader loader(train_set, {.batch_size = 64, .seed = seed + 2});
    io::Batch b;
    for (int i = 0; i < 32 && loader.next(b); ++i) (*ptq)(b.images);
  }
  if (!report_dir.empty()) io::save_model(*ptq, wd + "/" + cli::kPtqCalibratedFile);  // the observers, before convert
  quant::convert(*ptq);
  quant::set_int8_threads(*ptq, threads);
  const cli::Evaluation ptq8 = cli::evaluate(*ptq, test_set);
  io::save_model(*ptq, wd + "/ptq_int8.safetensors");
  table.push_back({"PTQ int8", ptq8.accuracy, cli::agreement(fl, ptq8), "float", cli::file_bytes(wd + "/ptq_int8.safetensors"),
                   cli::latency_us_one_thread(*ptq, test_set, 1), cli::latency_us_one_thread(*ptq, test_set, 64)});

  // 4. Dynamic.
  auto dyn = io::load_model(float_path);
  quant::quantize_dynamic(*dyn);
  quant::set_int8_threads(*dyn, threads);
  const cli::Evaluation dyn8 = cli::evaluate(*dyn, test_set);
  io::save_model(*dyn, wd + "/dynamic_int8.safetensors");
  table.push_back({"dynamic int8", dyn8.accuracy, cli::agreement(fl, dyn8), "float", cli::file_bytes(wd + "/dynamic_int8.safetensors"),
                   cli::latency_us_one_thread(*dyn, test_set, 1), cli::latency_us_one_thread(*dyn, test_set, 64)});

  json rows = json::array();
  std::string s = fmt::format("\nFashion-MNIST, MLP 784-256-128-10, {} test images ({:.0f} s in all)\n\n", test_set.size(),
                              seconds_since(t0));
  s += fmt::format("| {:<12} | {:>9} | {:>22} | {:>11} | {:>15} | {:>16} |\n", "method", "accuracy", "agreement",
                   "model bytes", "latency batch 1", "latency batch 64");
  s += "|--------------|-----------|------------------------|-------------|-----------------|------------------|\n";
  for (auto& row : table) {
    s += fmt::format("| {:<12} | {:>8.2f}% | {:>7.2f}% vs {:<11} | {:>11} | {:>12.1f} us | {:>13.1f} us |\n", row.method,
                     row.accuracy, row.agreement, row.agreement_with, row.bytes, row.lat1, row.lat64);
    rows.push_back({{"method", row.method}, {"accuracy", row.accuracy}, {"agreement", row.agreement},
                    {"agreement_with", row.agreement_with}, {"model_bytes", row.bytes}, {"latency_us_batch_1", row.lat1},
                    {"latency_us_batch_64", row.lat64}});
  }
  s += "(latency: one forward pass on float input, one thread, median of 7 repeats)\n";
  s += fmt::format("\nQAT: fake-quant accuracy {:.2f}%, int8 vs fake quant max difference {:.2f} output steps\n", fq.accuracy, qat_steps);
  json j = {{"rows", rows}, {"fake_quant_accuracy", fq.accuracy}, {"max_step_diff", qat_steps}, {"seconds", seconds_since(t0)}};
  if (!report_dir.empty()) {
    report_run.title = "tinyqat pipeline report";
    report_run.subtitle = fmt::format("Fashion-MNIST, MLP 784-256-128-10 (fc1, fc2, fc3), {} float + {} QAT epochs, {} test images",
                                      report_run.float_history.size(), report_run.qat_history.size(), test_set.size());
    for (auto& row : table)
      report_run.table.push_back({row.method, row.accuracy, row.agreement, row.agreement_with, row.bytes, row.lat1, row.lat64});
    report_run.fake_quant_accuracy = fq.accuracy;
    cli::save_report_run(report_run, wd + "/" + cli::kReportRunFile);
    const cli::ReportModels models{float_model, io::load_model(wd + "/" + cli::kQatPreparedFile), qat,
                                   io::load_model(wd + "/" + cli::kPtqCalibratedFile), ptq, dyn};
    const std::string page = cli::write_report(report_dir, report_run, models, cli::report_inputs(test_set, 1000));
    j["report"] = page;
    s += fmt::format("report: {}\n", page);
  }
  finish(r, j, s);
  return 0;
}

// ---- report: redraw the pipeline's HTML report from its workdir ----

int cmd_report(int argc, char** argv) {
  cxxopts::Options o("tinyqat report",
                     "Write report.html (inline SVG pictures) from the model files that 'tinyqat pipeline --report' left in a workdir.");
  o.add_options()("workdir", "the pipeline's workdir", cxxopts::value<std::string>()->default_value("models"))(
      "out", "directory for report.html (default: the workdir)", cxxopts::value<std::string>())(
      "samples", "test images for the output SQNR", cxxopts::value<int64_t>()->default_value("1000"));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string wd = r["workdir"].as<std::string>();
  const std::string out = r.count("out") ? r["out"].as<std::string>() : wd;
  if (r["samples"].as<int64_t>() < 1) throw UsageError("--samples must be at least 1");
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  const std::string page = cli::write_report_from_workdir(wd, out, test_set, r["samples"].as<int64_t>());
  finish(r, json{{"report", page}}, fmt::format("report: {}\n", page));
  return 0;
}

// ---- lowbit: accuracy and size as bits fall ----

int cmd_lowbit(int argc, char** argv) {
  cxxopts::Options o("tinyqat lowbit",
                     "For W8A8, W4A8, W4A4, W3A3, W2A8: PTQ, QAT with moving-average fake quant, and QAT with "
                     "learned step sizes (LSQ), from one float model; accuracy, agreement and file sizes.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())(
      "epochs", "QAT epochs for each run", cxxopts::value<int>()->default_value("2"))(
      "lr", "QAT learning rate", cxxopts::value<double>()->default_value("0.01"))(
      "configs", "comma-separated WxAy list", cxxopts::value<std::string>()->default_value("w8a8,w4a8,w4a4,w3a3,w2a8"))(
      "workdir", "where the model files go", cxxopts::value<std::string>()->default_value("models/lowbit"))(
      "seed", "shuffling seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "layer-bits", "layers kept at other widths in every run, e.g. fc1=8,fc3=8 (the LSQ paper keeps first and last at 8)",
      cxxopts::value<std::string>()->default_value(""));
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string from = require(r, "from"), wd = r["workdir"].as<std::string>();
  const std::string layer_bits = r["layer-bits"].as<std::string>();
  const int epochs = r["epochs"].as<int>();
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  std::vector<std::pair<int, int>> configs;
  {
    std::stringstream ss(r["configs"].as<std::string>());
    std::string item;
    while (std::getline(ss, item, ',')) {
      int w = 0, a = 0;
      char tail = 0;
      if (std::sscanf(item.c_str(), "w%da%d%c", &w, &a, &tail) != 2 && std::sscanf(item.c_str(), "W%dA%d%c", &w, &a, &tail) != 2)
        throw UsageError(fmt::format("--configs: '{}' is not of the form w4a8", item));
      configs.emplace_back(check_bits(w, "weight bits"), check_bits(a, "activation bits"));
    }
  }
  std::filesystem::create_directories(wd);
  const std::string dir = r["data"].as<std::string>();
  const io::Dataset train_set = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test_set = io::load_fashion_mnist(dir, io::Split::test);
  const bool progress = cli::progress_wanted(r.count("progress") > 0);
  const int threads = r["threads"].as<int>();
  auto float_model = load_float(from, "lowbit");
  const double float_acc = cli::evaluate(*float_model, test_set).accuracy;
  const int64_t float_bytes = cli::file_bytes(from);

  struct Result {
    double accuracy = 0, fake_quant_accuracy = 0, agreement = 0;
    int64_t bytes = 0;
  };
  auto run_qat = [&](int w, int a, bool lsq, const std::string& path) {
    auto m = load(from);
    quant::fuse_linear_relu(*m);
    auto make = [lsq](int wb, int ab) { return lsq ? quant::make_lsq_qat_qconfig(wb, ab) : quant::make_qat_qconfig(wb, ab); };
    m->qconfig = make(w, a);
    apply_layer_bits(*m, layer_bits, make);
    quant::prepare_qat(*m);
    io::DataLoader loader(train_set, {.batch_size = 64, .seed = r["seed"].as<uint64_t>()});
    cli::train(*m, loader, test_set,
               {.epochs = epochs, .lr = r["lr"].as<double>(), .momentum = 0.9, .progress = progress,
                .label = fmt::format("W{}A{} {}", w, a, lsq ? "LSQ" : "QAT")});
    const cli::Evaluation fq = cli::evaluate(*m, test_set);
    quant::convert(*m);
    quant::set_int8_threads(*m, threads);
    const cli::Evaluation q = cli::evaluate(*m, test_set);
    io::save_model(*m, path);
    return Result{q.accuracy, fq.accuracy, cli::agreement(fq, q), cli::file_bytes(path)};
  };
  auto run_ptq = [&](int w, int a, const std::string& path) {
    auto m = load(from);
    quant::fuse_linear_relu(*m);
    auto make = [](int wb, int ab) { return quant::make_ptq_qconfig("histogram", wb, ab); };
    m->qconfig = make(w, a);
    apply_layer_bits(*m, layer_bits, make);
    quant::prepare(*m);
    {
      NoGradGuard no_grad;
      m->eval();
      io::DataLoader loader(train_set, {.batch_size = 64, .seed = r["seed"].as<uint64_t>()});
      io::Batch b;
      for (int i = 0; i < 32 && loader.next(b); ++i) (*m)(b.images);
    }
    quant::convert(*m);
    quant::set_int8_threads(*m, threads);
    const cli::Evaluation q = cli::evaluate(*m, test_set);
    io::save_model(*m, path);
    return Result{q.accuracy, 0, 0, cli::file_bytes(path)};
  };

  json rows = json::array();
  std::string s = fmt::format(
      "\nFashion-MNIST MLP from {} (float {:.2f}%, {} bytes); QAT {} epoch(s) from the float model{}\n\n"
      "| weights/acts | PTQ (histogram) | QAT moving avg | QAT LSQ  | agreement MA / LSQ | int8 file | of float |\n"
      "|--------------|-----------------|----------------|----------|--------------------|-----------|----------|\n",
      from, float_acc, float_bytes, epochs, layer_bits.empty() ? "" : "; layers kept apart: " + layer_bits);
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
  }
  json j = {{"float_accuracy", float_acc}, {"float_bytes", float_bytes}, {"epochs", epochs}, {"layer_bits", layer_bits},
            {"rows", rows}};
  finish(r, j, s);
  return 0;
}

// ---- bench ----

int cmd_bench(int argc, char** argv) {
  cxxopts::Options o("tinyqat bench",
                     "Speed, measured side by side in one run (docs/speed.md):\n"
                     "  (a) int8 GEMM vs cblas_sgemm (and cblas_sgemv at M=1), M in {1,64,256,1024} x "
                     "(784->256, 256->128, 1024->1024)\n"
                     "  (b) the MLP 784-256-128-10, static int8 vs float forward, batch 1, 64, 1000\n"
                     "  (c) its train step at batch 64: float step vs the same GEMMs alone, QAT step vs float step\n"
                     "  (d) SimpleNN 10-5-2 train step at batch 1, float and QAT, in microseconds\n"
                     "Each ratio is the median of per-pair ratios of alternating samples.\n\n"
                     "--json prints one object: threads, quick, int8_kernel, load_average_before/after,\n"
                     "peak_rss_mib, seconds, and one key per section run:\n"
                     "  int8_gemm {kernel, rows: [{M, K, N, path, sgemm_us, int8_us, speedup_vs_sgemm,\n"
                     "             sgemv_us, speedup_vs_sgemv (M=1), target, met}]}\n"
                     "  mlp_inference {model, rows: [{batch, float_us, int8_us, speedup, speedup_cpu, target, met}]}\n"
                     "  mlp_train_step {batch, gemms, float_step, qat_step (timings: median_us, min_us,\n"
                     "             cpu_median_us, samples, calls_per_sample), float_over_gemms, qat_over_float, ...}\n"
                     "  simple_nn {float_step, qat_step (timings), qat_over_float, target_us}");
  o.add_options()("threads", "threads for OpenBLAS and the int8 kernels (the targets are for 1)",
                  cxxopts::value<int>()->default_value("1"))(
      "only", "run only these sections, e.g. --only ab", cxxopts::value<std::string>()->default_value("abcd"))(
      "quick", "few, short samples: a smoke run, not for claims")("json", "print one JSON object instead of the tables")(
      "h,help", "show this help");
  auto r = parse(o, argc, argv);
  bench::SuiteOptions options{.threads = r["threads"].as<int>(), .quick = r.count("quick") > 0};
  if (options.threads < 1) throw UsageError("--threads must be at least 1");
  const std::string only = r["only"].as<std::string>();
  if (only.empty() || only.find_first_not_of("abcd") != std::string::npos)
    throw UsageError(fmt::format("--only '{}': use letters among a, b, c, d", only));
  auto wanted = [&](char c) { return only.find(c) != std::string::npos; };
  const bool as_json = r.count("json") > 0;

  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::ordered_json j = {{"threads", options.threads}, {"quick", options.quick},
                              {"int8_kernel", bench::int8_kernel_description()}, {"load_average_before", bench::load_average()}};
  auto section = [&](auto&& print) {
    if (as_json) return;
    print();
    std::printf("\n");
    std::fflush(stdout);
  };
  if (!as_json)
    std::printf("tinyqat bench: %d thread(s), int8 kernel %s%s; load average %.2f\n\n", options.threads,
                bench::int8_kernel_description().c_str(), options.quick ? ", quick (not for claims)" : "", bench::load_average());
  if (wanted('a')) {
    const auto rows = bench::int8_gemm(options);
    j["int8_gemm"] = bench::int8_gemm_json(rows);
    section([&] { bench::print_int8_gemm(stdout, rows, options); });
  }
  if (wanted('b')) {
    const auto rows = bench::mlp_inference(options);
    j["mlp_inference"] = bench::mlp_inference_json(rows);
    section([&] { bench::print_mlp_inference(stdout, rows, options); });
  }
  if (wanted('c')) {
    const auto step = bench::mlp_train_step(options);
    j["mlp_train_step"] = bench::mlp_train_step_json(step);
    section([&] { bench::print_mlp_train_step(stdout, step, options); });
  }
  if (wanted('d')) {
    const auto simple = bench::simple_nn_step(options);
    j["simple_nn"] = bench::simple_nn_step_json(simple);
    section([&] { bench::print_simple_nn_step(stdout, simple); });
  }
  const double secs = seconds_since(t0);
  j["load_average_after"] = bench::load_average(), j["peak_rss_mib"] = bench::peak_rss_mib(), j["seconds"] = secs;
  if (as_json)
    std::printf("%s\n", j.dump().c_str());
  else
    std::printf("peak resident memory %.1f MiB; %.1f s; load average %.2f\n", bench::peak_rss_mib(), secs,
                bench::load_average());
  return 0;
}

const std::map<std::string, int (*)(int, char**)> kCommands = {
    {"train", cmd_train}, {"qat", cmd_qat},         {"ptq", cmd_ptq},         {"dynamic", cmd_dynamic},
    {"eval", cmd_eval},   {"inspect", cmd_inspect}, {"compare", cmd_compare}, {"pipeline", cmd_pipeline},
    {"lowbit", cmd_lowbit}, {"report", cmd_report},   {"bench", cmd_bench},
};

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: tinyqat <command> [options]   (tinyqat <command> --help for its options)\n\n"
               "commands:\n"
               "  train     train the float MLP on Fashion-MNIST\n"
               "  qat       quantization-aware fine-tuning, then convert to int8\n"
               "  ptq       post-training static quantization with calibration\n"
               "  dynamic   dynamic quantization (int8 weights, per-batch activations)\n"
               "  eval      accuracy and latency of a model file\n"
               "  inspect   print a model file's modules, parameters and bytes\n"
               "  compare   per-layer SQNR of a quantized model against its float model\n"
               "  pipeline  all of the above in one run, with a comparison table (--report DIR: HTML pictures)\n"
               "  lowbit    accuracy and size from 8 down to 2 bits: PTQ, QAT, LSQ\n"
               "  report    redraw the HTML report of a pipeline workdir\n"
               "  bench     speed: int8 vs float GEMM and MLP, train step vs its GEMMs, QAT vs float\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  auto it = kCommands.find(cmd);
  if (it == kCommands.end()) {
    std::fprintf(stderr, "tinyqat: unknown command '%s'\n", cmd.c_str());
    usage(stderr);
    return 2;
  }
  try {
    return it->second(argc - 1, argv + 1);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tinyqat %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "tinyqat %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "tinyqat %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tinyqat %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}

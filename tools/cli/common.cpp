#include "common.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <utility>
#include <vector>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "autograd/node.h"
#include "io/data_loader.h"
#include "tensor/memory_limit.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "io/data_split.h"
#include "nn/adam.h"
#include "nn/sgd.h"
#include "quant/qat_schedule.h"
#include "quant/layer.h"
#include "quant/observer.h"
#include "models/cnn.h"
#include "models/mobilenet_v2.h"
#include "nn/conv.h"
#include "quant/qat_schedule.h"
#include "quant/quantized_conv.h"
#include "tensor/communicator.h"
#include "tensor/tensor.h"

namespace tq::cli {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- Options every command has, parsing, output ----

void add_common(cxxopts::Options& o) {
  o.add_options("common")("data", "Fashion-MNIST directory (IDX files)", cxxopts::value<std::string>()->default_value(io::kFashionMnistDir))(
      "threads", "threads for float and int8 kernels (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "json", "print one JSON object on stdout instead of the summary")("progress", "draw a progress bar on stderr even when it is not a terminal")(
      "h,help", "show this help");
}

cxxopts::ParseResult parse(cxxopts::Options& o, int argc, char** argv, const char* out_directory_file) {
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::cout << o.help() << "\n";
    std::exit(0);
  }
  if (!r.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}'", r.unmatched()[0]));
  check_outputs(r, out_directory_file);
  return r;
}

namespace {

bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec) && !ec;
}

// `path`, an output of the run named by `option`, must not be one of the
// files the run reads: its input options, and the data set's files.
// (`resuming_checkpoint`: the checkpoint of a resumed run may be the file it
// resumes from, the same run replaced atomically by its later state.)
void check_not_an_input(const cxxopts::ParseResult& r, const std::string& option, const std::string& path,
                        bool resuming_checkpoint) {
  for (const char* input : {"from", "float", "model", "quantized", "resume", "onnx", "input"}) {
    if (!r.count(input)) continue;
    if (same_file(path, r[input].as<std::string>()) && !(std::string(input) == "resume" && resuming_checkpoint))
      throw UsageError(fmt::format("{} {} is also --{}: the run would overwrite its own input; write elsewhere", option,
                                   path, input));
  }
  // The data set's files, read as they are or gzipped, in the commands that have --data.
  std::string data_dir;
  try {
    data_dir = r["data"].as<std::string>();
  } catch (const cxxopts::exceptions::exception&) {
    return;
  }
  const std::filesystem::path dir(data_dir);
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                           "t10k-labels-idx1-ubyte"})
    for (const std::string& file : {std::string(name), std::string(name) + ".gz"})
      if (same_file(path, (dir / file).string()))
        throw UsageError(fmt::format("{} {} is the data set's {} (--data {}): the run would overwrite its own input; "
                                     "write elsewhere",
                                     option, path, file, dir.string()));
}

}  // namespace

void check_outputs(const cxxopts::ParseResult& r, const char* out_directory_file) {
  // The files a run writes, and the files it reads: no output may be a
  // device, FIFO, directory or symlink, nor one of the inputs.
  std::vector<std::pair<std::string, std::string>> outputs;  // option, path
  if (r.count("out")) {
    const std::string out = r["out"].as<std::string>();
    if (!out_directory_file) {
      outputs.emplace_back("--out", out);
    } else {  // --out names a directory (made if missing) that gets this file
      std::error_code ec;
      if (std::filesystem::exists(out, ec) && !std::filesystem::is_directory(out, ec))
        throw OutputPathError(fmt::format("--out {}: is not a directory", out));
      if (std::filesystem::is_directory(out, ec))
        outputs.emplace_back("--out", (std::filesystem::path(out) / out_directory_file).string());
    }
  }
  if (r.count("checkpoint")) outputs.emplace_back("--checkpoint", r["checkpoint"].as<std::string>());
  else if (r.count("out") && r.count("checkpoint-every") && r["checkpoint-every"].as<int64_t>() > 0)
    outputs.emplace_back("--checkpoint (default <out>.ckpt)", r["out"].as<std::string>() + ".ckpt");
  for (const auto& [option, path] : outputs) check_output_path(path, option);
  for (const auto& [option, path] : outputs) check_not_an_input(r, option, path, option.starts_with("--checkpoint"));
  if (outputs.size() == 2 && same_file(outputs[0].second, outputs[1].second))
    throw UsageError(fmt::format("--checkpoint and --out name the same file {}", outputs[0].second));
}

std::string prepare_workdir(const cxxopts::ParseResult& r, const std::vector<std::string>& files) {
  const std::string wd = r["workdir"].as<std::string>();
  {
    // The library's own words ("filesystem error: cannot create directories")
    // did not say which option named the path.
    std::error_code ec;
    std::filesystem::create_directories(wd, ec);
    if (ec || !std::filesystem::is_directory(wd))
      throw std::runtime_error(fmt::format("--workdir {}: cannot create the directory ({})", wd,
                                           ec ? ec.message() : "a file of that name exists"));
  }
  // What the run will write there follows the rules of --out, checked now.
  for (const std::string& name : files) {
    const std::string path = (std::filesystem::path(wd) / name).string();
    check_output_path(path, "--workdir's file");
    check_not_an_input(r, "--workdir's file", path, false);
  }
  return wd;
}

void apply_threads(const cxxopts::ParseResult& r) {
  const int t = r["threads"].as<int>();
  if (t < 0) throw UsageError("--threads must be 0 (all cores) or positive");
  if (t > kMaxThreads) throw UsageError(fmt::format("--threads {} is more than the limit of {} (kMaxThreads)", t, kMaxThreads));
  if (t > 0) openblas_set_num_threads(t);
}

void finish(const cxxopts::ParseResult& r, const json& j, const std::string& summary) {
  if (dist::world().rank() != 0) return;  // data parallel: rank 0 speaks for the run
  if (r.count("json")) std::cout << j.dump() << "\n";
  else std::cout << summary;
}

std::string require(const cxxopts::ParseResult& r, const char* name) {
  if (!r.count(name)) throw UsageError(fmt::format("--{} is required", name));
  return r[name].as<std::string>();
}

FashionMnist load_data(const cxxopts::ParseResult& r) {
  const std::string dir = r["data"].as<std::string>();
  FashionMnist d{io::load_fashion_mnist(dir, io::Split::train), {}};
  d.test = io::load_fashion_mnist(dir, io::Split::test);
  return d;
}

std::shared_ptr<nn::Module> load_float(const std::string& path, const char* command) {
  auto model = io::load_model(path);
  for (auto& [name, m] : model->named_modules())
    if (quant::as_quant_layer(m))
      throw std::runtime_error(fmt::format("{}: holds a model that is already prepared or quantized ('{}' is a {}); "
                                           "{} starts from a float model, such as the one `tinyqat train` writes",
                                           path, name, m->type_name(), command));
  return model;
}

void check_model_fits(nn::Module& model, const io::Dataset& data, const std::string& path) {
  if (data.size() == 0) return;
  // One sample in eval mode, observers switched off: the model's state does
  // not change.
  std::vector<std::pair<quant::ObserverBase*, bool>> observers;
  for (auto& [name, m] : model.named_modules())
    if (auto* o = dynamic_cast<quant::ObserverBase*>(m)) observers.emplace_back(o, o->enabled);
  for (auto& [o, on] : observers) o->enabled = false;
  quant::Evaluation ev;
  try {
    ev = evaluate(model, data.slice(0, 1), 1);
  } catch (const std::bad_alloc&) {
    for (auto& [o, on] : observers) o->enabled = on;
    throw;  // out of memory: not a property of the file (main.cpp names what the memory grows with)
  } catch (const std::exception& e) {
    for (auto& [o, on] : observers) o->enabled = on;
    throw std::runtime_error(fmt::format("{}: the model cannot take this data's samples: {}", path, e.what()));
  }
  for (auto& [o, on] : observers) o->enabled = on;
  if (ev.classes != data.num_classes)
    throw std::runtime_error(fmt::format("{}: the model gives {} outputs per sample, but the data has {} classes", path,
                                         ev.classes, data.num_classes));
}

// ---- Memory ----

namespace {

std::string g_memory_grows_with;
int g_memory_status = 2;
std::string g_memory_limit_source = "no limit";

// MemAvailable of /proc/meminfo in bytes, 0 when it cannot be read.
size_t memory_available() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
  std::fclose(f);
  return static_cast<size_t>(kib) * 1024;
}

}  // namespace

void set_memory_limit() {
  size_t limit = 0;
  if (const char* env = std::getenv("TINYQAT_MEMORY_LIMIT"); env && *env) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(env, &end);
    double unit = 1;
    if (*end == 'K' || *end == 'k') unit = 1024, ++end;
    else if (*end == 'M' || *end == 'm') unit = 1024.0 * 1024, ++end;
    else if (*end == 'G' || *end == 'g') unit = 1024.0 * 1024 * 1024, ++end;
    // A whole number of bytes (1.5G is, 1.5 is not).
    if (end == env || *end || errno || !(v >= 0) || v * unit > 1e18 || v * unit != std::floor(v * unit))
      throw UsageError(fmt::format("TINYQAT_MEMORY_LIMIT '{}': expected bytes, e.g. 4G, 512M or 0 (no limit)", env));
    limit = static_cast<size_t>(v * unit);
    g_memory_limit_source = limit ? "TINYQAT_MEMORY_LIMIT" : "no limit";
  } else if (const size_t avail = memory_available(); avail > 0) {
    // What the machine has free now, shared by the ranks of a data-parallel run.
    limit = avail / static_cast<size_t>(std::max(1, dist::world().size()));
    g_memory_limit_source = "the memory available when the command started";
  }
  set_tensor_memory_limit(limit);
}

void memory_grows_with(std::string what, int status) {
  g_memory_grows_with = std::move(what);
  g_memory_status = status;
}

std::pair<std::string, int> out_of_memory(const std::bad_alloc& e) {
  std::string msg = dynamic_cast<const AllocationError*>(&e) ? e.what() : "out of memory (std::bad_alloc)";
  if (!g_memory_grows_with.empty())
    msg += fmt::format("; the memory needed grows with {}: make it smaller", g_memory_grows_with);
  if (const size_t limit = tensor_memory_limit(); limit > 0)
    msg += fmt::format(" (tensor memory limit {}: {})", human_bytes(limit), g_memory_limit_source);
  return {msg, g_memory_grows_with.empty() ? 1 : g_memory_status};
}

// ---- Architectures ----

void check_arch_name(const std::string& arch) {
  if (arch != "mlp" && arch != "cnn" && arch != "mobilenet_v2")
    throw UsageError(fmt::format("--arch must be mlp, cnn or mobilenet_v2, not '{}'", arch));
}

std::string mlp_size_problem(const std::vector<int64_t>& hidden, int64_t in_features, int64_t classes) {
  if (hidden.size() > kMaxMlpLayers)
    return fmt::format("asks for {} hidden layers, more than the limit of {} (kMaxMlpLayers)", hidden.size(), kMaxMlpLayers);
  int64_t weights = 0, in = in_features;
  for (size_t i = 0; i <= hidden.size(); ++i) {
    const int64_t out = i < hidden.size() ? hidden[i] : classes;
    weights += in * out + out;  // each factor is at most 8192 (parse_hidden) or the data's size
    in = out;
  }
  if (weights > kMaxMlpWeights)
    return fmt::format("makes an MLP of {} weights, more than the limit of {} (kMaxMlpWeights, 1 GiB of float32; "
                       "training holds 3-4 times that)",
                       weights, kMaxMlpWeights);
  return "";
}

std::shared_ptr<nn::Module> make_model(const std::string& arch, double width, const std::string& hidden,
                                       int64_t in_features, int64_t classes) {
  check_arch_name(arch);
  if (arch == "cnn") return models::cnn(classes);
  if (arch == "mobilenet_v2") return models::mobilenet_v2_small_input(classes, width, 1);
  const std::vector<int64_t> sizes = parse_hidden(hidden);
  if (const std::string problem = mlp_size_problem(sizes, in_features, classes); !problem.empty())
    throw UsageError(fmt::format("--hidden {} {}", hidden, problem));
  return make_mlp(in_features, sizes, classes);
}

std::string arch_of(const nn::Module& model) {
  bool conv = false;
  for (auto& [path, m] : model.named_modules()) {
    if (dynamic_cast<const models::MobileNetV2*>(m)) return "mobilenet_v2";
    conv |= dynamic_cast<const nn::Conv2d*>(m) != nullptr || dynamic_cast<const quant::QuantizedConv2d*>(m) != nullptr;
  }
  return conv ? "cnn" : "mlp";
}

void check_model_arch(const cxxopts::ParseResult& r, const nn::Module& model, const std::string& path) {
  if (!r.count("arch")) return;
  const std::string want = r["arch"].as<std::string>();
  check_arch_name(want);
  const std::string have = arch_of(model);
  if (have != want)
    throw std::runtime_error(fmt::format("{}: holds a {} model, but --arch says {}", path, have, want));
}

// ---- The QAT schedule ----

void add_qat_schedule(cxxopts::Options& o) {
  o.add_options("QAT schedule")(
      "freeze-bn-after", "freeze the BatchNorm statistics after E epochs (fractions allowed; default never)",
      cxxopts::value<double>())("freeze-observers-after",
                                "disable the observers (fix the qparams) after E epochs (fractions allowed; default never)",
                                cxxopts::value<double>());
}

void read_qat_schedule(const cxxopts::ParseResult& r, json& cmd) {
  for (const char* name : {"freeze-bn-after", "freeze-observers-after"}) {
    double v = -1;
    if (r.count(name)) {
      v = r[name].as<double>();
      if (!(v >= 0) || !std::isfinite(v)) throw UsageError(fmt::format("--{} must be a number of epochs >= 0", name));
    }
    cmd[std::string(name) == "freeze-bn-after" ? "freeze_bn_after" : "freeze_observers_after"] = v;
  }
}

std::function<void(nn::Module&, double)> qat_schedule_hook(const json& cmd) {
  const double bn_after = cmd.value("freeze_bn_after", -1.0), obs_after = cmd.value("freeze_observers_after", -1.0);
  if (bn_after < 0 && obs_after < 0) return nullptr;
  auto bn_done = std::make_shared<bool>(false), obs_done = std::make_shared<bool>(false);
  return [=](nn::Module& m, double epochs_done) {
    if (bn_after >= 0 && !*bn_done && epochs_done >= bn_after) quant::freeze_bn_stats(m), *bn_done = true;
    if (obs_after >= 0 && !*obs_done && epochs_done >= obs_after) quant::disable_observer(m), *obs_done = true;
  };
}

// ---- Bit widths ----

void add_bits(cxxopts::Options& o) {
  o.add_options("bit widths")("bits", "weight and activation bits, 2..8", cxxopts::value<int>())(
      "weight-bits", "weight bits, 2..8 (default 8)", cxxopts::value<int>())(
      "activation-bits", "activation bits, 2..8 (default: the preset's, 7 for x86)", cxxopts::value<int>())(
      "layer-bits", "per-layer bits or float, e.g. fc1=8,fc2=w4a8,fc3=float", cxxopts::value<std::string>());
}

int check_bits(int b, const char* what) {
  if (b < 2 || b > 8) throw UsageError(fmt::format("{} {} is outside 2..8", what, b));
  return b;
}

std::vector<std::pair<int, int>> parse_configs(const std::string& text) {
  std::vector<std::pair<int, int>> configs;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int w = 0, a = 0;
    char tail = 0;
    if (std::sscanf(item.c_str(), "w%da%d%c", &w, &a, &tail) != 2 && std::sscanf(item.c_str(), "W%dA%d%c", &w, &a, &tail) != 2)
      throw UsageError(fmt::format("--configs: '{}' is not of the form w4a8", item));
    configs.emplace_back(check_bits(w, "--configs: weight bits"), check_bits(a, "--configs: activation bits"));
  }
  if (configs.empty()) throw UsageError("--configs is empty: give at least one WxAy, e.g. w4a8");
  // A trailing comma was skipped silently, a repeated width run twice.
  if (text.back() == ',') throw UsageError(fmt::format("--configs '{}' ends with a comma", text));
  for (size_t i = 0; i < configs.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      if (configs[k] == configs[i])
        throw UsageError(fmt::format("--configs '{}' names w{}a{} twice", text, configs[i].first, configs[i].second));
  return configs;
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

// ---- Checkpoints and resume ----

void add_checkpointing(cxxopts::Options& o) {
  o.add_options("checkpoints")("checkpoint-every", "save a checkpoint every N training steps (0 = never)",
                               cxxopts::value<int64_t>()->default_value("0"))(
      "checkpoint", "checkpoint file (default: <out>.ckpt)", cxxopts::value<std::string>())(
      "resume", "continue the run saved in this checkpoint (its options are used)", cxxopts::value<std::string>())(
      "stop-after", "stop after N steps as if interrupted (for testing resume)", cxxopts::value<int64_t>()->default_value("0"));
}

TrainOptions checkpoint_options(const cxxopts::ParseResult& r, const std::string& out, const json& command) {
  TrainOptions t;
  // A resumed run keeps checkpointing as the run it continues did (the
  // checkpoint stores --checkpoint-every), unless told otherwise.
  t.checkpoint_every = r.count("checkpoint-every") || !command.contains("checkpoint_every")
                           ? r["checkpoint-every"].as<int64_t>()
                           : command["checkpoint_every"].get<int64_t>();
  if (t.checkpoint_every < 0) throw UsageError("--checkpoint-every must be 0 or positive");
  t.checkpoint_path = r.count("checkpoint") ? r["checkpoint"].as<std::string>() : out + ".ckpt";
  if (t.checkpoint_every > 0) check_output_path(t.checkpoint_path, r.count("checkpoint") ? "--checkpoint" : "--checkpoint (default <out>.ckpt)");
  t.stop_after = r["stop-after"].as<int64_t>();
  if (t.stop_after < 0) throw UsageError("--stop-after must be 0 (never) or positive");
  json stored = command;
  stored["checkpoint_every"] = t.checkpoint_every;
  t.command_json = stored.dump();
  return t;
}

int report_interrupted(const cxxopts::ParseResult& r, const TrainState& st, const TrainOptions& t) {
  json j = {{"interrupted", true}, {"global_step", st.global_step}, {"checkpoint", t.checkpoint_path}};
  finish(r, j, fmt::format("stopped after step {}; continue with --resume {}\n", st.global_step, t.checkpoint_path));
  return 0;
}

namespace {

// The options that set a run's setting `key` (its name in the stored command).
std::vector<std::string> options_of(const std::string& key) {
  if (key == "fuse") return {"no-fuse"};
  if (key == "weight_bits") return {"bits", "weight-bits"};
  if (key == "activation_bits") return {"bits", "activation-bits"};
  std::string option = key;
  std::replace(option.begin(), option.end(), '_', '-');
  return {option};
}

// Each setting of a run, checked: from the command line a mistake is a
// UsageError naming the option; from a checkpoint it is an error naming the
// file and the field (a checkpoint may be damaged or hostile, and these
// values size the model, the loader and the optimizer).
void check_settings(const json& cmd, const std::string& checkpoint) {
  auto fail = [&](const std::string& key, const std::string& what) {
    const json& v = cmd[key];
    const std::string value = v.is_string() ? v.get<std::string>() : v.dump().substr(0, 40);
    if (checkpoint.empty()) throw UsageError(fmt::format("--{} {} {}", options_of(key)[0], value, what));
    throw io::FormatError(fmt::format("{}: checkpoint field 'command.{}' is {}: it {}", checkpoint, key, value, what));
  };
  auto integer = [&](const std::string& key, int64_t lo, int64_t hi) {
    if (!cmd.contains(key)) return;
    const json& v = cmd[key];
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail(key, fmt::format("must be an integer in {}..{}", lo, hi));
  };
  auto number = [&](const std::string& key, double lo, double hi) {
    if (!cmd.contains(key)) return;
    const json& v = cmd[key];
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < lo || v.get<double>() > hi)
      fail(key, std::isinf(hi) ? fmt::format("must be a finite number >= {}", lo)
                               : fmt::format("must be a number in [{}, {}]", lo, hi));
  };
  auto one_of = [&](const std::string& key, const std::vector<std::string>& allowed) {
    if (!cmd.contains(key)) return;
    const json& v = cmd[key];
    if (!v.is_string() || std::find(allowed.begin(), allowed.end(), v.get<std::string>()) == allowed.end())
      fail(key, fmt::format("must be one of {}", fmt::join(allowed, ", ")));
  };
  auto boolean = [&](const std::string& key) {
    if (cmd.contains(key) && !cmd[key].is_boolean()) fail(key, "must be true or false");
  };
  integer("epochs", 1, 1'000'000);
  integer("batch_size", 1, 1 << 20);
  number("lr", 0, std::numeric_limits<double>::infinity());  // as SGD: finite, not negative (a huge one diverges, and says so)
  number("momentum", 0, 1);
  if (cmd.contains("seed") && !cmd["seed"].is_number_unsigned() && !(cmd["seed"].is_number_integer() && cmd["seed"].get<int64_t>() >= 0))
    fail("seed", "must be a non-negative integer");
  integer("limit_train", 0, int64_t{1} << 40);
  integer("limit_test", 0, int64_t{1} << 40);
  integer("checkpoint_every", 0, int64_t{1} << 40);
  one_of("arch", {"mlp", "cnn", "mobilenet_v2"});
  number("width", 1e-3, 4);
  one_of("qconfig", {"x86", "fbgemm", "qnnpack"});
  integer("weight_bits", 2, 8);
  integer("activation_bits", 2, 8);
  boolean("fuse");
  boolean("learnable_scale");
  if (cmd.contains("layer_bits") && !cmd["layer_bits"].is_string()) fail("layer_bits", "must be a string");
  // The recipe (counted in batches when the run starts: an epoch count of
  // 2^62 overflowed there) and the QAT schedule.
  one_of("optimizer", {"sgd", "adam", "adamw"});
  number("weight_decay", 0, std::numeric_limits<double>::infinity());
  one_of("lr_schedule", {"constant", "step", "multistep", "cosine"});
  number("warmup", 0, 1e6);
  integer("step_size", 1, 1'000'000);
  number("gamma", 1e-300, 1);
  number("val", 0, 1e9);
  number("clip_grad", 0, std::numeric_limits<double>::infinity());
  boolean("augment");
  number("freeze_bn_after", -1, 1e6);
  number("freeze_observers_after", -1, 1e6);
  number("float_accuracy", 0, 100);
  if (cmd.contains("milestones")) {
    const json& m = cmd["milestones"];
    bool ok = m.is_array() && m.size() <= 1000;
    for (size_t i = 0; ok && i < m.size(); ++i)
      ok = m[i].is_number_integer() && m[i].get<int64_t>() >= 1 && m[i].get<int64_t>() <= 1'000'000;
    if (!ok) fail("milestones", "must be a list of at most 1000 epochs in 1..1000000");
  }
  if (cmd.contains("hidden")) {
    if (!cmd["hidden"].is_string()) fail("hidden", "must be a string such as \"256,128\"");
    std::vector<int64_t> sizes;
    try {
      sizes = parse_hidden(cmd["hidden"].get<std::string>());
    } catch (const std::invalid_argument& e) {
      fail("hidden", "must be layer sizes in 1..8192 separated by commas, e.g. 256,128");
    }
    if (const std::string problem = mlp_size_problem(sizes); !problem.empty()) fail("hidden", problem);
  }
}

}  // namespace

void check_command(const json& cmd) { check_settings(cmd, ""); }

void add_limits(cxxopts::Options& o) {
  o.add_options()("limit-train", "train on the first N training images only (0 = all)",
                  cxxopts::value<int64_t>()->default_value("0"))(
      "limit-test", "evaluate on the first N test images only (0 = all)", cxxopts::value<int64_t>()->default_value("0"));
}

void limits_to_command(const cxxopts::ParseResult& r, json& cmd, bool always) {
  const int64_t train = r["limit-train"].as<int64_t>(), test = r["limit-test"].as<int64_t>();
  if (train < 0 || test < 0) throw UsageError("--limit-train and --limit-test must not be negative");
  if (always || train > 0) cmd["limit_train"] = train;
  if (always || test > 0) cmd["limit_test"] = test;
}

void apply_limits(const json& cmd, FashionMnist& data) {
  for (auto [key, set] : {std::pair{"limit_train", &data.train}, std::pair{"limit_test", &data.test}})
    if (const int64_t n = cmd.value(key, int64_t{0}); n > 0 && n < set->size()) *set = set->slice(0, n);
}

std::optional<Checkpoint> resume_checkpoint(const cxxopts::ParseResult& r, const char* command, json& cmd) {
  if (r["stop-after"].as<int64_t>() < 0) throw UsageError("--stop-after must be 0 (never) or positive");
  if (r["checkpoint-every"].as<int64_t>() < 0) throw UsageError("--checkpoint-every must be 0 or positive");
  if (!r.count("resume")) {
    check_settings(cmd, "");
    return std::nullopt;
  }
  const std::string path = r["resume"].as<std::string>();
  // The run's model comes from the checkpoint: a --from would be ignored.
  if (r.count("from"))
    throw UsageError(fmt::format("--from is not read with --resume (the checkpoint {} holds the model); leave it out", path));
  Checkpoint ck = io::load_checkpoint(path);
  const json given = cmd;
  cmd = json::parse(ck.command_json);
  if (!cmd.is_object() || cmd.value("command", "") != command)
    throw UsageError(fmt::format("--resume {}: a checkpoint of '{}', not of '{}'", path,
                                 cmd.is_object() ? cmd.value("command", "?") : "?", command));
  check_settings(cmd, path);
  // An option given with --resume must agree with the run being continued:
  // the checkpoint's settings are the ones used, so a different value would
  // be ignored. (--checkpoint-every may change: it does not change the run.)
  for (auto& [key, value] : given.items()) {
    if (key == "command" || key == "checkpoint_every" || !cmd.contains(key) || cmd[key] == value) continue;
    for (const std::string& option : options_of(key))
      if (r.count(option))
        throw UsageError(fmt::format("--{} conflicts with --resume {}: the run being resumed has {} = {}, and a resumed "
                                     "run keeps its settings; leave --{} out (or start a new run)",
                                     option, path, key, cmd[key].dump(), option));
  }
  return ck;
}

// ---- The training recipe ----

void add_recipe(cxxopts::Options& o) {
  o.add_options("recipe")("batch-size", "batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "momentum", "SGD momentum", cxxopts::value<double>()->default_value("0.9"))("optimizer", "sgd | adam | adamw", cxxopts::value<std::string>()->default_value("sgd"))(
      "weight-decay", "weight decay (L2 for sgd and adam, decoupled for adamw; never on LSQ step sizes)",
      cxxopts::value<double>()->default_value("0"))(
      "lr-schedule", "constant | step | multistep | cosine, stepped per batch",
      cxxopts::value<std::string>()->default_value("constant"))(
      "warmup", "epochs of linear warm-up from 1% of --lr (may be fractional)", cxxopts::value<double>()->default_value("0"))(
      "step-size", "step: multiply the rate by --gamma every N epochs", cxxopts::value<int>()->default_value("1"))(
      "milestones", "multistep: epochs after warm-up at which the rate is multiplied by --gamma, e.g. 3,6",
      cxxopts::value<std::string>()->default_value(""))(
      "gamma", "step, multistep: the factor", cxxopts::value<double>()->default_value("0.1"))(
      "val", "validation set carved from the training set: N samples, or a fraction below 1; the best epoch is kept",
      cxxopts::value<double>()->default_value("0"))(
      "augment", "random crop (padding 2) and horizontal flip of the training images")(
      "clip-grad", "clip the gradients' global 2-norm to this (0 = off)", cxxopts::value<double>()->default_value("0"));
}

void recipe_to_command(const cxxopts::ParseResult& r, json& cmd) {
  const std::string opt = r["optimizer"].as<std::string>();
  if (opt != "sgd" && opt != "adam" && opt != "adamw")
    throw UsageError(fmt::format("--optimizer must be sgd, adam or adamw, not '{}'", opt));
  const double wd = r["weight-decay"].as<double>(), warmup = r["warmup"].as<double>(), gamma = r["gamma"].as<double>();
  const double val = r["val"].as<double>(), clip = r["clip-grad"].as<double>();
  if (!(wd >= 0 && std::isfinite(wd))) throw UsageError(fmt::format("--weight-decay must be finite and >= 0, not {}", wd));
  const std::string schedule = r["lr-schedule"].as<std::string>();
  try {
    nn::parse_lr_schedule(schedule);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--lr-schedule: {}", e.what()));
  }
  if (!(warmup >= 0 && warmup <= 1e6)) throw UsageError(fmt::format("--warmup must be 0 or more epochs, not {}", warmup));
  if (r["step-size"].as<int>() < 1) throw UsageError("--step-size must be at least 1 epoch");
  if (!(gamma > 0 && gamma <= 1)) throw UsageError(fmt::format("--gamma must be in (0, 1], not {}", gamma));
  std::vector<int64_t> milestones;
  const std::string ms = r["milestones"].as<std::string>();
  if (!ms.empty()) {
    try {
      milestones = parse_hidden(ms);  // positive integers separated by commas
    } catch (const std::invalid_argument&) {
      throw UsageError(fmt::format("--milestones '{}': expected epochs separated by commas, e.g. 3,6", ms));
    }
  }
  if (schedule == "multistep" && milestones.empty()) throw UsageError("--lr-schedule multistep needs --milestones");
  if (schedule != "multistep" && !milestones.empty()) throw UsageError("--milestones is for --lr-schedule multistep");
  if (!(val >= 0 && val <= 1e9) || (val >= 1 && val != std::floor(val)))
    throw UsageError(fmt::format("--val must be a sample count or a fraction below 1, not {}", val));
  if (!(clip >= 0 && std::isfinite(clip))) throw UsageError(fmt::format("--clip-grad must be finite and >= 0, not {}", clip));
  if (schedule == "cosine" && cmd.contains("epochs") && cmd["epochs"].is_number() && warmup >= cmd["epochs"].get<double>())
    throw UsageError(fmt::format("--warmup {} epochs leaves no epoch of the {} for the cosine", warmup, cmd["epochs"].dump()));
  cmd.update({{"optimizer", opt}, {"weight_decay", wd}, {"lr_schedule", schedule}, {"warmup", warmup},
              {"step_size", r["step-size"].as<int>()}, {"milestones", milestones}, {"gamma", gamma}, {"val", val},
              {"augment", r.count("augment") > 0}, {"clip_grad", clip}});
}

namespace {

std::unique_ptr<nn::Optimizer> make_optimizer(nn::Module& model, const json& cmd) {
  const double lr = cmd["lr"].get<double>(), wd = cmd.value("weight_decay", 0.0);
  const std::string kind = cmd.value("optimizer", "sgd");
  // Checkpoints from before the recipe options hold one group in model order.
  std::vector<nn::ParamGroup> groups = cmd.contains("optimizer") ? quant::lsq_param_groups(model)
                                                                 : nn::single_group(model.parameters());
  if (kind == "adam") return std::make_unique<nn::Adam>(std::move(groups), nn::AdamOptions{.lr = lr, .weight_decay = wd});
  if (kind == "adamw") return std::make_unique<nn::AdamW>(std::move(groups), nn::AdamWOptions{.lr = lr, .weight_decay = wd});
  if (kind != "sgd") throw std::runtime_error(fmt::format("unknown optimizer '{}'", kind));
  return std::make_unique<nn::SGD>(std::move(groups),
                                   nn::SGDOptions{.lr = lr, .momentum = cmd["momentum"].get<double>(), .weight_decay = wd});
}

}  // namespace

int64_t validation_count(const json& cmd, int64_t n) {
  const double val = cmd.value("val", 0.0);
  if (!(val > 0)) return 0;
  const int64_t count = val < 1 ? static_cast<int64_t>(std::llround(val * static_cast<double>(n))) : static_cast<int64_t>(val);
  if (count < 1 || count >= n)
    throw UsageError(
        fmt::format("--val {} leaves {} of {} training samples for validation; it needs 1 to {}", val, count, n, n - 1));
  return count;
}

void check_training_memory(nn::Module& model, const io::Dataset& data, int64_t batch_size, const std::string& option) {
  const size_t limit = tensor_memory_limit();
  if (limit == 0 || data.size() == 0) return;
  // One sample through the model in eval mode, without autograd, observers
  // off: nothing changes. What it allocates, layer after layer, is what a
  // training step keeps of each sample for the backward pass, at least.
  std::vector<std::pair<quant::ObserverBase*, bool>> observers;
  for (auto& [name, m] : model.named_modules())
    if (auto* o = dynamic_cast<quant::ObserverBase*>(m)) observers.emplace_back(o, o->enabled);
  std::vector<std::pair<nn::Module*, bool>> modes;  // each module's own, parents first (a frozen BatchNorm stays frozen)
  for (auto& [name, m] : model.named_modules()) modes.emplace_back(m, m->is_training());
  struct Restore {
    std::vector<std::pair<nn::Module*, bool>>& modes;
    std::vector<std::pair<quant::ObserverBase*, bool>>& observers;
    ~Restore() {
      for (auto& [m, on] : modes) m->train(on);
      for (auto& [o, on] : observers) o->enabled = on;
    }
  } restore{modes, observers};
  for (auto& [o, on] : observers) o->enabled = false;
  model.eval();
  io::DataLoader loader(data.slice(0, 1), {.batch_size = 1, .shuffle = false, .as_images = takes_images(model)});
  io::Batch one;
  loader.next(one);
  size_t per_sample = 0;
  try {
    NoGradGuard no_grad;
    const size_t before = tensor_memory_allocated();
    (void)model(one.images);
    per_sample = tensor_memory_allocated() - before;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception&) {
    // A model that cannot run in eval mode yet (a model prepared for QAT whose
    // fake quants have seen no training batch): qat and lowbit measure the
    // float model before they prepare it; here the tensor memory limit alone
    // stands guard.
    return;
  }
  const double need = static_cast<double>(per_sample) * static_cast<double>(batch_size);
  const double room = static_cast<double>(limit) - static_cast<double>(std::min(limit, tensor_memory_in_use()));
  if (need > room) {
    constexpr double kGiB = 1ull << 30;
    throw UsageError(fmt::format(
        "{} {}: a training step keeps at least {:.1f} GiB of activations ({:.0f} KiB a sample, measured), more than the "
        "{:.1f} GiB of tensor memory left ({}); use at most {}",
        option, batch_size, need / kGiB, static_cast<double>(per_sample) / 1024, room / kGiB, g_memory_limit_source,
        std::max<int64_t>(1, static_cast<int64_t>(room / static_cast<double>(std::max<size_t>(per_sample, 1))))));
  }
}

void check_batch_fits(const json& cmd, int64_t n) {
  // A batch larger than the training set is not a batch of that size: the
  // one batch of an epoch would be the whole set (and a batch of 60000
  // images through the cnn asked for 5.6 GiB at once, after the data was read).
  const int64_t val = validation_count(cmd, n), batch_size = cmd["batch_size"].get<int64_t>();
  const int64_t ranks = dist::world().size(), per_rank = (n - val) / ranks;
  if (batch_size > per_rank)
    throw UsageError(fmt::format("--batch-size {} is more than the {} training samples{}{}; use at most {}", batch_size,
                                 per_rank, val > 0 ? fmt::format(" left beside the {} of --val", val) : "",
                                 ranks > 1 ? " of each rank" : "", per_rank));
}

TrainState run_training(const cxxopts::ParseResult& r, nn::Module& model, const FashionMnist& data, const json& cmd,
                        const std::optional<Checkpoint>& ck, TrainOptions& topt) {
  const uint64_t seed = cmd["seed"].get<uint64_t>();
  const int epochs = cmd["epochs"].get<int>();
  // The validation split: seeded by the run's seed, carved from the training set.
  std::optional<io::TrainValidationSplit> split;
  if (const int64_t count = validation_count(cmd, data.train.size()); count > 0)
    split = io::split_validation(data.train, count, seed);
  const io::Dataset& train_set = split ? split->train : data.train;
  check_batch_fits(cmd, data.train.size());
  const int64_t batch_size = cmd["batch_size"].get<int64_t>();
  check_training_memory(model, train_set, batch_size);
  // Data parallel: --batch-size is per rank; every rank shuffles alike and takes its shard.
  const io::DataLoaderOptions lopt{.batch_size = batch_size, .seed = seed,
                                   .as_images = takes_images(model), .rank = dist::world().rank(),
                                   .world_size = dist::world().size()};
  io::DataLoader loader(train_set, lopt);
  std::unique_ptr<nn::Optimizer> optimizer = make_optimizer(model, cmd);

  // The learning-rate schedule, counted in batches; none at a constant rate without warm-up.
  const int64_t per_epoch = loader.num_batches();
  const std::string kind = cmd.value("lr_schedule", "constant");
  const int64_t warmup = std::llround(cmd.value("warmup", 0.0) * static_cast<double>(per_epoch));
  std::shared_ptr<nn::LRScheduler> schedule;
  if (kind != "constant" || warmup > 0) {
    nn::LRScheduleOptions so{.kind = nn::parse_lr_schedule(kind), .total_steps = per_epoch * epochs, .warmup_steps = warmup,
                             .step_size = per_epoch * cmd.value("step_size", 1), .gamma = cmd.value("gamma", 0.1)};
    for (int64_t m : cmd.value("milestones", std::vector<int64_t>{})) so.milestones.push_back(m * per_epoch);
    if (kind == "cosine" && warmup >= so.total_steps)
      throw UsageError(fmt::format("--warmup {} epochs leaves no epoch of the {} for the cosine", cmd.value("warmup", 0.0), epochs));
    schedule = nn::make_lr_scheduler(*optimizer, so);
  }

  // Augmentation, with a generator of its own (seeded apart from the loader's).
  std::optional<io::Augmenter> augment;
  if (cmd.value("augment", false)) {
    const Shape& s = train_set.images.shape();
    const io::ImageShape shape = s.size() == 4 ? io::ImageShape{s[1], s[2], s[3]} : io::ImageShape{1, s[1], s[2]};
    augment.emplace(shape, io::AugmentOptions{.crop_padding = 2, .horizontal_flip = true, .fill = io::normalized_pixel(0, lopt)},
                    seed + 0x9e3779b97f4a7c15ULL);
  }

  TrainState st;
  if (ck) {
    io::restore_checkpoint(*ck, *optimizer, schedule.get(), augment ? &*augment : nullptr, &loader,
                           r["resume"].as<std::string>());
    st = ck->state;
  }
  topt.epochs = epochs;
  topt.progress = progress_wanted(r.count("progress") > 0);
  topt.schedule = schedule.get();
  topt.clip_grad = cmd.value("clip_grad", 0.0);
  topt.augment = augment ? &*augment : nullptr;
  topt.validation = split ? &split->validation : nullptr;
  train(model, *optimizer, loader, data.test, topt, st);
  if (!st.interrupted && st.history.empty())
    throw std::runtime_error("training ran no epoch; nothing to save");  // io::load_checkpoint rules this out
  return st;
}

}  // namespace tq::cli

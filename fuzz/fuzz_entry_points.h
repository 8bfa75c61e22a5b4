// What each fuzz target does with its input (docs/reliability.md). Shared by
// the libFuzzer targets (fuzz/fuzz_*.cpp, clang build) and by
// tests/test_fuzz_regressions.cpp (the normal build), which feeds every
// committed corpus and regression file through the same code.
//
// The contract under test (docs/design.md §5, Errors): bad bytes may raise any
// std::exception; they must not crash, hang, trip a sanitizer, or allocate
// without bound. On top of that, each entry point checks a few properties of
// what it accepted (a round trip, plain vs gzip); a violated property is
// returned as a message, which the fuzz targets turn into an abort.
#pragma once

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/idx.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "io/training_state.h"
#include "quant/qat_schedule.h"
#include "tinyqat.h"

namespace tq::fuzzing {

// Empty when every checked property held, else what went wrong.
using Problem = std::string;

inline constexpr const char* kInputName = "fuzz-input";

// ---- Helpers ----

// The bytes wrapped in a single-member gzip stream (in memory, no file).
inline std::string gzip_bytes(const uint8_t* data, size_t size) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  std::string out(deflateBound(&zs, static_cast<uLong>(size)) + 32, '\0');
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (r != Z_STREAM_END) throw std::runtime_error("deflate did not finish");
  return out;
}

// Same dtype, shape and element bytes (NaNs compare by their bits).
inline bool same_tensor(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.dtype() != b.dtype() || !(a.shape() == b.shape())) return false;
  const Tensor ca = kernels::contiguous(a), cb = kernels::contiguous(b);
  const size_t bytes = static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype());
  return bytes == 0 || std::memcmp(ca.raw_data(), cb.raw_data(), bytes) == 0;
}

// The input width of the model's first Linear-like layer, if it has one.
inline std::optional<int64_t> first_layer_width(const nn::Module& model) {
  for (auto& [path, m] : model.named_modules()) {
    if (auto* l = dynamic_cast<const nn::Linear*>(m)) return l->in_features;
    if (auto* q = dynamic_cast<const quant::QuantizedLinear*>(m)) return q->in_features;
    if (auto* d = dynamic_cast<const quant::DynamicQuantizedLinear*>(m)) return d->in_features;
  }
  return std::nullopt;
}

// A fixed (2, width) f32 input with positive, negative and zero values.
inline Tensor sample_input(int64_t width) {
  std::vector<float> v(static_cast<size_t>(2 * width));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)) * 3.0);
  return from_vector(v, {2, width});
}

// Runs the model; any std::exception is an accepted outcome (nullopt).
inline std::optional<Tensor> try_forward(nn::Module& model, const Tensor& x) {
  try {
    NoGradGuard no_grad;
    return model(x);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// ---- Entry points ----

// parse_idx on the bytes as they are, and on the same bytes gzip-wrapped in
// memory (so the fuzzer reaches the gzip reader with valid deflate streams of
// fuzzed content). Property: both give the same answer.
inline Problem run_idx(const uint8_t* data, size_t size) {
  std::optional<Tensor> plain;
  try {
    plain = io::parse_idx(data, size, kInputName);
  } catch (const std::exception&) {
  }
  if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) return {};  // already gzip: wrapping it again means nothing
  const std::string gz = gzip_bytes(data, size);
  std::optional<Tensor> unzipped;
  try {
    unzipped = io::parse_idx(gz.data(), gz.size(), std::string(kInputName) + ".gz");
  } catch (const std::exception&) {
  }
  if (plain.has_value() != unzipped.has_value())
    return plain ? "the plain file is accepted but its gzip-wrapped copy is rejected"
                 : "the plain file is rejected but its gzip-wrapped copy is accepted";
  if (plain && !same_tensor(*plain, *unzipped)) return "the plain file and its gzip-wrapped copy read differently";
  return {};
}

// parse_safetensors. Property: what was accepted serializes and parses back
// to the same tensors and metadata.
inline Problem run_safetensors(const uint8_t* data, size_t size) {
  io::SafetensorsFile file;
  try {
    file = io::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), kInputName);
  } catch (const std::exception&) {
    return {};
  }
  io::SafetensorsFile again;
  try {
    again = io::parse_safetensors(io::serialize_safetensors(file), "reserialized");
  } catch (const std::exception& e) {
    return std::string("an accepted file does not survive serialize + parse: ") + e.what();
  }
  if (again.metadata != file.metadata) return "metadata changed in serialize + parse";
  if (again.tensors.size() != file.tensors.size()) return "tensor count changed in serialize + parse";
  for (auto& [name, t] : file.tensors) {
    auto it = again.tensors.find(name);
    if (it == again.tensors.end() || !same_tensor(t, it->second)) return "tensor '" + name + "' changed in serialize + parse";
  }
  return {};
}

// parse_safetensors, build_model, then (if a model came out) forward passes
// in eval and train mode on an input of the first layer's width and on one of
// the wrong width, then convert and a forward pass of the int8 model. Property: a built model saves and builds again, and the
// rebuilt model computes what the first one computed.
inline Problem run_model(const uint8_t* data, size_t size) {
  std::shared_ptr<nn::Module> model;
  try {
    const io::SafetensorsFile file =
        io::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), kInputName);
    model = io::build_model(file, kInputName);
  } catch (const std::exception&) {
    return {};
  }
  std::shared_ptr<nn::Module> rebuilt;
  try {
    rebuilt = io::build_model(
        io::parse_safetensors(io::serialize_safetensors(io::model_to_safetensors(*model)), "resaved"), "resaved");
  } catch (const std::exception& e) {
    return std::string("a model built from a file does not save and build again: ") + e.what();
  }
  const int64_t width = first_layer_width(*model).value_or(4);
  const Tensor x = sample_input(width);
  model->eval();
  rebuilt->eval();
  const std::optional<Tensor> y = try_forward(*model, x);
  const std::optional<Tensor> y_again = try_forward(*rebuilt, x);
  if (y.has_value() != y_again.has_value()) return "the model and its saved + rebuilt copy disagree on running";
  if (y && !same_tensor(*y, *y_again)) return "the model and its saved + rebuilt copy compute different outputs";
  try_forward(*model, sample_input(width + 1));
  model->train();
  try_forward(*model, x);
  // A loaded QAT or calibrated model is converted next: its observers'
  // state came from the file.
  try {
    quant::convert(*model);
  } catch (const std::exception&) {
    return {};
  }
  model->eval();
  try_forward(*model, x);
  return {};
}

// ---- Checkpoints ----

// A tiny training run over synthetic data, built from a run's settings as
// the command line builds one (optimizer sgd | adam | adamw over the LSQ
// parameter groups, a learning-rate schedule counted in batches, the
// augmenter): what a checkpoint of it is restored into. make_corpus uses it
// to write the seed checkpoints, run_checkpoint to resume them.
struct TinyRun {
  std::shared_ptr<nn::Module> model;
  io::Dataset data;
  std::unique_ptr<io::DataLoader> loader;
  std::unique_ptr<nn::Optimizer> optimizer;
  std::shared_ptr<nn::LRScheduler> schedule;
  std::unique_ptr<io::Augmenter> augment;
  io::TrainState state;
  std::string command_json;

  // One training step on the next batch (a new epoch when this one is over),
  // counted as the command line's training loop counts it.
  void step() {
    io::Batch batch;
    if (!loader->next(batch)) {
      state.history.push_back({state.loss_sum / static_cast<double>(std::max<int64_t>(state.step_in_epoch, 1)), 10.0, 0.0, -1});
      ++state.epoch;
      state.step_in_epoch = 0;
      state.loss_sum = 0;
      if (!loader->next(batch)) throw std::runtime_error("TinyRun: an epoch without batches");
    }
    if (augment) augment->apply_(batch.images);
    optimizer->zero_grad();
    Tensor loss = cross_entropy((*model)(batch.images), batch.labels);
    const double l = loss.item();
    if (!std::isfinite(l)) throw std::runtime_error("TinyRun: the loss is not finite");
    loss.backward();
    optimizer->step();
    if (schedule) schedule->step();
    state.loss_sum += l;
    ++state.step_in_epoch;
    ++state.global_step;
  }
  io::SafetensorsFile checkpoint() const {
    return io::checkpoint_to_safetensors(*model, *optimizer, schedule.get(), augment.get(), loader->state(), state,
                                         command_json);
  }
};

// Samples of `width` u8 pixels, labels in 0..classes-1.
inline io::Dataset tiny_data(int64_t samples, int64_t width, int classes) {
  std::vector<float> pixels(static_cast<size_t>(samples * width)), labels(static_cast<size_t>(samples));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 53 + 7) % 256);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<float>(i % static_cast<size_t>(classes));
  io::Dataset d;
  d.images = kernels::to_dtype(from_vector(pixels, {samples, 1, width}), DType::u8);
  d.labels = kernels::to_dtype(from_vector(labels, {samples}), DType::u8);
  d.num_classes = classes;
  return d;
}

// The run `command` describes (JSON object: optimizer, lr, momentum,
// weight_decay, lr_schedule, warmup in epochs, step_size, gamma, milestones,
// augment, seed) over `model`, with `samples` samples in batches of
// `batch_size`. Throws std::exception on settings the library refuses.
inline TinyRun make_tiny_run(std::shared_ptr<nn::Module> model, const nlohmann::json& command, int64_t samples,
                             int64_t batch_size, bool shuffle = true, bool drop_last = false) {
  TinyRun run;
  run.model = std::move(model);
  run.command_json = command.dump();
  const int64_t width = first_layer_width(*run.model).value_or(4);
  int classes = 3;
  for (auto& [path, m] : run.model->named_modules())
    if (auto* l = dynamic_cast<const nn::Linear*>(m)) classes = static_cast<int>(std::clamp<int64_t>(l->out_features, 1, 255));
  run.data = tiny_data(samples, width, classes);
  run.loader = std::make_unique<io::DataLoader>(
      run.data, io::DataLoaderOptions{.batch_size = batch_size, .shuffle = shuffle, .drop_last = drop_last,
                                      .seed = command.value("seed", uint64_t{0})});
  const double lr = command.value("lr", 0.01), wd = command.value("weight_decay", 0.0);
  const std::string kind = command.value("optimizer", "sgd");
  std::vector<nn::ParamGroup> groups = quant::lsq_param_groups(*run.model);
  if (kind == "adam") run.optimizer = std::make_unique<nn::Adam>(std::move(groups), nn::AdamOptions{.lr = lr, .weight_decay = wd});
  else if (kind == "adamw") run.optimizer = std::make_unique<nn::AdamW>(std::move(groups), nn::AdamWOptions{.lr = lr, .weight_decay = wd});
  else run.optimizer = std::make_unique<nn::SGD>(std::move(groups), nn::SGDOptions{.lr = lr, .momentum = command.value("momentum", 0.9), .weight_decay = wd});
  // The settings in epochs, held to the ranges the command line allows, so
  // that counting them in batches cannot overflow.
  auto epochs_setting = [&](const char* key, int64_t fallback) {
    const int64_t v = command.value(key, fallback);
    if (v < 1 || v > 1'000'000) throw std::invalid_argument(std::string(key) + " out of range");
    return v;
  };
  const int64_t per_epoch = run.loader->num_batches();
  const std::string schedule = command.value("lr_schedule", "constant");
  const double warmup_epochs = command.value("warmup", 0.0);
  if (!(warmup_epochs >= 0 && warmup_epochs <= 1e6)) throw std::invalid_argument("warmup out of range");
  const int64_t warmup = std::llround(warmup_epochs * static_cast<double>(per_epoch));
  if (schedule != "constant" || warmup > 0) {
    nn::LRScheduleOptions so{.kind = nn::parse_lr_schedule(schedule), .total_steps = per_epoch * epochs_setting("epochs", 1),
                             .warmup_steps = warmup, .step_size = per_epoch * epochs_setting("step_size", 1),
                             .gamma = command.value("gamma", 0.1)};
    for (int64_t m : command.value("milestones", std::vector<int64_t>{})) {
      if (m < 1 || m > 1'000'000) throw std::invalid_argument("milestone out of range");
      so.milestones.push_back(m * per_epoch);
    }
    run.schedule = nn::make_lr_scheduler(*run.optimizer, so);
  }
  if (command.value("augment", false))
    run.augment = std::make_unique<io::Augmenter>(io::ImageShape{1, 1, width},
                                                  io::AugmentOptions{.crop_padding = 1, .horizontal_flip = true},
                                                  command.value("seed", uint64_t{0}) + 1);
  return run;
}

// parse_checkpoint; a checkpoint that is accepted is restored into the run
// its settings describe (over synthetic data of its loader's size, when that
// is small), written again, and resumed for a few training steps. Property:
// what is accepted and restored saves and parses back; the resumed steps
// either run or throw a std::exception (never undefined behaviour).
inline Problem run_checkpoint(const uint8_t* data, size_t size) {
  io::Checkpoint c;
  try {
    c = io::parse_checkpoint(io::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), kInputName),
                             kInputName);
  } catch (const std::exception&) {
    return {};
  }
  if (c.loader.num_samples > 256) return {};  // synthetic data of that size would only slow the fuzzer
  const Generator::State saved_rng = default_generator().state();
  Problem problem;
  try {
    TinyRun run = make_tiny_run(c.model, nlohmann::json::parse(c.command_json), c.loader.num_samples,
                                c.loader.batch_size, c.loader.shuffle, c.loader.drop_last);
    io::restore_checkpoint(c, *run.optimizer, run.schedule.get(), run.augment.get(), run.loader.get(), kInputName);
    run.state = c.state;
    default_generator().set_state(c.global_rng);
    try {
      io::parse_checkpoint(io::parse_safetensors(io::serialize_safetensors(run.checkpoint()), "resaved"), "resaved");
    } catch (const std::exception& e) {
      problem = std::string("a restored checkpoint does not save and parse again: ") + e.what();
    }
    if (problem.empty()) {
      for (int i = 0; i < 3; ++i) run.step();
      if (!run.state.best.empty()) run.state.best.restore(*run.model);
    }
  } catch (const std::exception&) {
  }
  default_generator().set_state(saved_rng);
  return problem;
}

}  // namespace tq::fuzzing


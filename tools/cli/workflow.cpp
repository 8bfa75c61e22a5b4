#include "workflow.h"

#include <cblas.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "io/model_file.h"
#include "quant/calibrate.h"
#include "nn/activation.h"
#include "nn/clip_grad.h"
#include "nn/linear.h"
#include "quant/dynamic_linear.h"
#include "quant/layer.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"
#include "tensor/ops.h"

namespace tq::cli {

static double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

std::shared_ptr<nn::Sequential> make_mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t classes) {
  std::vector<int64_t> sizes{in};
  sizes.insert(sizes.end(), hidden.begin(), hidden.end());
  sizes.push_back(classes);
  return nn::make_mlp(sizes);
}

std::vector<int64_t> parse_hidden(const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (...) {
      used = 0;
    }
    // At most 8192 units a layer: 65536,65536 asked for 16 GiB and ended in a bare bad_alloc.
    if (part.empty() || used != part.size() || v <= 0 || v > 8192)
      throw std::invalid_argument(
          fmt::format("--hidden '{}': expected layer sizes in 1..8192 separated by commas, e.g. 256,128", text));
    out.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// ---- Progress ----

bool progress_wanted(bool flag) { return flag || ::isatty(STDERR_FILENO); }

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), start_(now_seconds()) {}

void Progress::advance(int64_t n, const std::string& note) {
  done_ += n;
  if (!enabled_) return;
  const double t = now_seconds();
  if (t - last_draw_ < 0.1 && done_ < total_) return;  // at most ten redraws a second
  last_draw_ = t;
  const double elapsed = t - start_, rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0;
  const int width = 24, filled = total_ ? static_cast<int>(width * done_ / total_) : width;
  std::fprintf(stderr, "\r%-10s [%s%s] %5.1f%% %lld/%lld %.0f it/s ETA %.0fs %s\033[K", label_.c_str(),
               std::string(static_cast<size_t>(filled), '#').c_str(), std::string(static_cast<size_t>(width - filled), '.').c_str(),
               total_ ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0, static_cast<long long>(done_),
               static_cast<long long>(total_), rate, eta, note.c_str());
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) std::fprintf(stderr, "\r\033[K");
}

// ---- Training and evaluation ----

void train(nn::Module& model, nn::Optimizer& optimizer, io::DataLoader& loader, const io::Dataset& test,
           const TrainOptions& o, TrainState& st) {
  io::Batch batch;
  int64_t steps_this_run = 0;
  const std::vector<Tensor>& params = optimizer.params();
  while (st.epoch < o.epochs) {
    model.train();
    const double t0 = now_seconds();
    Progress bar(fmt::format("{} {}/{}", o.label, st.epoch + 1, o.epochs), loader.num_batches(), o.progress);
    bar.advance(st.step_in_epoch);
    while (loader.next(batch)) {
      // A diverging run shows up as a loss that is not finite, or earlier,
      // in QAT, as an observer that saw an infinite range: either way the run
      // stops, naming where, and the last checkpoint stays as it was.
      auto diverged = [&](const std::string& what) {
        return std::runtime_error(fmt::format("{} epoch {}, step {}: {}; stopping (try a lower --lr; the last "
                                              "checkpoint, if any, is kept)",
                                              o.label, st.epoch + 1, st.step_in_epoch + 1, what));
      };
      double l = 0;
      try {
        if (o.before_step)
          o.before_step(model, st.epoch + static_cast<double>(st.step_in_epoch) / static_cast<double>(loader.num_batches()));
        if (o.augment) o.augment->apply_(batch.images);
        optimizer.zero_grad();
        Tensor loss = cross_entropy(model(batch.images), batch.labels);
        l = loss.item();
        if (!std::isfinite(l)) throw diverged(fmt::format("the loss became {}", std::isnan(l) ? "nan" : l > 0 ? "inf" : "-inf"));
        loss.backward();
        if (o.clip_grad > 0) nn::clip_grad_norm_(params, o.clip_grad, {.error_if_nonfinite = true});
        optimizer.step();
        if (o.schedule) o.schedule->step();
      } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        if (what.find("not finite") != std::string::npos || what.find("NaN") != std::string::npos) throw diverged(what);
        throw std::invalid_argument(fmt::format("{} epoch {}, step {}: {}", o.label, st.epoch + 1, st.step_in_epoch + 1, what));
      }
      st.loss_sum += l;
      ++st.step_in_epoch;
      ++st.global_step;
      ++steps_this_run;
      bar.advance(1, fmt::format("loss {:.4f}", st.loss_sum / static_cast<double>(st.step_in_epoch)));
      if (o.checkpoint_every > 0 && st.global_step % o.checkpoint_every == 0)
        save_checkpoint(o.checkpoint_path, model, optimizer, loader, st, o);
      if (o.stop_after > 0 && steps_this_run >= o.stop_after) {
        bar.finish();
        st.interrupted = true;
        return;
      }
    }
    bar.finish();
    EpochStats s;
    s.loss = st.step_in_epoch ? st.loss_sum / static_cast<double>(st.step_in_epoch) : 0;
    s.seconds = now_seconds() - t0;
    if (o.validation) {
      s.test_accuracy = -1;  // the test set is touched once, at the end
      s.val_accuracy = evaluate(model, *o.validation).accuracy;
      if (s.val_accuracy > st.best_val_accuracy) {
        st.best_val_accuracy = s.val_accuracy;
        st.best_epoch = st.epoch + 1;
        st.best = nn::ModelSnapshot::take(model);
      }
    } else {
      s.test_accuracy = evaluate(model, test).accuracy;
    }
    st.history.push_back(s);
    ++st.epoch;
    st.step_in_epoch = 0;
    st.loss_sum = 0;
  }
  if (o.validation && !st.best.empty()) st.best.restore(model);
  model.eval();
  st.test_accuracy = o.validation ? evaluate(model, test).accuracy : st.history.empty() ? 0 : st.history.back().test_accuracy;
}

std::vector<EpochStats> train(nn::Module& model, io::DataLoader& loader, const io::Dataset& test, const TrainOptions& o) {
  nn::SGD optimizer(model.parameters(), {.lr = o.lr, .momentum = o.momentum});
  TrainState st;
  train(model, optimizer, loader, test, o, st);
  return st.history;
}

// ---- Checkpoints ----

void save_checkpoint(const std::string& path, const nn::Module& model, const nn::Optimizer& optimizer,
                     const io::DataLoader& loader, const TrainState& st, const TrainOptions& o) {
  io::SafetensorsFile file = io::model_to_safetensors(model);
  io::put_state(file, "__optimizer__", optimizer.state_dict());
  if (o.schedule) io::put_state(file, "__lr_scheduler__", o.schedule->state_dict());
  for (const auto& [name, t] : st.best.parameters()) file.tensors["__best__." + name] = t;
  for (const auto& [name, t] : st.best.buffers()) file.tensors["__best__." + name] = t;
  const io::LoaderState ls = loader.state();
  const Generator::State g = default_generator().state();
  auto rng_json = [](const Generator::State& r) {
    return nlohmann::json{{"s", {r.s[0], r.s[1], r.s[2], r.s[3]}}, {"has_spare", r.has_spare}, {"spare", r.spare}};
  };
  nlohmann::json history = nlohmann::json::array();
  for (auto& e : st.history)
    history.push_back({{"loss", e.loss}, {"accuracy", e.test_accuracy}, {"seconds", e.seconds}, {"val_accuracy", e.val_accuracy}});
  nlohmann::json ck = {
      {"epoch", st.epoch}, {"step_in_epoch", st.step_in_epoch}, {"global_step", st.global_step}, {"loss_sum", st.loss_sum},
      {"history", history}, {"parameters", optimizer.params().size()},
      {"loader", {{"epoch", ls.epoch}, {"next_batch", ls.next_batch}, {"rng", rng_json(ls.rng)}, {"num_samples", ls.num_samples},
                  {"batch_size", ls.batch_size}, {"shuffle", ls.shuffle}, {"drop_last", ls.drop_last}}},
      {"global_rng", rng_json(g)}, {"command", nlohmann::json::parse(o.command_json)}};
  if (!st.best.empty()) {
    ck["best"] = {{"epoch", st.best_epoch}, {"val_accuracy", st.best_val_accuracy}};
    nlohmann::json names = nlohmann::json::array(), buffers = nlohmann::json::array();
    for (const auto& [name, t] : st.best.parameters()) names.push_back(name);
    for (const auto& [name, t] : st.best.buffers()) buffers.push_back(name);
    ck["best"]["parameters"] = names;
    ck["best"]["buffers"] = buffers;
  }
  if (o.augment) ck["augment_rng"] = rng_json(o.augment->state());
  file.metadata["tinyqat_checkpoint"] = ck.dump();
  io::save_safetensors(path, file);
}

Checkpoint load_checkpoint(const std::string& path) {
  const io::SafetensorsFile file = io::load_safetensors(path);
  auto it = file.metadata.find("tinyqat_checkpoint");
  if (it == file.metadata.end()) throw io::FormatError(fmt::format("{}: not a checkpoint (no 'tinyqat_checkpoint' metadata)", path));
  Checkpoint c;
  try {
    const auto j = nlohmann::json::parse(it->second);
    auto rng = [](const nlohmann::json& r) {
      Generator::State s{};
      for (int i = 0; i < 4; ++i) s.s[i] = r.at("s").at(static_cast<size_t>(i)).get<uint64_t>();
      s.has_spare = r.at("has_spare").get<bool>();
      s.spare = r.at("spare").get<double>();
      return s;
    };
    c.state.epoch = j.at("epoch").get<int>();
    c.state.step_in_epoch = j.at("step_in_epoch").get<int64_t>();
    c.state.global_step = j.at("global_step").get<int64_t>();
    c.state.loss_sum = j.at("loss_sum").get<double>();
    for (auto& e : j.at("history"))
      c.state.history.push_back({e.at("loss").get<double>(), e.at("accuracy").get<double>(), e.at("seconds").get<double>(),
                                 e.value("val_accuracy", -1.0)});
    const auto& l = j.at("loader");
    c.loader.epoch = l.at("epoch").get<uint64_t>();
    c.loader.next_batch = l.at("next_batch").get<int64_t>();
    c.loader.rng = rng(l.at("rng"));
    c.loader.num_samples = l.at("num_samples").get<int64_t>();
    c.loader.batch_size = l.at("batch_size").get<int64_t>();
    c.loader.shuffle = l.at("shuffle").get<bool>();
    c.loader.drop_last = l.at("drop_last").get<bool>();
    c.global_rng = rng(j.at("global_rng"));
    c.command_json = j.at("command").dump();
    const size_t n = j.at("parameters").get<size_t>();
    if (n > 1'000'000) throw io::FormatError(fmt::format("{}: implausible parameter count {}", path, n));
    if (io::has_state(file, "__optimizer__")) {
      c.optimizer = io::get_state(file, "__optimizer__", path);
      if (io::has_state(file, "__lr_scheduler__")) c.schedule = io::get_state(file, "__lr_scheduler__", path);
    } else {  // written before optimizers had a state of their own: SGD's momentum buffers
      c.momentum.resize(n);
      for (size_t i = 0; i < n; ++i)
        if (auto t = file.tensors.find(fmt::format("__optimizer__.momentum.{}", i)); t != file.tensors.end()) c.momentum[i] = t->second;
    }
    if (j.contains("augment_rng")) c.augment_rng = rng(j.at("augment_rng"));
    if (j.contains("best")) {
      const auto& b = j.at("best");
      c.state.best_epoch = b.at("epoch").get<int>();
      c.state.best_val_accuracy = b.at("val_accuracy").get<double>();
      std::vector<std::pair<std::string, Tensor>> params, buffers;
      auto take = [&](const nlohmann::json& names, std::vector<std::pair<std::string, Tensor>>& out) {
        for (const auto& name : names) {
          auto t = file.tensors.find("__best__." + name.get<std::string>());
          if (t == file.tensors.end())
            throw io::FormatError(fmt::format("{}: checkpoint field 'best' names '{}', which the file lacks", path,
                                              name.get<std::string>()));
          out.emplace_back(name.get<std::string>(), t->second);
        }
      };
      take(b.at("parameters"), params);
      take(b.at("buffers"), buffers);
      c.state.best = nn::ModelSnapshot::from(std::move(params), std::move(buffers));
    }
    // Every counter is checked here, where it is read: a checkpoint may be
    // corrupt or hostile, and the training loop trusts these.
    auto bad = [&](const char* field, const std::string& what) {
      return io::FormatError(fmt::format("{}: checkpoint field '{}' {}", path, field, what));
    };
    const auto& command = j.at("command");
    if (!command.is_object() || !command.contains("epochs") || !command.at("epochs").is_number_integer())
      throw bad("command.epochs", "is missing or not an integer");
    const int64_t epochs = command.at("epochs").get<int64_t>();
    if (epochs < 1 || epochs > 1'000'000) throw bad("command.epochs", fmt::format("is {}, outside 1..1000000", epochs));
    // Checkpoints are written inside an epoch, so one that completed every
    // epoch of its run cannot exist.
    if (c.state.epoch < 0 || c.state.epoch >= epochs)
      throw bad("epoch", fmt::format("is {}, outside 0..{} (the run has {} epochs)", c.state.epoch, epochs - 1, epochs));
    if (c.state.history.size() != static_cast<size_t>(c.state.epoch))
      throw bad("history", fmt::format("has {} entries for {} completed epochs", c.state.history.size(), c.state.epoch));
    // An accuracy is a percentage, or -1: not measured (the test set with a validation set; the validation set without).
    auto percent = [](double a) { return a == -1 || (a >= 0 && a <= 100); };
    for (const auto& e : c.state.history)
      if (!std::isfinite(e.loss) || !std::isfinite(e.seconds) || !percent(e.test_accuracy) || !percent(e.val_accuracy) ||
          e.seconds < 0)
        throw bad("history", "holds a loss, accuracy or time that is not finite or out of range");
    if (c.state.best_epoch < 0 || c.state.best_epoch > c.state.epoch || !percent(c.state.best_val_accuracy))
      throw bad("best", fmt::format("names epoch {} (accuracy {}) of {} completed", c.state.best_epoch,
                                    c.state.best_val_accuracy, c.state.epoch));
    if (c.state.step_in_epoch < 0) throw bad("step_in_epoch", fmt::format("is negative ({})", c.state.step_in_epoch));
    if (c.state.global_step < c.state.step_in_epoch)
      throw bad("global_step", fmt::format("is {}, less than step_in_epoch {}", c.state.global_step, c.state.step_in_epoch));
    if (!std::isfinite(c.state.loss_sum) || c.state.loss_sum < 0)
      throw bad("loss_sum", fmt::format("is {}; a sum of losses is finite and not negative", c.state.loss_sum));
    if (c.loader.num_samples < 1 || c.loader.batch_size < 1)
      throw bad("loader", fmt::format("has num_samples {} and batch_size {}; both must be positive", c.loader.num_samples,
                                      c.loader.batch_size));
    if (c.loader.next_batch != c.state.step_in_epoch)
      throw bad("loader.next_batch", fmt::format("is {}, but step_in_epoch is {}", c.loader.next_batch, c.state.step_in_epoch));
    if (c.loader.epoch != static_cast<uint64_t>(c.state.epoch))
      throw bad("loader.epoch", fmt::format("is {}, but epoch is {}", c.loader.epoch, c.state.epoch));
  } catch (const nlohmann::json::exception& e) {
    throw io::FormatError(fmt::format("{}: bad checkpoint description ({})", path, e.what()));
  }
  io::SafetensorsFile model_part = file;
  for (auto t = model_part.tensors.begin(); t != model_part.tensors.end();)
    t = t->first.rfind("__optimizer__.", 0) == 0 || t->first.rfind("__lr_scheduler__.", 0) == 0 ||
                t->first.rfind("__best__.", 0) == 0
            ? model_part.tensors.erase(t)
            : std::next(t);
  c.model = io::build_model(model_part, path);
  return c;
}

void restore_optimizer(nn::Optimizer& optimizer, nn::LRScheduler* schedule, io::Augmenter* augment, const Checkpoint& c,
                       const std::string& path) {
  try {
    if (c.optimizer) {
      // A checkpoint may be corrupt: no buffer it holds may carry a nan or inf into training.
      for (const auto& [key, t] : c.optimizer->tensors) {
        const Tensor v = kernels::contiguous(t);
        if (v.dtype() != DType::f32) continue;  // load_state_dict names a wrong dtype
        const float* p = v.data<float>();
        for (int64_t i = 0; i < v.numel(); ++i)
          if (!std::isfinite(p[i]))
            throw std::invalid_argument(fmt::format("optimizer state '{}' holds a value that is not finite", key));
      }
      optimizer.load_state_dict(*c.optimizer);
    } else if (auto* sgd = dynamic_cast<nn::SGD*>(&optimizer)) {
      sgd->set_momentum_buffers(c.momentum);  // checks the count, each shape and that every value is finite
    } else {
      throw std::invalid_argument(fmt::format("holds SGD momentum only, and the run uses {}", optimizer.type_name()));
    }
    if (schedule && !c.schedule) throw std::invalid_argument("holds no learning-rate schedule, and the run has one");
    if (schedule) schedule->load_state_dict(*c.schedule);
    if (augment && !c.augment_rng) throw std::invalid_argument("holds no augmentation state, and the run augments");
    if (augment) augment->set_state(*c.augment_rng);
  } catch (const std::invalid_argument& e) {
    throw io::FormatError(fmt::format("{}: checkpoint: {}", path, e.what()));
  }
}

bool takes_images(const nn::Module& model) {
  for (auto& [path, m] : model.named_modules()) {
    for (auto& [name, p] : m->named_parameters(false))
      if (name == "weight") return p.dim() == 4;
    if (const Tensor w = m->buffer("weight"); w.defined()) return w.dim() == 4;  // an int8 layer's
  }
  return false;
}

quant::Evaluation evaluate(nn::Module& model, const io::Dataset& data, int64_t batch_size) {
  const bool images = takes_images(model);
  if (batch_size == 0) batch_size = images ? 200 : 1000;
  io::DataLoader loader(data, {.batch_size = batch_size, .shuffle = false, .as_images = images});
  io::Batch batch;
  return quant::evaluate(model, [&](Tensor& inputs, Tensor& labels) {
    if (!loader.next(batch)) return false;
    inputs = batch.images;
    labels = batch.labels;
    return true;
  });
}

int64_t calibrate(nn::Module& model, const io::Dataset& data, int64_t batches, const io::DataLoaderOptions& options,
                  bool progress) {
  io::DataLoaderOptions o = options;
  o.as_images = takes_images(model);
  io::DataLoader loader(data, o);
  io::Batch batch;
  Progress bar("calibrate", batches, progress);
  return quant::calibrate(
      model,
      [&](Tensor& inputs) {
        if (!loader.next(batch)) return false;
        inputs = batch.images;
        return true;
      },
      batches, [&](int64_t) { bar.advance(); });
}

double latency_us(nn::Module& model, const io::Dataset& data, int64_t batch, int repeats) {
  NoGradGuard no_grad;
  model.eval();
  io::DataLoader loader(data, {.batch_size = batch, .shuffle = false, .as_images = takes_images(model)});
  io::Batch b;
  loader.next(b);
  model(b.images);  // warm up (packs caches, wakes threads)
  if (repeats <= 0) repeats = batch == 1 ? 2000 : 50;
  std::vector<double> times;
  for (int r = 0; r < 7; ++r) {
    const double t0 = now_seconds();
    for (int i = 0; i < repeats; ++i) model(b.images);
    times.push_back((now_seconds() - t0) / repeats * 1e6);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double latency_us_one_thread(nn::Module& model, const io::Dataset& data, int64_t batch, int repeats) {
  struct OneThread {
    nn::Module& model;
    int blas_threads = openblas_get_num_threads();
    std::vector<std::pair<int*, int>> int8_threads;  // each layer's setting, to put back
    explicit OneThread(nn::Module& m) : model(m) {
      for (auto& [path, layer] : model.named_modules()) {
        if (auto* q = quant::as_quantized_layer(layer)) int8_threads.emplace_back(&q->threads, q->threads);
      }
      openblas_set_num_threads(1);
      for (auto& [threads, saved] : int8_threads) *threads = 1;
    }
    ~OneThread() {
      openblas_set_num_threads(blas_threads);
      for (auto& [threads, saved] : int8_threads) *threads = saved;
    }
  } one_thread(model);
  return latency_us(model, data, batch, repeats);
}

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? -1 : static_cast<int64_t>(n);
}

void check_output_path(const std::string& path, const std::string& option) {
  if (path.empty()) throw OutputPathError(fmt::format("{} is empty", option));
  const std::filesystem::path p(path);
  const auto dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw std::runtime_error(fmt::format("{} {}: directory '{}' does not exist", option, path, dir.string()));
  // Found now, not after the training: a directory the run cannot write to
  // (permissions, a read-only mount).
  if (::access(dir.c_str(), W_OK) != 0)
    throw std::runtime_error(fmt::format("{} {}: cannot write in directory '{}' ({})", option, path, dir.string(),
                                         std::strerror(errno)));
  // What the atomic rename would replace: only a regular file (or nothing).
  // A symlink is refused rather than followed or replaced, so that a link to
  // a device or to somebody else's file is never clobbered.
  const auto st = std::filesystem::symlink_status(p, ec);
  if (ec || st.type() == std::filesystem::file_type::not_found) return;
  if (st.type() == std::filesystem::file_type::symlink)
    throw OutputPathError(fmt::format("{} {}: is a symbolic link; name the file itself (outputs are never written "
                                      "through or over a link)",
                                      option, path));
  if (st.type() == std::filesystem::file_type::directory)
    throw OutputPathError(fmt::format("{} {}: is a directory", option, path));
  if (st.type() != std::filesystem::file_type::regular)
    throw OutputPathError(fmt::format("{} {}: is not a regular file (a device, FIFO or socket); refusing to replace it",
                                      option, path));
}

double output_step(nn::Module& model) {
  double step = 0;
  for (auto& [path, m] : model.named_modules()) {
    if (const quant::QuantLayer* layer = quant::as_quant_layer(m))
      if (auto qp = layer->qparams(quant::QuantRole::output); qp && !qp->scale.empty()) step = qp->scale[0];
  }
  return step;
}

}  // namespace tq::cli

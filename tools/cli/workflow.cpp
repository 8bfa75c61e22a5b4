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
#include "nn/data_parallel.h"
#include "nn/linear.h"
#include "quant/dynamic_linear.h"
#include "quant/layer.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"
#include "tensor/communicator.h"
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

double accuracy(nn::Module& model, const io::Dataset& data) {
  dist::Communicator& comm = dist::world();
  const int64_t n = data.size(), R = comm.size(), r = comm.rank();
  if (R == 1 || n < R) return evaluate(model, data).accuracy;
  // Data parallel: each rank evaluates its slice, the correct counts are summed.
  const int64_t begin = n * r / R, end = n * (r + 1) / R;
  const quant::Evaluation e = evaluate(model, data.slice(begin, end));
  int64_t correct = std::llround(e.accuracy * static_cast<double>(end - begin) / 100.0);
  comm.allreduce_sum(&correct, 1);
  return 100.0 * static_cast<double>(correct) / static_cast<double>(n);
}

void train(nn::Module& model, nn::Optimizer& optimizer, io::DataLoader& loader, const io::Dataset& test,
           const TrainOptions& o, TrainState& st) {
  io::Batch batch;
  int64_t steps_this_run = 0;
  const std::vector<Tensor>& params = optimizer.params();
  // Data parallel (docs/distributed.md): rank 0's weights everywhere, then
  // every step's gradients averaged over the ranks; rank 0 alone writes.
  dist::Communicator& comm = dist::world();
  const bool parallel = comm.size() > 1, writer = comm.rank() == 0;
  if (parallel && loader.options().world_size != comm.size())
    throw std::logic_error(fmt::format("train: the loader is sharded over {} rank(s), the run has {}",
                                       loader.options().world_size, comm.size()));
  if (parallel) nn::broadcast_state(model, comm);
  nn::GradientReducer reducer(parallel ? params : std::vector<Tensor>{}, o.bucket_bytes);  // buffers only when used
  while (st.epoch < o.epochs) {
    model.train();
    const double t0 = now_seconds();
    Progress bar(fmt::format("{} {}/{}", o.label, st.epoch + 1, o.epochs), loader.num_batches(), o.progress && writer);
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
        // This rank's part of the global batch's mean loss (1 on a single process).
        const double share = parallel ? static_cast<double>(batch.size()) / static_cast<double>(batch.global_size) : 1.0;
        if (parallel) {  // the global batch's loss, the same on every rank, so all stop together
          double lg = l * share;
          comm.allreduce_sum(&lg, 1);
          l = lg;
        }
        if (!std::isfinite(l)) throw diverged(fmt::format("the loss became {}", std::isnan(l) ? "nan" : l > 0 ? "inf" : "-inf"));
        loss.backward();
        if (parallel) reducer.reduce(share, comm);
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
      if (o.checkpoint_every > 0 && st.global_step % o.checkpoint_every == 0 && writer)
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
      s.val_accuracy = accuracy(model, *o.validation);
      if (s.val_accuracy > st.best_val_accuracy) {
        st.best_val_accuracy = s.val_accuracy;
        st.best_epoch = st.epoch + 1;
        st.best = nn::ModelSnapshot::take(model);
      }
    } else {
      s.test_accuracy = accuracy(model, test);
    }
    st.history.push_back(s);
    ++st.epoch;
    st.step_in_epoch = 0;
    st.loss_sum = 0;
  }
  if (o.validation && !st.best.empty()) st.best.restore(model);
  model.eval();
  st.test_accuracy = o.validation ? accuracy(model, test) : st.history.empty() ? 0 : st.history.back().test_accuracy;
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
  io::save_checkpoint(path, model, optimizer, o.schedule, o.augment, loader.state(), st, o.command_json);
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

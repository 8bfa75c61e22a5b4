// The pieces every tinyqat command shares: the MLP, training epochs with a
// progress bar and checkpoints, evaluation and calibration over a data set
// (quant::evaluate and quant::calibrate fed by a DataLoader), latency, and
// file sizes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/augment.h"
#include "io/data_loader.h"
#include "io/dataset.h"
#include "io/training_state.h"
#include "nn/lr_scheduler.h"
#include "nn/model_snapshot.h"
#include "nn/module.h"
#include "nn/sequential.h"
#include "nn/sgd.h"
#include "quant/evaluate.h"
#include "tensor/random.h"

namespace tq::cli {

// MLP in -> hidden... -> classes, as a Sequential named fc1, relu1, fc2, ...
std::shared_ptr<nn::Sequential> make_mlp(int64_t in_features, const std::vector<int64_t>& hidden, int64_t classes);
// Does `model` take images (B, C, H, W) rather than flat rows (B, H*W)? Yes
// when the first layer with a weight has a 4-D one: a convolution. The data
// loader is set up accordingly (DataLoaderOptions::as_images).
bool takes_images(const nn::Module& model);
// "256,128" -> {256, 128}; throws std::invalid_argument naming the text.
std::vector<int64_t> parse_hidden(const std::string& text);

// A one-line progress bar on stderr with rate and ETA.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled);
  void advance(int64_t n = 1, const std::string& note = "");
  void finish();
  ~Progress() { finish(); }

 private:
  std::string label_;
  int64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  double start_, last_draw_ = -1;
};

// Should progress be drawn: --progress, or stderr is a terminal.
bool progress_wanted(bool flag);

// The per-epoch statistics and the training state live in the library with
// the checkpoints that store them (io/training_state.h).
using EpochStats = io::EpochStats;
using TrainState = io::TrainState;
using Checkpoint = io::Checkpoint;

struct TrainOptions {
  int epochs = 1;
  double lr = 0.01;
  double momentum = 0.9;
  bool progress = false;
  std::string label = "train";
  // Every this many steps, save a checkpoint to checkpoint_path (0 = never).
  int64_t checkpoint_every = 0;
  std::string checkpoint_path = {};
  // Stop (as if killed) after this many steps in this run (0 = never); for
  // testing resume. Training then returns early with `interrupted` set.
  int64_t stop_after = 0;
  // What the command needs to continue the run later, stored in checkpoints.
  std::string command_json = "{}";
  // Called before every step with the epochs done so far, fractional (1.5 =
  // half-way through the second epoch): where the QAT schedule acts.
  std::function<void(nn::Module&, double epochs_done)> before_step = nullptr;

  // ---- The recipe (docs/optim.md): all optional ----
  // Stepped after every optimizer step (schedules count batches here).
  nn::LRScheduler* schedule = nullptr;
  // Clip the gradients' global 2-norm to this before each step (0 = never).
  double clip_grad = 0;
  // Augments each training batch in place (its state goes into checkpoints).
  io::Augmenter* augment = nullptr;
  // With a validation set: after each epoch its accuracy, the best epoch's
  // weights kept and restored at the end, and the test set evaluated once,
  // then, on the selected model.
  const io::Dataset* validation = nullptr;
  // Data parallel (more than one rank in dist::world()): the size of the
  // gradient buckets all-reduced after backward (docs/distributed.md).
  int64_t bucket_bytes = int64_t{1} << 20;
};

// The accuracy (percent) of `model` on `data`: evaluate() on a single
// process; data parallel, each rank evaluates its slice and the counts are
// summed, so every rank gets the same figure.
double accuracy(nn::Module& model, const io::Dataset& data);

// Data parallel when dist::world() has more than one rank: the loader must be
// sharded over them (DataLoaderOptions::rank, world_size); rank 0's model is
// broadcast at the start, gradients are averaged every step, the reported
// loss is the global batch's and only rank 0 draws progress and writes
// checkpoints (docs/distributed.md).
// Trains `model` with the optimizer + cross-entropy over `loader`'s batches
// until options.epochs epochs are done, continuing from `state`; after each
// epoch evaluates on `test` (or on options.validation, see there). A NaN or
// infinite loss stops training with an error naming the epoch and step (the
// last checkpoint on disk stays as it was).
void train(nn::Module& model, nn::Optimizer& optimizer, io::DataLoader& loader, const io::Dataset& test,
           const TrainOptions& options, TrainState& state);
// The same with a fresh SGD and state; returns the per-epoch statistics.
std::vector<EpochStats> train(nn::Module& model, io::DataLoader& loader, const io::Dataset& test,
                              const TrainOptions& options);

// Saves a checkpoint of the run (io::save_checkpoint) with the options
// schedule, augmenter and settings, written atomically (docs/reliability.md).
// A checkpoint is read back, every field checked, by io::load_checkpoint and
// put into the rebuilt run by io::restore_checkpoint.
void save_checkpoint(const std::string& path, const nn::Module& model, const nn::Optimizer& optimizer,
                     const io::DataLoader& loader, const TrainState& state, const TrainOptions& options);

// quant::evaluate over every sample of `data`, in order, `batch_size` at a
// time; 0 picks 1000 rows for a model of flat rows and 200 images for a model
// of images (the first activation of 200 images through the cnn is 20 MB,
// of 1000 images 100 MB: a training run stays well under 300 MB).
quant::Evaluation evaluate(nn::Module& model, const io::Dataset& data, int64_t batch_size = 0);

// quant::calibrate over the first `batches` batches of a loader over `data`
// with `loader` options (batch size, seed); with `progress`, a bar on stderr.
int64_t calibrate(nn::Module& model, const io::Dataset& data, int64_t batches, const io::DataLoaderOptions& loader,
                  bool progress = false);

// Median microseconds of a forward pass over `batch` samples of `data`.
double latency_us(nn::Module& model, const io::Dataset& data, int64_t batch, int repeats = 0);
// latency_us with every kernel on the calling thread (OpenBLAS and the
// model's int8 layers), their thread settings put back afterwards: the
// figure to compare methods by, free of the two thread pools' contention
// for the second core (docs/speed.md §4).
double latency_us_one_thread(nn::Module& model, const io::Dataset& data, int64_t batch, int repeats = 0);

int64_t file_bytes(const std::string& path);
// An output that must not be written: a device, FIFO, socket, directory or
// symlink (docs/cli.md "Outputs"); the message names `option`.
struct OutputPathError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Throws OutputPathError when `path` exists and is not a regular file, and
// std::runtime_error when the directory that would hold it does not exist.
void check_output_path(const std::string& path, const std::string& option = "--out");
// The output scale of the last quantized layer (one quantization step of the logits).
double output_step(nn::Module& model);

}  // namespace tq::cli

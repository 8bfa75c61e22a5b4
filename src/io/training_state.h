// The state of an optimizer or a learning-rate schedule (nn::StateDict) in a
// safetensors file, beside a model, for checkpoints (docs/optim.md §7):
// tensors under "<prefix>.<key>", the kind and the scalars as JSON in the
// metadata entry "<prefix>". Doubles are written in their shortest exact
// form, so a state read back is bit for bit the state saved.
//
//   io::SafetensorsFile file = io::model_to_safetensors(model);
//   io::put_state(file, "__optimizer__", optimizer.state_dict());
//   io::put_state(file, "__lr_scheduler__", schedule.state_dict());
//   io::save_safetensors(path, file);
//   ...
//   optimizer.load_state_dict(io::get_state(file, "__optimizer__", path));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/augment.h"
#include "io/data_loader.h"
#include "io/safetensors.h"
#include "nn/lr_scheduler.h"
#include "nn/model_snapshot.h"
#include "nn/module.h"
#include "nn/optimizer.h"
#include "tensor/random.h"

namespace tq::io {

// Adds the state's tensors and metadata to `file`; throws if `prefix` is
// empty or already used there.
void put_state(SafetensorsFile& file, const std::string& prefix, const nn::StateDict& state);
// Reads the state stored under `prefix`; throws FormatError naming `name`
// (the file) and what is missing or malformed.
nn::StateDict get_state(const SafetensorsFile& file, const std::string& prefix, const std::string& name);
// Does `file` hold a state under `prefix`?
bool has_state(const SafetensorsFile& file, const std::string& prefix);

// ---- Training checkpoints (docs/reliability.md, "Checkpoints") ----
//
// A checkpoint is a model file (io::model_to_safetensors) plus the
// optimizer's and the schedule's state (put_state above), the best epoch's
// weights ("__best__.<name>") and, in the metadata entry
// "tinyqat_checkpoint", the run's counters, the loader's position, the
// random generators and the run's settings ("command", a JSON object with
// at least "command": "train" | "qat" and "epochs").
//
//   io::save_checkpoint(path, model, optimizer, schedule, augment, loader.state(), state, command_json);
//   ...
//   io::Checkpoint c = io::load_checkpoint(path);   // every field checked
//   // build the optimizer / schedule / loader of the run as it was, then
//   io::restore_checkpoint(c, *optimizer, schedule, augment, &loader, path);
//   default_generator().set_state(c.global_rng);

struct EpochStats {
  double loss = 0;            // mean training loss of the epoch
  double test_accuracy = 0;   // percent; -1 when a validation set is used (the test set waits for the end)
  double seconds = 0;
  double val_accuracy = -1;   // percent on the validation set, -1 without one
};

// Where a training run stands: everything besides the model, the optimizer
// and the loader that a resumed run needs to continue bit for bit.
struct TrainState {
  int epoch = 0;             // epochs completed
  int64_t step_in_epoch = 0;
  int64_t global_step = 0;
  double loss_sum = 0;       // of the current epoch
  std::vector<EpochStats> history;
  // With a validation set: the best epoch so far (1-based, 0 = none yet),
  // its accuracy and weights.
  int best_epoch = 0;
  double best_val_accuracy = -1;
  nn::ModelSnapshot best;
  // Not stored in checkpoints: set by the training loop for its caller.
  bool interrupted = false;  // stopped early (as if killed)
  // The test accuracy of the model training returns (the selected epoch's
  // with a validation set, else the last epoch's); set when training ends.
  double test_accuracy = 0;
};

// The checkpoint as a safetensors file: the model, the optimizer's and (if
// any) the schedule's state, the augmenter's generator (if any), the loader's
// state, the global generator's state (default_generator()), `state` and the
// run's settings `command_json` (a JSON object).
SafetensorsFile checkpoint_to_safetensors(const nn::Module& model, const nn::Optimizer& optimizer,
                                          const nn::LRScheduler* schedule, const Augmenter* augment,
                                          const LoaderState& loader, const TrainState& state,
                                          const std::string& command_json);
// The same, written atomically (write_file_atomically).
void save_checkpoint(const std::string& path, const nn::Module& model, const nn::Optimizer& optimizer,
                     const nn::LRScheduler* schedule, const Augmenter* augment, const LoaderState& loader,
                     const TrainState& state, const std::string& command_json);

struct Checkpoint {
  std::shared_ptr<nn::Module> model;
  std::string kind;                           // "train" (a float model) or "qat" (a model prepared for QAT)
  int epochs = 0;                             // the run's epoch count (command.epochs)
  std::optional<nn::StateDict> optimizer;     // the optimizer's state
  std::optional<nn::StateDict> schedule;      // the learning-rate schedule's, if the run had one
  std::vector<Tensor> momentum;               // older checkpoints: SGD's momentum buffers only
  std::optional<Generator::State> augment_rng;
  LoaderState loader;
  Generator::State global_rng{};
  TrainState state;
  std::string command_json;                   // the run's settings, a JSON object
};

// Reads a checkpoint and checks every field where it is read: the counters
// (epoch in 0..epochs-1, one history entry per completed epoch, the step
// inside its epoch, the global step equal to the steps the counters imply),
// the loader's state against them, every generator state (one it can leave),
// the optimizer's and schedule's tensors (finite), the best epoch's weights
// (the model's names and shapes, and values a model file may hold), and
// the kind against the model (a "train" checkpoint holds a float model, a
// "qat" one a model prepared for QAT). Throws FormatError "<name>:
// checkpoint field '<field>' ..." (or the model file's own errors).
Checkpoint parse_checkpoint(const SafetensorsFile& file, const std::string& name);
Checkpoint load_checkpoint(const std::string& path);

// Puts a checkpoint's state into the objects of the run being resumed, built
// as the run built them: the optimizer's state (the schedule's too, when the
// run has one), the augmenter's generator and the loader's position (either
// may be null). A run with a schedule or augmentation needs a checkpoint
// that has their state. Throws FormatError "<name>: checkpoint: ..." naming
// what does not fit; nothing is half restored into the optimizer.
void restore_checkpoint(const Checkpoint& checkpoint, nn::Optimizer& optimizer, nn::LRScheduler* schedule,
                        Augmenter* augment, DataLoader* loader, const std::string& name);

}  // namespace tq::io

// What the tinyqat commands share (README "Command line", docs/cli.md):
// the common options and their parsing, the one-JSON-object-or-summary
// output, loading the float model a command starts from, bit-width options,
// and checkpointing / resume around the training loop of workflow.h.
// Exit status: a UsageError is 2, any other error 1 (main.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "io/dataset.h"
#include "nn/module.h"
#include "quant/qconfig.h"
#include "workflow.h"

namespace tq::cli {

using json = nlohmann::json;

// A usage error: exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double seconds_since(std::chrono::steady_clock::time_point t0);

// ---- Options every command has, parsing, output ----

// --data, --threads, --json, --progress, --help.
void add_common(cxxopts::Options& o);
// Parses; --help prints the help and exits 0; a stray argument is a UsageError.
// `out_directory_file`: --out names a directory that the command writes
// this file into (report), rather than the file itself.
cxxopts::ParseResult parse(cxxopts::Options& o, int argc, char** argv, const char* out_directory_file = nullptr);
// The outputs (--out, --checkpoint) of a parsed command line against its
// inputs (--from, --float, --model, --quantized, --resume, --onnx, --input): each output must
// be a regular file or a new path, never a device, FIFO, directory or
// symlink, and never one of the inputs; else a UsageError (or
// OutputPathError) naming the option. parse() calls it, before any work.
// The inputs include run's --input and the data set's files in --data.
void check_outputs(const cxxopts::ParseResult& r, const char* out_directory_file = nullptr);
// Makes --workdir (an error names the option) and checks the `files` the
// command will write in it by the rules of --out, before any work; returns it.
std::string prepare_workdir(const cxxopts::ParseResult& r, const std::vector<std::string>& files);
// --threads for OpenBLAS (0 = all cores).
void apply_threads(const cxxopts::ParseResult& r);
// With --json prints `j` on one line, else `summary`.
void finish(const cxxopts::ParseResult& r, const json& j, const std::string& summary);
// The value of a required string option.
std::string require(const cxxopts::ParseResult& r, const char* name);
// The training and the test split of the --data directory.
struct FashionMnist {
  io::Dataset train, test;
};
FashionMnist load_data(const cxxopts::ParseResult& r);

// A model file that qat, ptq, dynamic and lowbit can start from: float
// layers only (LinearReLU counts as float); else an error naming `command`.
std::shared_ptr<nn::Module> load_float(const std::string& path, const char* command);

// Runs one sample of `data` through `model` (eval mode, observers off, so
// nothing changes): a model that cannot take the data's samples, or whose
// output is not one score per class, is an error naming `path` (exit 1)
// before any work is done with it.
void check_model_fits(nn::Module& model, const io::Dataset& data, const std::string& path);
// ---- Memory: a failed allocation names the option behind it ----

// Sets the tensor memory limit (tq::set_tensor_memory_limit) to
// TINYQAT_MEMORY_LIMIT (bytes, or with a K, M or G suffix; 0 = none), or else
// to the memory available when the command starts (MemAvailable), shared by
// the ranks of a data-parallel run. A bad value is a UsageError.
void set_memory_limit();
// What the memory of the command's work grows with, named when an allocation
// fails: options ("--batch-size 60000 (--arch cnn)"), a mistake in the command
// line (exit 2); or a file (`status` 1).
void memory_grows_with(std::string what, int status = 2);
// The one-line message and the exit status for a failed allocation `e`.
std::pair<std::string, int> out_of_memory(const std::bad_alloc& e);
// --threads above this is refused (--threads 100000 made OpenBLAS and the int8
// kernels ask for that many threads: the process ran out of memory and hung).
inline constexpr int kMaxThreads = 256;
// --latency-repeats above this is refused: seven samples of 2e9 forward
// passes each never ended.
inline constexpr int kMaxLatencyRepeats = 100'000;

// ---- Architectures (train, qat, ptq, pipeline) ----

// "mlp", "cnn" or "mobilenet_v2", else a UsageError naming --arch.
void check_arch_name(const std::string& arch);
// What is wrong with an MLP in -> hidden... -> classes of more than
// kMaxMlpWeights weights (1 GiB of float32: training holds three or four
// times that) or more than kMaxMlpLayers hidden layers; "" when nothing is.
inline constexpr int64_t kMaxMlpWeights = int64_t{1} << 28;
inline constexpr size_t kMaxMlpLayers = 64;
std::string mlp_size_problem(const std::vector<int64_t>& hidden, int64_t in_features = 784, int64_t classes = 10);
// The float network `arch` names, freshly initialised from the global
// generator: the MLP (hidden sizes as "256,128"), models::cnn, or the
// small-input MobileNetV2 of width multiplier `width`.
std::shared_ptr<nn::Module> make_model(const std::string& arch, double width, const std::string& hidden,
                                       int64_t in_features, int64_t classes);
// The architecture a (float, prepared or int8) model file holds: a
// MobileNetV2 is "mobilenet_v2", another model with convolutions "cnn",
// else "mlp".
std::string arch_of(const nn::Module& model);
// With --arch on the command line: the model read from `path` must be of
// that architecture, else a runtime error naming both.
void check_model_arch(const cxxopts::ParseResult& r, const nn::Module& model, const std::string& path);

// ---- The QAT schedule (qat, pipeline) ----

// --freeze-bn-after E, --freeze-observers-after E (epochs, fractions allowed).
void add_qat_schedule(cxxopts::Options& o);
// The values into `cmd` ("freeze_bn_after", "freeze_observers_after"; -1 = never).
void read_qat_schedule(const cxxopts::ParseResult& r, json& cmd);
// A TrainOptions::before_step that freezes the BatchNorm statistics and
// disables the observers once `cmd`'s points are reached.
std::function<void(nn::Module&, double)> qat_schedule_hook(const json& cmd);

// ---- Bit widths (qat, ptq) ----

void add_bits(cxxopts::Options& o);
struct Bits {
  int weight = 8, activation = 7;
  bool given = false;  // any bit option on the command line
  std::string layers;  // the --layer-bits text
};
// `b` itself, or a UsageError naming `what` when it is outside 2..8.
int check_bits(int b, const char* what);
Bits parse_bits(const cxxopts::ParseResult& r, const std::string& backend);
// --configs "w8a8,w4a8" -> {(8, 8), (4, 8)} (also "W4A8"); a UsageError naming
// --configs for a malformed entry, bits outside 2..8 or an empty list.
std::vector<std::pair<int, int>> parse_configs(const std::string& text);
// Applies "fc1=8,fc2=w4a8,fc3=float" with `make(weight_bits, activation_bits)`.
void apply_layer_bits(nn::Module& model, const std::string& spec,
                      const std::function<quant::QConfigPtr(int, int)>& make);

// ---- The training recipe (train, qat, lowbit; docs/cli.md "Training recipes") ----

// --batch-size, --momentum, --optimizer, --weight-decay, --lr-schedule,
// --warmup, --step-size, --milestones, --gamma, --val, --augment, --clip-grad.
void add_recipe(cxxopts::Options& o);
// Checks them (a UsageError names the bad one) and records them in `cmd`,
// so that checkpoints carry them to --resume.
void recipe_to_command(const cxxopts::ParseResult& r, json& cmd);
// Checks a command's settings (epochs, batch_size, lr, momentum, seed, ...) as
// options: a UsageError names the option (resume_checkpoint does this too).
void check_command(const json& cmd);

// --limit-train N, --limit-test N (train, qat, lowbit): the first N images only.
void add_limits(cxxopts::Options& o);
// Their values into `cmd` ("limit_train", "limit_test"); negative ones are a
// UsageError. `always` records zeros too (train's checkpoints hold both).
void limits_to_command(const cxxopts::ParseResult& r, json& cmd, bool always);
// Cuts `data` to `cmd`'s limits (0 or absent = all).
void apply_limits(const json& cmd, FashionMnist& data);

// ---- Checkpoints and resume (train, qat) ----

void add_checkpointing(cxxopts::Options& o);
// The checkpointing options of a run whose settings are `command`.
TrainOptions checkpoint_options(const cxxopts::ParseResult& r, const std::string& out, const json& command);
// What an interrupted run prints (nothing is written to --out); returns the exit status.
int report_interrupted(const cxxopts::ParseResult& r, const TrainState& st, const TrainOptions& t);
// With --resume: the checkpoint, whose stored settings replace `cmd`; it
// must come from `command`, its settings are checked (an error names the
// file and the field), and an option given beside --resume must agree with
// them (else a UsageError: a resumed run keeps its settings); --from is
// refused. Without: nothing, after checking `cmd`'s settings as options.
// Either way, before any data is read.
std::optional<Checkpoint> resume_checkpoint(const cxxopts::ParseResult& r, const char* command, json& cmd);
// The training loop of train and qat: the optimizer, schedule, validation
// split, augmentation, clipping and QAT schedule as `cmd` says (SGD at a
// constant rate when it says nothing), restored from `ck` when resuming,
// then cli::train. `topt` holds the checkpointing options; epochs, progress
// and the recipe are set here. The result's test_accuracy is that of the
// model it leaves (the best validation epoch's with a validation set).
// The number of training samples `cmd`'s "val" holds out of `n` (0 without
// one); a UsageError naming --val when that leaves no sample on either side.
int64_t validation_count(const json& cmd, int64_t n);
// The batch size of `cmd` against the `n` training samples (less the
// validation set, per rank): a larger one is a UsageError naming --batch-size
// and the most there can be. run_training checks it too; the commands call it
// as soon as the data is read, before the model is loaded or evaluated.
void check_batch_fits(const json& cmd, int64_t n);
// Measures what one sample of `data` allocates on its way through `model`
// (eval mode, no autograd, observers off: nothing changes) and refuses, with a
// UsageError naming `option` and the most that fits, a batch whose training
// step would keep more than the tensor memory limit allows. run_training
// calls it before the first step (it measures nothing when the model cannot
// run in eval mode yet: a model prepared for QAT, measured by qat and lowbit
// as the float model before they prepare it).
void check_training_memory(nn::Module& model, const io::Dataset& data, int64_t batch_size,
                           const std::string& option = "--batch-size");
TrainState run_training(const cxxopts::ParseResult& r, nn::Module& model, const FashionMnist& data, const json& cmd,
                        const std::optional<Checkpoint>& ck, TrainOptions& topt);

}  // namespace tq::cli

// tinyqat: the command line over the whole workflow (README "Command line",
// docs/cli.md). main() only dispatches; each command is a file of its own in
// commands/, and what they share is in common.h and workflow.h.
//   tinyqat train | qat | ptq | dynamic | eval | inspect | compare | pipeline | lowbit | report | bench | run
// Exit status: 0 success; 2 a mistake in the command line (an unknown
// option or command, a bad value, options that contradict each other, an
// output the run may not write), naming the option; 1 anything else (a
// missing, damaged or unsuitable file, a failed write, a run that diverged),
// naming the file. One line on stderr either way.
#include <cstdio>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "commands/commands.h"
#include "common.h"
#include "dist/mpi.h"

namespace {

using tq::cli::UsageError;

const std::map<std::string, int (*)(int, char**)> kCommands = {
    {"train", tq::cli::run_train},       {"qat", tq::cli::run_qat},          {"ptq", tq::cli::run_ptq},
    {"dynamic", tq::cli::run_dynamic},   {"eval", tq::cli::run_eval},        {"inspect", tq::cli::run_inspect},
    {"compare", tq::cli::run_compare},   {"pipeline", tq::cli::run_pipeline}, {"lowbit", tq::cli::run_lowbit},
    {"report", tq::cli::run_report},     {"bench", tq::cli::run_bench},      {"run", tq::cli::run_run},
    {"export", tq::cli::run_export},
    {"import", tq::cli::run_import},
    {"sweep", tq::cli::run_sweep},
};

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: tinyqat <command> [options]   (tinyqat <command> --help for its options)\n\n"
               "commands:\n"
               "  train     train a float network (MLP, CNN, MobileNetV2) on Fashion-MNIST\n"
               "  qat       quantization-aware fine-tuning, then convert to int8\n"
               "  ptq       post-training static quantization with calibration\n"
               "  dynamic   dynamic quantization (int8 weights, per-batch activations)\n"
               "  eval      accuracy and latency of a model file\n"
               "  inspect   print a model file's modules, parameters and bytes\n"
               "  compare   per-layer SQNR of a quantized model against its float model\n"
               "  pipeline  all of the above in one run, with a comparison table (--report DIR: HTML pictures)\n"
               "  lowbit    accuracy and size from 8 down to 2 bits: PTQ, QAT, LSQ\n"
               "  sweep     one recipe over several seeds (and bit widths): mean +- sd per model\n"
               "  report    redraw the HTML report of a pipeline workdir\n"
               "  bench     speed: int8 vs float GEMM and MLP, train step vs its GEMMs, QAT vs float\n"
               "  run       run a model file on an .npy input, write the output as .npy\n"
               "  export    write a model file as ONNX (float, QDQ int8, dynamic) for ONNX Runtime\n"
               "  import    read a float ONNX model (e.g. from PyTorch) into a model file\n\n"
               "exit status: 0 success; 2 a mistake in the command line (the message names the option);\n"
               "1 any other error, such as a missing, damaged or unsuitable file (the message names the file)\n");
}

}  // namespace

namespace {

// Under mpirun (docs/distributed.md) an error ends the whole job: the other
// ranks would otherwise wait in their next collective until it times out.
int fail(const std::string& cmd, const char* what, int status) {
  if (tq::dist::distributed()) tq::dist::abort_job(status, fmt::format("tinyqat {}: {}", cmd, what));
  std::fprintf(stderr, "tinyqat %s: %s\n", cmd.c_str(), what);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  tq::tune_allocator_for_training();
  // Started by mpirun: MPI up and the ranks in dist::world(); else a single process, no MPI.
  std::optional<tq::dist::MpiSession> mpi;
  try {
    mpi.emplace(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tinyqat: %s\n", e.what());
    return 2;
  }
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
    // A tensor beyond the memory there is fails at its allocation (rather
    // than the kernel killing the process when it touches the pages), and the
    // message names the options it grows with.
    tq::cli::set_memory_limit();
    return it->second(argc - 1, argv + 1);
  } catch (const UsageError& e) {
    return fail(cmd, e.what(), 2);
  } catch (const tq::cli::OutputPathError& e) {
    return fail(cmd, e.what(), 2);
  } catch (const cxxopts::exceptions::exception& e) {
    return fail(cmd, e.what(), 2);
  } catch (const std::bad_alloc& e) {
    const auto [message, status] = tq::cli::out_of_memory(e);
    return fail(cmd, message.c_str(), status);
  } catch (const std::exception& e) {
    // Everything but a mistake in the command line, whatever its type (a
    // bad file, a model that does not fit the data): exit 1. The commands
    // put the file's name in front of what a library call says about it.
    return fail(cmd, e.what(), 1);
  }
}

// suite.h — the speed figures tinyqat promises, measured side by side in one
// run. `tinyqat bench` prints all four sections; the programs in bench/ print
// one each with more detail. Every ratio is the median of per-pair ratios of
// alternating samples (bench_util.h, measure_pair), so a change of machine
// load during the run slows both sides alike. `--json` output is
// nlohmann::ordered_json (keys in insertion order).
//
//   (a) int8_gemm       the int8 GEMM (u8 x i8 -> requantized u8) vs cblas_sgemm,
//                       and vs cblas_sgemv at M = 1
//   (b) mlp_inference   the Fashion-MNIST MLP 784-256-128-10, static int8
//                       (float in, float out) vs float, forward only
//   (c) mlp_train_step  its train step at batch 64: float vs the same GEMMs
//                       alone, QAT vs float
//   (d) simple_nn_step  the seed's SimpleNN (10-5-2) train step at batch 1,
//                       float and QAT, in microseconds
//
// Benchmarks are not tests: nothing here asserts a time. The targets printed
// beside the figures are those of docs/speed.md.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"

namespace tq::bench {

struct SuiteOptions {
  int threads = 1;     // OpenBLAS threads and int8 kernel threads
  bool quick = false;  // few, short samples: a smoke run, not for claims
};

// The flags every program in bench/ takes: [--threads N] [--quick] [--json].
// Prints `usage` and exits 2 on anything else.
struct ProgramOptions {
  SuiteOptions suite;
  bool json = false;
};
ProgramOptions parse_program_options(int argc, char** argv);

// Sets OpenBLAS's thread count (the int8 layers take theirs per layer).
void set_blas_threads(int threads);

// ---- (a) ----
struct GemmRow {
  int64_t M = 0, K = 0, N = 0;
  std::string path;      // the int8 kernel path taken (int8_gemm.h)
  PairTiming vs_sgemm;   // a = int8, b = sgemm: ratio = speedup of int8
  PairTiming vs_sgemv;   // M = 1 only (else repeats = 0)
  double target = 0;     // required speedup (vs sgemv at M = 1), 0 = none
  double speedup() const { return M == 1 ? vs_sgemv.ratio : vs_sgemm.ratio; }
};
std::vector<GemmRow> int8_gemm(const SuiteOptions& options);
void print_int8_gemm(std::FILE* out, const std::vector<GemmRow>& rows, const SuiteOptions& options);
nlohmann::ordered_json int8_gemm_json(const std::vector<GemmRow>& rows);

// ---- (b) ----
struct InferenceRow {
  int64_t batch = 0;
  std::string path;  // the int8 kernel path the model's layers take (int8_gemm.h)
  PairTiming pair;  // a = int8 model, b = float model: ratio = speedup of int8
  double target = 0;
};
std::vector<InferenceRow> mlp_inference(const SuiteOptions& options);
void print_mlp_inference(std::FILE* out, const std::vector<InferenceRow>& rows, const SuiteOptions& options);
nlohmann::ordered_json mlp_inference_json(const std::vector<InferenceRow>& rows);

// ---- (c) ----
struct TrainStepResult {
  int64_t batch = 64;
  std::string quant_kernels;  // the vector width of the QAT loops (quant_kernels.h)
  PairTiming step_vs_gemms;   // a = the 8 GEMMs via cblas_sgemm, b = float step
  PairTiming qat_vs_float;    // a = float step, b = QAT step
  Timing forward_nograd;      // forward + loss alone, no graph (orientation)
  Timing optimizer;           // zero_grad + SGD step alone
};
TrainStepResult mlp_train_step(const SuiteOptions& options);
void print_mlp_train_step(std::FILE* out, const TrainStepResult& r, const SuiteOptions& options);
nlohmann::ordered_json mlp_train_step_json(const TrainStepResult& r);

// ---- (d) ----
struct SimpleNNResult {
  PairTiming qat_vs_float;  // a = float step, b = QAT step (x86 preset)
};
SimpleNNResult simple_nn_step(const SuiteOptions& options);
void print_simple_nn_step(std::FILE* out, const SimpleNNResult& r);
nlohmann::ordered_json simple_nn_step_json(const SimpleNNResult& r);

// The targets (docs/speed.md).
inline constexpr double kGemmTargetM256 = 1.8;        // vs sgemm, M=256, 1024->1024
inline constexpr double kGemmTargetM64 = 1.5;         // vs sgemm, M=64, 784->256
inline constexpr double kGemvTargetM1 = 2.5;          // vs sgemv, M=1, 784->256
inline constexpr double kInferenceTargetBatch1 = 2.0;
inline constexpr double kInferenceTargetBatched = 1.6;  // batch 64 and 1000
inline constexpr double kStepOverGemmsTarget = 1.25;
inline constexpr double kQatOverFloatTarget = 1.25;
inline constexpr double kSimpleNNTargetMicroseconds = 5.0;

// Peak resident memory of this process so far, in MiB (getrusage).
double peak_rss_mib();
// The 1-minute load average (Linux /proc/loadavg), or -1.
double load_average();
// The int8 kernel setting and what it resolves to here, with the CPU, e.g.
// "automatic (avx512vnni) on AMD EPYC 9R45 [avx2 avx512 avx512_vnni avx_vnni]".
std::string int8_kernel_description();
// "ok" when `met`, "MISSED" otherwise.
const char* verdict(bool met);

}  // namespace tq::bench

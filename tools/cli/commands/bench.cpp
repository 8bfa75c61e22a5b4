// tinyqat bench: speed, int8 vs float, measured side by side in one run
// (docs/speed.md); the measurements themselves live in bench/suite.h.
#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "suite.h"

namespace tq::cli {

int run_bench(int argc, char** argv) {
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
  if (options.threads > kMaxThreads)
    throw UsageError(fmt::format("--threads {} is more than the limit of {} (kMaxThreads)", options.threads, kMaxThreads));
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
  j["load_average_after"] = bench::load_average();
  j["peak_rss_mib"] = bench::peak_rss_mib();
  j["seconds"] = secs;
  if (as_json)
    std::printf("%s\n", j.dump().c_str());
  else
    std::printf("peak resident memory %.1f MiB; %.1f s; load average %.2f\n", bench::peak_rss_mib(), secs,
                bench::load_average());
  return 0;
}

}  // namespace tq::cli

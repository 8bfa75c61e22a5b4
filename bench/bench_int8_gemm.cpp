// bench_int8_gemm — the int8 requantized GEMM (u8 x i8 -> u8, weights packed
// beforehand) against OpenBLAS sgemm (and sgemv at M = 1) on the same
// shapes, measured in the same run. Prints us/call, GMAC/s and the speedup
// t_sgemm / t_int8 next to the target it should reach (docs/int8_kernel.md).
//
//   bench_int8_gemm [--threads N] [--json] [--quick]
//
// Each figure is the median of 7 repeats, each repeat running enough calls
// to last at least 50 ms (--quick: 3 repeats of 10 ms).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tensor/int8_gemm.h"
#include "tensor/requantize.h"

namespace {

struct Options {
  int threads = 1;
  bool json = false;
  int repeats = 7;
  double min_seconds = 0.05;
};

struct Shape {
  int64_t M, K, N;
  double target;  // required speedup over the float baseline, 0 = none
};

// Median seconds per call of fn.
template <class Fn>
double time_per_call(const Options& options, Fn&& fn) {
  using clock = std::chrono::steady_clock;
  fn();  // warm up caches and the thread pool
  int64_t calls = 1;
  for (;;) {  // find a call count that lasts min_seconds
    const auto start = clock::now();
    for (int64_t i = 0; i < calls; ++i) fn();
    const double seconds = std::chrono::duration<double>(clock::now() - start).count();
    if (seconds >= options.min_seconds) break;
    calls = seconds <= 0 ? calls * 10
                         : std::max(calls + 1, static_cast<int64_t>(calls * options.min_seconds * 1.2 / seconds));
  }
  std::vector<double> per_call;
  for (int r = 0; r < options.repeats; ++r) {
    const auto start = clock::now();
    for (int64_t i = 0; i < calls; ++i) fn();
    per_call.push_back(std::chrono::duration<double>(clock::now() - start).count() / static_cast<double>(calls));
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

struct Result {
  Shape shape;
  double sgemm_us = 0, sgemv_us = 0, int8_us = 0;
  const char* path = "";
};

Result run(const Options& options, const Shape& s, std::mt19937& rng) {
  const int64_t M = s.M, K = s.K, N = s.N;
  std::uniform_real_distribution<float> real(-1.0f, 1.0f);
  std::vector<float> Xf(M * K), Wf(N * K), Yf(M * N);
  for (auto& v : Xf) v = real(rng);
  for (auto& v : Wf) v = real(rng);

  // The fbgemm preset: activations u8 in 0..127, weights i8 in -128..127,
  // per-channel multipliers, a bias, fused ReLU.
  std::vector<uint8_t> X(M * K), Y(M * N);
  std::vector<int8_t> W(N * K);
  std::vector<int32_t> bias(N);
  std::vector<tq::FixedPointMultiplier> multipliers(N);
  for (auto& v : X) v = static_cast<uint8_t>(rng() % 128);
  for (auto& v : W) v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  for (auto& v : bias) v = static_cast<int32_t>(rng() % 20001) - 10000;
  for (auto& m : multipliers) m = tq::quantize_multiplier(std::uniform_real_distribution<double>(1e-4, 3e-4)(rng));
  const tq::PackedWeightsI8 packed(W.data(), N, K);
  const int32_t zx = 60, zy = 30;

  Result r;
  r.shape = s;
  r.path = tq::to_string(tq::select_int8_path(127, packed));
  r.sgemm_us = 1e6 * time_per_call(options, [&] {
                 // Y (M, N) = X (M, K) * W^T, W stored (N, K) as the Linear layer keeps it.
                 cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
                             static_cast<int>(K), 1.0f, Xf.data(), static_cast<int>(K), Wf.data(), static_cast<int>(K),
                             0.0f, Yf.data(), static_cast<int>(N));
               });
  if (M == 1) {
    r.sgemv_us = 1e6 * time_per_call(options, [&] {
                   cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f, Wf.data(),
                               static_cast<int>(K), Xf.data(), 1, 0.0f, Yf.data(), 1);
                 });
  }
  r.int8_us = 1e6 * time_per_call(options, [&] {
                tq::gemm_u8i8_requant(X.data(), M, K, zx, 127, packed, bias.data(), multipliers.data(), zy, zy, 255,
                                      Y.data(), N, options.threads);
              });
  return r;
}

double gmacs(const Shape& s, double us) { return static_cast<double>(s.M * s.K * s.N) / (us * 1e3); }

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      options.threads = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--quick") {
      options.repeats = 3;
      options.min_seconds = 0.01;
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--json] [--quick]\n", argv[0]);
      return 2;
    }
  }
  openblas_set_num_threads(options.threads);

  // Targets: >= 1.8x sgemm at M=256, 1024->1024; >= 1.5x at M=64, 784->256;
  // >= 2.5x sgemv at M=1, 784->256.
  std::vector<Shape> shapes;
  for (int64_t M : {1, 64, 256, 1024}) {
    for (auto [K, N] : {std::pair<int64_t, int64_t>{784, 256}, {256, 128}, {1024, 1024}}) {
      double target = 0;
      if (M == 1 && K == 784) target = 2.5;
      if (M == 64 && K == 784) target = 1.5;
      if (M == 256 && K == 1024) target = 1.8;
      shapes.push_back({M, K, N, target});
    }
  }

  std::mt19937 rng(2024);
  std::vector<Result> results;
  for (const Shape& s : shapes) results.push_back(run(options, s, rng));

  if (options.json) {
    std::printf("{\"benchmark\":\"int8_gemm\",\"threads\":%d,\"int8_kernel\":\"%s\",\"results\":[", options.threads,
                tq::to_string(tq::int8_kernel()));
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::printf("%s{\"M\":%lld,\"K\":%lld,\"N\":%lld,\"path\":\"%s\",\"sgemm_us\":%.3f,", i ? "," : "",
                  static_cast<long long>(r.shape.M), static_cast<long long>(r.shape.K),
                  static_cast<long long>(r.shape.N), r.path, r.sgemm_us);
      if (r.shape.M == 1)
        std::printf("\"sgemv_us\":%.3f,\"speedup_vs_sgemv\":%.3f,", r.sgemv_us, r.sgemv_us / r.int8_us);
      // The target is against sgemv at M = 1, against sgemm otherwise.
      std::printf("\"int8_us\":%.3f,\"int8_gmacs\":%.2f,\"speedup_vs_sgemm\":%.3f,\"target\":%.2f}", r.int8_us,
                  gmacs(r.shape, r.int8_us), r.sgemm_us / r.int8_us, r.shape.target);
    }
    std::printf("]}\n");
    return 0;
  }

  std::printf("int8 GEMM (u8 0..127 x i8, requantized u8 out) vs OpenBLAS f32, %d thread(s), kernel %s\n",
              options.threads, tq::to_string(tq::int8_kernel()));
  std::printf("speedup = t_float / t_int8 (float = sgemm; sgemv too at M = 1)\n\n");
  std::printf("%5s %11s | %10s %7s | %10s %7s | %10s %7s %-13s | %8s %8s %7s\n", "M", "K->N", "sgemm us", "GMAC/s",
              "sgemv us", "GMAC/s", "int8 us", "GMAC/s", "path", "vs sgemm", "vs sgemv", "target");
  for (const Result& r : results) {
    char shape[32], sgemv[16] = "", sgemv_rate[16] = "", vs_sgemv[16] = "", target[16] = "";
    std::snprintf(shape, sizeof shape, "%lld->%lld", static_cast<long long>(r.shape.K),
                  static_cast<long long>(r.shape.N));
    if (r.shape.M == 1) {
      std::snprintf(sgemv, sizeof sgemv, "%.2f", r.sgemv_us);
      std::snprintf(sgemv_rate, sizeof sgemv_rate, "%.1f", gmacs(r.shape, r.sgemv_us));
      std::snprintf(vs_sgemv, sizeof vs_sgemv, "%.2fx", r.sgemv_us / r.int8_us);
    }
    if (r.shape.target > 0) std::snprintf(target, sizeof target, ">= %.1fx", r.shape.target);
    std::printf("%5lld %11s | %10.2f %7.1f | %10s %7s | %10.2f %7.1f %-13s | %7.2fx %8s %7s\n",
                static_cast<long long>(r.shape.M), shape, r.sgemm_us, gmacs(r.shape, r.sgemm_us), sgemv, sgemv_rate,
                r.int8_us, gmacs(r.shape, r.int8_us), r.path, r.sgemm_us / r.int8_us, vs_sgemv, target);
  }
  return 0;
}

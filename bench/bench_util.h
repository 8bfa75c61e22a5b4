// Small helpers shared by the benchmarks in bench/: a monotonic clock, the
// median of repeated timings, command-line flags, and the JSON form of a
// timing for `--json` output (nlohmann::json). Header-only; benchmarks are
// programs, not tests.
//
//   auto t = tq::bench::measure([&] { step(); }, {.repeats = 21, .inner = 50});
//   std::printf("%.1f us\n", t.median * 1e6);
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tq::bench {

// Seconds from a monotonic clock.
inline double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// CPU seconds used by the calling thread. Unlike the wall clock it does not
// count time the thread spent waiting for a core, so on a busy machine it
// stays close to what the code costs alone (caches shared with other
// processes still slow it a little).
inline double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct MeasureOptions {
  int repeats = 15;  // timed samples; the median of these is reported
  int inner = 1;     // calls per sample (raise it for sub-microsecond work)
  int warmup = 3;    // untimed samples first (caches, allocator, BLAS buffers)
};

// Seconds per call: median, fastest and slowest sample over the repeats (wall
// clock), and the median of the same samples in thread CPU time.
struct Timing {
  double median = 0;
  double min = 0;
  double max = 0;
  double cpu_median = 0;
  int repeats = 0;
  int inner = 0;
};

inline double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times fn(): `repeats` samples, each the mean over `inner` back-to-back calls.
template <class F>
Timing measure(F&& fn, MeasureOptions opt = {}) {
  for (int w = 0; w < opt.warmup; ++w)
    for (int i = 0; i < opt.inner; ++i) fn();
  std::vector<double> samples, cpu_samples;
  samples.reserve(static_cast<size_t>(opt.repeats));
  cpu_samples.reserve(static_cast<size_t>(opt.repeats));
  for (int r = 0; r < opt.repeats; ++r) {
    const double t0 = now_seconds(), c0 = thread_cpu_seconds();
    for (int i = 0; i < opt.inner; ++i) fn();
    const double c1 = thread_cpu_seconds(), t1 = now_seconds();
    samples.push_back((t1 - t0) / opt.inner);
    cpu_samples.push_back((c1 - c0) / opt.inner);
  }
  Timing t;
  t.median = median_of(samples);
  t.cpu_median = median_of(cpu_samples);
  t.min = *std::min_element(samples.begin(), samples.end());
  t.max = *std::max_element(samples.begin(), samples.end());
  t.repeats = opt.repeats;
  t.inner = opt.inner;
  return t;
}

// Two functions timed in alternating samples (a, b, a, b, ...) after a
// warm-up, `inner_a` / `inner_b` calls per sample. Each side gets its Timing;
// `ratio` is the median of the per-pair ratios t_b / t_a (wall clock) and
// `cpu_ratio` the same on thread CPU time. Alternating makes a change of
// machine load during the run slow both sides of a ratio alike.
struct PairTiming {
  Timing a, b;
  double ratio = 0, cpu_ratio = 0;
};

template <class A, class B>
PairTiming measure_pair(A&& a, B&& b, int repeats, int inner_a, int inner_b, int warmup = 3) {
  struct Samples {
    std::vector<double> wall, cpu;
  } sa, sb, ignored;
  auto sample = [](auto& fn, int inner, Samples& out) {
    const double w0 = now_seconds(), c0 = thread_cpu_seconds();
    for (int i = 0; i < inner; ++i) fn();
    out.cpu.push_back((thread_cpu_seconds() - c0) / inner);
    out.wall.push_back((now_seconds() - w0) / inner);
  };
  for (int w = 0; w < warmup; ++w) {
    sample(a, inner_a, ignored);
    sample(b, inner_b, ignored);
  }
  std::vector<double> ratios, cpu_ratios;
  for (int r = 0; r < repeats; ++r) {
    sample(a, inner_a, sa);
    sample(b, inner_b, sb);
    ratios.push_back(sb.wall.back() / sa.wall.back());
    cpu_ratios.push_back(sb.cpu.back() / sa.cpu.back());
  }
  auto summary = [&](const Samples& s, int inner) {
    Timing t;
    t.median = median_of(s.wall);
    t.min = *std::min_element(s.wall.begin(), s.wall.end());
    t.max = *std::max_element(s.wall.begin(), s.wall.end());
    t.cpu_median = median_of(s.cpu);
    t.repeats = repeats;
    t.inner = inner;
    return t;
  };
  return {summary(sa, inner_a), summary(sb, inner_b), median_of(ratios), median_of(cpu_ratios)};
}

// Chooses `inner` so one sample of fn() lasts about `target_seconds`.
template <class F>
int calibrate_inner(F&& fn, double target_seconds = 0.01) {
  fn();
  int inner = 1;
  for (;;) {
    const double t0 = now_seconds();
    for (int i = 0; i < inner; ++i) fn();
    const double dt = now_seconds() - t0;
    if (dt >= target_seconds || inner >= (1 << 24)) return inner;
    inner = dt <= 0 ? inner * 10 : std::max(inner + 1, static_cast<int>(inner * target_seconds / dt * 1.1));
  }
}

// True when `flag` (e.g. "--json") is among the arguments.
inline bool has_flag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return true;
  return false;
}

// The integer after `--name` (as in "--repeats 31"), or `fallback`.
inline long flag_value(int argc, char** argv, const char* flag, long fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return std::strtol(argv[i + 1], nullptr, 10);
  return fallback;
}

// A Timing in `--json` output (nlohmann::json, keys in insertion order):
// {"median_s", "min_s", "max_s", "cpu_median_s", "repeats", "inner"}. Found by
// argument-dependent lookup, so `j["float"] = timing;` works.
inline void to_json(nlohmann::ordered_json& j, const Timing& t) {
  j = nlohmann::ordered_json{{"median_s", t.median},         {"min_s", t.min},         {"max_s", t.max},
                             {"cpu_median_s", t.cpu_median}, {"repeats", t.repeats}, {"inner", t.inner}};
}

}  // namespace tq::bench

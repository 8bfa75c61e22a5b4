// bench_dynamic — DynamicQuantizedLinear against the float nn::Linear it
// replaces (docs/dynamic.md §4), forward only, no autograd (NoGradGuard), on
// one thread (OpenBLAS and the int8 kernel both), measured in the same run.
//
// The int8 time includes everything a dynamic layer does per call: finding the
// batch's min / max, quantizing it to u8 (eq. 1-2), the int8 GEMM and the float
// epilogue (eq. 3). Prints the median time per call and the speedup
// float_time / int8_time for batch 1, 64 and 1000 on 784->256 and 1024->1024.
// Float and int8 samples alternate, so a busy machine slows both alike; the
// thread's CPU time is reported beside the wall clock (it does not count time
// spent waiting for a core).
//
//   bench_dynamic [--json] [--repeats N]
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "tinyqat.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace {

struct Case {
  int64_t batch, in, out;
};

// One sample: wall and thread-CPU seconds per call, averaged over `inner` calls.
struct Sample {
  double wall, cpu;
};

template <class F>
Sample sample(F&& fn, int inner) {
  const double t0 = tq::bench::now_seconds(), c0 = tq::bench::thread_cpu_seconds();
  for (int i = 0; i < inner; ++i) fn();
  const double c1 = tq::bench::thread_cpu_seconds(), t1 = tq::bench::now_seconds();
  return {(t1 - t0) / inner, (c1 - c0) / inner};
}

tq::bench::Timing timing(const std::vector<Sample>& samples, int inner) {
  std::vector<double> wall, cpu;
  for (const Sample& s : samples) wall.push_back(s.wall), cpu.push_back(s.cpu);
  tq::bench::Timing t;
  t.median = tq::bench::median_of(wall);
  t.cpu_median = tq::bench::median_of(cpu);
  t.min = *std::min_element(wall.begin(), wall.end());
  t.max = *std::max_element(wall.begin(), wall.end());
  t.repeats = static_cast<int>(samples.size());
  t.inner = inner;
  return t;
}

struct Row {
  Case c;
  tq::bench::Timing float_t, int8_t_;
  double sqnr_db;
};

}  // namespace

int main(int argc, char** argv) {
  using namespace tq;
  const bool json = bench::has_flag(argc, argv, "--json");
  const int repeats = static_cast<int>(bench::flag_value(argc, argv, "--repeats", 15));
  openblas_set_num_threads(1);
  NoGradGuard no_grad;

  const std::vector<Case> cases = {{1, 784, 256},    {64, 784, 256},    {1000, 784, 256},
                                   {1, 1024, 1024}, {64, 1024, 1024}, {1000, 1024, 1024}};
  std::vector<Row> rows;
  for (const Case& c : cases) {
    manual_seed(1);
    nn::Linear linear(c.in, c.out);
    linear.eval();
    quant::DynamicQuantizedLinear dynamic(linear.weight, linear.bias);
    dynamic.threads = 1;
    Generator g(2);
    const Tensor x = randn({c.batch, c.in}, g);

    auto run_float = [&] { linear(x); };
    auto run_int8 = [&] { dynamic(x); };
    // Samples alternate float / int8, so that both see the same machine load.
    const int float_inner = bench::calibrate_inner(run_float), int8_inner = bench::calibrate_inner(run_int8);
    std::vector<Sample> float_samples, int8_samples;
    for (int w = 0; w < 2; ++w) run_float(), run_int8();
    for (int rep = 0; rep < repeats; ++rep) {
      float_samples.push_back(sample(run_float, float_inner));
      int8_samples.push_back(sample(run_int8, int8_inner));
    }
    Row r{c, timing(float_samples, float_inner), timing(int8_samples, int8_inner), quant::sqnr_db(linear(x), dynamic(x))};
    rows.push_back(r);
  }

  if (json) {
    std::string out = "[";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      bench::Json j;
      j.add("batch", r.c.batch).add("in_features", r.c.in).add("out_features", r.c.out).add("threads", 1);
      j.add("float", r.float_t).add("int8_dynamic", r.int8_t_);
      j.add("speedup", r.float_t.median / r.int8_t_.median)
          .add("speedup_cpu", r.float_t.cpu_median / r.int8_t_.cpu_median)
          .add("output_sqnr_db", r.sqnr_db);
      out += (i ? ", " : "") + j.str();
    }
    std::puts((out + "]").c_str());
    return 0;
  }
  std::printf("DynamicQuantizedLinear vs float Linear, forward, 1 thread, median of %d repeats\n", repeats);
  std::printf("%-12s %6s %12s %12s %9s %12s %12s %9s %10s\n", "layer", "batch", "float (us)", "int8 (us)", "speedup",
              "float cpu", "int8 cpu", "speedup", "SQNR (dB)");
  for (const Row& r : rows) {
    const std::string layer = std::to_string(r.c.in) + "->" + std::to_string(r.c.out);
    std::printf("%-12s %6lld %12.1f %12.1f %8.2fx %12.1f %12.1f %8.2fx %10.1f\n", layer.c_str(),
                static_cast<long long>(r.c.batch), r.float_t.median * 1e6, r.int8_t_.median * 1e6,
                r.float_t.median / r.int8_t_.median, r.float_t.cpu_median * 1e6, r.int8_t_.cpu_median * 1e6,
                r.float_t.cpu_median / r.int8_t_.cpu_median, r.sqnr_db);
  }
  std::printf("speedup = float time / int8 time (> 1: int8 is faster), on the wall clock and on this thread's CPU\n"
              "time (which a busy machine disturbs less). SQNR: int8 output against float, docs/ptq.md eq. 10.\n");
  return 0;
}

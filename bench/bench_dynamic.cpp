// bench_dynamic — DynamicQuantizedLinear against the float nn::Linear it
// replaces (docs/dynamic.md §4), forward only, no autograd (NoGradGuard), on
// one thread (OpenBLAS and the int8 kernel both), measured in the same run.
//
// The int8 time includes everything a dynamic layer does per call: finding the
// batch's min / max, quantizing it to u8 (eq. 1-2), the int8 GEMM and the float
// epilogue (eq. 3). Prints the median time per call and the speedup
// float_time / int8_time for batch 1, 64 and 1000 on 784->256 and 1024->1024.
//
//   bench_dynamic [--json] [--repeats N]
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
    const bench::MeasureOptions float_opt{.repeats = repeats, .inner = bench::calibrate_inner(run_float), .warmup = 3};
    const bench::MeasureOptions int8_opt{.repeats = repeats, .inner = bench::calibrate_inner(run_int8), .warmup = 3};
    Row r{c, bench::measure(run_float, float_opt), bench::measure(run_int8, int8_opt),
          quant::sqnr_db(linear(x), dynamic(x))};
    rows.push_back(r);
  }

  if (json) {
    std::string out = "[";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      bench::Json j;
      j.add("batch", r.c.batch).add("in_features", r.c.in).add("out_features", r.c.out).add("threads", 1);
      j.add("float", r.float_t).add("int8_dynamic", r.int8_t_);
      j.add("speedup", r.float_t.median / r.int8_t_.median).add("output_sqnr_db", r.sqnr_db);
      out += (i ? ", " : "") + j.str();
    }
    std::puts((out + "]").c_str());
    return 0;
  }
  std::printf("DynamicQuantizedLinear vs float Linear, forward, 1 thread, median of %d repeats\n", repeats);
  std::printf("%-12s %6s %12s %12s %9s %10s\n", "layer", "batch", "float (us)", "int8 (us)", "speedup", "SQNR (dB)");
  for (const Row& r : rows) {
    const std::string layer = std::to_string(r.c.in) + "->" + std::to_string(r.c.out);
    std::printf("%-12s %6lld %12.1f %12.1f %8.2fx %10.1f\n", layer.c_str(), static_cast<long long>(r.c.batch),
                r.float_t.median * 1e6, r.int8_t_.median * 1e6, r.float_t.median / r.int8_t_.median, r.sqnr_db);
  }
  std::printf("speedup = float time / int8 time (> 1: int8 is faster). SQNR: int8 output against float, eq. 10 of "
              "docs/ptq.md.\n");
  return 0;
}

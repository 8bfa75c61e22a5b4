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

struct Row {
  Case c;
  tq::bench::PairTiming pair;  // a = int8 dynamic, b = float: ratio = speedup of int8
  double sqnr_db;
  std::string path;  // the int8 kernel path the layer took
};

}  // namespace

int main(int argc, char** argv) {
  using namespace tq;
  tune_allocator_for_training();
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
    // Samples alternate int8 / float, so that both see the same machine load.
    const auto pair = bench::measure_pair(run_int8, run_float, repeats, bench::calibrate_inner(run_int8),
                                          bench::calibrate_inner(run_float), 2);
    Row r{c, pair, quant::sqnr_db(linear(x), dynamic(x)),
          to_string(select_int8_path(dynamic.activation_quant_max, dynamic.packed_weights()))};
    rows.push_back(r);
  }

  if (json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const Row& r : rows) {
      out.push_back({{"batch", r.c.batch},
                     {"in_features", r.c.in},
                     {"out_features", r.c.out},
                     {"threads", 1},
                     {"int8_path", r.path},
                     {"float", r.pair.b},
                     {"int8_dynamic", r.pair.a},
                     {"speedup", r.pair.ratio},
                     {"speedup_cpu", r.pair.cpu_ratio},
                     {"output_sqnr_db", r.sqnr_db}});
    }
    std::puts(out.dump().c_str());
    return 0;
  }
  std::printf("DynamicQuantizedLinear vs float Linear, forward, 1 thread, median of %d repeats\n", repeats);
  std::printf("%-12s %6s %12s %12s %9s %12s %12s %9s %10s  %s\n", "layer", "batch", "float (us)", "int8 (us)", "speedup",
              "float cpu", "int8 cpu", "speedup", "SQNR (dB)", "int8 path");
  for (const Row& r : rows) {
    const std::string layer = std::to_string(r.c.in) + "->" + std::to_string(r.c.out);
    std::printf("%-12s %6lld %12.1f %12.1f %8.2fx %12.1f %12.1f %8.2fx %10.1f  %s\n", layer.c_str(),
                static_cast<long long>(r.c.batch), r.pair.b.median * 1e6, r.pair.a.median * 1e6, r.pair.ratio,
                r.pair.b.cpu_median * 1e6, r.pair.a.cpu_median * 1e6, r.pair.cpu_ratio, r.sqnr_db, r.path.c_str());
  }
  std::printf("speedup = float time / int8 time, median of per-pair ratios (> 1: int8 is faster), on the wall clock and on this thread's CPU\n"
              "time (which a busy machine disturbs less). SQNR: int8 output against float, docs/ptq.md eq. 10.\n");
  return 0;
}

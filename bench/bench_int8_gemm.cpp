// bench_int8_gemm — the int8 requantized GEMM (u8 x i8 -> u8, weights packed
// beforehand) against OpenBLAS sgemm (and sgemv at M = 1) on the same shapes,
// measured in the same run (suite.h, section a; docs/int8_kernel.md).
//
//   bench_int8_gemm [--threads N] [--quick] [--json]
#include "suite.h"

int main(int argc, char** argv) {
  const auto o = tq::bench::parse_program_options(argc, argv);
  const auto rows = tq::bench::int8_gemm(o.suite);
  if (o.json) {
    std::puts(tq::bench::int8_gemm_json(rows).dump().c_str());
  } else {
    tq::bench::print_int8_gemm(stdout, rows, o.suite);
  }
  return 0;
}

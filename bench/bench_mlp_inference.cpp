// bench_mlp_inference — the Fashion-MNIST MLP (784-256-128-10) after static
// int8 conversion against the float model it came from, forward only, float
// in and float out, at batch 1, 64 and 1000 (suite.h, section b).
//
//   bench_mlp_inference [--threads N] [--quick] [--json]
#include "suite.h"

int main(int argc, char** argv) {
  const auto o = tq::bench::parse_program_options(argc, argv);
  const auto rows = tq::bench::mlp_inference(o.suite);
  if (o.json) {
    std::puts(tq::bench::mlp_inference_json(rows).dump().c_str());
  } else {
    tq::bench::print_mlp_inference(stdout, rows, o.suite);
  }
  return 0;
}

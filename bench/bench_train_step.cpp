// bench_train_step — what a training step costs beyond its matrix products,
// and what QAT costs beyond float (suite.h, sections c and d):
//   (c) MLP 784-256-128-10, batch 64: float step vs the same 8 GEMMs called
//       directly through cblas_sgemm; QAT step vs float step;
//   (d) the seed's SimpleNN (10-5-2) at batch 1, float and QAT, in us, where
//       per-op overhead is all there is.
// Wall clock and the thread's CPU time are both printed; on a machine shared
// with other work the CPU time is the steadier figure.
//
//   bench_train_step [--threads N] [--quick] [--json]
#include "suite.h"

int main(int argc, char** argv) {
  const auto o = tq::bench::parse_program_options(argc, argv);
  const auto step = tq::bench::mlp_train_step(o.suite);
  const auto simple = tq::bench::simple_nn_step(o.suite);
  if (o.json) {
    const nlohmann::ordered_json j = {{"mlp_train_step", tq::bench::mlp_train_step_json(step)},
                                      {"simple_nn", tq::bench::simple_nn_step_json(simple)}};
    std::puts(j.dump().c_str());
  } else {
    tq::bench::print_mlp_train_step(stdout, step, o.suite);
    std::puts("");
    tq::bench::print_simple_nn_step(stdout, simple);
  }
  return 0;
}

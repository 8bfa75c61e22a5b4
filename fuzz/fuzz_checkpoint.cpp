// libFuzzer target: run_checkpoint of fuzz/fuzz_entry_points.h on each input.
// Built by fuzz/CMakeLists.txt, run by scripts/fuzz.sh.
#include <cstdio>
#include <cstdlib>

#include "fuzz_entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tq::fuzzing::Problem problem = tq::fuzzing::run_checkpoint(data, size);
  if (!problem.empty()) {
    std::fprintf(stderr, "fuzz_checkpoint: property violated: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}

#!/usr/bin/env bash
# Builds tinyqat with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option TINYQAT_SANITIZE) in build-asan/ and runs the whole ctest
# suite under them: any memory error, leak or undefined behaviour fails the
# test that caused it, with a stack trace (docs/reliability.md).
#
#   scripts/sanitize.sh [extra cmake arguments]
#
# Separate from scripts/test.sh: the sanitized build is slower to build and
# to run. The fuzz corpus (tests/test_fuzz_regressions.cpp) runs here too.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTINYQAT_SANITIZE=ON -DTINYQAT_BUILD_BENCH=OFF "$@" >/dev/null
cmake --build build-asan -j"$(nproc)"
built=$(date +%s)

# halt_on_error: the first report fails the test; detect_leaks: leaks are errors.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
(cd build-asan && ctest --output-on-failure -j"$(nproc)" -E "^mpi: ") || status=$?
# The data-parallel tests (mpirun): what Open MPI allocates in MPI_Init and
# MPI_Finalize and never frees is not tinyqat's leak (scripts/lsan_mpi.supp).
# Open MPI is built without frame pointers, so its stacks are unwound the slow
# way (only here: it slows every allocation), and its plug-ins stay loaded
# so that their frames keep their library names, which the suppressions match.
(cd build-asan &&
  LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/../scripts/lsan_mpi.supp:fast_unwind_on_malloc=0:print_suppressions=0} \
  OMPI_MCA_mca_base_component_disable_dlclose=1 ctest --output-on-failure -j"$(nproc)" -R "^mpi: ") || status=$?
end=$(date +%s)
echo "sanitize.sh: build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s;" \
     "$([ "$status" = 0 ] && echo "all tests passed under ASan + UBSan" || echo "FAILURES (see above)")"
exit "$status"

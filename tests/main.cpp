// Catch2's main. Its POSIX signal handlers are off: on a crash they build a
// report with malloc inside the handler, which deadlocks when the crash came
// from a corrupted heap (the test then hangs instead of failing); without
// them the process dies at once and ctest names the test that crashed.
#define CATCH_CONFIG_MAIN
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

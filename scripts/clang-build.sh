#!/usr/bin/env bash
# Builds tinyqat with clang (Debian 12's clang 14) in build-clang/, so the
# code keeps compiling with both of Debian's compilers (g++ 12 is the default
# build). Installs clang first when it is missing. Extra arguments go to cmake.
#
#   scripts/clang-build.sh            build everything
#   CLANG_TEST=1 scripts/clang-build.sh ...   then run the tests too
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh clang
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
start=$(date +%s)
cmake -S . -B build-clang "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
  "${launcher[@]}" "$@" >/dev/null
cmake --build build-clang -j"$(nproc)"
echo "clang-build.sh: built with $(clang++ --version | head -1) in $(($(date +%s) - start)) s"
if [ "${CLANG_TEST:-0}" = 1 ]; then
  (cd build-clang && ctest --output-on-failure -j"$(nproc)")
fi

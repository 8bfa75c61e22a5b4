#!/usr/bin/env bash
# Builds and runs tests/outside_project, a small program of someone else's,
# both ways a project can take tinyqat: find_package (from an install of
# build/) and add_subdirectory (tinyqat compiled again inside the project,
# without optimisation). ctest only configures the add_subdirectory way, as
# its full build takes minutes. Needs a built build/ (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d build ] || { echo "check-outside.sh: no build/ here; build first (bash scripts/build.sh)" >&2; exit 1; }
launcher=()
command -v ccache >/dev/null && launcher=(-DLAUNCHER=ccache)
for mode in find_package add_subdirectory; do
  start=$(date +%s)
  cmake -DMODE=$mode -DTINYQAT_SOURCE="$PWD" -DTINYQAT_BUILD="$PWD/build" \
        -DWORK="$PWD/build/tests/outside_$mode" "${launcher[@]}" -P tests/outside_project/run.cmake
  echo "check-outside.sh: $mode passed in $(($(date +%s) - start)) s"
done

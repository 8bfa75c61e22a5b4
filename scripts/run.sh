#!/usr/bin/env bash
# The README's main command: install what is missing, build, then run the
# whole workflow on Fashion-MNIST (float training, QAT, PTQ, dynamic) and
# print the comparison table. Extra arguments go to `tinyqat pipeline`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
./build/tinyqat pipeline --workdir build/models "$@"

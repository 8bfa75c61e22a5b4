#!/usr/bin/env bash
# Installs the Debian packages tinyqat needs, only those that are missing.
# Runs as root on a fresh Debian 12 machine (uses sudo when not root).
#
#   scripts/setup.sh            what the build, the tests and the main job need
#   scripts/setup.sh clang      and clang too (scripts/clang-build.sh)
#   scripts/setup.sh torch      and PyTorch 1.13 for the bench/pytorch_*.py reference scripts
set -euo pipefail
packages=(build-essential cmake pkg-config libopenblas-dev catch2 libfmt-dev
          libcxxopts-dev nlohmann-json3-dev zlib1g-dev libbenchmark-dev
          dataset-fashion-mnist libxml2-dev python3-numpy
          libonnx-dev libprotobuf-dev python3-onnx nodejs libopenmpi-dev openmpi-bin)
# Extras for the scripts that need more than the default build:
#   clang  scripts/clang-build.sh;  fuzz  scripts/fuzz.sh (libFuzzer's runtime too);
#   torch  bench/pytorch_*.py (the PyTorch figures beside tinyqat's)
for extra in "$@"; do
  case "$extra" in
    clang) packages+=(clang) ;;
    fuzz) packages+=(clang libclang-rt-14-dev) ;;
    torch) packages+=(python3-torch python3-torchvision) ;;
    *) echo "setup: unknown extra '$extra' (known: clang, fuzz, torch)" >&2; exit 2 ;;
  esac
done
missing=()
# npm: Debian's package, unless an npm is already there (some Node.js builds bundle it).
command -v npm >/dev/null 2>&1 || packages+=(npm)
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime for Node.js (docs/onnx.md), into tools/onnx/node_modules, once.
# --ignore-scripts: the package's install script fetches GPU extras that are
# not needed; the CPU library ships inside the package.
onnx_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tools/onnx"
if [ ! -d "$onnx_dir/node_modules/onnxruntime-node" ]; then
  echo "setup: installing onnxruntime-node into $onnx_dir"
  (cd "$onnx_dir" && npm ci --ignore-scripts --no-audit --no-fund)
fi

#!/usr/bin/env bash
# Exports the main job's models (scripts/run.sh writes them to build/models: float, QAT, PTQ, dynamic
# int8) to ONNX, validates each file with onnx.checker and runs the whole
# Fashion-MNIST test set through tinyqat and ONNX Runtime, printing the
# agreement (docs/onnx.md). Not a test: it needs the main job's models.
#   bash scripts/onnx_check.sh [WORKDIR]     (default: the main job's workdir)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$root/build/models}"
tool="$root/build/tinyqat-onnx"
[ -x "$tool" ] || { echo "onnx_check: $tool not built (bash scripts/build.sh)" >&2; exit 1; }
[ -d "$root/tools/onnx/node_modules/onnxruntime-node" ] || {
  echo "onnx_check: ONNX Runtime for Node.js missing; run scripts/setup.sh" >&2; exit 1; }
found=0
for name in float qat_int8 ptq_int8 dynamic_int8; do
  model="$work/$name.safetensors"
  [ -f "$model" ] || { echo "onnx_check: no $model (skipped)"; continue; }
  found=1
  "$root/build/tinyqat" export --model "$model" --out "$work/$name.onnx" >/dev/null
  "$tool" agree --model "$model" --onnx "$work/$name.onnx" --check
done
[ "$found" = 1 ] || { echo "onnx_check: no model in $work; run scripts/run.sh first" >&2; exit 1; }

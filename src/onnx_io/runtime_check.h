// Checking an exported model in real tools (docs/onnx.md §6): ONNX Runtime
// (the Node.js package, through tools/onnx/run.js) runs it, and ONNX's
// Python checker validates the file. Both run as child processes, so the
// library itself needs neither.
#pragma once

#include <cstdint>
#include <string>

#include "io/dataset.h"
#include "nn/module.h"

namespace tq::onnx_io {

// Where the helper programs are.
struct RuntimeTools {
  std::string node = "node";
  std::string runner;  // tools/onnx/run.js of the source tree
  std::string python = "/usr/bin/python3";  // Debian's, with python3-onnx
  std::string work_dir = ".";  // for the temporary tensor files
};

// Tensor files of tools/onnx/run.js: "TQT1", u32 rank, i64 dims, f32 values.
void write_tensor_file(const std::string& path, const Tensor& t);
Tensor read_tensor_file(const std::string& path);

// Runs `onnx_path` in ONNX Runtime on `input` (f32); returns its output.
// Throws std::runtime_error with the runner's message if it fails.
Tensor run_onnxruntime(const RuntimeTools& tools, const std::string& onnx_path, const Tensor& input);

// onnx.checker.check_model(full_check=True) on the file; throws with the
// checker's message if the file is refused.
void check_with_python_onnx(const RuntimeTools& tools, const std::string& onnx_path);

struct Agreement {
  int64_t samples = 0;
  double prediction_agreement = 0;  // percent of identical argmax
  double tinyqat_accuracy = 0, runtime_accuracy = 0;  // percent
  double max_abs_diff = 0;          // largest |tinyqat - runtime| output difference
  double max_rel_diff = 0;          // max_abs_diff / the largest |tinyqat output|
  double output_step = 0;           // tinyqat's output quantization step (0 for float outputs)
  double max_steps = 0;             // max_abs_diff / output_step (0 for float outputs)
  double differing_outputs = 0;     // percent of output values that differ at all
};

// Runs `data` through `model` (eval mode, batches of batch_size) and through
// the exported file in ONNX Runtime with the same batches, and compares. A
// file whose input has rank 4 gets images (N, 1, H, W), else rows (N, H*W).
Agreement compare_with_onnxruntime(nn::Module& model, const RuntimeTools& tools, const std::string& onnx_path,
                                   const io::Dataset& data, int64_t batch_size = 1000);

}  // namespace tq::onnx_io

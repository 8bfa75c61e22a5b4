// Seeing what quantization did to a model, layer by layer (docs/ptq.md §5).
// The measure is the signal-to-quantization-noise ratio
//     SQNR = 10 log10( sum r^2 / sum (r - q)^2 )  dB               (docs/ptq.md eq. 10)
// of a quantized tensor q against its float reference r: each 6 dB is about
// one bit. A layer whose SQNR is far below the others is the one to keep in
// float (qconfig = nullptr on that module).
#pragma once

#include <string>
#include <vector>

#include "nn/module.h"

namespace tq::quant {

struct LayerComparison {
  std::string name;        // dotted path of the layer
  std::string float_type;  // e.g. Linear
  std::string quant_type;  // e.g. QuantizedLinear
  double sqnr_db = 0;      // +inf when identical
  double max_abs_error = 0;
  int64_t numel = 0;
};

// SQNR (eq. 10) of `approx` against `reference`; both are converted to float
// (quantized tensors are dequantized). Shapes must match.
double sqnr_db(const Tensor& reference, const Tensor& approx);

// Per quantized layer: its weight (dequantized; for QAT layers, fake-quantized)
// against the float model's weight at the same path.
std::vector<LayerComparison> compare_weights(nn::Module& float_model, nn::Module& quantized_model);

// Runs `inputs` through both models and compares, per quantized layer, its
// output with the float model's output of the layer at the same path.
// Neither model is changed.
std::vector<LayerComparison> compare_model_outputs(nn::Module& float_model, nn::Module& quantized_model,
                                                   const Tensor& inputs);

// A readable table of the comparisons.
std::string format_comparison(const std::vector<LayerComparison>& rows, const std::string& title);

}  // namespace tq::quant

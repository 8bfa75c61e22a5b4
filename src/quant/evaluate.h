// Measuring a quantized model against the model it came from, on whole
// predictions rather than layer by layer (compare.h does that): test
// accuracy, the share of inputs on which two models predict the same class
// (agreement, docs/quantization.md §8), and the largest output difference in
// quantization steps of the logits.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "nn/module.h"

namespace tq::quant {

// A stream of labelled batches, one per call: sets `inputs` (N, features) f32
// and `labels` (N) i64 and returns true, or returns false when there are no more.
using LabelledBatches = std::function<bool(Tensor& inputs, Tensor& labels)>;

struct Evaluation {
  double accuracy = 0;               // percent
  std::vector<int64_t> predictions;  // one per sample: the argmax of its outputs
  std::vector<float> outputs;        // (samples, classes), dequantized
  int64_t samples = 0;
  int64_t classes = 0;
};

// Runs every batch of `next` through `model` in eval mode, without
// gradients; the model's training mode is put back afterwards.
Evaluation evaluate(nn::Module& model, const LabelledBatches& next);

// Percent of identical predictions; 0 when the two differ in length or are empty.
double agreement(const Evaluation& a, const Evaluation& b);

// The largest |a - b| over all outputs, in units of `step` (e.g. the output
// scale of the last quantized layer), rounded to 1e-3 steps; 0 when step <= 0.
double max_step_difference(const Evaluation& a, const Evaluation& b, double step);

}  // namespace tq::quant

#include "quant/evaluate.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq::quant {

Evaluation evaluate(nn::Module& model, const LabelledBatches& next) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  Evaluation ev;
  Tensor inputs, labels;
  int64_t correct = 0;
  while (next(inputs, labels)) {
    const Tensor out = kernels::contiguous(kernels::to_float(model(inputs)));  // (N, classes)
    ev.classes = out.size(1);
    const Tensor pred = kernels::argmax(out, 1);  // (N) i64
    const Tensor truth = kernels::contiguous(labels);
    if (truth.dtype() != DType::i64 || truth.numel() != out.size(0))
      throw std::invalid_argument(fmt::format("evaluate: a batch of {} outputs came with labels of shape {} ({}); "
                                              "expected ({}) i64",
                                              out.size(0), truth.shape().str(), dtype_name(truth.dtype()), out.size(0)));
    for (int64_t i = 0; i < out.size(0); ++i) {
      const int64_t p = pred.data<int64_t>()[i];
      ev.predictions.push_back(p);
      correct += p == truth.data<int64_t>()[i];
    }
    ev.outputs.insert(ev.outputs.end(), out.data<float>(), out.data<float>() + out.numel());
    ev.samples += out.size(0);
  }
  ev.accuracy = ev.samples ? 100.0 * static_cast<double>(correct) / static_cast<double>(ev.samples) : 0;
  model.train(was_training);
  return ev;
}

double agreement(const Evaluation& a, const Evaluation& b) {
  if (a.predictions.size() != b.predictions.size() || a.predictions.empty()) return 0;
  int64_t same = 0;
  for (size_t i = 0; i < a.predictions.size(); ++i) same += a.predictions[i] == b.predictions[i];
  return 100.0 * static_cast<double>(same) / static_cast<double>(a.predictions.size());
}

double max_step_difference(const Evaluation& a, const Evaluation& b, double step) {
  double m = 0;
  for (size_t i = 0; i < a.outputs.size() && i < b.outputs.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a.outputs[i]) - b.outputs[i]));
  // Rounded to 1e-3 steps: a difference of exactly one step computed in float
  // comes out as 1.0000027, which is one step.
  return step > 0 ? std::round(m / step * 1000.0) / 1000.0 : 0;
}

}  // namespace tq::quant

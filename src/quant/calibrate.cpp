#include "quant/calibrate.h"

#include <fmt/format.h>

#include <stdexcept>

#include "autograd/node.h"

namespace tq::quant {

int64_t calibrate(nn::Module& model, const InputBatches& next, int64_t max_batches,
                  const std::function<void(int64_t done)>& after_batch) {
  if (max_batches < 0) throw std::invalid_argument(fmt::format("calibrate: max_batches {} is negative", max_batches));
  NoGradGuard no_grad;
  model.eval();
  Tensor inputs;
  int64_t done = 0;
  // `next` is asked only while batches are still wanted: a data loader
  // behind it is not moved past the last batch used.
  while (done < max_batches && next(inputs)) {
    model(inputs);
    ++done;
    if (after_batch) after_batch(done);
  }
  return done;
}

int64_t calibrate(nn::Module& model, const std::vector<Tensor>& batches) {
  size_t i = 0;
  return calibrate(
      model,
      [&](Tensor& inputs) {
        if (i == batches.size()) return false;
        inputs = batches[i++];
        return true;
      },
      static_cast<int64_t>(batches.size()));
}

}  // namespace tq::quant

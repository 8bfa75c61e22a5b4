// Calibration (docs/ptq.md §1-2): after `prepare`, the observers record the
// ranges of the values they see; calibrating means running representative
// inputs through the prepared model, with no gradients and in eval mode,
// before `convert` turns the ranges into qparams. How many batches are enough
// is docs/ptq.md §2's question; the loop itself is this short.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "nn/module.h"

namespace tq::quant {

// A stream of calibration inputs, one batch per call: sets `inputs` and
// returns true, or returns false when there are no more.
using InputBatches = std::function<bool(Tensor& inputs)>;

// Runs at most `max_batches` batches of `next` through `model` (prepared:
// observers attached) without gradients. The model is left in eval mode.
// `after_batch(done)` runs after each batch (e.g. to draw progress). Returns
// how many batches were run: fewer than max_batches when `next` ran out.
int64_t calibrate(nn::Module& model, const InputBatches& next, int64_t max_batches,
                  const std::function<void(int64_t done)>& after_batch = {});

// Runs every batch of `batches` through `model` as above.
int64_t calibrate(nn::Module& model, const std::vector<Tensor>& batches);

}  // namespace tq::quant

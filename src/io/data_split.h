// A validation set carved from the training set (docs/data.md §5): a seeded
// random choice of `validation_size` samples goes to the validation set, the
// rest stays for training, each in its original order. Choosing the epoch
// (or any setting) by validation accuracy and touching the test set once, at
// the end, keeps the test accuracy an honest estimate.
#pragma once

#include <cstdint>
#include <vector>

#include "io/dataset.h"

namespace tq::io {

struct TrainValidationSplit {
  Dataset train;
  Dataset validation;
};

// Copies the samples (the result does not share memory with `data`). The
// same data, size and seed give the same split on every machine. Throws
// unless 1 <= validation_size < data.size().
TrainValidationSplit split_validation(const Dataset& data, int64_t validation_size, uint64_t seed);

// The samples at `indices` (each in [0, size)), copied, in that order.
Dataset select_samples(const Dataset& data, const std::vector<int64_t>& indices);

}  // namespace tq::io

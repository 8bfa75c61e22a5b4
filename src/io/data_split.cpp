// Carving a validation set out of a training set (docs/data.md §5).
#include "io/data_split.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "tensor/ops.h"
#include "tensor/random.h"

namespace tq::io {

Dataset select_samples(const Dataset& data, const std::vector<int64_t>& indices) {
  if (!data.images.defined() || data.size() == 0) throw std::invalid_argument("select_samples: empty dataset");
  const Tensor images = kernels::contiguous(data.images);
  const Tensor labels = kernels::contiguous(data.labels);
  if (images.dtype() != DType::u8 || labels.dtype() != DType::u8)
    throw std::invalid_argument("select_samples: expected u8 images and labels");
  const int64_t n = data.size(), sample = images.numel() / n;
  Shape shape = images.shape();
  shape[0] = static_cast<int64_t>(indices.size());
  Dataset out;
  out.num_classes = data.num_classes;
  out.images = empty(shape, DType::u8);
  out.labels = empty(Shape{static_cast<int64_t>(indices.size())}, DType::u8);
  const uint8_t* x = images.data<uint8_t>();
  const uint8_t* y = labels.data<uint8_t>();
  uint8_t* xo = out.images.data<uint8_t>();
  uint8_t* yo = out.labels.data<uint8_t>();
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= n)
      throw std::out_of_range(fmt::format("select_samples: index {} is outside the {} samples", i, n));
    std::memcpy(xo + static_cast<int64_t>(k) * sample, x + i * sample, static_cast<size_t>(sample));
    yo[k] = y[i];
  }
  return out;
}

TrainValidationSplit split_validation(const Dataset& data, int64_t validation_size, uint64_t seed) {
  const int64_t n = data.size();
  if (validation_size < 1 || validation_size >= n)
    throw std::invalid_argument(fmt::format("split_validation: the validation set must have 1 to {} samples (the "
                                            "training set has {}), got {}",
                                            n - 1, n, validation_size));
  Generator g(seed);
  const Tensor order = randperm(n, g);
  const int64_t* p = order.data<int64_t>();
  std::vector<int64_t> val(p, p + validation_size), train(p + validation_size, p + n);
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {select_samples(data, train), select_samples(data, val)};
}

}  // namespace tq::io

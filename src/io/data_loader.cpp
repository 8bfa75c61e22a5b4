// Shuffled mini-batches (docs/data.md §4).
#include "io/data_loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace tq::io {

namespace {

// A tensor of this shape and dtype that nobody else holds, to overwrite:
// `t` itself when it qualifies, else a new one.
Tensor exclusive_or_new(const Tensor& t, const Shape& shape, DType dtype) {
  const TensorImpl* impl = t.impl();
  if (is_sole_owner(t) && t.dtype() == dtype &&
      t.shape() == shape && t.is_contiguous() && !impl->requires_grad && !impl->grad_fn && !impl->grad &&
      !impl->qparams && !impl->fake_quant_grid)
    return t;
  return empty(shape, dtype);
}

}  // namespace

DataLoader::DataLoader(Tensor images, Tensor labels, const DataLoaderOptions& options)
    : images_(std::move(images)), labels_(std::move(labels)), options_(options), rng_(options.seed) {
  if (!images_.defined() || images_.dtype() != DType::u8 || images_.dim() < 2)
    throw std::invalid_argument(fmt::format("DataLoader: expected u8 images (N, ...), found {}",
                                            images_.defined() ? std::string(dtype_name(images_.dtype())) + " " +
                                                                    images_.shape().str()
                                                              : "an undefined tensor"));
  if (!images_.is_contiguous()) throw std::invalid_argument("DataLoader: images must be contiguous");
  if (!labels_.defined() || (labels_.dtype() != DType::u8 && labels_.dtype() != DType::i64) || labels_.dim() != 1 ||
      labels_.size(0) != images_.size(0))
    throw std::invalid_argument(fmt::format(
        "DataLoader: expected u8 or i64 labels ({}) to match images {}, found {}", images_.size(0),
        images_.shape().str(),
        labels_.defined() ? std::string(dtype_name(labels_.dtype())) + " " + labels_.shape().str() : "undefined"));
  if (options_.batch_size < 1)
    throw std::invalid_argument(fmt::format("DataLoader: batch_size must be positive, got {}", options_.batch_size));
  if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size)
    throw std::invalid_argument(fmt::format("DataLoader: rank {} of world_size {} (ranks are 0..world_size - 1)",
                                            options_.rank, options_.world_size));
  if (!(options_.std > 0))
    throw std::invalid_argument(fmt::format("DataLoader: std must be positive, got {}", options_.std));
  if (options_.as_images && images_.dim() != 3 && images_.dim() != 4)
    throw std::invalid_argument(fmt::format("DataLoader: as_images needs images (N, H, W) or (N, C, H, W), found {}",
                                            images_.shape().str()));
  num_samples_ = images_.size(0);
  // (0 samples: the division below would be by zero.)
  if (num_samples_ == 0) throw std::invalid_argument(fmt::format("DataLoader: no samples: images {}", images_.shape().str()));
  sample_size_ = images_.numel() / num_samples_;
  if (num_batches() == 0)
    throw std::invalid_argument(fmt::format("DataLoader: no batches: {} samples, batch_size {} with drop_last",
                                            num_samples_, options_.batch_size));
  // Computed in double, rounded once to float: (x / 255 - mean) / std.
  for (int v = 0; v < 256; ++v)
    lut_[v] = static_cast<float>((v / 255.0 - double{options_.mean}) / double{options_.std});
  shuffle_epoch();
}

Shape DataLoader::batch_shape(int64_t b) const {
  if (!options_.as_images) return {b, sample_size_};
  if (images_.dim() == 3) return {b, 1, images_.size(1), images_.size(2)};
  return {b, images_.size(1), images_.size(2), images_.size(3)};
}

int64_t DataLoader::num_batches() const {
  const int64_t global = options_.batch_size * options_.world_size, rest = num_samples_ % global;
  const int64_t full = num_samples_ / global;
  return options_.drop_last || rest == 0 || rest < options_.world_size ? full : full + 1;
}

void DataLoader::shuffle_epoch() {
  epoch_rng_ = rng_.state();
  permutation_.resize(num_samples_);
  std::iota(permutation_.begin(), permutation_.end(), int64_t{0});
  if (!options_.shuffle) return;
  // Fisher-Yates: every order equally likely (Generator::below has no modulo bias).
  for (int64_t i = num_samples_ - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng_.below(static_cast<uint64_t>(i + 1)));
    std::swap(permutation_[i], permutation_[j]);
  }
}

bool DataLoader::next(Batch& out) {
  if (next_batch_ >= num_batches()) {
    next_epoch();
    return false;
  }
  // This step's global batch [start, start + n) of the permutation, and this rank's share of it.
  const int64_t global = options_.batch_size * options_.world_size, start = next_batch_ * global;
  const int64_t n = std::min(global, num_samples_ - start), r = options_.rank, R = options_.world_size;
  const int64_t first = n == global ? start + r * options_.batch_size : start + n * r / R;
  const int64_t b = n == global ? options_.batch_size : start + n * (r + 1) / R - first;
  out.global_size = n;
  out.images = exclusive_or_new(out.images, batch_shape(b), DType::f32);
  out.labels = exclusive_or_new(out.labels, Shape{b}, DType::i64);

  const uint8_t* x = images_.data<uint8_t>();  // (N, sample_size)
  float* xb = out.images.data<float>();        // (b, sample_size)
  int64_t* yb = out.labels.data<int64_t>();    // (b)
  const bool u8_labels = labels_.dtype() == DType::u8;
  const int64_t label_stride = labels_.strides()[0];
  for (int64_t i = 0; i < b; ++i) {
    const int64_t s = permutation_[first + i];
    const uint8_t* src = x + s * sample_size_;
    float* dst = xb + i * sample_size_;
    for (int64_t k = 0; k < sample_size_; ++k) dst[k] = lut_[src[k]];
    yb[i] = u8_labels ? int64_t{labels_.data<uint8_t>()[s * label_stride]} : labels_.data<int64_t>()[s * label_stride];
  }
  ++next_batch_;
  return true;
}

void DataLoader::next_epoch() {
  ++epoch_;
  next_batch_ = 0;
  shuffle_epoch();
}

void DataLoader::reset() {
  rng_.seed_(options_.seed);
  epoch_ = 0;
  next_batch_ = 0;
  shuffle_epoch();
}

LoaderState DataLoader::state() const {
  return {epoch_, next_batch_, epoch_rng_, num_samples_, options_.batch_size, options_.shuffle, options_.drop_last,
          options_.world_size};
}

void DataLoader::set_state(const LoaderState& s) {
  if (s.num_samples != num_samples_ || s.batch_size != options_.batch_size || s.shuffle != options_.shuffle ||
      s.drop_last != options_.drop_last)
    throw std::invalid_argument(fmt::format(
        "DataLoader::set_state: the state was saved for {} samples, batch_size {}, shuffle {}, drop_last {}; "
        "this loader has {} samples, batch_size {}, shuffle {}, drop_last {}",
        s.num_samples, s.batch_size, s.shuffle, s.drop_last, num_samples_, options_.batch_size, options_.shuffle,
        options_.drop_last));
  if (s.world_size != options_.world_size)
    throw std::invalid_argument(fmt::format(
        "DataLoader::set_state: the state was saved by a run of {} rank(s), this run has {}: resume on {} rank(s) "
        "(mpirun -np {}), since the shards and the global batch depend on the number of ranks",
        s.world_size, options_.world_size, s.world_size, s.world_size));
  if (s.next_batch < 0 || s.next_batch > num_batches())
    throw std::invalid_argument(fmt::format("DataLoader::set_state: next_batch {} is outside 0..{}", s.next_batch,
                                            num_batches()));
  rng_.set_state(s.rng);
  shuffle_epoch();  // the same draws as when this epoch began
  epoch_ = s.epoch;
  next_batch_ = s.next_batch;
}

}  // namespace tq::io

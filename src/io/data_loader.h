// DataLoader: shuffled mini-batches over u8 images with labels
// (docs/data.md §4). Each epoch visits every sample exactly once, in an order
// drawn by Fisher-Yates from the loader's own seeded Generator; a batch is
// converted from u8 to normalised f32 only when it is produced, so the
// dataset stays u8 in memory.
//
//   DataLoader loader(load_fashion_mnist(), {.batch_size = 64, .seed = 1});
//   for (int epoch = 0; epoch < 10; ++epoch)
//     for (const Batch& b : loader) { ... b.images (B, 784), b.labels (B) ... }
//
// A convolutional network takes images, not rows: with .as_images = true the
// same batch comes as (B, 1, 28, 28) (NCHW, one channel), the same values.
//
// Iterating continues the current epoch from where it stands; when it
// reaches the end, the loader moves on to the next epoch (reshuffled).
// state() / set_state() capture that position exactly, for checkpoints.
#pragma once

#include <cstdint>
#include <iterator>
#include <vector>

#include "io/dataset.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace tq::io {

struct Batch {
  Tensor images;  // f32 (B, H*W), or (B, 1, H, W) with as_images: (x / 255 - mean) / std
  Tensor labels;  // i64 (B)
  // Data parallel: the samples of this step over every rank (this batch is
  // one rank's shard of them); a single process: size().
  int64_t global_size = 0;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;  // false: the last, smaller batch is kept
  uint64_t seed = 0;       // seeds the loader's own Generator (not the global one)
  float mean = kFashionMnistMean;  // normalisation, on the scale x / 255
  float std = kFashionMnistStd;
  // false: each sample is a flat row, images (B, H*W), for an MLP; true: an
  // NCHW image, (B, 1, H, W) for (N, H, W) data or (B, C, H, W) for
  // (N, C, H, W) data, for a convolutional network.
  bool as_images = false;
  // Data parallel (docs/distributed.md "Sharding"): world_size ranks, each
  // with a loader of the same seed, draw the same permutation; a step's
  // global batch is world_size * batch_size consecutive samples of it, and
  // rank `rank` takes its batch_size of them. The last, smaller global batch
  // is cut evenly (n * r / world_size ..); when it holds fewer samples than
  // ranks (some would get none) or with drop_last, it is dropped. batch_size
  // is per rank; num_batches() counts global batches, the same on every rank.
  int rank = 0;
  int world_size = 1;
};

// Everything needed to resume exactly: restoring it into a loader over the
// same data with the same options reproduces the same batches from there on.
struct LoaderState {
  uint64_t epoch = 0;      // epochs completed before the current one
  int64_t next_batch = 0;  // the next batch of this epoch, 0..num_batches
  Generator::State rng{};  // the generator before this epoch's shuffle
  // Checked on restore, so a checkpoint cannot resume over other data.
  int64_t num_samples = 0;
  int64_t batch_size = 0;
  bool shuffle = true;
  bool drop_last = false;
  int world_size = 1;  // a data-parallel run resumes on as many ranks
};

class DataLoader {
 public:
  // images: u8 (N, ...), labels: u8 or i64 (N). The loader shares (does not copy) them.
  DataLoader(Tensor images, Tensor labels, const DataLoaderOptions& options = {});
  explicit DataLoader(const Dataset& data, const DataLoaderOptions& options = {})
      : DataLoader(data.images, data.labels, options) {}

  int64_t num_samples() const { return num_samples_; }
  int64_t num_batches() const;  // per epoch
  int64_t batch_size() const { return options_.batch_size; }
  int64_t sample_size() const { return sample_size_; }  // H*W
  Shape batch_shape(int64_t b) const;  // the images of a batch of b samples
  const DataLoaderOptions& options() const { return options_; }

  // Position: the current epoch, its next batch, and this epoch's sample order
  // (batch b holds permutation()[b * batch_size, ...)).
  uint64_t epoch() const { return epoch_; }
  int64_t next_batch() const { return next_batch_; }
  const std::vector<int64_t>& permutation() const { return permutation_; }

  // Puts the next batch of this epoch in `out` and returns true; at the end of
  // the epoch returns false and moves to the next epoch. The tensors in `out`
  // are overwritten in place when `out` is their only holder, else replaced
  // by new ones, so a batch kept elsewhere (e.g. by autograd) never changes.
  bool next(Batch& out);
  // Abandons the rest of this epoch and starts the next one (reshuffled).
  void next_epoch();
  // Back to the start of epoch 0, as freshly constructed.
  void reset();

  LoaderState state() const;
  void set_state(const LoaderState& s);  // throws if s was saved with other data or options

  // Range-for over the rest of the current epoch.
  class Iterator {
   public:
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    const Batch& operator*() const { return batch_; }
    const Batch* operator->() const { return &batch_; }
    Iterator& operator++() {
      done_ = !loader_->next(batch_);
      return *this;
    }
    bool operator==(std::default_sentinel_t) const { return done_; }

   private:
    friend class DataLoader;
    explicit Iterator(DataLoader* loader) : loader_(loader) { ++*this; }
    DataLoader* loader_;
    Batch batch_;
    bool done_ = false;
  };
  Iterator begin() { return Iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  void shuffle_epoch();  // draws permutation_ from rng_ (saving rng_ first)

  Tensor images_, labels_;
  DataLoaderOptions options_;
  int64_t num_samples_ = 0;
  int64_t sample_size_ = 0;
  float lut_[256];  // normalised value of each u8 pixel
  Generator rng_;
  Generator::State epoch_rng_{};
  uint64_t epoch_ = 0;
  int64_t next_batch_ = 0;
  std::vector<int64_t> permutation_;
};

}  // namespace tq::io

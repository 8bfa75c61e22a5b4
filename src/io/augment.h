// Image augmentation for training batches (docs/data.md §6): a random crop
// of the original size from the image padded on every side, and a
// horizontal flip with probability 1/2 — torchvision's RandomCrop(size,
// padding) followed by RandomHorizontalFlip(). Seeded by its own Generator,
// so a run is reproducible, and its state() resumes it exactly.
//
//   io::Augmenter augment({.channels = 1, .height = 28, .width = 28},
//                         {.crop_padding = 2, .horizontal_flip = true,
//                          .fill = io::normalized_pixel(0, loader.options())}, /*seed=*/0);
//   while (loader.next(batch)) { augment.apply_(batch.images); ... }
#pragma once

#include <cstdint>

#include "io/data_loader.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace tq::io {

struct ImageShape {
  int64_t channels = 1, height = 28, width = 28;
  int64_t numel() const { return channels * height * width; }
};

struct AugmentOptions {
  int64_t crop_padding = 0;      // 0: no crop; p: offsets drawn from 0..2p on each axis
  bool horizontal_flip = false;  // mirror left-right with probability 1/2
  float fill = 0.f;              // the value of padded pixels, in the batch's units
};

// The value the DataLoader gives a u8 pixel: (v / 255 - mean) / std. For
// `fill`, so padding looks like black pixels of the normalised data.
float normalized_pixel(uint8_t v, const DataLoaderOptions& options);

// What apply_ does to one image, drawn per sample.
struct AugmentDraw {
  int64_t dy = 0, dx = 0;  // the crop's corner in the padded image, 0..2p
  bool flip = false;
};

class Augmenter {
 public:
  Augmenter(ImageShape shape, AugmentOptions options, uint64_t seed);

  // images: contiguous f32 (B, C*H*W) or (B, C, H, W); augmented in place,
  // each sample with its own draw (crop offsets first, then the flip).
  void apply_(const Tensor& images);
  // One image (C*H*W values), with a given draw: the plain reference.
  void augment_image(const float* in, float* out, const AugmentDraw& draw) const;
  AugmentDraw draw();

  const AugmentOptions& options() const { return options_; }
  const ImageShape& shape() const { return shape_; }
  Generator::State state() const { return rng_.state(); }
  void set_state(const Generator::State& s) { rng_.set_state(s); }

 private:
  ImageShape shape_;
  AugmentOptions options_;
  Generator rng_;
};

}  // namespace tq::io

// Random crop with padding and horizontal flip (docs/data.md §6).
#include "io/augment.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace tq::io {

float normalized_pixel(uint8_t v, const DataLoaderOptions& o) {
  // The loader's own formula: in double, rounded once.
  return static_cast<float>((v / 255.0 - double{o.mean}) / double{o.std});
}

Augmenter::Augmenter(ImageShape shape, AugmentOptions options, uint64_t seed)
    : shape_(shape), options_(options), rng_(seed) {
  if (shape_.channels < 1 || shape_.height < 1 || shape_.width < 1)
    throw std::invalid_argument(fmt::format("Augmenter: image shape ({}, {}, {}) must be positive", shape_.channels,
                                            shape_.height, shape_.width));
  if (options_.crop_padding < 0 || options_.crop_padding > 1024)
    throw std::invalid_argument(fmt::format("Augmenter: crop_padding must be in 0..1024, got {}", options_.crop_padding));
}

AugmentDraw Augmenter::draw() {
  AugmentDraw d;
  const auto span = static_cast<uint64_t>(2 * options_.crop_padding + 1);
  if (options_.crop_padding > 0) {
    d.dy = static_cast<int64_t>(rng_.below(span));
    d.dx = static_cast<int64_t>(rng_.below(span));
  }
  if (options_.horizontal_flip) d.flip = rng_.below(2) == 1;
  return d;
}

void Augmenter::augment_image(const float* in, float* out, const AugmentDraw& d) const {
  // out[c][y][x] = padded[c][y + dy][x' + dx], x' = flip ? W-1-x : x, where
  // padded[c][i][j] = in[c][i - p][j - p] inside the image, else fill.
  const int64_t H = shape_.height, W = shape_.width, p = options_.crop_padding;
  for (int64_t c = 0; c < shape_.channels; ++c)
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + d.dy - p;
      float* row = out + (c * H + y) * W;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx = (d.flip ? W - 1 - x : x) + d.dx - p;
        row[x] = sy >= 0 && sy < H && sx >= 0 && sx < W ? in[(c * H + sy) * W + sx] : options_.fill;
      }
    }
}

void Augmenter::apply_(const Tensor& images) {
  if (!images.defined() || images.dtype() != DType::f32 || !images.is_contiguous() || images.dim() < 2 ||
      images.numel() != images.size(0) * shape_.numel())
    throw std::invalid_argument(fmt::format(
        "Augmenter::apply_: expected contiguous f32 images (B, {}) or (B, {}, {}, {}), got {} {}", shape_.numel(),
        shape_.channels, shape_.height, shape_.width, images.defined() ? dtype_name(images.dtype()) : "undefined",
        images.defined() ? images.shape().str() : ""));
  if (options_.crop_padding == 0 && !options_.horizontal_flip) return;
  const int64_t n = shape_.numel();
  std::vector<float> scratch(static_cast<size_t>(n));
  float* x = images.data<float>();
  for (int64_t b = 0; b < images.size(0); ++b) {
    const AugmentDraw d = draw();
    if (d.dy == options_.crop_padding && d.dx == options_.crop_padding && !d.flip) continue;  // identity
    float* img = x + b * n;
    std::copy(img, img + n, scratch.begin());
    augment_image(scratch.data(), img, d);
  }
}

}  // namespace tq::io

// Loading image classification datasets from IDX files (docs/data.md §3).
#include "io/dataset.h"

#include <fmt/format.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "io/idx.h"
#include "tensor/ops.h"

namespace tq::io {

namespace {

constexpr const char* kInstallHint =
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data DIR";

// dir/stem.gz if it exists, else dir/stem, else an error with the install hint.
std::string find_idx_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(fmt::format("Fashion-MNIST not found: {} is not a directory; {}", dir, kInstallHint));
  for (const std::string& name : {stem + ".gz", stem}) {
    const fs::path p = fs::path(dir) / name;
    if (fs::exists(p, ec)) return p.string();
  }
  throw std::runtime_error(
      fmt::format("Fashion-MNIST not found: {} has neither {}.gz nor {}; {}", dir, stem, stem, kInstallHint));
}

}  // namespace

const char* fashion_mnist_class_name(int label) {
  static constexpr std::array<const char*, kFashionMnistClasses> names = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  if (label < 0 || label >= kFashionMnistClasses)
    throw std::out_of_range(fmt::format("fashion_mnist_class_name: label {} is not in 0..{}", label,
                                        kFashionMnistClasses - 1));
  return names[label];
}

const char* split_name(Split s) { return s == Split::train ? "train" : "test"; }

Split parse_split(const std::string& s) {
  if (s == "train") return Split::train;
  if (s == "test") return Split::test;
  throw std::invalid_argument(fmt::format("unknown split '{}' (expected train or test)", s));
}

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  if (begin < 0 || end > size() || begin >= end)
    throw std::out_of_range(fmt::format("Dataset::slice: [{}, {}) is not a non-empty range within the {} samples",
                                        begin, end, size()));
  return {kernels::slice(images, 0, begin, end), kernels::slice(labels, 0, begin, end), num_classes};
}

Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path, int num_classes) {
  Dataset d;
  d.num_classes = num_classes;
  d.images = read_idx(images_path);
  if (d.images.dtype() != DType::u8 || d.images.dim() != 3)
    throw FormatError(fmt::format("{}: expected u8 images (N, rows, cols), found {} with dimensions {}", images_path,
                                  dtype_name(d.images.dtype()), d.images.shape().str()));
  d.labels = read_idx(labels_path);
  if (d.labels.dtype() != DType::u8 || d.labels.dim() != 1)
    throw FormatError(fmt::format("{}: expected u8 labels (N), found {} with dimensions {}", labels_path,
                                  dtype_name(d.labels.dtype()), d.labels.shape().str()));
  if (d.labels.size(0) != d.images.size(0))
    throw FormatError(fmt::format("{} holds {} images but {} holds {} labels", images_path, d.images.size(0),
                                  labels_path, d.labels.size(0)));
  const uint8_t* y = d.labels.data<uint8_t>();
  for (int64_t i = 0; i < d.labels.size(0); ++i)
    if (y[i] >= num_classes)
      throw FormatError(fmt::format("{}: label {} at index {} is not below the number of classes ({})", labels_path,
                                    int{y[i]}, i, num_classes));
  return d;
}

Dataset load_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string images = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  return load_idx_dataset(images, labels, kFashionMnistClasses);
}

PixelStats pixel_mean_std(const Tensor& images) {
  if (images.dtype() != DType::u8 || images.numel() == 0)
    throw std::invalid_argument(fmt::format("pixel_mean_std: expected non-empty u8 images, found {} {}",
                                            dtype_name(images.dtype()), images.shape().str()));
  const Tensor c = kernels::contiguous(images);
  const uint8_t* p = c.data<uint8_t>();
  // Integer sums are exact: 255^2 * 2^31 fits in 64 bits.
  uint64_t sum = 0, sum_sq = 0;
  for (int64_t i = 0, i_end = c.numel(); i < i_end; ++i) {
    sum += p[i];
    sum_sq += uint64_t{p[i]} * p[i];
  }
  const double n = static_cast<double>(c.numel());
  const double mean = static_cast<double>(sum) / n;
  const double var = static_cast<double>(sum_sq) / n - mean * mean;
  return {mean / 255.0, std::sqrt(std::max(var, 0.0)) / 255.0};
}

}  // namespace tq::io

// Datasets of images with class labels, read from IDX files: Fashion-MNIST
// (the default) and anything laid out like it, MNIST included (docs/data.md §3).
//
// Images stay u8 in memory (N, H, W): 47 MB for the Fashion-MNIST train set
// instead of 188 MB as f32. Labels stay u8 (N) too. The DataLoader
// (io/data_loader.h) turns a batch at a time into f32 inputs and i64 targets.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace tq::io {

// Where the Debian package dataset-fashion-mnist installs the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr int kFashionMnistClasses = 10;
// Pixel mean and standard deviation of the train set, on x / 255
// (measured: 0.286041, 0.353024; pixel_mean_std checks them in the tests).
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;

// "T-shirt/top", "Trouser", ..., "Ankle boot"; throws for a label outside 0..9.
const char* fashion_mnist_class_name(int label);

enum class Split { train, test };
const char* split_name(Split s);    // "train" / "test"
Split parse_split(const std::string& s);  // "train" | "test", else throws

struct Dataset {
  Tensor images;  // u8 (N, H, W)
  Tensor labels;  // u8 (N), each below num_classes
  int num_classes = kFashionMnistClasses;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  // Samples [begin, end) as views on the same memory.
  Dataset slice(int64_t begin, int64_t end) const;
};

// Loads a dataset from an images file (u8, 3-D) and a labels file (u8, 1-D),
// checking that their counts agree and that every label is below num_classes.
Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         int num_classes = kFashionMnistClasses);

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from dir, preferring
// the .gz files; MNIST's files have the same names. A missing directory or
// file gives an error telling to install dataset-fashion-mnist or pass --data.
Dataset load_fashion_mnist(const std::string& dir = kFashionMnistDir, Split split = Split::train);

// Mean and standard deviation of all pixels of u8 images, on the scale x / 255.
struct PixelStats {
  double mean = 0;
  double std = 0;
};
PixelStats pixel_mean_std(const Tensor& images);

}  // namespace tq::io

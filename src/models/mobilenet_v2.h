// MobileNetV2 (Sandler et al. 2018), with torchvision's structure, parameter
// names and initialisation (docs/mobilenet_v2.md):
//
//   features.0        Conv2dNormActivation: 3x3 conv stride 2, BN, ReLU6
//   features.1 .. 17  InvertedResidual blocks: 1x1 expand (t x), 3x3 depthwise,
//                     1x1 linear projection; a residual sum when shapes allow
//   features.18       Conv2dNormActivation: 1x1 conv to 1280 channels
//   global average pool, flatten, classifier = Dropout(0.2), Linear(1280, classes)
//
// mobilenet_v2() has 3,504,872 parameters, as torchvision.models.mobilenet_v2().
// A residual block holds its sum as a child nn::Add named "skip_add" (as in
// torchvision's quantizable variant), so a quantization pass can find it.
#pragma once

#include <memory>
#include <vector>

#include "nn/add.h"
#include "nn/sequential.h"

namespace tq::models {

// Conv2d (no bias) + BatchNorm2d + ReLU6, padding (kernel - 1) / 2: children "0", "1", "2".
class Conv2dNormActivation : public nn::Sequential {
 public:
  Conv2dNormActivation(int64_t in, int64_t out, int64_t kernel = 3, int64_t stride = 1, int64_t groups = 1,
                       bool activation = true);
};

// x -> [1x1 expand + BN + ReLU6] -> 3x3 depthwise + BN + ReLU6 -> 1x1 project + BN (-> + x)
class InvertedResidual : public nn::Module {
 public:
  InvertedResidual(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio);
  Tensor forward(const Tensor& x) override;
  bool use_res_connect;
  nn::Slot<nn::Sequential> conv;
  nn::Slot<nn::Add> skip_add;  // only when use_res_connect
};

// One row of the block table: expansion t, output channels c, repeats n, first stride s.
struct InvertedResidualSetting {
  int64_t t, c, n, s;
};
std::vector<InvertedResidualSetting> mobilenet_v2_settings();

class MobileNetV2 : public nn::Module {
 public:
  // in_channels and first_stride / settings let a small-input variant reuse the builder.
  MobileNetV2(int64_t num_classes = 1000, double width_mult = 1.0, int64_t in_channels = 3, int64_t first_stride = 2,
              std::vector<InvertedResidualSetting> settings = mobilenet_v2_settings(), double dropout = 0.2);
  // x: (N, in_channels, H, W) -> (N, num_classes)
  Tensor forward(const Tensor& x) override;
  nn::Slot<nn::Sequential> features;
  nn::Slot<nn::Sequential> classifier;
  int64_t last_channel = 0;
};

// The channel count rounded to a multiple of `divisor` (at least `divisor`),
// never more than 10% below v: torchvision's _make_divisible.
int64_t make_divisible(double v, int64_t divisor = 8);

// torchvision.models.mobilenet_v2(num_classes, width_mult), seeded initialisation.
std::shared_ptr<MobileNetV2> mobilenet_v2(int64_t num_classes = 1000, double width_mult = 1.0);

// For 28x28 one-channel images: the stem convolution and the first stride-2
// stage (24 channels) run at stride 1 (as CIFAR ports do), so the 28x28 input
// is reduced 8x, to 4x4, instead of 32x.
std::shared_ptr<MobileNetV2> mobilenet_v2_small_input(int64_t num_classes = 10, double width_mult = 1.0,
                                                     int64_t in_channels = 1);

}  // namespace tq::models

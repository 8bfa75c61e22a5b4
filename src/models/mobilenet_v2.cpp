// MobileNetV2 (see mobilenet_v2.h and docs/mobilenet_v2.md).
#include "models/mobilenet_v2.h"

#include <cmath>

#include <fmt/format.h>

#include "autograd/pool_ops.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/activation.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace tq::models {

int64_t make_divisible(double v, int64_t divisor) {
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;  // never round down by more than 10%
  return rounded;
}

Conv2dNormActivation::Conv2dNormActivation(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                                           bool activation) {
  push_back(nn::Conv2d(in, out, kernel, stride, (kernel - 1) / 2, 1, groups, false));
  push_back(nn::BatchNorm2d(out));
  if (activation) push_back(nn::ReLU6(true));
}

InvertedResidual::InvertedResidual(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio) {
  if (stride != 1 && stride != 2)
    throw std::invalid_argument(fmt::format("InvertedResidual: stride should be 1 or 2, got {}", stride));
  const int64_t hidden = static_cast<int64_t>(std::llround(static_cast<double>(in * expand_ratio)));
  use_res_connect = stride == 1 && in == out;
  auto layers = std::make_shared<nn::Sequential>();
  if (expand_ratio != 1) layers->push_back(Conv2dNormActivation(in, hidden, 1));            // pointwise expand
  layers->push_back(Conv2dNormActivation(hidden, hidden, 3, stride, hidden));               // depthwise
  layers->push_back(nn::Conv2d(hidden, out, 1, 1, 0, 1, 1, false));                          // pointwise linear
  layers->push_back(nn::BatchNorm2d(out));
  conv = register_module("conv", layers);
  if (use_res_connect) skip_add = register_module("skip_add", nn::Add());
}

Tensor InvertedResidual::forward(const Tensor& x) { return use_res_connect ? skip_add(x, conv(x)) : conv(x); }

std::vector<InvertedResidualSetting> mobilenet_v2_settings() {
  return {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
}

MobileNetV2::MobileNetV2(int64_t num_classes, double width_mult, int64_t in_channels, int64_t first_stride,
                         std::vector<InvertedResidualSetting> settings, double dropout) {
  if (num_classes < 1 || !(width_mult > 0) || in_channels < 1)
    throw std::invalid_argument(fmt::format("MobileNetV2: num_classes ({}), width_mult ({}) and in_channels ({}) must be "
                                            "positive",
                                            num_classes, width_mult, in_channels));
  int64_t input_channel = make_divisible(32 * width_mult);
  last_channel = make_divisible(1280 * std::max(1.0, width_mult));
  auto f = std::make_shared<nn::Sequential>();
  f->push_back(Conv2dNormActivation(in_channels, input_channel, 3, first_stride));
  for (const auto& [t, c, n, s] : settings) {
    const int64_t out = make_divisible(c * width_mult);
    for (int64_t i = 0; i < n; ++i) {
      f->push_back(InvertedResidual(input_channel, out, i == 0 ? s : 1, t));
      input_channel = out;
    }
  }
  f->push_back(Conv2dNormActivation(input_channel, last_channel, 1));
  features = register_module("features", f);
  auto head = std::make_shared<nn::Sequential>();
  head->push_back(nn::Dropout(dropout));
  head->push_back(nn::Linear(last_channel, num_classes));
  classifier = register_module("classifier", head);

  // torchvision's initialisation: convolutions Kaiming-normal (fan_out), no
  // bias; BatchNorm gamma 1, beta 0; the classifier N(0, 0.01), bias 0.
  for (auto& [path, m] : named_modules()) {
    if (auto* conv = dynamic_cast<nn::Conv2d*>(m)) {
      const Shape& s = conv->weight.shape();
      const double stddev = std::sqrt(2.0 / static_cast<double>(s[0] * s[2] * s[3]));
      kernels::copy_(conv->weight, kernels::mul_scalar(randn(s), static_cast<float>(stddev)));
      if (conv->bias.defined()) kernels::fill_(conv->bias, 0.0);
    } else if (auto* lin = dynamic_cast<nn::Linear*>(m)) {
      kernels::copy_(lin->weight, kernels::mul_scalar(randn(lin->weight.shape()), 0.01f));
      if (lin->bias.defined()) kernels::fill_(lin->bias, 0.0);
    }
  }
}

Tensor MobileNetV2::forward(const Tensor& x) {
  Tensor h = features(x);
  h = tq::adaptive_avg_pool2d(h, 1, 1);
  h = tq::flatten(h, 1);
  return classifier(h);
}

std::shared_ptr<MobileNetV2> mobilenet_v2(int64_t num_classes, double width_mult) {
  return std::make_shared<MobileNetV2>(num_classes, width_mult);
}

std::shared_ptr<MobileNetV2> mobilenet_v2_small_input(int64_t num_classes, double width_mult, int64_t in_channels) {
  auto settings = mobilenet_v2_settings();
  settings[1].s = 1;  // the 24-channel stage keeps the resolution
  return std::make_shared<MobileNetV2>(num_classes, width_mult, in_channels, 1, settings);
}

}  // namespace tq::models

// Pooling on u8 quantized (N, C, H, W) tensors (docs/quantized_cnn.md §5):
// the output keeps the input's qparams. Max pooling is exact; average and
// adaptive average pooling round the mean of the codes half up. These are
// explicit int8 modules for models built by hand; convert leaves a float
// MaxPool2d in place, since max_pool2d() itself pools a quantized tensor on
// its codes. A float input is refused (pooling has no qparams of its own to
// quantize it with).
#pragma once

#include <string>

#include "nn/module.h"
#include "tensor/int8_conv.h"

namespace tq::quant {

struct Pool2dOptions {
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};

class QuantizedMaxPool2d : public nn::Module {
 public:
  explicit QuantizedMaxPool2d(Pool2dOptions options) : options(options) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "QuantizedMaxPool2d"; }
  std::string extra_repr() const override;
  Pool2dOptions options;
};

// count_include_pad: padded taps count as real 0 (PyTorch's default).
class QuantizedAvgPool2d : public nn::Module {
 public:
  explicit QuantizedAvgPool2d(Pool2dOptions options, bool count_include_pad = true)
      : options(options), count_include_pad(count_include_pad) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "QuantizedAvgPool2d"; }
  std::string extra_repr() const override;
  Pool2dOptions options;
  bool count_include_pad;
};

class QuantizedAdaptiveAvgPool2d : public nn::Module {
 public:
  QuantizedAdaptiveAvgPool2d(int64_t out_h, int64_t out_w) : out_h(out_h), out_w(out_w) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "QuantizedAdaptiveAvgPool2d"; }
  std::string extra_repr() const override;
  int64_t out_h, out_w;
};

}  // namespace tq::quant

#include "quant/quantized_pool.h"

#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "tensor/channels_last.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

// x as a u8 quantized (N, C, H, W) tensor in channels-last memory (the
// layout of the quantized convolutions' outputs, kept as it is; any other
// is transposed once), or a clear error.
Tensor quantized_nhwc(const Tensor& x, const char* who) {
  if (!x.defined() || !x.is_quantized() || x.dtype() != DType::u8 || is_per_channel(x.qparams().scheme))
    throw std::invalid_argument(fmt::format("{}: the input must be a u8 tensor quantized per tensor (the output of a "
                                            "quantized layer)",
                                            who));
  if (x.dim() != 4) throw std::invalid_argument(fmt::format("{}: the input must be (N, C, H, W), got {}", who, x.shape().str()));
  return to_channels_last_bytes(x);
}

Pool2dShapeU8 pool_shape(const Tensor& x, const Pool2dOptions& o) {
  Pool2dShapeU8 s;
  s.batch = x.size(0);
  s.channels = x.size(1);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.kernel_h = o.kernel_h;
  s.kernel_w = o.kernel_w;
  s.stride_h = o.stride_h;
  s.stride_w = o.stride_w;
  s.pad_h = o.pad_h;
  s.pad_w = o.pad_w;
  return s;
}

// Runs `kernel` (NHWC in, NHWC out): the output is channels-last too.
template <class Kernel>
Tensor run_nhwc(const Tensor& x, int64_t out_h, int64_t out_w, Kernel kernel) {
  Tensor y = empty_channels_last(x.size(0), x.size(1), out_h, out_w, DType::u8);
  kernel(static_cast<const uint8_t*>(x.raw_data()), static_cast<uint8_t*>(y.raw_data()));
  return with_qparams(y, x.impl()->qparams);
}

std::string options_repr(const Pool2dOptions& o) {
  return fmt::format("kernel_size=({}, {}), stride=({}, {}), padding=({}, {})", o.kernel_h, o.kernel_w, o.stride_h,
                     o.stride_w, o.pad_h, o.pad_w);
}

}  // namespace

Tensor QuantizedMaxPool2d::forward(const Tensor& x_in) {
  const Tensor x = quantized_nhwc(x_in, "QuantizedMaxPool2d");
  const Pool2dShapeU8 s = pool_shape(x, options);
  s.validate("QuantizedMaxPool2d");
  return run_nhwc(x, s.out_h(), s.out_w(), [&](const uint8_t* a, uint8_t* b) { max_pool2d_u8(a, s, b); });
}

std::string QuantizedMaxPool2d::extra_repr() const { return options_repr(options); }

Tensor QuantizedAvgPool2d::forward(const Tensor& x_in) {
  const Tensor x = quantized_nhwc(x_in, "QuantizedAvgPool2d");
  const Pool2dShapeU8 s = pool_shape(x, options);
  s.validate("QuantizedAvgPool2d");
  const int32_t zp = x.qparams().zero_point[0];
  return run_nhwc(x, s.out_h(), s.out_w(),
                  [&](const uint8_t* a, uint8_t* b) { avg_pool2d_u8(a, s, zp, count_include_pad, b); });
}

std::string QuantizedAvgPool2d::extra_repr() const {
  return options_repr(options) + (count_include_pad ? "" : ", count_include_pad=False");
}

Tensor QuantizedAdaptiveAvgPool2d::forward(const Tensor& x_in) {
  const Tensor x = quantized_nhwc(x_in, "QuantizedAdaptiveAvgPool2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  return run_nhwc(x, out_h, out_w,
                  [&](const uint8_t* a, uint8_t* b) { adaptive_avg_pool2d_u8(a, N, H, W, C, out_h, out_w, b); });
}

std::string QuantizedAdaptiveAvgPool2d::extra_repr() const { return fmt::format("output_size=({}, {})", out_h, out_w); }

}  // namespace tq::quant

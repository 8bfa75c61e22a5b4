// Pooling forward and backward (docs/convolution.md §4).
#include "autograd/pool_ops.h"

#include <fmt/format.h>

#include <vector>

#include "tensor/channels_last.h"
#include "tensor/int8_conv.h"
#include "tensor/ops.h"
#include "tensor/pool_kernels.h"

namespace tq {

namespace k = kernels;

namespace {

struct MaxPool2dBackward final : Node {
  MaxPool2dBackward(Tensor argmax, const k::Pool2dGeometry& g) : argmax(std::move(argmax)), geometry(g) {}
  Tensor argmax;  // (N, C, OH, OW) i32: where each maximum came from
  k::Pool2dGeometry geometry;
  const char* name() const override { return "MaxPool2DWithIndicesBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::max_pool2d_backward(k::contiguous(g), argmax, geometry);
  }
};

struct AvgPool2dBackward final : Node {
  explicit AvgPool2dBackward(const k::Pool2dGeometry& g) : geometry(g) {}
  k::Pool2dGeometry geometry;
  const char* name() const override { return "AvgPool2DBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::avg_pool2d_backward(k::contiguous(g), geometry); }
};

struct AdaptiveAvgPool2dBackward final : Node {
  const char* name() const override { return "AdaptiveAvgPool2DBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::adaptive_avg_pool2d_backward(k::contiguous(g), inputs[0].shape());
  }
};

Tensor float_contiguous(const Tensor& t, const char* op) {
  if (!t.defined()) throw std::invalid_argument(fmt::format("{}: received an undefined tensor", op));
  return k::contiguous(t.dtype() == DType::f32 ? t : k::to_float(t));
}

k::Pool2dGeometry geometry_of(const Tensor& x, const Pool2dOptions& o, bool dilated, const char* op) {
  const int64_t sh = o.stride[0] == 0 ? o.kernel[0] : o.stride[0];
  const int64_t sw = o.stride[1] == 0 ? o.kernel[1] : o.stride[1];
  if (!dilated && (o.dilation[0] != 1 || o.dilation[1] != 1))
    throw std::invalid_argument(fmt::format("{}: has no dilation (got ({}, {}))", op, o.dilation[0], o.dilation[1]));
  return k::pool2d_geometry(x.shape(), o.kernel[0], o.kernel[1], sh, sw, o.padding[0], o.padding[1], o.dilation[0],
                            o.dilation[1], op);
}

}  // namespace

namespace {

// Max pooling of a u8 tensor quantized per tensor, on its codes: exact, since
// dequantization is monotone (docs/quantized_cnn.md §5); keeps the qparams.
// The kernel works on NHWC: a channels-last input (what the quantized
// convolutions return) is pooled in place into a channels-last output.
Tensor max_pool2d_quantized(const Tensor& x_in, const k::Pool2dGeometry& g) {
  Pool2dShapeU8 s;
  s.batch = g.N, s.channels = g.C, s.in_h = g.H, s.in_w = g.W;
  s.kernel_h = g.KH, s.kernel_w = g.KW, s.stride_h = g.stride_h, s.stride_w = g.stride_w, s.pad_h = g.pad_h, s.pad_w = g.pad_w;
  const Tensor x = to_channels_last_bytes(x_in);
  Tensor y = empty_channels_last(g.N, g.C, g.OH, g.OW, DType::u8);
  max_pool2d_u8(static_cast<const uint8_t*>(x.raw_data()), s, static_cast<uint8_t*>(y.raw_data()));
  return with_qparams(y, x_in.impl()->qparams);
}

}  // namespace

Tensor max_pool2d(const Tensor& x_in, const Pool2dOptions& o) {
  if (x_in.defined() && x_in.is_quantized() && x_in.dtype() == DType::u8 && !is_per_channel(x_in.qparams().scheme) &&
      o.dilation[0] == 1 && o.dilation[1] == 1)
    return max_pool2d_quantized(x_in, geometry_of(x_in, o, true, "max_pool2d"));
  const Tensor x = float_contiguous(x_in, "max_pool2d");
  const k::Pool2dGeometry g = geometry_of(x, o, true, "max_pool2d");
  Tensor out, argmax;
  k::max_pool2d_forward(x, g, out, argmax);
  // The maximum of values on a fake-quant grid lies on that grid.
  out.impl()->fake_quant_grid = x.impl()->fake_quant_grid;
  if (any_requires_grad(x)) record<MaxPool2dBackward>(out, {x}, std::move(argmax), g);
  return out;
}

Tensor avg_pool2d(const Tensor& x_in, const Pool2dOptions& o) {
  const Tensor x = float_contiguous(x_in, "avg_pool2d");
  const k::Pool2dGeometry g = geometry_of(x, o, false, "avg_pool2d");
  Tensor out = k::avg_pool2d_forward(x, g);
  if (any_requires_grad(x)) record<AvgPool2dBackward>(out, {x}, g);
  return out;
}

Tensor adaptive_avg_pool2d(const Tensor& x_in, int64_t out_h, int64_t out_w) {
  const Tensor x = float_contiguous(x_in, "adaptive_avg_pool2d");
  Tensor out = k::adaptive_avg_pool2d_forward(x, out_h, out_w);
  if (any_requires_grad(x)) record<AdaptiveAvgPool2dBackward>(out, {x});
  return out;
}

}  // namespace tq

// conv2d forward and backward (docs/convolution.md eq. 2-4).
#include "autograd/conv_ops.h"

#include <fmt/format.h>

#include "tensor/conv_kernels.h"
#include "tensor/ops.h"

namespace tq {

namespace k = kernels;

namespace {

struct Conv2dBackward final : Node {
  explicit Conv2dBackward(const k::Conv2dGeometry& g) : geometry(g) {}
  k::Conv2dGeometry geometry;
  const char* name() const override { return "ConvolutionBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = k::contiguous(g_in);
    const float* gp = g.data<float>();
    const int64_t image = geometry.OC * geometry.OH * geometry.OW;
    conv2d_input_weight_backward(*this, [&](int64_t n) { return gp + n * image; }, geometry, gi);  // eq. 3-4
    if (num_inputs > 2 && inputs[2].requires_grad()) {  // db = sum of dy over n, oh, ow
      const LeafGrad leaf = leaf_grad_for_accumulation(inputs[2]);
      if (leaf.buffer.defined()) {
        k::conv2d_backward_bias(g, leaf.buffer, !leaf.fresh);
      } else {
        gi[2] = empty(inputs[2].shape());
        k::conv2d_backward_bias(g, gi[2], false);
      }
    }
  }
};

Tensor float_contiguous(const Tensor& t, const char* what) {
  if (!t.defined()) throw std::invalid_argument(fmt::format("conv2d: {} is undefined", what));
  return k::contiguous(t.dtype() == DType::f32 ? t : k::to_float(t));
}

}  // namespace

void conv2d_input_weight_backward(const Node& node, const k::ImageGradient& dy_of, const k::Conv2dGeometry& geometry,
                                  Tensor* gi) {
  const Tensor& x = node.inputs[0];
  const Tensor& w = node.inputs[1];
  if (x.requires_grad()) gi[0] = empty(x.shape());
  Tensor dw;
  bool accumulate = false;
  if (w.requires_grad()) {  // eq. 4, added straight into a leaf's .grad
    const LeafGrad leaf = leaf_grad_for_accumulation(w);
    if (leaf.buffer.defined()) {
      dw = leaf.buffer;
      accumulate = !leaf.fresh;
    } else {
      dw = gi[1] = empty(w.shape());
    }
  }
  k::conv2d_backward_images(dy_of, x, w, geometry, gi[0], dw, accumulate);
}

Tensor conv2d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const Conv2dOptions& o) {
  const Tensor x = float_contiguous(x_in, "the input");
  const Tensor w = float_contiguous(weight_in, "the weight");
  const k::Conv2dGeometry g = k::conv2d_geometry(x.shape(), w.shape(), o.stride[0], o.stride[1], o.padding[0],
                                                 o.padding[1], o.dilation[0], o.dilation[1], o.groups);
  Tensor b;
  if (bias_in.defined()) {
    b = float_contiguous(bias_in, "the bias");
    if (!(b.shape() == Shape{g.OC}))
      throw std::invalid_argument(fmt::format("conv2d: bias of shape {} does not match out_channels={} (expected ({},))",
                                              b.shape().str(), g.OC, g.OC));
  }
  Tensor out = k::conv2d_forward(x, w, b, g);
  if (any_requires_grad(x, w, b)) {
    if (b.defined()) record<Conv2dBackward>(out, {x, w, b}, g);
    else record<Conv2dBackward>(out, {x, w}, g);
  }
  return out;
}

}  // namespace tq

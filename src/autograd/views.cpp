// The shape ops, each beside its backward node: reshape, flatten, transpose,
// slice. All return views; the backward puts the gradient back in the
// input's shape.
#include "autograd/functions.h"
#include "autograd/op_helpers.h"

namespace tq {

using namespace autograd_detail;

namespace {
struct ReshapeBackward final : Node {
  const char* name() const override { return "ReshapeBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::reshape(g, inputs[0].shape()); }
};
}  // namespace

Tensor reshape(const Tensor& a_in, const Shape& shape) {
  const Tensor a = a_in.is_quantized() ? a_in : f(a_in, "reshape");
  Tensor out = k::reshape(a, shape);
  out.impl()->fake_quant_grid = a.impl()->fake_quant_grid;  // same values, same grid
  if (any_requires_grad(a)) record<ReshapeBackward>(out, {a});
  return out;
}

Tensor flatten(const Tensor& a, int start_dim) {
  require_defined(a, "flatten");
  const int s = normalize_dim(start_dim, a.dim(), "flatten");
  Shape shape;
  for (int i = 0; i < s; ++i) shape.push_back(a.shape()[i]);
  int64_t rest = 1;
  for (int i = s; i < a.dim(); ++i) rest *= a.shape()[i];
  shape.push_back(rest);
  return reshape(a, shape);
}

namespace {
struct TransposeBackward final : Node {
  TransposeBackward(int d0, int d1) : d0(d0), d1(d1) {}
  int d0, d1;
  const char* name() const override { return "TransposeBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::transpose(g, d0, d1); }
};
}  // namespace

Tensor transpose(const Tensor& a_in, int dim0, int dim1) {
  const Tensor a = a_in.is_quantized() ? a_in : f(a_in, "transpose");
  const int d0 = normalize_dim(dim0, a.dim(), "transpose"), d1 = normalize_dim(dim1, a.dim(), "transpose");
  Tensor out = k::transpose(a, d0, d1);
  if (any_requires_grad(a)) record<TransposeBackward>(out, {a}, d0, d1);
  return out;
}

Tensor t(const Tensor& a) {
  require_defined(a, "t");
  if (a.dim() != 2) throw std::invalid_argument("t: expected a 2-D tensor, got shape " + a.shape().str());
  return transpose(a, 0, 1);
}

namespace {
struct SliceBackward final : Node {
  SliceBackward(int dim, int64_t start) : dim(dim), start(start) {}
  int dim;
  int64_t start;
  const char* name() const override { return "SliceBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // The slice's elements are the input's own: g goes back to where they
    // were, zero elsewhere.
    Tensor out = zeros(inputs[0].shape());
    k::copy_(k::slice(out, dim, start, start + g.shape()[dim]), g);
    gi[0] = out;
  }
};
}  // namespace

// Any dtype: rows of integer labels or of a quantized tensor slice as well.
Tensor slice(const Tensor& a, int dim, int64_t start, int64_t end) {
  require_defined(a, "slice");
  const int d = normalize_dim(dim, a.dim(), "slice");
  Tensor out = k::slice(a, d, start, end);  // checks the range
  if (any_requires_grad(a)) record<SliceBackward>(out, {a}, d, start < 0 ? start + a.shape()[d] : start);
  return out;
}

}  // namespace tq

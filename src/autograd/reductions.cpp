// The reductions, each beside its backward node: sum, mean, max
// (docs/autograd.md eq. 14), and argmax.
#include "autograd/functions.h"
#include "autograd/op_helpers.h"

namespace tq {

using namespace autograd_detail;

namespace {
struct SumBackward final : Node {
  const char* name() const override { return "SumBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // Every element contributed with weight 1: the scalar g spreads everywhere (eq. 14).
    gi[0] = k::contiguous(k::expand(g, inputs[0].shape()));
  }
};
}  // namespace

Tensor sum(const Tensor& a_in) {
  const Tensor a = f(a_in, "sum");
  Tensor out = k::sum(a);
  if (any_requires_grad(a)) record<SumBackward>(out, {a});
  return out;
}

namespace {
struct SumDimBackward final : Node {
  SumDimBackward(int dim, bool keepdim, float scale) : dim(dim), keepdim(keepdim), scale(scale) {}
  int dim;
  bool keepdim;
  float scale;  // 1 for sum, 1/n for mean (eq. 14)
  const char* name() const override { return scale == 1.f ? "SumBackward" : "MeanBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    Tensor gk = g;
    if (!keepdim) {
      Shape s = inputs[0].shape();
      s[dim] = 1;
      gk = k::reshape(g, s);
    }
    Tensor out = k::contiguous(k::expand(gk, inputs[0].shape()));
    if (out.same(gk) || out.impl()->storage == gk.impl()->storage) out = k::clone(out);
    if (scale != 1.f) k::mul_scalar_(out, scale);
    gi[0] = out;
  }
};
}  // namespace

Tensor sum(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "sum");
  const int d = normalize_dim(dim, a.dim(), "sum");
  Tensor out = k::sum(a, d, keepdim);
  if (any_requires_grad(a)) record<SumDimBackward>(out, {a}, d, keepdim, 1.f);
  return out;
}

namespace {
struct MeanBackward final : Node {
  const char* name() const override { return "MeanBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    Tensor out = k::clone(k::expand(g, inputs[0].shape()));
    k::mul_scalar_(out, 1.f / static_cast<float>(inputs[0].numel()));
    gi[0] = out;
  }
};
}  // namespace

Tensor mean(const Tensor& a_in) {
  const Tensor a = f(a_in, "mean");
  Tensor out = k::mean(a);
  if (any_requires_grad(a)) record<MeanBackward>(out, {a});
  return out;
}

// The mean over a dimension is the sum scaled by 1/n: SumDimBackward above.
Tensor mean(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "mean");
  const int d = normalize_dim(dim, a.dim(), "mean");
  Tensor out = k::mean(a, d, keepdim);
  if (any_requires_grad(a)) record<SumDimBackward>(out, {a}, d, keepdim, 1.f / static_cast<float>(a.shape()[d]));
  return out;
}

namespace {
struct MaxDimBackward final : Node {
  MaxDimBackward(Tensor index, int dim, bool keepdim) : index(std::move(index)), dim(dim), keepdim(keepdim) {}
  Tensor index;
  int dim;
  bool keepdim;
  const char* name() const override { return "MaxBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // The gradient goes to the (first) position that held the maximum (eq. 14).
    const Shape& s = inputs[0].shape();
    Tensor out = zeros(s);
    const Tensor gc = k::contiguous(g);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; ++i) outer *= s[i];
    for (int i = dim + 1; i < s.size(); ++i) inner *= s[i];
    const int64_t n = s[dim];
    const int64_t* idx = index.data<int64_t>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i)
        out.data<float>()[(o * n + idx[o * inner + i]) * inner + i] = gc.data<float>()[o * inner + i];
    gi[0] = out;
  }
};
}  // namespace

Tensor max(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "max");
  const int d = normalize_dim(dim, a.dim(), "max");
  Tensor out = k::max(a, d, keepdim);
  if (any_requires_grad(a)) record<MaxDimBackward>(out, {a}, k::argmax(a, d, keepdim), d, keepdim);
  return out;
}

// Indices, not values: nothing to differentiate.
Tensor argmax(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "argmax");
  return k::argmax(a, normalize_dim(dim, a.dim(), "argmax"), keepdim);
}

}  // namespace tq

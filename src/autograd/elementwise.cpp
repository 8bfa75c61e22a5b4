// The elementwise ops, each beside its backward node: + - * / with
// broadcasting, the scalar forms, the unary functions (docs/autograd.md §4,
// eq. 4, 5, 9, 13).
#include "autograd/functions.h"
#include "autograd/op_helpers.h"

namespace tq {

using namespace autograd_detail;

// ---- Binary, with broadcasting (eq. 5) ----

namespace {
struct AddBackward final : Node {
  const char* name() const override { return "AddBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // d(a+b)/da = d(a+b)/db = 1; a broadcast operand sums g back to its shape (eq. 5).
    gi[0] = k::sum_to(g, inputs[0].shape());
    gi[1] = k::sum_to(g, inputs[1].shape());
  }
};
}  // namespace

Tensor add(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f(a_in, "add"), b = f(b_in, "add");
  Tensor out = k::add(a, b);
  if (any_requires_grad(a, b)) record<AddBackward>(out, {a, b});
  return out;
}

namespace {
struct SubBackward final : Node {
  const char* name() const override { return "SubBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::sum_to(g, inputs[0].shape());
    if (inputs[1].requires_grad()) gi[1] = k::sum_to(k::neg(g), inputs[1].shape());
  }
};
}  // namespace

Tensor sub(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f(a_in, "sub"), b = f(b_in, "sub");
  Tensor out = k::sub(a, b);
  if (any_requires_grad(a, b)) record<SubBackward>(out, {a, b});
  return out;
}

namespace {
struct MulBackward final : Node {
  const char* name() const override { return "MulBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // d(ab)/da = b, d(ab)/db = a   (eq. 4)
    if (inputs[0].requires_grad()) gi[0] = k::sum_to(k::mul(g, inputs[1]), inputs[0].shape());
    if (inputs[1].requires_grad()) gi[1] = k::sum_to(k::mul(g, inputs[0]), inputs[1].shape());
  }
};
}  // namespace

Tensor mul(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f(a_in, "mul"), b = f(b_in, "mul");
  Tensor out = k::mul(a, b);
  if (any_requires_grad(a, b)) record<MulBackward>(out, {a, b});
  return out;
}

namespace {
struct DivBackward final : Node {
  const char* name() const override { return "DivBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2   (eq. 13)
    if (inputs[0].requires_grad()) gi[0] = k::sum_to(k::div(g, inputs[1]), inputs[0].shape());
    if (inputs[1].requires_grad()) {
      const Tensor gb = k::neg(k::div(k::mul(g, inputs[0]), k::mul(inputs[1], inputs[1])));
      gi[1] = k::sum_to(gb, inputs[1].shape());
    }
  }
};
}  // namespace

Tensor div(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f(a_in, "div"), b = f(b_in, "div");
  Tensor out = k::div(a, b);
  if (any_requires_grad(a, b)) record<DivBackward>(out, {a, b});
  return out;
}

// ---- With a scalar ----

namespace {
struct AddScalarBackward final : Node {
  const char* name() const override { return "AddBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = g; }
};
}  // namespace

Tensor add(const Tensor& a_in, float s) {
  const Tensor a = f(a_in, "add");
  Tensor out = k::add_scalar(a, s);
  if (any_requires_grad(a)) record<AddScalarBackward>(out, {a});
  return out;
}

namespace {
struct MulScalarBackward final : Node {
  explicit MulScalarBackward(float s) : s(s) {}
  float s;
  const char* name() const override { return "MulBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::mul_scalar(g, s); }
};
}  // namespace

Tensor mul(const Tensor& a_in, float s) {
  const Tensor a = f(a_in, "mul");
  Tensor out = k::mul_scalar(a, s);
  if (any_requires_grad(a)) record<MulScalarBackward>(out, {a}, s);
  return out;
}

// ---- Unary ----

namespace {
struct NegBackward final : Node {
  const char* name() const override { return "NegBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::neg(g); }
};
}  // namespace

Tensor neg(const Tensor& a_in) {
  const Tensor a = f(a_in, "neg");
  Tensor out = k::neg(a);
  if (any_requires_grad(a)) record<NegBackward>(out, {a});
  return out;
}

namespace {
struct ExpBackward final : Node {
  explicit ExpBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;  // exp(x): its own derivative (eq. 13)
  const char* name() const override { return "ExpBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::mul(g, y); }
};
}  // namespace

Tensor exp(const Tensor& a_in) {
  const Tensor a = f(a_in, "exp");
  Tensor out = k::exp(a);
  if (any_requires_grad(a)) record<ExpBackward>(out, {a}, alias(out));
  return out;
}

namespace {
struct LogBackward final : Node {
  const char* name() const override { return "LogBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::div(g, inputs[0]); }  // d log x = 1/x (eq. 13)
};
}  // namespace

Tensor log(const Tensor& a_in) {
  const Tensor a = f(a_in, "log");
  Tensor out = k::log(a);
  if (any_requires_grad(a)) record<LogBackward>(out, {a});
  return out;
}

namespace {
struct ReluBackward final : Node {
  const char* name() const override { return "ReluBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // dx = g * [x > 0] (eq. 9). The input x is already saved as inputs[0].
    const Tensor& x = inputs[0];
    if (is_sole_owner(g) && g.is_contiguous() && x.is_contiguous() && g.shape() == x.shape()) {
      // Nobody else sees g: apply the mask in place instead of allocating.
      float* gp = g.data<float>();
      const float* xp = x.data<float>();
      const int64_t n = g.numel();
      for (int64_t i = 0; i < n; ++i) gp[i] = xp[i] > 0.f ? gp[i] : 0.f;
      gi[0] = g;
    } else {
      gi[0] = k::relu_backward(g, x);
    }
  }
};
}  // namespace

Tensor relu(const Tensor& a_in) {
  if (a_in.is_quantized()) return k::quantized_relu(a_in);
  const Tensor a = f(a_in, "relu");
  Tensor out = k::relu(a);
  // relu keeps values on a fake-quant grid: 0 is a grid point (eq. 3 of docs/quantization.md).
  out.impl()->fake_quant_grid = a.impl()->fake_quant_grid;
  if (any_requires_grad(a)) record<ReluBackward>(out, {a});
  return out;
}

namespace {
struct SigmoidBackward final : Node {
  explicit SigmoidBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;
  const char* name() const override { return "SigmoidBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::mul(g, k::mul(y, k::add_scalar(k::neg(y), 1.f)));  // y (1 - y)   (eq. 13)
  }
};
}  // namespace

Tensor sigmoid(const Tensor& a_in) {
  const Tensor a = f(a_in, "sigmoid");
  Tensor out = k::sigmoid(a);
  if (any_requires_grad(a)) record<SigmoidBackward>(out, {a}, alias(out));
  return out;
}

namespace {
struct TanhBackward final : Node {
  explicit TanhBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;
  const char* name() const override { return "TanhBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::mul(g, k::add_scalar(k::neg(k::mul(y, y)), 1.f));  // 1 - y^2   (eq. 13)
  }
};
}  // namespace

Tensor tanh(const Tensor& a_in) {
  const Tensor a = f(a_in, "tanh");
  Tensor out = k::tanh(a);
  if (any_requires_grad(a)) record<TanhBackward>(out, {a}, alias(out));
  return out;
}

Tensor pow2(const Tensor& a) { return mul(a, a); }

}  // namespace tq

// Forward and backward of every differentiable op. Equation numbers refer to
// docs/autograd.md.
#include "autograd/functions.h"

#include <cmath>

#include <fmt/format.h>

namespace tq {

namespace k = kernels;

namespace {

// A float view of an input: dequantizes quantized tensors (they carry no
// gradient), passes float tensors through untouched (graph links kept).
inline void require_defined(const Tensor& t, const char* op) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": received an undefined tensor");
}

inline Tensor f(const Tensor& t, const char* op) {
  require_defined(t, op);
  return t.dtype() == DType::f32 ? t : k::to_float(t);
}

// The output of a forward kernel whose own storage a Node may keep without a
// reference cycle (a detached alias of the output).
inline Tensor alias(const Tensor& t) { return t.detach(); }

// ---- Nodes ----

struct AddBackward final : Node {
  const char* name() const override { return "AddBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // d(a+b)/da = d(a+b)/db = 1; a broadcast operand sums g back to its shape (eq. 5).
    gi[0] = k::sum_to(g, inputs[0].shape());
    gi[1] = k::sum_to(g, inputs[1].shape());
  }
};

struct SubBackward final : Node {
  const char* name() const override { return "SubBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::sum_to(g, inputs[0].shape());
    if (inputs[1].requires_grad()) gi[1] = k::sum_to(k::neg(g), inputs[1].shape());
  }
};

struct MulBackward final : Node {
  const char* name() const override { return "MulBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // d(ab)/da = b, d(ab)/db = a   (eq. 4)
    if (inputs[0].requires_grad()) gi[0] = k::sum_to(k::mul(g, inputs[1]), inputs[0].shape());
    if (inputs[1].requires_grad()) gi[1] = k::sum_to(k::mul(g, inputs[0]), inputs[1].shape());
  }
};

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

struct AddScalarBackward final : Node {
  const char* name() const override { return "AddBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = g; }
};

struct MulScalarBackward final : Node {
  explicit MulScalarBackward(float s) : s(s) {}
  float s;
  const char* name() const override { return "MulBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::mul_scalar(g, s); }
};

struct NegBackward final : Node {
  const char* name() const override { return "NegBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::neg(g); }
};

struct ExpBackward final : Node {
  explicit ExpBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;  // exp(x): its own derivative (eq. 13)
  const char* name() const override { return "ExpBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::mul(g, y); }
};

struct LogBackward final : Node {
  const char* name() const override { return "LogBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::div(g, inputs[0]); }  // d log x = 1/x (eq. 13)
};

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

struct SigmoidBackward final : Node {
  explicit SigmoidBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;
  const char* name() const override { return "SigmoidBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::mul(g, k::mul(y, k::add_scalar(k::neg(y), 1.f)));  // y (1 - y)   (eq. 13)
  }
};

struct TanhBackward final : Node {
  explicit TanhBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;
  const char* name() const override { return "TanhBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = k::mul(g, k::add_scalar(k::neg(k::mul(y, y)), 1.f));  // 1 - y^2   (eq. 13)
  }
};

struct SumBackward final : Node {
  const char* name() const override { return "SumBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // Every element contributed with weight 1: the scalar g spreads everywhere (eq. 14).
    gi[0] = k::contiguous(k::expand(g, inputs[0].shape()));
  }
};

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

struct MeanBackward final : Node {
  const char* name() const override { return "MeanBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    Tensor out = k::clone(k::expand(g, inputs[0].shape()));
    k::mul_scalar_(out, 1.f / static_cast<float>(inputs[0].numel()));
    gi[0] = out;
  }
};

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

struct ReshapeBackward final : Node {
  const char* name() const override { return "ReshapeBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::reshape(g, inputs[0].shape()); }
};

struct TransposeBackward final : Node {
  TransposeBackward(int d0, int d1) : d0(d0), d1(d1) {}
  int d0, d1;
  const char* name() const override { return "TransposeBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = k::transpose(g, d0, d1); }
};

// Writes op(a) op(b) into `input`'s gradient: straight into its .grad when it
// is a leaf (beta = 1 adds, eq. 3), otherwise into a new tensor in *grad_in.
void gemm_into_grad(const Tensor& input, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                    Tensor* grad_in) {
  const LeafGrad leaf = leaf_grad_for_accumulation(input);
  if (leaf.buffer.defined()) {
    k::gemm(a, trans_a, b, trans_b, 1.f, leaf.fresh ? 0.f : 1.f, leaf.buffer);
  } else {
    *grad_in = empty(input.shape());
    k::gemm(a, trans_a, b, trans_b, 1.f, 0.f, *grad_in);
  }
}

struct MatmulBackward final : Node {
  const char* name() const override { return "MatmulBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // C = A B, g = dL/dC (M, N), A (M, K), B (K, N):
    // dA = g B^T (M, K), dB = A^T g (K, N)   (eq. 6)
    const Tensor& a = inputs[0];
    const Tensor& b = inputs[1];
    if (a.requires_grad()) gemm_into_grad(a, g, false, b, true, &gi[0]);
    if (b.requires_grad()) gemm_into_grad(b, a, true, g, false, &gi[1]);
  }
};

struct LinearBackward final : Node {
  const char* name() const override { return "LinearBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // y = x W^T + b, g = dL/dy (N, out), x (N, in), W (out, in), b (out):
    // dx = g W (N, in)  (eq. 7),  dW = g^T x (out, in),  db = sum_n g[n, :]  (eq. 8).
    // Both GEMMs read g and x where they are (transposes are BLAS flags), and
    // a leaf's dW / db is added straight into its .grad.
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    if (x.requires_grad()) {
      gi[0] = empty(x.shape());
      k::gemm(g, false, w, false, 1.f, 0.f, gi[0]);
    }
    if (w.requires_grad()) gemm_into_grad(w, g, true, x, false, &gi[1]);
    if (num_inputs > 2 && inputs[2].requires_grad()) {
      const LeafGrad leaf = leaf_grad_for_accumulation(inputs[2]);
      if (leaf.buffer.defined()) k::sum_rows_into(g, leaf.buffer, !leaf.fresh);
      else gi[2] = k::sum(g, 0, false);
    }
  }
};

struct LogSoftmaxBackward final : Node {
  explicit LogSoftmaxBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;  // log-probabilities
  const char* name() const override { return "LogSoftmaxBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // dx_i = g_i - softmax_i * sum_j g_j   (eq. 11)
    const Tensor gc = k::contiguous(g);
    Tensor out = empty(y.shape());
    const int64_t n = y.shape().back(), rows = y.numel() / n;
    const float* lp = y.data<float>();
    const float* gp = gc.data<float>();
    float* o = out.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += gp[r * n + j];
      for (int64_t j = 0; j < n; ++j) o[r * n + j] = gp[r * n + j] - std::exp(lp[r * n + j]) * static_cast<float>(s);
    }
    gi[0] = out;
  }
};

struct SoftmaxBackward final : Node {
  explicit SoftmaxBackward(Tensor y) : y(std::move(y)) {}
  Tensor y;
  const char* name() const override { return "SoftmaxBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // dx_i = y_i (g_i - sum_j g_j y_j)   (eq. 12)
    const Tensor gc = k::contiguous(g);
    Tensor out = empty(y.shape());
    const int64_t n = y.shape().back(), rows = y.numel() / n;
    const float* yp = y.data<float>();
    const float* gp = gc.data<float>();
    float* o = out.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += static_cast<double>(gp[r * n + j]) * yp[r * n + j];
      for (int64_t j = 0; j < n; ++j) o[r * n + j] = yp[r * n + j] * (gp[r * n + j] - static_cast<float>(s));
    }
    gi[0] = out;
  }
};

struct CrossEntropyBackward final : Node {
  CrossEntropyBackward(Tensor probs_minus_onehot, Reduction reduction)
      : d(std::move(probs_minus_onehot)), reduction(reduction) {}
  Tensor d;  // (N, C): softmax - onehot, divided by N for the mean (eq. 10)
  Reduction reduction;
  const char* name() const override { return "CrossEntropyBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    if (reduction != Reduction::none) {
      // g is the scalar d loss_total / d loss; 1 when the loss is the root.
      const float s = static_cast<float>(g.item());
      gi[0] = s == 1.f ? d : k::mul_scalar(d, s);
      return;
    }
    // One loss per row: row r of the gradient is g[r] (softmax_r - onehot_r).
    const Tensor gc = k::contiguous(g);
    Tensor out = empty(d.shape());
    const int64_t N = d.shape()[0], C = d.shape()[1];
    const float* dp = d.data<float>();
    const float* gp = gc.data<float>();
    float* o = out.data<float>();
    for (int64_t r = 0; r < N; ++r)
      for (int64_t j = 0; j < C; ++j) o[r * C + j] = gp[r] * dp[r * C + j];
    gi[0] = out;
  }
};

struct MseBackward final : Node {
  explicit MseBackward(Reduction reduction) : reduction(reduction) {}
  Reduction reduction;
  const char* name() const override { return "MseLossBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // L = mean((x - t)^2): dL/dx = 2 (x - t) / n, dL/dt = -dL/dx (eq. 15; sum: no 1/n;
    // none: the upstream gradient multiplies each element).
    const Tensor diff = k::sub(inputs[0], inputs[1]);
    Tensor dx;
    if (reduction == Reduction::none) {
      dx = k::mul(diff, g);
      k::mul_scalar_(dx, 2.f);
    } else {
      const float n = reduction == Reduction::mean ? static_cast<float>(inputs[0].numel()) : 1.f;
      dx = k::mul_scalar(diff, 2.f * static_cast<float>(g.item()) / n);
    }
    if (inputs[0].requires_grad()) gi[0] = dx;
    if (inputs[1].requires_grad()) gi[1] = k::neg(dx);
  }
};

}  // namespace

// ---- Elementwise ----

#define TQ_BINARY(fn, NodeT)                                          \
  Tensor fn(const Tensor& a_in, const Tensor& b_in) {                 \
    const Tensor a = f(a_in, #fn), b = f(b_in, #fn);                 \
    Tensor out = k::fn(a, b);                                         \
    if (any_requires_grad(a, b)) record<NodeT>(out, {a, b});          \
    return out;                                                       \
  }
TQ_BINARY(add, AddBackward)
TQ_BINARY(sub, SubBackward)
TQ_BINARY(mul, MulBackward)
TQ_BINARY(div, DivBackward)
#undef TQ_BINARY

Tensor add(const Tensor& a_in, float s) {
  const Tensor a = f(a_in, "add");
  Tensor out = k::add_scalar(a, s);
  if (any_requires_grad(a)) record<AddScalarBackward>(out, {a});
  return out;
}

Tensor mul(const Tensor& a_in, float s) {
  const Tensor a = f(a_in, "mul");
  Tensor out = k::mul_scalar(a, s);
  if (any_requires_grad(a)) record<MulScalarBackward>(out, {a}, s);
  return out;
}

Tensor neg(const Tensor& a_in) {
  const Tensor a = f(a_in, "neg");
  Tensor out = k::neg(a);
  if (any_requires_grad(a)) record<NegBackward>(out, {a});
  return out;
}

Tensor exp(const Tensor& a_in) {
  const Tensor a = f(a_in, "exp");
  Tensor out = k::exp(a);
  if (any_requires_grad(a)) record<ExpBackward>(out, {a}, alias(out));
  return out;
}

Tensor log(const Tensor& a_in) {
  const Tensor a = f(a_in, "log");
  Tensor out = k::log(a);
  if (any_requires_grad(a)) record<LogBackward>(out, {a});
  return out;
}

Tensor relu(const Tensor& a_in) {
  if (a_in.is_quantized()) return k::quantized_relu(a_in);
  const Tensor a = f(a_in, "relu");
  Tensor out = k::relu(a);
  // relu keeps values on a fake-quant grid: 0 is a grid point (eq. 3 of docs/quantization.md).
  out.impl()->fake_quant_grid = a.impl()->fake_quant_grid;
  if (any_requires_grad(a)) record<ReluBackward>(out, {a});
  return out;
}

Tensor sigmoid(const Tensor& a_in) {
  const Tensor a = f(a_in, "sigmoid");
  Tensor out = k::sigmoid(a);
  if (any_requires_grad(a)) record<SigmoidBackward>(out, {a}, alias(out));
  return out;
}

Tensor tanh(const Tensor& a_in) {
  const Tensor a = f(a_in, "tanh");
  Tensor out = k::tanh(a);
  if (any_requires_grad(a)) record<TanhBackward>(out, {a}, alias(out));
  return out;
}

Tensor pow2(const Tensor& a) { return mul(a, a); }

// ---- Reductions ----

Tensor sum(const Tensor& a_in) {
  const Tensor a = f(a_in, "sum");
  Tensor out = k::sum(a);
  if (any_requires_grad(a)) record<SumBackward>(out, {a});
  return out;
}

Tensor sum(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "sum");
  const int d = normalize_dim(dim, a.dim(), "sum");
  Tensor out = k::sum(a, d, keepdim);
  if (any_requires_grad(a)) record<SumDimBackward>(out, {a}, d, keepdim, 1.f);
  return out;
}

Tensor mean(const Tensor& a_in) {
  const Tensor a = f(a_in, "mean");
  Tensor out = k::mean(a);
  if (any_requires_grad(a)) record<MeanBackward>(out, {a});
  return out;
}

Tensor mean(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "mean");
  const int d = normalize_dim(dim, a.dim(), "mean");
  Tensor out = k::mean(a, d, keepdim);
  if (any_requires_grad(a)) record<SumDimBackward>(out, {a}, d, keepdim, 1.f / static_cast<float>(a.shape()[d]));
  return out;
}

Tensor max(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = f(a_in, "max");
  const int d = normalize_dim(dim, a.dim(), "max");
  Tensor out = k::max(a, d, keepdim);
  if (any_requires_grad(a)) record<MaxDimBackward>(out, {a}, k::argmax(a, d, keepdim), d, keepdim);
  return out;
}

// ---- Shapes ----

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

// ---- Linear algebra ----

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f(a_in, "matmul"), b = f(b_in, "matmul");
  Tensor out = k::matmul(a, b);
  if (any_requires_grad(a, b)) record<MatmulBackward>(out, {a, b});
  return out;
}

Tensor linear(const Tensor& x_in, const Tensor& weight, const Tensor& bias) {
  const Tensor x = f(x_in, "linear");
  Tensor out = k::linear(x, weight, bias);
  if (any_requires_grad(x, weight, bias)) {
    if (bias.defined()) record<LinearBackward>(out, {x, weight, bias});
    else record<LinearBackward>(out, {x, weight});
  }
  return out;
}

// ---- Softmax and losses ----

Tensor log_softmax(const Tensor& a_in) {
  const Tensor a = f(a_in, "log_softmax");
  Tensor out = k::log_softmax(a);
  if (any_requires_grad(a)) record<LogSoftmaxBackward>(out, {a}, alias(out));
  return out;
}

Tensor softmax(const Tensor& a_in) {
  const Tensor a = f(a_in, "softmax");
  Tensor out = k::softmax(a);
  if (any_requires_grad(a)) record<SoftmaxBackward>(out, {a}, alias(out));
  return out;
}

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target, Reduction reduction) {
  const Tensor logits = f(logits_in, "cross_entropy");
  require_defined(target, "cross_entropy");
  if (logits.dim() != 2)
    throw std::invalid_argument("cross_entropy: expected logits of shape (N, C), got " + logits.shape().str());
  if (target.dtype() != DType::i64 && target.dtype() != DType::i32)
    throw std::invalid_argument(fmt::format("cross_entropy: target must hold integer class indices (i64), got {}",
                                            dtype_name(target.dtype())));
  const int64_t N = logits.shape()[0], C = logits.shape()[1];
  if (!(target.shape() == Shape{N}))
    throw std::invalid_argument(fmt::format("cross_entropy: target of shape {} does not match logits of shape {} (expected ({},))",
                                            target.shape().str(), logits.shape().str(), N));
  if (N == 0) throw std::invalid_argument("cross_entropy: empty batch");
  const Tensor tgt = target.dtype() == DType::i64 ? k::contiguous(target) : k::to_dtype(target, DType::i64);
  const int64_t* t = tgt.data<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    if (t[i] < 0 || t[i] >= C)
      throw std::out_of_range(fmt::format("cross_entropy: target {} at position {} is out of range for {} classes "
                                          "(logits of shape {}; valid targets are 0..{})",
                                          t[i], i, C, logits.shape().str(), C - 1));

  // One pass per row: log-sum-exp, the loss term, and softmax - onehot
  // (scaled by 1/N for the mean), which is exactly the gradient the backward
  // needs (eq. 10).
  const Tensor x = k::contiguous(logits);
  const float* p = x.data<float>();
  const bool need_grad = any_requires_grad(logits);
  const float scale = reduction == Reduction::mean ? 1.f / static_cast<float>(N) : 1.f;
  Tensor d = need_grad ? empty({N, C}) : Tensor();
  Tensor per_row = reduction == Reduction::none ? empty({N}) : Tensor();
  double total = 0;
  for (int64_t r = 0; r < N; ++r) {
    const float* row = p + r * C;
    float m = row[0];
    for (int64_t j = 1; j < C; ++j) m = row[j] > m ? row[j] : m;
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(static_cast<double>(row[j] - m));
    const double lse = m + std::log(s);
    const double loss = lse - row[t[r]];
    total += loss;
    if (per_row.defined()) per_row.data<float>()[r] = static_cast<float>(loss);
    if (need_grad) {
      float* dr = d.data<float>() + r * C;
      for (int64_t j = 0; j < C; ++j) dr[j] = static_cast<float>(std::exp(row[j] - lse)) * scale;
      dr[t[r]] -= scale;
    }
  }
  Tensor out = reduction == Reduction::none ? per_row
                                            : scalar_tensor(reduction == Reduction::mean ? total / static_cast<double>(N) : total);
  if (need_grad) record<CrossEntropyBackward>(out, {logits}, std::move(d), reduction);
  return out;
}

Tensor mse_loss(const Tensor& input_in, const Tensor& target_in, Reduction reduction) {
  const Tensor input = f(input_in, "mse_loss"), target = f(target_in, "mse_loss");
  if (!(input.shape() == target.shape()))
    throw std::invalid_argument(fmt::format("mse_loss: input of shape {} and target of shape {} differ",
                                            input.shape().str(), target.shape().str()));
  const Tensor diff = k::sub(input, target);
  const Tensor sq = k::mul(diff, diff);
  Tensor out = reduction == Reduction::none ? sq : reduction == Reduction::mean ? k::mean(sq) : k::sum(sq);
  if (any_requires_grad(input, target)) record<MseBackward>(out, {input, target}, reduction);
  return out;
}

}  // namespace tq

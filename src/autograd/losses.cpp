// The softmax family and the losses, each beside its backward node:
// log_softmax, softmax, cross_entropy, mse_loss (docs/autograd.md eq. 10-12, 15).
#include "autograd/functions.h"
#include "autograd/op_helpers.h"

#include <cmath>

#include <fmt/format.h>

namespace tq {

using namespace autograd_detail;

namespace {
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
}  // namespace

Tensor log_softmax(const Tensor& a_in) {
  const Tensor a = f(a_in, "log_softmax");
  Tensor out = k::log_softmax(a);
  if (any_requires_grad(a)) record<LogSoftmaxBackward>(out, {a}, alias(out));
  return out;
}

namespace {
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
}  // namespace

Tensor softmax(const Tensor& a_in) {
  const Tensor a = f(a_in, "softmax");
  Tensor out = k::softmax(a);
  if (any_requires_grad(a)) record<SoftmaxBackward>(out, {a}, alias(out));
  return out;
}

namespace {
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
}  // namespace

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

namespace {
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

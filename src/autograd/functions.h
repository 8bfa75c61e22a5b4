// The public op set. Each differentiable op computes its result with a plain
// kernel (src/tensor/ops.h) and, when an input requires a gradient, records a
// Node whose backward is derived in docs/autograd.md. A quantized input is
// dequantized first (float ops see real values); relu keeps a quantized
// tensor quantized (clamping at its zero point is exact on the grid).
//
// The ops are defined by family, each op's forward beside its backward node:
// elementwise.cpp, reductions.cpp, views.cpp, linear_algebra.cpp, losses.cpp
// (shared helpers in op_helpers.h; the engine in engine.cpp).
#pragma once

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq {

// Elementwise, with broadcasting (eq. 5: the gradient of a broadcast operand
// is summed back to its shape).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float s);
Tensor mul(const Tensor& a, float s);
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor pow2(const Tensor& a);  // a * a

// Reductions.
Tensor sum(const Tensor& a);
Tensor sum(const Tensor& a, int dim, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, int dim, bool keepdim = false);
Tensor max(const Tensor& a, int dim, bool keepdim = false);  // values; gradient to the first maximum
// i64 index of the first maximum along `dim` (no gradient); a quantized input is dequantized.
Tensor argmax(const Tensor& a, int dim, bool keepdim = false);

// Shapes (views; backward reshapes / transposes the gradient back).
Tensor reshape(const Tensor& a, const Shape& shape);
Tensor flatten(const Tensor& a, int start_dim = 1);  // (N, ...) -> (N, rest)
Tensor transpose(const Tensor& a, int dim0, int dim1);
Tensor t(const Tensor& a);  // transpose of a 2-D tensor
// Elements [start, end) along `dim` (negative counts from the end), a view
// of any dtype; backward puts the gradient back in place, zero elsewhere.
Tensor slice(const Tensor& a, int dim, int64_t start, int64_t end);

// Linear algebra. a: (M, K), b: (K, N) -> (M, N).
Tensor matmul(const Tensor& a, const Tensor& b);
// x: (N, in), weight: (out, in), bias: (out) or undefined -> (N, out) = x W^T + b (eq. 6-8).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// Softmax family over the last dimension.
Tensor log_softmax(const Tensor& a);
Tensor softmax(const Tensor& a);

// Losses. Reduction as in PyTorch: the mean over the elements (default), their
// sum, or none (one loss per sample / element).
enum class Reduction { none, mean, sum };
// logits: (N, C) f32, target: (N) i64 class indices in [0, C) -> () or (N).
// Fused log-softmax + negative log-likelihood (eq. 10: gradient (softmax - onehot) / N).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::mean);
// input, target: same shape -> () or that shape; (input - target)^2.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);

// Operators, as in PyTorch.
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, float s) { return add(a, s); }
inline Tensor operator+(float s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return add(a, -s); }
inline Tensor operator-(float s, const Tensor& a) { return add(neg(a), s); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, float s) { return mul(a, 1.f / s); }
inline Tensor operator/(float s, const Tensor& a) { return div(scalar_tensor(s), a); }

}  // namespace tq

// Plain tensor kernels: they compute, they record no autograd history.
// src/autograd wraps them into differentiable ops (tq::add, tq::matmul, ...).
// Float kernels take f32 tensors of any strides; a quantized input is
// dequantized first (kernels::to_float) by the autograd wrappers.
#pragma once

#include "tensor/tensor.h"

namespace tq::kernels {

// ---- Views (share storage; never copy) ----
Tensor reshape_view(const Tensor& t, const Shape& shape);  // throws if not viewable
Tensor reshape(const Tensor& t, const Shape& shape);       // view if possible, else copy
Tensor transpose(const Tensor& t, int dim0, int dim1);
Tensor slice(const Tensor& t, int dim, int64_t start, int64_t end);  // [start, end)
Tensor expand(const Tensor& t, const Shape& shape);                  // broadcast view (stride 0)

// ---- Copies and conversions ----
Tensor contiguous(const Tensor& t);  // t itself when already contiguous
Tensor clone(const Tensor& t);       // always a fresh contiguous copy
Tensor to_dtype(const Tensor& t, DType dtype);  // value conversion (no quantization)
// f32 copy of t; a quantized tensor is dequantized, a float one returned as is.
Tensor to_float(const Tensor& t);
void copy_(const Tensor& dst, const Tensor& src);  // shapes must match; converts dtype
void fill_(const Tensor& t, double value);

// ---- Elementwise, f32, with broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, float s);
Tensor mul_scalar(const Tensor& a, float s);
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor relu(const Tensor& a);
// grad * (x > 0): the ReLU backward, given the forward input or output.
Tensor relu_backward(const Tensor& grad, const Tensor& x);
Tensor sigmoid(const Tensor& a);
// ReLU of a quantized tensor, staying quantized: q' = max(q, z) with the same
// qparams (zero maps to z exactly, so this is ReLU on the real values).
Tensor quantized_relu(const Tensor& q);
Tensor tanh(const Tensor& a);
// In place: dst += src (src broadcast to dst's shape), dst += alpha * src, dst *= s.
void add_(const Tensor& dst, const Tensor& src);
void axpy_(const Tensor& dst, float alpha, const Tensor& src);
void mul_scalar_(const Tensor& dst, float s);

// ---- Reductions, f32 ----
Tensor sum(const Tensor& t);                               // scalar
Tensor sum(const Tensor& t, int dim, bool keepdim = false);
Tensor mean(const Tensor& t);
Tensor mean(const Tensor& t, int dim, bool keepdim = false);
Tensor max(const Tensor& t, int dim, bool keepdim = false);  // values
Tensor argmax(const Tensor& t, int dim, bool keepdim = false);  // i64 indices
float max_all(const Tensor& t);
float min_all(const Tensor& t);
// Sums `t` over broadcast dimensions so the result has `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& t, const Shape& shape);
// dst (C) = sum over rows of src (N, C), added to dst when `accumulate`, else
// overwriting it: a Linear layer's bias gradient written into its .grad.
void sum_rows_into(const Tensor& src, const Tensor& dst, bool accumulate);

// ---- Linear algebra (OpenBLAS sgemm), f32 ----
// Products with at most this many multiply-adds (M N K) run in a plain loop:
// below it, the fixed cost of a BLAS call (about 0.07 us here) is larger than
// the arithmetic. Measured on this machine (one thread): 8x8x8 costs the same
// both ways, 16x16x16 is 5x faster in sgemm, 1x5x10 is 4x faster as a loop.
// Products with one row or one column (batch 1) above it go to sgemv, which
// beats sgemm there (1x784 times 784x256: 20 us against 129 us).
inline constexpr int64_t kSmallGemmMacs = 512;
// a: (M, K), b: (K, N) -> (M, N). Transposed views are passed to BLAS as
// transposes, never copied.
Tensor matmul(const Tensor& a, const Tensor& b);
// out = alpha * op(a) @ op(b) + beta * out, where op(x) is x or its transpose.
// a, b: 2-D f32; row-major matrices (possibly row slices) and transposed
// views of them are read in place; anything else is copied first.
// out: contiguous (M, N).
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta,
          const Tensor& out);
// Linear layer forward: x (N, in), w (out, in), bias (out) or undefined -> (N, out).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);

// ---- Softmax family, along the last dimension, f32 ----
Tensor log_softmax(const Tensor& t);
Tensor softmax(const Tensor& t);

}  // namespace tq::kernels

// What every differentiable op of src/autograd shares (internal to the op
// files: elementwise.cpp, reductions.cpp, views.cpp, linear_algebra.cpp,
// losses.cpp).
#pragma once

#include <stdexcept>
#include <string>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq::autograd_detail {

namespace k = kernels;

inline void require_defined(const Tensor& t, const char* op) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": received an undefined tensor");
}

// A float view of an input: dequantizes quantized tensors (they carry no
// gradient), passes float tensors through untouched (graph links kept).
inline Tensor f(const Tensor& t, const char* op) {
  require_defined(t, op);
  return t.dtype() == DType::f32 ? t : k::to_float(t);
}

// The output of a forward kernel whose own storage a Node may keep without a
// reference cycle (a detached alias of the output).
inline Tensor alias(const Tensor& t) { return t.detach(); }

}  // namespace tq::autograd_detail

// Shapes: printing, contiguous strides (docs/tensor.md eq. 2) and the
// broadcasting rule (eq. 5).
#include "tensor/shape.h"

#include <string>

namespace tq {

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < ndim_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  if (ndim_ == 1) s += ",";
  return s + ")";
}

int64_t Shape::numel_overflowed() const {
  for (int i = 0; i < ndim_; ++i)
    if (dims_[i] == 0) return 0;
  throw std::invalid_argument("shape " + str() + " has more elements than a 64-bit count can hold");
}

Shape contiguous_strides(const Shape& shape) {
  Shape st;
  st.resize(shape.size());
  int64_t stride = 1;
  for (int i = shape.size() - 1; i >= 0; --i) {
    st[i] = stride;
    // The stride of dimension 0 is never needed beyond this point, so its
    // product is not formed (a (2^62, 4) tensor has valid strides).
    if (i > 0 && __builtin_mul_overflow(stride, shape[i], &stride))
      throw std::invalid_argument("shape " + shape.str() + " is too large: its strides do not fit in 64 bits");
  }
  return st;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const int n = a.size() > b.size() ? a.size() : b.size();
  Shape out;
  out.resize(n);
  for (int i = 0; i < n; ++i) {
    const int ia = a.size() - n + i, ib = b.size() - n + i;
    const int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument(std::string(op) + ": shapes " + a.str() + " and " + b.str() +
                                  " cannot be broadcast together (dimension " + std::to_string(i) +
                                  ": " + std::to_string(da) + " vs " + std::to_string(db) + ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

int normalize_dim(int dim, int ndim, const char* op) {
  const int d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= (ndim == 0 ? 1 : ndim))
    throw std::out_of_range(std::string(op) + ": dimension " + std::to_string(dim) +
                            " is out of range for a tensor with " + std::to_string(ndim) + " dimensions");
  return d;
}

}  // namespace tq

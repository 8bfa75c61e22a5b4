// Shape and strides: small fixed-capacity arrays of sizes, kept inline in the
// tensor so creating a tensor never allocates for its shape (docs/tensor.md §2).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace tq {

inline constexpr int kMaxDims = 6;

// A list of up to kMaxDims int64 values: used for both shapes and strides.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(const std::vector<int64_t>& dims) { assign(dims.begin(), dims.end()); }

  int size() const { return ndim_; }
  bool empty() const { return ndim_ == 0; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  const int64_t* begin() const { return dims_; }
  const int64_t* end() const { return dims_ + ndim_; }
  int64_t back() const { return dims_[ndim_ - 1]; }

  void push_back(int64_t d) {
    if (ndim_ == kMaxDims) throw std::invalid_argument("Shape: more than " + std::to_string(kMaxDims) + " dimensions");
    dims_[ndim_++] = d;
  }
  void resize(int n, int64_t fill = 0) {
    if (n < 0 || n > kMaxDims) throw std::invalid_argument("Shape: bad number of dimensions " + std::to_string(n));
    for (int i = ndim_; i < n; ++i) dims_[i] = fill;
    ndim_ = n;
  }

  // Number of elements of a tensor of this shape (1 for a scalar, 0 if any
  // dimension is 0). Throws std::invalid_argument naming the shape when the
  // count does not fit in int64 ({2^32, 2^32}), instead of wrapping around.
  int64_t numel() const {
    int64_t n = 1;
    bool overflow = false;
    for (int i = 0; i < ndim_; ++i) overflow |= __builtin_mul_overflow(n, dims_[i], &n);
    if (overflow) return numel_overflowed();
    return n;
  }

  std::vector<int64_t> to_vector() const { return {begin(), end()}; }
  std::string str() const;  // "(2, 3)"

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.ndim_ != b.ndim_) return false;
    for (int i = 0; i < a.ndim_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }

 private:
  int64_t numel_overflowed() const;  // 0 if a dimension is 0, else throws
  template <class It>
  void assign(It first, It last) {
    ndim_ = 0;
    for (; first != last; ++first) push_back(*first);
  }
  int64_t dims_[kMaxDims] = {};
  int ndim_ = 0;
};

// Row-major (C-order) strides of a contiguous tensor of this shape (docs/tensor.md eq. 2).
// Throws std::invalid_argument naming the shape if a stride does not fit in int64
// (possible only with a zero dimension in front of huge ones: (0, 2^40, 2^40)).
Shape contiguous_strides(const Shape& shape);

// The shape two operands broadcast to (NumPy rules, docs/tensor.md eq. 5);
// throws naming `op` and both shapes when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Turns a possibly negative dimension index into 0..ndim-1, or throws naming `op`.
int normalize_dim(int dim, int ndim, const char* op);

}  // namespace tq

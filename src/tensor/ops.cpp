// The tensor kernels: views, copies, elementwise ops with broadcasting,
// reductions, matrix products (OpenBLAS) and softmax. docs/tensor.md derives
// the stride arithmetic they rely on (eq. 1-6).
#include "tensor/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "tensor/channels_last.h"
#include "tensor/int8_conv.h"

namespace tq::kernels {

namespace {

void require_f32(const Tensor& t, const char* op) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": the tensor is undefined");
  if (t.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("{}: expected an f32 tensor, got {} of shape {}", op,
                                            dtype_name(t.dtype()), t.shape().str()));
}

// Calls f(out_index, a_offset) for every element of `shape` walked in
// row-major order, where a_offset follows `strides` (docs/tensor.md eq. 1;
// stride 0 = broadcast).
// The inner loop runs over the last dimension with plain pointer steps.
template <class F>
void for_each_offset(const Shape& shape, const Shape& strides, int64_t base, F&& f) {
  const int nd = shape.size();
  const int64_t n = shape.numel();
  if (n == 0) return;
  if (nd == 0) { f(0, base); return; }
  const int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
  int64_t idx[kMaxDims] = {};
  int64_t off = base;
  for (int64_t i = 0; i < n; i += inner) {
    for (int64_t j = 0; j < inner; ++j) f(i + j, off + j * inner_stride);
    for (int d = nd - 2; d >= 0; --d) {
      off += strides[d];
      if (++idx[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

// The same walk over two operands at once: f(out_index, a_offset, b_offset).
// Used by broadcasting binary ops and strided copies, so they need no
// per-call table of offsets.
template <class F>
void for_each_offset2(const Shape& shape, const Shape& sa, int64_t base_a, const Shape& sb, int64_t base_b, F&& f) {
  const int nd = shape.size();
  const int64_t n = shape.numel();
  if (n == 0) return;
  if (nd == 0) { f(0, base_a, base_b); return; }
  const int64_t inner = shape[nd - 1], ia = sa[nd - 1], ib = sb[nd - 1];
  int64_t idx[kMaxDims] = {};
  int64_t oa = base_a, ob = base_b;
  for (int64_t i = 0; i < n; i += inner) {
    for (int64_t j = 0; j < inner; ++j) f(i + j, oa + j * ia, ob + j * ib);
    for (int d = nd - 2; d >= 0; --d) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
}

// Strides of `t` seen as broadcast to `shape` (0 where t has size 1 / is
// missing: docs/tensor.md eq. 6).
Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st;
  st.resize(shape.size());
  const int off = shape.size() - t.dim();
  for (int i = 0; i < shape.size(); ++i) {
    const int j = i - off;
    st[i] = (j >= 0 && t.shape()[j] != 1) ? t.strides()[j] : 0;
  }
  return st;
}

template <class F>
Tensor binary(const Tensor& a, const Tensor& b, const char* op, F f) {
  require_f32(a, op);
  require_f32(b, op);
  const Shape shape = a.shape() == b.shape() ? a.shape() : broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = empty(shape, DType::f32);
  float* o = out.data<float>();
  const float* pa = static_cast<const float*>(a.impl()->storage->data());
  const float* pb = static_cast<const float*>(b.impl()->storage->data());
  if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
    const float* x = pa + a.offset();
    const float* y = pb + b.offset();
    const int64_t n = out.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
    return out;
  }
  // General case: broadcast operands have stride 0 along their size-1 dimensions.
  const Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  for_each_offset2(shape, sa, a.offset(), sb, b.offset(),
                   [&](int64_t i, int64_t oa, int64_t ob) { o[i] = f(pa[oa], pb[ob]); });
  return out;
}

template <class F>
Tensor unary(const Tensor& a, const char* op, F f) {
  require_f32(a, op);
  Tensor out = empty(a.shape(), DType::f32);
  float* o = out.data<float>();
  if (a.is_contiguous()) {
    const float* x = a.data<float>();
    const int64_t n = a.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = f(x[i]);
  } else {
    const float* base = static_cast<const float*>(a.impl()->storage->data());
    for_each_offset(a.shape(), a.strides(), a.offset(), [&](int64_t i, int64_t off) { o[i] = f(base[off]); });
  }
  return out;
}

}  // namespace

// ---- Views ----

Tensor reshape_view(const Tensor& t, const Shape& shape_in) {
  Shape shape = shape_in;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw std::invalid_argument("reshape: only one dimension can be -1, got " + shape_in.str());
      infer = i;
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || t.numel() % known != 0)
      throw std::invalid_argument(fmt::format("reshape: cannot reshape tensor of shape {} into {}", t.shape().str(), shape_in.str()));
    shape[infer] = t.numel() / known;
  }
  if (shape.numel() != t.numel())
    throw std::invalid_argument(fmt::format("reshape: cannot reshape tensor of shape {} ({} elements) into {}",
                                            t.shape().str(), t.numel(), shape_in.str()));
  if (!t.is_contiguous())
    throw std::invalid_argument("reshape_view: tensor of shape " + t.shape().str() + " is not contiguous");
  return make_view(t, shape, contiguous_strides(shape), t.offset());
}

Tensor reshape(const Tensor& t, const Shape& shape) {
  return t.is_contiguous() ? reshape_view(t, shape) : reshape_view(contiguous(t), shape);
}

Tensor transpose(const Tensor& t, int dim0, int dim1) {
  // Swap two sizes and their strides (docs/tensor.md eq. 3).
  const int d0 = normalize_dim(dim0, t.dim(), "transpose"), d1 = normalize_dim(dim1, t.dim(), "transpose");
  Shape shape = t.shape(), strides = t.strides();
  std::swap(shape[d0], shape[d1]);
  std::swap(strides[d0], strides[d1]);
  return make_view(t, shape, strides, t.offset());
}

Tensor slice(const Tensor& t, int dim, int64_t start, int64_t end) {
  const int d = normalize_dim(dim, t.dim(), "slice");
  const int64_t n = t.shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  if (start < 0 || start > end)
    throw std::out_of_range(fmt::format("slice: range [{}, {}) is invalid for dimension {} of size {}", start, end, d, n));
  // Same strides, offset moved to the first kept element (docs/tensor.md eq. 4).
  Shape shape = t.shape();
  shape[d] = end - start;
  return make_view(t, shape, t.strides(), t.offset() + start * t.strides()[d]);
}

Tensor expand(const Tensor& t, const Shape& shape) {
  broadcast_shapes(t.shape(), shape, "expand");
  return make_view(t, shape, broadcast_strides(t, shape), t.offset());
}

// ---- Copies ----

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : clone(t); }

Tensor clone(const Tensor& t) {
  Tensor out = empty(t.shape(), t.dtype());
  if (dtype_size(t.dtype()) == 1 && is_channels_last(t) && !t.is_contiguous()) {
    // An NHWC quantized activation (channels_last.h) back to NCHW: one blocked transpose.
    nhwc_to_nchw_u8(static_cast<const uint8_t*>(t.raw_data()), t.size(0), t.size(2), t.size(3), t.size(1),
                    static_cast<uint8_t*>(out.raw_data()));
  } else {
    copy_(out, t);
  }
  if (t.is_quantized()) out = with_qparams(out, t.qparams_ptr());
  return out;
}

template <class Dst, class Src>
static void copy_typed(const Tensor& dst, const Tensor& src) {
  const Src* s = static_cast<const Src*>(src.impl()->storage->data());
  Dst* d = static_cast<Dst*>(dst.impl()->storage->data());
  if (dst.shape() == src.shape() && dst.is_contiguous() && src.is_contiguous()) {
    s += src.offset();
    d += dst.offset();
    if constexpr (std::is_same_v<Dst, Src>) {
      std::memcpy(d, s, static_cast<size_t>(dst.numel()) * sizeof(Dst));
    } else {
      for (int64_t i = 0, i_end = dst.numel(); i < i_end; ++i) d[i] = static_cast<Dst>(s[i]);
    }
    return;
  }
  for_each_offset2(dst.shape(), dst.strides(), dst.offset(), broadcast_strides(src, dst.shape()), src.offset(),
                   [&](int64_t, int64_t od, int64_t os) { d[od] = static_cast<Dst>(s[os]); });
}

template <class Dst>
static void copy_from(const Tensor& dst, const Tensor& src) {
  switch (src.dtype()) {
    case DType::f32: copy_typed<Dst, float>(dst, src); break;
    case DType::i32: copy_typed<Dst, int32_t>(dst, src); break;
    case DType::i8: copy_typed<Dst, int8_t>(dst, src); break;
    case DType::u8: copy_typed<Dst, uint8_t>(dst, src); break;
    case DType::i64: copy_typed<Dst, int64_t>(dst, src); break;
  }
}

void copy_(const Tensor& dst, const Tensor& src) {
  if (!dst.defined() || !src.defined()) throw std::invalid_argument("copy_: the tensor is undefined");
  if (!(dst.shape() == src.shape())) {
    if (!(broadcast_shapes(src.shape(), dst.shape(), "copy_") == dst.shape()))
      throw std::invalid_argument(fmt::format("copy_: cannot copy shape {} into shape {}", src.shape().str(), dst.shape().str()));
  }
  switch (dst.dtype()) {
    case DType::f32: copy_from<float>(dst, src); break;
    case DType::i32: copy_from<int32_t>(dst, src); break;
    case DType::i8: copy_from<int8_t>(dst, src); break;
    case DType::u8: copy_from<uint8_t>(dst, src); break;
    case DType::i64: copy_from<int64_t>(dst, src); break;
  }
}

void fill_(const Tensor& t, double value) {
  if (t.is_contiguous() && t.dtype() == DType::f32) {
    // The common case (zeroing a gradient): a plain loop, no temporary.
    float* p = t.data<float>();
    const float v = static_cast<float>(value);
    const int64_t n = t.numel();
    if (v == 0.f) std::memset(p, 0, static_cast<size_t>(n) * sizeof(float));
    else std::fill(p, p + n, v);
    return;
  }
  copy_(t, full(Shape{}, value, t.dtype()));
}

Tensor to_dtype(const Tensor& t, DType dtype) {
  Tensor out = empty(t.shape(), dtype);
  copy_(out, t);
  return out;
}

Tensor to_float(const Tensor& t) {
  if (!t.is_quantized()) {
    if (t.dtype() == DType::f32) return t;
    return to_dtype(t, DType::f32);
  }
  // Dequantize: r = s (q - z)   (docs/quantization.md eq. 1)
  const QParams& q = t.qparams();
  Tensor ints = to_dtype(t, DType::f32);
  float* p = ints.data<float>();
  if (!is_per_channel(q.scheme)) {
    const float s = q.scale[0], z = static_cast<float>(q.zero_point[0]);
    for (int64_t i = 0, i_end = ints.numel(); i < i_end; ++i) p[i] = s * (p[i] - z);
  } else {
    int64_t inner = 1;
    for (int d = q.axis + 1; d < t.dim(); ++d) inner *= t.shape()[d];
    const int64_t channels = t.shape()[q.axis];
    for (int64_t i = 0, i_end = ints.numel(); i < i_end; ++i) {
      const int64_t c = (i / inner) % channels;
      p[i] = q.scale[c] * (p[i] - static_cast<float>(q.zero_point[c]));
    }
  }
  return ints;
}

// ---- Elementwise ----

Tensor add(const Tensor& a, const Tensor& b) { return binary(a, b, "add", [](float x, float y) { return x + y; }); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(a, b, "sub", [](float x, float y) { return x - y; }); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(a, b, "mul", [](float x, float y) { return x * y; }); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(a, b, "div", [](float x, float y) { return x / y; }); }
Tensor add_scalar(const Tensor& a, float s) { return unary(a, "add_scalar", [s](float x) { return x + s; }); }
Tensor mul_scalar(const Tensor& a, float s) { return unary(a, "mul_scalar", [s](float x) { return x * s; }); }
Tensor neg(const Tensor& a) { return unary(a, "neg", [](float x) { return -x; }); }
Tensor exp(const Tensor& a) { return unary(a, "exp", [](float x) { return std::exp(x); }); }
Tensor log(const Tensor& a) { return unary(a, "log", [](float x) { return std::log(x); }); }
Tensor abs(const Tensor& a) { return unary(a, "abs", [](float x) { return std::fabs(x); }); }
Tensor relu(const Tensor& a) { return unary(a, "relu", [](float x) { return x > 0.f ? x : 0.f; }); }
Tensor sigmoid(const Tensor& a) { return unary(a, "sigmoid", [](float x) { return 1.f / (1.f + std::exp(-x)); }); }
Tensor tanh(const Tensor& a) { return unary(a, "tanh", [](float x) { return std::tanh(x); }); }
Tensor relu_backward(const Tensor& grad, const Tensor& x) {
  return binary(grad, x, "relu_backward", [](float g, float v) { return v > 0.f ? g : 0.f; });
}

Tensor quantized_relu(const Tensor& q) {
  if (!q.is_quantized()) throw std::invalid_argument("quantized_relu: the tensor is not quantized");
  const QParams& qp = q.qparams();
  Tensor out = contiguous(q.detach());
  if (out.same(q) || out.impl()->storage == q.impl()->storage) out = clone(q);
  int64_t inner = 1, channels = 1;
  if (is_per_channel(qp.scheme)) {
    channels = q.shape()[qp.axis];
    for (int d = qp.axis + 1; d < q.dim(); ++d) inner *= q.shape()[d];
  }
  auto clamp_at_zero_point = [&](auto* p) {
    for (int64_t i = 0, i_end = out.numel(); i < i_end; ++i) {
      const int32_t z = qp.zero_point[is_per_channel(qp.scheme) ? (i / inner) % channels : 0];
      if (p[i] < z) p[i] = static_cast<std::remove_reference_t<decltype(p[i])>>(z);
    }
  };
  if (out.dtype() == DType::u8) clamp_at_zero_point(out.data<uint8_t>());
  else clamp_at_zero_point(out.data<int8_t>());
  return with_qparams(out, q.qparams_ptr());
}

void add_(const Tensor& dst, const Tensor& src) { axpy_(dst, 1.f, src); }

void axpy_(const Tensor& dst, float alpha, const Tensor& src) {
  require_f32(dst, "axpy_");
  require_f32(src, "axpy_");
  if (dst.shape() == src.shape() && dst.is_contiguous() && src.is_contiguous()) {
    float* d = dst.data<float>();
    const float* s = src.data<float>();
    const int64_t n = dst.numel();
    for (int64_t i = 0; i < n; ++i) d[i] += alpha * s[i];
    return;
  }
  if (!(broadcast_shapes(dst.shape(), src.shape(), "axpy_") == dst.shape()))
    throw std::invalid_argument(fmt::format("axpy_: cannot add shape {} into shape {}", src.shape().str(), dst.shape().str()));
  if (!dst.is_contiguous()) throw std::invalid_argument("axpy_: destination must be contiguous");
  float* d = dst.data<float>();
  const float* s = static_cast<const float*>(src.impl()->storage->data());
  for_each_offset(dst.shape(), broadcast_strides(src, dst.shape()), src.offset(),
                  [&](int64_t i, int64_t off) { d[i] += alpha * s[off]; });
}

void mul_scalar_(const Tensor& dst, float s) {
  require_f32(dst, "mul_scalar_");
  if (!dst.is_contiguous()) throw std::invalid_argument("mul_scalar_: tensor must be contiguous");
  float* d = dst.data<float>();
  for (int64_t i = 0, i_end = dst.numel(); i < i_end; ++i) d[i] *= s;
}

// ---- Reductions ----

Tensor sum(const Tensor& t) {
  require_f32(t, "sum");
  double acc = 0;  // double accumulation: the result does not drift with the size
  const Tensor c = contiguous(t);
  const float* p = c.data<float>();
  for (int64_t i = 0, i_end = c.numel(); i < i_end; ++i) acc += p[i];
  return scalar_tensor(acc);
}

namespace {
// Views a contiguous tensor as (outer, n, inner) around dimension d.
struct Around { int64_t outer = 1, n = 1, inner = 1; };
Around around(const Shape& s, int d) {
  Around a;
  for (int i = 0; i < d; ++i) a.outer *= s[i];
  a.n = s[d];
  for (int i = d + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}
Shape reduced_shape(const Shape& s, int d, bool keepdim) {
  Shape out;
  for (int i = 0; i < s.size(); ++i) {
    if (i != d) out.push_back(s[i]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}
}  // namespace

Tensor sum(const Tensor& t, int dim, bool keepdim) {
  require_f32(t, "sum");
  const int d = normalize_dim(dim, t.dim(), "sum");
  const Tensor c = contiguous(t);
  const Around a = around(c.shape(), d);
  Tensor out = zeros(reduced_shape(c.shape(), d, keepdim));
  const float* p = c.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < a.outer; ++i)
    for (int64_t j = 0; j < a.n; ++j)
      for (int64_t k = 0; k < a.inner; ++k) o[i * a.inner + k] += p[(i * a.n + j) * a.inner + k];
  return out;
}

Tensor mean(const Tensor& t) {
  if (t.numel() == 0) throw std::invalid_argument("mean: tensor has no elements");
  Tensor s = sum(t);
  s.data<float>()[0] /= static_cast<float>(t.numel());
  return s;
}

Tensor mean(const Tensor& t, int dim, bool keepdim) {
  const int d = normalize_dim(dim, t.dim(), "mean");
  Tensor s = sum(t, d, keepdim);
  mul_scalar_(s, 1.f / static_cast<float>(t.shape()[d]));
  return s;
}

template <bool kIndex>
static Tensor max_impl(const Tensor& t, int dim, bool keepdim, const char* op) {
  require_f32(t, op);
  const int d = normalize_dim(dim, t.dim(), op);
  if (t.shape()[d] == 0) throw std::invalid_argument(fmt::format("{}: dimension {} has size 0", op, d));
  const Tensor c = contiguous(t);
  const Around a = around(c.shape(), d);
  Tensor out = empty(reduced_shape(c.shape(), d, keepdim), kIndex ? DType::i64 : DType::f32);
  const float* p = c.data<float>();
  for (int64_t i = 0; i < a.outer; ++i)
    for (int64_t k = 0; k < a.inner; ++k) {
      int64_t best = 0;
      float bv = p[i * a.n * a.inner + k];
      for (int64_t j = 1; j < a.n; ++j) {
        const float v = p[(i * a.n + j) * a.inner + k];
        if (v > bv || (std::isnan(v) && !std::isnan(bv))) { bv = v; best = j; }
      }
      if constexpr (kIndex) out.data<int64_t>()[i * a.inner + k] = best;
      else out.data<float>()[i * a.inner + k] = bv;
    }
  return out;
}

Tensor max(const Tensor& t, int dim, bool keepdim) { return max_impl<false>(t, dim, keepdim, "max"); }
Tensor argmax(const Tensor& t, int dim, bool keepdim) { return max_impl<true>(t, dim, keepdim, "argmax"); }

float max_all(const Tensor& t) {
  require_f32(t, "max_all");
  if (t.numel() == 0) throw std::invalid_argument("max_all: tensor has no elements");
  const Tensor c = contiguous(t);
  const float* p = c.data<float>();
  float m = p[0];
  for (int64_t i = 1, i_end = c.numel(); i < i_end; ++i) m = p[i] > m ? p[i] : m;
  return m;
}

float min_all(const Tensor& t) {
  require_f32(t, "min_all");
  if (t.numel() == 0) throw std::invalid_argument("min_all: tensor has no elements");
  const Tensor c = contiguous(t);
  const float* p = c.data<float>();
  float m = p[0];
  for (int64_t i = 1, i_end = c.numel(); i < i_end; ++i) m = p[i] < m ? p[i] : m;
  return m;
}

void sum_rows_into(const Tensor& src, const Tensor& dst, bool accumulate) {
  require_f32(src, "sum_rows_into");
  require_f32(dst, "sum_rows_into");
  if (src.dim() != 2 || !(dst.shape() == Shape{src.shape()[1]}) || !dst.is_contiguous())
    throw std::invalid_argument(fmt::format("sum_rows_into: cannot sum rows of shape {} into shape {}",
                                            src.shape().str(), dst.shape().str()));
  const Tensor c = contiguous(src);
  const int64_t rows = c.shape()[0], cols = c.shape()[1];
  const float* p = c.data<float>();
  float* d = dst.data<float>();
  if (!accumulate) std::fill(d, d + cols, 0.f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) d[j] += p[r * cols + j];
}

Tensor sum_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  Tensor r = t;
  // Leading dimensions that `shape` does not have are summed away...
  while (r.dim() > shape.size()) r = sum(r, 0, false);
  // ...and dimensions where `shape` has 1 are summed keeping the dimension.
  for (int i = 0; i < shape.size(); ++i)
    if (shape[i] == 1 && r.shape()[i] != 1) r = sum(r, i, true);
  if (!(r.shape() == shape))
    throw std::invalid_argument(fmt::format("sum_to: cannot reduce shape {} to {}", t.shape().str(), shape.str()));
  return r;
}

// ---- Linear algebra ----

namespace {
// A 2-D operand as BLAS sees it: row-major pointer, leading dimension, and
// whether it has to be read transposed. A row-major matrix with rows `ld`
// apart is read as it is; a transposed view of one (strides (1, ld)) is the
// same memory read with the transpose flag flipped, so no copy is made.
struct BlasOperand {
  const float* ptr = nullptr;
  int64_t ld = 0;
  bool trans = false;
};

bool as_blas(const Tensor& t, bool want_trans, BlasOperand* out) {
  const float* base = static_cast<const float*>(t.impl()->storage->data()) + t.offset();
  const int64_t rows = t.shape()[0], cols = t.shape()[1];
  if (t.strides()[1] == 1 && (t.strides()[0] >= cols || rows == 1)) {
    *out = {base, std::max<int64_t>(t.strides()[0], std::max<int64_t>(cols, 1)), want_trans};
    return true;
  }
  if (t.strides()[0] == 1 && (t.strides()[1] >= rows || cols == 1)) {
    *out = {base, std::max<int64_t>(t.strides()[1], std::max<int64_t>(rows, 1)), !want_trans};
    return true;
  }
  return false;  // e.g. a broadcast (stride 0) or a sliced-in-both-dimensions view
}

// Reference product for tiny shapes: out (M, N) = alpha A B + beta out, where
// A and B are read through their BlasOperand descriptions.
void small_gemm(const BlasOperand& A, const BlasOperand& B, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                float* c) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float acc = 0.f;
      for (int64_t kk = 0; kk < K; ++kk) {
        const float x = A.trans ? A.ptr[kk * A.ld + i] : A.ptr[i * A.ld + kk];
        const float y = B.trans ? B.ptr[j * B.ld + kk] : B.ptr[kk * B.ld + j];
        acc += x * y;
      }
      c[i * N + j] = alpha * acc + (beta == 0.f ? 0.f : beta * c[i * N + j]);
    }
}
}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta, const Tensor& out) {
  require_f32(a, "matmul");
  require_f32(b, "matmul");
  if (a.dim() != 2 || b.dim() != 2)
    throw std::invalid_argument(fmt::format("matmul: expected 2-D operands, got shapes {} and {}", a.shape().str(), b.shape().str()));
  const int64_t M = trans_a ? a.shape()[1] : a.shape()[0];
  const int64_t K = trans_a ? a.shape()[0] : a.shape()[1];
  const int64_t Kb = trans_b ? b.shape()[1] : b.shape()[0];
  const int64_t N = trans_b ? b.shape()[0] : b.shape()[1];
  if (K != Kb)
    throw std::invalid_argument(fmt::format("matmul: shapes {}{} and {}{} are not aligned ({} vs {})", a.shape().str(),
                                            trans_a ? "^T" : "", b.shape().str(), trans_b ? "^T" : "", K, Kb));
  if (!(out.shape() == Shape{M, N}) || !out.is_contiguous())
    throw std::invalid_argument(fmt::format("matmul: output must be a contiguous ({}, {}) tensor, got {}", M, N, out.shape().str()));
  if (M == 0 || N == 0) return;
  float* c = out.data<float>();
  if (K == 0) {
    if (beta == 0.f) std::fill(c, c + M * N, 0.f);
    else for (int64_t i = 0; i < M * N; ++i) c[i] *= beta;
    return;
  }
  // Operands BLAS cannot read in place (rare: broadcast views) are copied.
  BlasOperand A, B;
  Tensor a_copy, b_copy;
  if (!as_blas(a, trans_a, &A)) as_blas(a_copy = clone(a), trans_a, &A);
  if (!as_blas(b, trans_b, &B)) as_blas(b_copy = clone(b), trans_b, &B);
  // Tiny products (the batch-1 SimpleNN) cost less as a plain loop than a
  // BLAS call (see kSmallGemmMacs).
  if (M * N * K <= kSmallGemmMacs) {
    small_gemm(A, B, M, N, K, alpha, beta, c);
    return;
  }
  // One row (batch 1) or one column: a matrix-vector product. OpenBLAS's
  // sgemv is several times faster than its sgemm on these shapes.
  if (M == 1 || N == 1) {
    if (beta == 0.f) std::fill(c, c + M * N, 0.f);  // beta = 0 must not read the (uninitialised) output
    if (M == 1) {
      // out (N) = op(B)^T x, x = the row op(A) (1, K): contiguous, or a column of a transposed store.
      const int64_t incx = A.trans ? A.ld : 1;
      if (B.trans)  // B stored (N, K)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), alpha, B.ptr,
                    static_cast<int>(B.ld), A.ptr, static_cast<int>(incx), beta, c, 1);
      else  // B stored (K, N)
        cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(K), static_cast<int>(N), alpha, B.ptr,
                    static_cast<int>(B.ld), A.ptr, static_cast<int>(incx), beta, c, 1);
    } else {
      // out (M) = op(A) x, x = the column op(B) (K, 1).
      const int64_t incx = B.trans ? 1 : B.ld;
      if (A.trans)  // A stored (K, M)
        cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(K), static_cast<int>(M), alpha, A.ptr,
                    static_cast<int>(A.ld), B.ptr, static_cast<int>(incx), beta, c, 1);
      else  // A stored (M, K)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(M), static_cast<int>(K), alpha, A.ptr,
                    static_cast<int>(A.ld), B.ptr, static_cast<int>(incx), beta, c, 1);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, A.trans ? CblasTrans : CblasNoTrans, B.trans ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A.ptr, static_cast<int>(A.ld),
              B.ptr, static_cast<int>(B.ld), beta, c, static_cast<int>(N));
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  require_f32(a, "matmul");
  require_f32(b, "matmul");
  if (a.dim() != 2 || b.dim() != 2)
    throw std::invalid_argument(fmt::format("matmul: expected 2-D operands, got shapes {} and {}", a.shape().str(), b.shape().str()));
  if (a.shape()[1] != b.shape()[0])
    throw std::invalid_argument(fmt::format("matmul: shapes {} and {} are not aligned ({} vs {})", a.shape().str(),
                                            b.shape().str(), a.shape()[1], b.shape()[0]));
  Tensor out = empty({a.shape()[0], b.shape()[1]});
  gemm(a, false, b, false, 1.f, 0.f, out);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  require_f32(x, "linear");
  require_f32(w, "linear");
  if (x.dim() != 2 || w.dim() != 2 || x.shape()[1] != w.shape()[1])
    throw std::invalid_argument(fmt::format("linear: input of shape {} does not match weight of shape {} (expected input (N, {}))",
                                            x.shape().str(), w.shape().str(), w.dim() == 2 ? w.shape()[1] : -1));
  const int64_t N = x.shape()[0], out_features = w.shape()[0];
  Tensor out = empty({N, out_features});
  float beta = 0.f;
  if (bias.defined()) {
    require_f32(bias, "linear");
    if (!(bias.shape() == Shape{out_features}))
      throw std::invalid_argument(fmt::format("linear: bias of shape {} does not match {} output features", bias.shape().str(), out_features));
    // Start from the bias in every row, then let sgemm add x W^T (beta = 1).
    const Tensor b = contiguous(bias);
    float* o = out.data<float>();
    for (int64_t i = 0; i < N; ++i) std::memcpy(o + i * out_features, b.data<float>(), out_features * sizeof(float));
    beta = 1.f;
  }
  gemm(x, false, w, true, 1.f, beta, out);
  return out;
}

// ---- Softmax ----

// Both work row by row on the last dimension, n values per row:
//   log_softmax(x)_j = (x_j - m) - log(sum_k exp(x_k - m)),  m = max_k x_k,
//   softmax(x)_j     = exp(x_j - m) / sum_k exp(x_k - m).
// Subtracting the maximum first means exp never overflows, and x_j - m is
// exact, so large logits lose no precision.
namespace {
template <bool kLog>
Tensor softmax_rows(const Tensor& t, const char* op) {
  require_f32(t, op);
  if (t.dim() == 0) throw std::invalid_argument(std::string(op) + ": needs at least one dimension");
  const Tensor c = contiguous(t);
  Tensor out = empty(c.shape());
  const int64_t n = c.shape().back(), rows = n ? c.numel() / n : 0;
  const float* p = c.data<float>();
  float* o = out.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = p + r * n;
    float* y = o + r * n;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(x[j] - m));
    if constexpr (kLog) {
      const float log_s = static_cast<float>(std::log(s));
      for (int64_t j = 0; j < n; ++j) y[j] = (x[j] - m) - log_s;
    } else {
      const double inv = 1.0 / s;
      for (int64_t j = 0; j < n; ++j) y[j] = static_cast<float>(std::exp(static_cast<double>(x[j] - m)) * inv);
    }
  }
  return out;
}
}  // namespace

Tensor log_softmax(const Tensor& t) { return softmax_rows<true>(t, "log_softmax"); }
Tensor softmax(const Tensor& t) { return softmax_rows<false>(t, "softmax"); }

}  // namespace tq::kernels

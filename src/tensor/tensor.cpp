// Storage allocation, tensor accessors, creation functions and PyTorch-style
// printing (docs/tensor.md §1, §7).
#include "tensor/tensor.h"
#include "tensor/memory_limit.h"

#include <algorithm>
#include <atomic>
#include <malloc.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <ostream>
#include <sstream>

#include <fmt/format.h>

namespace tq {

// ---- Process-wide state: the autograd hooks, the allocator tuning ----

namespace {
AutogradHooks g_autograd_hooks;  // filled in by src/autograd/engine.cpp
}  // namespace

void set_autograd_hooks(const AutogradHooks& hooks) { g_autograd_hooks = hooks; }

void Tensor::backward() const {
  if (!g_autograd_hooks.backward)
    throw std::logic_error("backward: the autograd engine is not linked in (link tinyqat::autograd)");
  g_autograd_hooks.backward(*this);
}

void tune_allocator_for_training() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

// ---- Storage ----

namespace {
std::atomic<size_t> g_tensor_bytes{0}, g_tensor_peak{0}, g_tensor_limit{0}, g_tensor_allocated{0};
}  // namespace

void set_tensor_memory_limit(size_t bytes) { g_tensor_limit.store(bytes); }
size_t tensor_memory_limit() { return g_tensor_limit.load(); }
size_t tensor_memory_in_use() { return g_tensor_bytes.load(); }
size_t tensor_memory_peak() { return g_tensor_peak.load(); }
size_t tensor_memory_allocated() { return g_tensor_allocated.load(); }

std::string human_bytes(size_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  if (b < 1024.0 * 1024) return fmt::format("{:.1f} KiB", b / 1024);
  if (b < 1024.0 * 1024 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  return fmt::format("{:.1f} GiB", b / (1024.0 * 1024 * 1024));
}

Storage::Storage(size_t nbytes) : nbytes_(nbytes) {
  // 64-byte alignment: a cache line, and what AVX2 / AVX-512 loads like.
  // Plain malloc with 63 spare bytes, aligned by hand, rather than
  // aligned_alloc: small blocks then come from malloc's per-thread cache,
  // which matters when every op of a batch-1 step allocates its output.
  // (PTRDIFF_MAX: no object may be larger, and the padding must not wrap.)
  if (nbytes > static_cast<size_t>(PTRDIFF_MAX) - kAlignment)
    throw AllocationError(fmt::format("cannot allocate {} bytes for a tensor: more than any object can have", nbytes));
  const size_t held = g_tensor_bytes.fetch_add(nbytes) + nbytes;
  if (const size_t limit = g_tensor_limit.load(); limit > 0 && held > limit) {
    g_tensor_bytes.fetch_sub(nbytes);
    throw AllocationError(fmt::format("cannot allocate {} bytes ({}) for a tensor: the tensors would hold {}, "
                                      "more than the limit of {}",
                                      nbytes, human_bytes(nbytes), human_bytes(held), human_bytes(limit)));
  }
  raw_ = std::malloc((nbytes ? nbytes : 1) + kAlignment - 1);
  if (!raw_) {
    g_tensor_bytes.fetch_sub(nbytes);
    throw AllocationError(fmt::format("cannot allocate {} bytes ({}) for a tensor: out of memory", nbytes,
                                      human_bytes(nbytes)));
  }
  g_tensor_allocated.fetch_add(nbytes);
  for (size_t peak = g_tensor_peak.load(); held > peak && !g_tensor_peak.compare_exchange_weak(peak, held);) {
  }
  const auto address = reinterpret_cast<uintptr_t>(raw_);
  data_ = reinterpret_cast<void*>((address + kAlignment - 1) / kAlignment * kAlignment);
}

Storage::~Storage() {
  std::free(raw_);
  g_tensor_bytes.fetch_sub(nbytes_);
}

const char* qscheme_name(QScheme s) {
  switch (s) {
    case QScheme::per_tensor_affine: return "per_tensor_affine";
    case QScheme::per_tensor_symmetric: return "per_tensor_symmetric";
    case QScheme::per_channel_affine: return "per_channel_affine";
    case QScheme::per_channel_symmetric: return "per_channel_symmetric";
  }
  return "?";
}

// ---- Tensor ----

int64_t Tensor::size(int d) const {
  const int n = dim();
  const int i = d < 0 ? d + n : d;
  if (i < 0 || i >= n)
    throw std::out_of_range(fmt::format("size: dimension {} out of range for shape {}", d, shape().str()));
  return shape()[i];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (shape()[i] != 1 && strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

bool Tensor::is_transposed_matrix() const {
  return dim() == 2 && strides()[0] == 1 && (strides()[1] == shape()[0] || shape()[1] == 1);
}

void Tensor::check_dtype(DType want, const char* what) const {
  if (!impl_) throw std::logic_error(std::string(what) + ": the tensor is undefined");
  if (impl_->dtype != want)
    throw std::invalid_argument(fmt::format("{}: tensor has dtype {}, asked for {}", what,
                                            dtype_name(impl_->dtype), dtype_name(want)));
}

static double element_as_double(const void* base, DType dt, int64_t index) {
  switch (dt) {
    case DType::f32: return static_cast<const float*>(base)[index];
    case DType::i32: return static_cast<const int32_t*>(base)[index];
    case DType::i8: return static_cast<const int8_t*>(base)[index];
    case DType::u8: return static_cast<const uint8_t*>(base)[index];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(base)[index]);
  }
  return 0;
}

double Tensor::item() const {
  if (!defined()) throw std::logic_error("item: the tensor is undefined");
  if (numel() != 1)
    throw std::invalid_argument(fmt::format("item: tensor of shape {} has {} elements, expected 1",
                                            shape().str(), numel()));
  return element_as_double(impl_->storage->data(), dtype(), impl_->offset);
}

double Tensor::at(std::initializer_list<int64_t> index) const {
  if (static_cast<int>(index.size()) != dim())
    throw std::invalid_argument(fmt::format("at: {} indices for a tensor of shape {}", index.size(), shape().str()));
  int64_t off = impl_->offset;
  int i = 0;
  for (int64_t v : index) {
    if (v < 0 || v >= shape()[i])
      throw std::out_of_range(fmt::format("at: index {} out of range for dimension {} of shape {}", v, i, shape().str()));
    off += v * strides()[i];
    ++i;
  }
  return element_as_double(impl_->storage->data(), dtype(), off);
}

const QParams& Tensor::qparams() const {
  if (!is_quantized()) throw std::logic_error("qparams: the tensor is not quantized");
  return *impl_->qparams;
}

Tensor& Tensor::requires_grad_(bool on) {
  if (on && dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("requires_grad_: only f32 tensors can require gradients (dtype is {})",
                                            dtype_name(dtype())));
  if (!is_leaf()) throw std::logic_error("requires_grad_: only leaf tensors can change requires_grad");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl_ && impl_->grad ? Tensor(impl_->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) { impl_->grad = g.impl_ptr(); }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->dtype = impl_->dtype;
  impl->qparams = impl_->qparams;
  return Tensor(std::move(impl));
}

// ---- Creation ----

size_t storage_bytes(const Shape& shape, DType dtype) {
  for (int64_t d : shape)
    if (d < 0) throw std::invalid_argument("empty: negative dimension in shape " + shape.str());
  const int64_t n = shape.numel();  // throws if the count overflows
  int64_t bytes = 0;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(dtype_size(dtype)), &bytes))
    throw std::invalid_argument(fmt::format("shape {} of {} is too large: its size in bytes does not fit in 64 bits",
                                        shape.str(), dtype_name(dtype)));
  return static_cast<size_t>(bytes);
}

Tensor empty(const Shape& shape, DType dtype) {
  const size_t nbytes = storage_bytes(shape, dtype);
  Shape strides = contiguous_strides(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(nbytes);
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw_data(), 0, static_cast<size_t>(t.numel()) * dtype_size(dtype));
  return t;
}

Tensor full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  const int64_t n = t.numel();
  switch (dtype) {
    case DType::f32: { float* p = t.data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(value); break; }
    case DType::i32: { int32_t* p = t.data<int32_t>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(value); break; }
    case DType::i8: { int8_t* p = t.data<int8_t>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int8_t>(value); break; }
    case DType::u8: { uint8_t* p = t.data<uint8_t>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(value); break; }
    case DType::i64: { int64_t* p = t.data<int64_t>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(value); break; }
  }
  return t;
}

Tensor ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }

Tensor arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i);
  if (dtype == DType::f32) return t;
  Tensor r = empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::i32: r.data<int32_t>()[i] = static_cast<int32_t>(i); break;
      case DType::i64: r.data<int64_t>()[i] = i; break;
      case DType::i8: r.data<int8_t>()[i] = static_cast<int8_t>(i); break;
      case DType::u8: r.data<uint8_t>()[i] = static_cast<uint8_t>(i); break;
      default: break;
    }
  }
  return r;
}

Tensor scalar_tensor(double value, DType dtype) { return full(Shape{}, value, dtype); }

Tensor from_vector(const std::vector<float>& values, const Shape& shape) {
  if (static_cast<int64_t>(values.size()) != shape.numel())
    throw std::invalid_argument(fmt::format("from_vector: {} values do not fill shape {} ({} elements)",
                                            values.size(), shape.str(), shape.numel()));
  Tensor t = empty(shape, DType::f32);
  // An empty vector's data() may be null, and memcpy from null is undefined even for 0 bytes.
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape) {
  if (static_cast<int64_t>(values.size()) != shape.numel())
    throw std::invalid_argument(fmt::format("from_vector_i64: {} values do not fill shape {} ({} elements)",
                                            values.size(), shape.str(), shape.numel()));
  Tensor t = empty(shape, DType::i64);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

Tensor from_bytes(const void* data, DType dtype, const Shape& shape) {
  Tensor t = empty(shape, dtype);
  const size_t nbytes = static_cast<size_t>(t.numel()) * dtype_size(dtype);
  if (nbytes > 0) std::memcpy(t.raw_data(), data, nbytes);
  return t;
}

std::vector<float> to_vector(const Tensor& t) {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(t.numel()));
  // Walk the multi-index in row-major order through the strides.
  const int nd = t.dim();
  int64_t idx[kMaxDims] = {};
  const void* base = t.impl()->storage->data();
  for (int64_t n = 0, n_end = t.numel(); n < n_end; ++n) {
    int64_t off = t.offset();
    for (int d = 0; d < nd; ++d) off += idx[d] * t.strides()[d];
    out.push_back(static_cast<float>(element_as_double(base, t.dtype(), off)));
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[d] < t.shape()[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

Tensor make_view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->offset = offset;
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = t.dtype();
  impl->qparams = t.impl()->qparams;
  return Tensor(std::move(impl));
}

Tensor with_qparams(const Tensor& t, std::shared_ptr<const QParams> q) {
  if (t.dtype() != DType::u8 && t.dtype() != DType::i8)
    throw std::invalid_argument(fmt::format("with_qparams: quantized tensors are u8 or i8, not {}", dtype_name(t.dtype())));
  Tensor v = make_view(t, t.shape(), t.strides(), t.offset());
  v.impl()->qparams = std::move(q);
  return v;
}

// ---- Printing, in the spirit of PyTorch's repr ----

// How float values are written, chosen once per tensor as PyTorch does:
// integral values as "3.", others with four decimals, and scientific notation
// when fixed point would hide digits (a wide range of magnitudes).
enum class FloatStyle { integral, fixed, scientific };

static FloatStyle choose_style(const std::vector<float>& values) {
  bool all_integral = true;
  double max_abs = 0, min_abs = INFINITY;
  for (float v : values) {
    if (!std::isfinite(v)) continue;
    if (v != std::floor(v)) all_integral = false;
    const double a = std::fabs(static_cast<double>(v));
    max_abs = std::max(max_abs, a);
    if (a > 0) min_abs = std::min(min_abs, a);
  }
  if (all_integral) return max_abs > 1e8 ? FloatStyle::scientific : FloatStyle::integral;
  if (max_abs > 1e8 || min_abs < 1e-4 || (min_abs < INFINITY && max_abs / min_abs > 1000)) return FloatStyle::scientific;
  return FloatStyle::fixed;
}

static std::string format_value(double v, DType dt, FloatStyle style) {
  if (dt != DType::f32) return fmt::format("{}", static_cast<int64_t>(v));
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  switch (style) {
    case FloatStyle::integral: return fmt::format("{:.0f}.", v);
    case FloatStyle::scientific: return fmt::format("{:.4e}", v);
    case FloatStyle::fixed: break;
  }
  return fmt::format("{:.4f}", v);
}

static void print_rec(std::ostringstream& os, const std::vector<std::string>& cells, const Shape& shape,
                      int dim, int64_t& pos, int indent, size_t width) {
  if (shape.size() == 0) { os << cells[0]; return; }
  os << "[";
  const int64_t n = shape[dim];
  const bool summarize = n > 8 && cells.size() > 1000;
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && i == 3) {
      // skip the middle elements
      int64_t inner = 1;
      for (int d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
      pos += inner * (n - 6);
      i = n - 3;
      os << (dim == shape.size() - 1 ? "..., " : "...,\n" + std::string(indent + 1, ' '));
    }
    if (dim == shape.size() - 1) {
      const std::string& c = cells[pos++];
      os << std::string(width - c.size(), ' ') << c;
    } else {
      print_rec(os, cells, shape, dim + 1, pos, indent + 1, width);
    }
    if (i + 1 < n) {
      os << ",";
      if (dim == shape.size() - 1) os << " ";
      else os << std::string(shape.size() - dim - 1, '\n') << std::string(indent + 1, ' ');
    }
  }
  os << "]";
}

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  std::vector<float> values;
  if (is_quantized()) {
    // Show the real values the integers stand for (eq. 1 of docs/quantization.md).
    const QParams& q = qparams();
    std::vector<float> ints = to_vector(*this);
    values.resize(ints.size());
    int64_t inner = 1, channels = 1;
    if (is_per_channel(q.scheme)) {
      channels = shape()[q.axis];
      for (int d = q.axis + 1; d < dim(); ++d) inner *= shape()[d];
    }
    for (size_t i = 0; i < ints.size(); ++i) {
      const size_t c = is_per_channel(q.scheme) ? (i / inner) % channels : 0;
      values[i] = q.scale[c] * (ints[i] - static_cast<float>(q.zero_point[c]));
    }
  } else {
    values = to_vector(*this);
  }
  const DType shown = is_quantized() ? DType::f32 : dtype();
  const FloatStyle style = choose_style(values);
  std::vector<std::string> cells;
  cells.reserve(values.size());
  size_t width = 0;
  for (float v : values) {
    cells.push_back(format_value(v, shown, style));
    width = std::max(width, cells.back().size());
  }
  std::ostringstream os;
  os << "tensor(";
  int64_t pos = 0;
  if (numel() == 0) os << "[]";
  else print_rec(os, cells, shape(), 0, pos, 7, width);
  if (dtype() != DType::f32 && !is_quantized()) os << ", dtype=" << dtype_name(dtype());
  if (is_quantized()) {
    const QParams& q = qparams();
    os << ", size=" << shape().str() << ", dtype=" << (dtype() == DType::u8 ? "quint8" : "qint8")
       << ", quantization_scheme=" << qscheme_name(q.scheme);
    if (is_per_channel(q.scheme)) {
      os << ", axis=" << q.axis << ", scales=[";
      for (size_t i = 0; i < q.scale.size(); ++i) os << (i ? ", " : "") << fmt::format("{:.6g}", q.scale[i]);
      os << "], zero_points=[";
      for (size_t i = 0; i < q.zero_point.size(); ++i) os << (i ? ", " : "") << q.zero_point[i];
      os << "]";
    } else {
      os << ", scale=" << fmt::format("{:.6g}", q.scale[0]) << ", zero_point=" << q.zero_point[0];
    }
    os << ", quant_min=" << q.quant_min << ", quant_max=" << q.quant_max;
  }
  if (grad_fn())
    os << ", grad_fn=<" << (g_autograd_hooks.node_name ? g_autograd_hooks.node_name(*grad_fn()) : "?") << ">";
  else if (requires_grad()) os << ", requires_grad=True";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace tq

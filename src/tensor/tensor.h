// Tensor: a view (shape, strides, offset, dtype) onto shared, 64-byte aligned
// storage. Several tensors may share one storage (reshape / transpose / slice
// are views). See docs/tensor.md for the storage / stride model (eq. 1).
//
// A quantized tensor is an ordinary u8 / i8 tensor that also carries its
// quantization parameters (QParams): real = scale * (q - zero_point).
//
// The tensor layer knows nothing of autograd; it only keeps three slots that
// src/autograd gives meaning to (requires_grad, grad, grad_fn), so that a user
// holds one kind of object, as in PyTorch. t.backward() and the printing of a
// grad_fn go through AutogradHooks, which src/autograd fills in: this layer
// builds and links on its own.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/shape.h"

namespace tq {

class Node;  // an autograd graph node (src/autograd/node.h)

// Thrown when the memory for a tensor cannot be had: a std::bad_alloc (code
// that catches that keeps working) whose message says how many bytes.
class AllocationError : public std::bad_alloc {
 public:
  explicit AllocationError(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// The bytes of a contiguous tensor of `shape` and `dtype`: checked, so that a
// huge shape is an error (std::invalid_argument naming the shape) rather than a
// product that wraps around to a small allocation.
size_t storage_bytes(const Shape& shape, DType dtype);

// Owned, 64-byte aligned bytes. Never resized after creation.
class Storage {
 public:
  static constexpr size_t kAlignment = 64;
  explicit Storage(size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

 private:
  void* raw_ = nullptr;   // what malloc returned
  void* data_ = nullptr;  // raw_ rounded up to kAlignment
  size_t nbytes_ = 0;
};

enum class QScheme : uint8_t { per_tensor_affine, per_tensor_symmetric, per_channel_affine, per_channel_symmetric };
const char* qscheme_name(QScheme s);
inline bool is_per_channel(QScheme s) {
  return s == QScheme::per_channel_affine || s == QScheme::per_channel_symmetric;
}

// Quantization parameters of a quantized tensor (docs/quantization.md eq. 1).
// Per-tensor: one scale / zero point. Per-channel: one pair per index along `axis`.
struct QParams {
  QScheme scheme = QScheme::per_tensor_affine;
  std::vector<float> scale;
  std::vector<int32_t> zero_point;
  int axis = -1;  // per-channel only
  int32_t quant_min = 0;
  int32_t quant_max = 255;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Shape strides;  // in elements
  DType dtype = DType::f32;
  std::shared_ptr<const QParams> qparams;  // set only on quantized tensors
  // Set on a float tensor whose values all lie on this quantization grid
  // (the output of a fake quant, possibly through relu): a layer receiving it
  // need not fake-quantize it again (docs/quantization.md §5).
  std::shared_ptr<const QParams> fake_quant_grid;

  // Autograd slots: src/autograd reads and writes these.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  const Shape& strides() const { return impl_->strides; }
  int dim() const { return impl_->shape.size(); }
  int64_t size(int d) const;  // negative d counts from the end
  int64_t numel() const { return impl_->shape.numel(); }
  DType dtype() const { return impl_->dtype; }
  int64_t offset() const { return impl_->offset; }
  bool is_contiguous() const;
  // True when the tensor is a plain transpose of a contiguous 2-D matrix.
  bool is_transposed_matrix() const;

  // Typed pointer to the first element; throws if T does not match dtype().
  template <class T> T* data() const {
    check_dtype(dtype_of<T>(), "data");
    return static_cast<T*>(impl_->storage->data()) + impl_->offset;
  }
  void* raw_data() const {
    return static_cast<char*>(impl_->storage->data()) + impl_->offset * dtype_size(impl_->dtype);
  }
  // Element of a 0-d or 1-element tensor, converted to double.
  double item() const;
  // Element at a multi-index, converted to double (slow; for printing and tests).
  double at(std::initializer_list<int64_t> index) const;

  // Quantization.
  bool is_quantized() const { return impl_ && impl_->qparams != nullptr; }
  const QParams& qparams() const;
  std::shared_ptr<const QParams> qparams_ptr() const { return impl_->qparams; }

  // Autograd (the meaning lives in src/autograd).
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  // Marks a leaf tensor as one whose gradient is wanted.
  Tensor& requires_grad_(bool on = true);
  // The accumulated gradient (undefined until a backward pass reached it).
  Tensor grad() const;
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  // Runs backward from this scalar: tq::backward(*this) of src/autograd,
  // reached through AutogradHooks (an error if autograd is not linked in).
  void backward() const;
  // The same data, cut from the graph.
  Tensor detach() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  std::string str() const;  // as printed by operator<<

 private:
  void check_dtype(DType want, const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// True when `t` is the only handle to its memory (no other tensor, view or
// graph node sees it): its holder may then overwrite it in place.
inline bool is_sole_owner(const Tensor& t) {
  return t.defined() && t.impl_ptr().use_count() == 1 && t.impl()->storage.use_count() == 1;
}

// The tensor layer's only door into autograd, which lies above it. The
// autograd engine (src/autograd/engine.cpp) registers these when the program
// starts; without it, Tensor::backward() throws and a grad_fn prints as "?".
struct AutogradHooks {
  void (*backward)(const Tensor& root) = nullptr;
  const char* (*node_name)(const Node& node) = nullptr;
};
void set_autograd_hooks(const AutogradHooks& hooks);

// Opt-in tuning of glibc's malloc for training loops (docs/tensor.md §1): a
// step frees and re-allocates the same large temporaries (an 800 KB weight
// gradient) every time; glibc would serve blocks above 128 KB with mmap and
// give freed memory back to the OS, so each step would pay page faults.
// Keeping such blocks in the heap makes them cheap to reuse. Process-wide;
// the tinyqat command and the benchmarks call it first thing in main().
void tune_allocator_for_training();

// ---- Creation (never records autograd history) ----
Tensor empty(const Shape& shape, DType dtype = DType::f32);
Tensor zeros(const Shape& shape, DType dtype = DType::f32);
Tensor ones(const Shape& shape, DType dtype = DType::f32);
Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
Tensor arange(int64_t n, DType dtype = DType::f32);  // 0, 1, ..., n-1
Tensor scalar_tensor(double value, DType dtype = DType::f32);
Tensor from_vector(const std::vector<float>& values, const Shape& shape);
Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape);
Tensor from_bytes(const void* data, DType dtype, const Shape& shape);  // copies
std::vector<float> to_vector(const Tensor& t);  // any dtype, converted to float, row-major
// A new tensor sharing t's storage with another shape / strides / offset.
Tensor make_view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);
// A u8 / i8 tensor marked with quantization parameters (shares storage).
Tensor with_qparams(const Tensor& t, std::shared_ptr<const QParams> q);

}  // namespace tq

#include "quant/fake_quantize.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "quant/checks.h"
#include "quant/quant_kernels.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

// y (and mask, when not null) for x of `shape` with per-tensor or per-channel qparams.
void fake_quantize_kernel(const float* x, float* y, uint8_t* mask, const Shape& shape, const QParams& qp) {
  const int64_t n = shape.numel();
  auto constants = [&](int64_t c) {
    return fake_quant_constants(qp.scale[static_cast<size_t>(c)], qp.zero_point[static_cast<size_t>(c)], qp.quant_min,
                                qp.quant_max);
  };
  auto run = [&](int64_t offset, int64_t count, const FakeQuantConstants& k) {
    fake_quantize_run(x + offset, y + offset, mask ? mask + offset : nullptr, count, k);
  };
  if (!is_per_channel(qp.scheme)) {
    run(0, n, constants(0));
    return;
  }
  // Per channel: x viewed as (outer, channels, inner); each run of `inner`
  // values shares its channel's (s, z).
  const int64_t channels = shape[qp.axis];
  int64_t inner = 1;
  for (int d = qp.axis + 1; d < shape.size(); ++d) inner *= shape[d];
  if (channels == 0 || inner == 0) return;
  const int64_t outer = n / (channels * inner);
  if (inner > 1) {
    for (int64_t c = 0; c < channels; ++c) {
      const FakeQuantConstants k = constants(c);
      for (int64_t o = 0; o < outer; ++o) run((o * channels + c) * inner, inner, k);
    }
    return;
  }
  // The channel is the last dimension: runs of one value each. Rare (weights
  // use axis 0); correct and simple rather than fast.
  for (int64_t c = 0; c < channels; ++c) {
    const FakeQuantConstants k = constants(c);
    for (int64_t o = 0; o < outer; ++o) run(o * channels + c, 1, k);
  }
}

// x against qp: a float tensor, and for per-channel qparams an axis and a
// channel count that fit it.
void check_tensor(const Tensor& x, const QParams& qp) {
  if (!x.defined() || x.dtype() != DType::f32 || x.is_quantized())
    throw std::invalid_argument(fmt::format("fake_quantize: expected a float tensor, got {}",
                                            x.defined() ? dtype_name(x.dtype()) : "an undefined tensor"));
  size_t channels = 1;
  if (is_per_channel(qp.scheme)) {
    if (qp.axis < 0 || qp.axis >= x.dim())
      throw std::invalid_argument(fmt::format("fake_quantize: per-channel axis {} is out of range for shape {}", qp.axis,
                                              x.shape().str()));
    channels = static_cast<size_t>(x.shape()[qp.axis]);
  }
  if (qp.scale.size() != channels || qp.zero_point.size() != channels)
    throw std::invalid_argument(fmt::format("fake_quantize: {} scales and {} zero points for {} channel(s) of shape {}",
                                            qp.scale.size(), qp.zero_point.size(), channels, x.shape().str()));
}

// The qparams themselves: a range, positive finite scales, zero points inside the range.
void check_values(const QParams& qp) {
  if (qp.quant_min >= qp.quant_max)
    throw std::invalid_argument(fmt::format("fake_quantize: quant_min ({}) must be less than quant_max ({})",
                                            qp.quant_min, qp.quant_max));
  for (size_t c = 0; c < qp.scale.size(); ++c) {
    if (!(qp.scale[c] > 0) || !std::isfinite(qp.scale[c]))
      throw std::invalid_argument(fmt::format("fake_quantize: scale {} (channel {}) must be positive and finite",
                                              qp.scale[c], c));
    if (qp.zero_point[c] < qp.quant_min || qp.zero_point[c] > qp.quant_max)
      throw std::invalid_argument(fmt::format("fake_quantize: zero point {} (channel {}) is outside [{}, {}]",
                                              qp.zero_point[c], c, qp.quant_min, qp.quant_max));
  }
}

// STE backward (eq. 9): the gradient passes where the mask is 1.
struct FakeQuantizeBackward final : Node {
  FakeQuantizeBackward(std::shared_ptr<Storage> storage, int64_t n)
      : mask_storage(std::move(storage)), mask(static_cast<const uint8_t*>(mask_storage->data())), numel(n) {}
  std::shared_ptr<Storage> mask_storage;  // keeps the mask alive
  const uint8_t* mask;                    // (numel) 1 where qmin <= nearbyint(x / s) + z <= qmax
  int64_t numel;
  const char* name() const override { return "FakeQuantizeBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    // Is the incoming gradient held by nobody else? (Usually: it is the fresh
    // output of the next node's backward.) Checked before any copy of the handle.
    const bool sole_owner = g_in.is_contiguous() && is_sole_owner(g_in);
    const Tensor g = kernels::contiguous(g_in);
    // A weight (a leaf): add the masked gradient straight into its .grad, in
    // the same pass (no temporary for the engine to add).
    const LeafGrad leaf = leaf_grad_for_accumulation(inputs[0]);
    if (leaf.buffer.defined()) {
      apply_ste_mask(g.data<float>(), mask, leaf.buffer.data<float>(), numel, /*accumulate=*/!leaf.fresh);
      return;
    }
    // Otherwise mask in place when the gradient is ours alone, else into a new tensor.
    Tensor out = sole_owner ? g : empty(g.shape());
    apply_ste_mask(g.data<float>(), mask, out.data<float>(), numel, /*accumulate=*/false);
    gi[0] = out;
  }
};

// A contiguous f32 tensor of `shape` on the storage of `kept` when no other
// tensor refers to that storage any more, else on a new storage that `kept`
// then keeps. Without `kept`, a plain new tensor.
Tensor reuse_or_empty(Tensor* kept, const Shape& shape) {
  if (!kept) return empty(shape);
  if (!kept->defined() || kept->numel() != shape.numel() || !is_sole_owner(*kept))
    *kept = empty(shape);
  // A new TensorImpl on the kept storage: the result's autograd slots are its own.
  return make_view(*kept, shape, contiguous_strides(shape), 0);
}

// Storage for n mask bytes, reused the same way (the node holds the storage
// itself, so a finished graph releases it).
std::shared_ptr<Storage> reuse_or_new_mask(Tensor* kept, int64_t n) {
  if (!kept) return std::make_shared<Storage>(static_cast<size_t>(n));
  if (!kept->defined() || kept->numel() != n || !is_sole_owner(*kept))
    *kept = empty({n}, DType::u8);
  return kept->impl()->storage;
}

// `trusted`: the qparams come from an observer (eq. 3-6) and are valid by
// construction, so only their fit to x is checked.
Tensor fake_quantize_impl(const Tensor& x_in, const std::shared_ptr<const QParams>& grid, const QParams& qp,
                          FakeQuantizeBuffers* buffers = nullptr, bool trusted = false) {
  check_tensor(x_in, qp);
  if (!trusted) check_values(qp);
  const Tensor x = kernels::contiguous(x_in);
  const bool need_grad = any_requires_grad(x_in);
  Tensor y = reuse_or_empty(buffers ? &buffers->out : nullptr, x.shape());
  std::shared_ptr<Storage> mask = need_grad ? reuse_or_new_mask(buffers ? &buffers->mask : nullptr, x.numel()) : nullptr;
  fake_quantize_kernel(x.data<float>(), y.data<float>(), mask ? static_cast<uint8_t*>(mask->data()) : nullptr, x.shape(),
                       qp);
  // A per-tensor result lies on one grid: a QATLinear receiving it (through
  // relu) need not fake-quantize it again (docs/quantization.md §5).
  if (!is_per_channel(qp.scheme)) y.impl()->fake_quant_grid = grid;
  // The node's input is x_in itself (a contiguous copy would cut the graph).
  if (need_grad) record<FakeQuantizeBackward>(y, {x_in}, std::move(mask), x.numel());
  return y;
}

}  // namespace

Tensor fake_quantize(const Tensor& x, const QParams& qp) {
  // Only a per-tensor result carries its grid (see below), so only then is a
  // shared copy of the qparams needed.
  if (is_per_channel(qp.scheme)) return fake_quantize_impl(x, nullptr, qp);
  return fake_quantize(x, std::make_shared<const QParams>(qp));
}

Tensor fake_quantize(const Tensor& x, const std::shared_ptr<const QParams>& qp) {
  if (!qp) throw std::invalid_argument("fake_quantize: the qparams are null");
  return fake_quantize_impl(x, qp, *qp);
}

Tensor fake_quantize(const Tensor& x, const std::shared_ptr<const QParams>& qp, FakeQuantizeBuffers& buffers) {
  if (!qp) throw std::invalid_argument("fake_quantize: the qparams are null");
  return fake_quantize_impl(x, qp, *qp, &buffers);
}

FakeQuantize::FakeQuantize(std::shared_ptr<ObserverBase> observer) : QParamsSource(observer->spec()) {
  activation_post_process = register_module("activation_post_process", std::move(observer));
  const int64_t c = 1;
  scale_ = register_buffer("scale", full({c}, 1.0));
  zero_point_ = register_buffer("zero_point", zeros({c}, DType::i32));
}

void FakeQuantize::refresh_qparams() {
  // The QParams object is reused unless an earlier output still refers to it
  // (as its grid): then a training step allocates nothing here.
  if (!qparams_ || qparams_.use_count() > 1) qparams_ = std::make_shared<QParams>();
  observer().calculate_qparams_into(*qparams_);
  const QParams& q = *qparams_;
  if (scale_.numel() != static_cast<int64_t>(q.scale.size())) {
    scale_ = empty({static_cast<int64_t>(q.scale.size())});
    zero_point_ = empty({static_cast<int64_t>(q.scale.size())}, DType::i32);
    set_buffer("scale", scale_);
    set_buffer("zero_point", zero_point_);
  }
  float* s = scale_.data<float>();
  int32_t* z = zero_point_.data<int32_t>();
  for (size_t c = 0; c < q.scale.size(); ++c) {
    s[c] = q.scale[c];
    z[c] = q.zero_point[c];
  }
  has_qparams_ = true;
}

QParams FakeQuantize::calculate_qparams() const {
  QParams q;
  calculate_qparams_into(q);
  return q;
}

void FakeQuantize::calculate_qparams_into(QParams& q) const {
  if (!has_qparams_)
    throw std::logic_error(fmt::format("{} (FakeQuantize) has seen no data: run training batches through the model "
                                       "(in train mode) before convert",
                                       owner));
  // From the buffers: what the last forward used (or what a model file restored).
  const size_t channels = static_cast<size_t>(scale_.numel());
  q.scheme = spec_.qscheme;
  q.axis = spec_.per_channel() ? spec_.ch_axis : -1;
  q.quant_min = spec_.quant_min;
  q.quant_max = spec_.quant_max;
  q.scale.assign(scale_.data<float>(), scale_.data<float>() + channels);
  q.zero_point.assign(zero_point_.data<int32_t>(), zero_point_.data<int32_t>() + channels);
}

void FakeQuantize::on_state_loaded() {
  scale_ = buffer("scale");
  zero_point_ = buffer("zero_point");
  if (scale_.dtype() != DType::f32 || zero_point_.dtype() != DType::i32 || scale_.dim() != 1 ||
      !(scale_.shape() == zero_point_.shape()))
    throw std::invalid_argument(fmt::format("{}: loaded scale / zero_point must be (C) f32 / (C) i32, got {} {} / {} {}",
                                            owner, dtype_name(scale_.dtype()), scale_.shape().str(),
                                            dtype_name(zero_point_.dtype()), zero_point_.shape().str()));
  // The buffers hold qparams once the observer has seen data (asked after
  // the observer has resynced to its own restored buffers).
  observer().on_state_loaded();
  has_qparams_ = observer().has_data();
  qparams_.reset();
  if (!has_qparams_) return;
  // The forward trusts these values (they normally come from the observer),
  // so values from a file are checked here: a scale of 0 or NaN, or a zero
  // point off the range, is refused at load rather than fake-quantizing with it.
  const QParams q = calculate_qparams();
  if (!spec_.per_channel() && q.scale.size() != 1)
    throw std::invalid_argument(fmt::format("{}: loaded scale holds {} values for a per-tensor fake quant", owner,
                                            q.scale.size()));
  require_valid_qparams(q, owner, "loaded scale / zero_point");
  qparams_ = std::make_shared<QParams>(q);
}

Tensor FakeQuantize::forward(const Tensor& x) {
  // Observers learn only in training: evaluation never changes the model.
  if (is_training() && observer_enabled) {
    observer().observe(x);
    refresh_qparams();
  }
  if (!fake_quant_enabled) return x;
  if (!has_qparams_)
    throw std::logic_error(fmt::format("{}: fake quant in eval mode before any training batch set its qparams; "
                                       "run the model in train mode first",
                                       owner));
  if (!qparams_) qparams_ = std::make_shared<QParams>(calculate_qparams());
  return fake_quantize_impl(x, qparams_, *qparams_, &buffers_, /*trusted=*/true);
}

std::string FakeQuantize::extra_repr() const {
  std::string scales, zps;
  for (int64_t c = 0; c < scale_.numel() && c < 8; ++c) {
    if (c) {
      scales += ", ";
      zps += ", ";
    }
    scales += fmt::format("{:.6g}", scale_.data<float>()[c]);
    zps += std::to_string(zero_point_.data<int32_t>()[c]);
  }
  if (scale_.numel() > 8) { scales += ", ..."; zps += ", ..."; }
  return fmt::format("fake_quant_enabled={}, observer_enabled={}, quant_min={}, quant_max={}, dtype={}, qscheme={}, "
                     "ch_axis={}, scale=[{}], zero_point=[{}]",
                     fake_quant_enabled ? 1 : 0, observer_enabled ? 1 : 0, spec_.quant_min, spec_.quant_max,
                     spec_.dtype == DType::u8 ? "quint8" : "qint8", qscheme_name(spec_.qscheme),
                     spec_.per_channel() ? spec_.ch_axis : -1, scales, zps);
}

}  // namespace tq::quant

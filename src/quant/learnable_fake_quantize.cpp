#include "quant/learnable_fake_quantize.h"

#include "tensor/communicator.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "autograd/node.h"
#include "quant/checks.h"
#include "quant/fake_quantize.h"
#include "quant/quant_kernels.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

// x viewed as (outer, channels, inner): element (o, c, i) sits at
// (o * channels + c) * inner + i and uses channel c's scale and zero point.
// Per tensor: one channel, everything "inner".
struct ChannelLayout {
  int64_t outer = 1, channels = 1, inner = 1;
};

ChannelLayout layout_of(const Shape& shape, int axis) {
  ChannelLayout l;
  if (axis < 0) {
    l.inner = shape.numel();
    return l;
  }
  l.channels = shape[axis];
  for (int d = 0; d < axis; ++d) l.outer *= shape[d];
  for (int d = axis + 1; d < shape.size(); ++d) l.inner *= shape[d];
  return l;
}

// One channel's constants: the forward ones (fake_quant_constants: inv_scale
// = 1 / s in float, lo = qmin - z, hi = qmax - z) and the outside values of
// eq. 4, qmin - z and qmax - z (= lo, hi), kept as floats like PyTorch's
// dscale_small / dscale_big.
struct ChannelConstants {
  FakeQuantConstants k;
  int32_t zero_point;
};

// 1.5 * 2^23: for |v| < 2^22, (v + kRoundMagic) - kRoundMagic is nearbyint(v),
// ties to even (the same trick as quant_kernels.cpp, which explains it).
constexpr float kRoundMagic = 12582912.f;
inline float max_of(float a, float b) { return a > b ? a : b; }
inline float min_of(float a, float b) { return a < b ? a : b; }

// The zero point the forward uses: nearbyint (half to even), then clamped,
// as torch.round(zero_point).clamp(quant_min, quant_max).
int32_t rounded_zero_point(float zp, int32_t quant_min, int32_t quant_max) {
  const float r = std::nearbyint(zp);
  return static_cast<int32_t>(std::clamp(r, static_cast<float>(quant_min), static_cast<float>(quant_max)));
}

// r*s - x rounded once. r is an integer below 2^9 in magnitude and s a
// float, so the double product is exact, and so is the difference of two
// nearby values: one rounding to float, as the fused multiply-add that
// PyTorch's (FMA-built) kernel computes.
inline float rounded_minus(float r, float s, float x) {
  return static_cast<float>(static_cast<double>(r) * static_cast<double>(s) - static_cast<double>(x));
}

// Eq. 3-5 for a run of n elements of one channel, times the gradient scale
// gf: dx[i] (when dx is not null; written, or added when accumulate), and the
// sums of the scale and zero-point gradients added into *ds / *dz. The
// element formulas are PyTorch's, in its order of float operations:
//   inside:  ds = ((g * (r*s - x)) * (1/s)) * gf,   dz = 0
//   outside: ds = (g * (qmin - z or qmax - z)) * gf, dz = ((g * -1) * s) * gf
// r is computed as in the forward kernel (clamped before rounding, so a NaN
// counts as below the range), hence the mask is exactly the forward's. (Not
// so in PyTorch, whose backward recomputes it differently: docs/lsq.md §5.)
void lsq_backward_run(const float* x, const float* g, float* dx, bool accumulate, int64_t n,
                      const FakeQuantConstants& k, float gf, double* ds, double* dz) {
  const float below = k.lo - 1.f, above = k.hi + 1.f;
  double sum_s = 0, sum_z = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = min_of(max_of(x[i] * k.inv_scale, below), above);
    const float r = (v + kRoundMagic) - kRoundMagic;
    float gx, gs, gz;
    if (r < k.lo || r > k.hi) {
      gx = 0.f;
      gs = (g[i] * (r < k.lo ? k.lo : k.hi)) * gf;
      gz = ((g[i] * -1.f) * k.scale) * gf;
    } else {
      gx = g[i];
      gs = ((g[i] * rounded_minus(r, k.scale, x[i])) * k.inv_scale) * gf;
      gz = 0.f;
    }
    if (dx) dx[i] = accumulate ? dx[i] + gx : gx;
    sum_s += gs;
    sum_z += gz;
  }
  *ds += sum_s;
  *dz += sum_z;
}

struct LearnableFakeQuantizeBackward final : Node {
  Tensor x;  // contiguous copy of the input (or the input itself)
  ChannelLayout layout;
  std::vector<ChannelConstants> constants;  // (C)
  float grad_factor = 1.f;
  const char* name() const override { return "LearnableFakeQuantizeBackward"; }

  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = kernels::contiguous(g_in);
    const bool want_x = inputs[0].requires_grad();
    const bool want_s = inputs[1].defined() && inputs[1].requires_grad();
    const bool want_z = inputs[2].defined() && inputs[2].requires_grad();
    // A weight (a leaf): add dx straight into its .grad.
    LeafGrad leaf;
    Tensor dx;
    if (want_x) {
      leaf = leaf_grad_for_accumulation(inputs[0]);
      dx = leaf.buffer.defined() ? leaf.buffer : empty(x.shape());
    }
    const bool accumulate = leaf.buffer.defined() && !leaf.fresh;
    const int64_t channels = layout.channels;
    std::vector<double> ds(static_cast<size_t>(channels), 0.0), dz(static_cast<size_t>(channels), 0.0);
    const float* xp = x.data<float>();
    const float* gp = g.data<float>();
    float* dxp = want_x ? dx.data<float>() : nullptr;
    for (int64_t o = 0; o < layout.outer; ++o)
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t off = (o * channels + c) * layout.inner;
        lsq_backward_run(xp + off, gp + off, dxp ? dxp + off : nullptr, accumulate, layout.inner,
                         constants[static_cast<size_t>(c)].k, grad_factor, &ds[static_cast<size_t>(c)],
                         &dz[static_cast<size_t>(c)]);
      }
    if (want_x && !leaf.buffer.defined()) gi[0] = dx;
    auto to_tensor = [&](const std::vector<double>& v) {
      Tensor t = empty({channels});
      for (int64_t c = 0; c < channels; ++c) t.data<float>()[c] = static_cast<float>(v[static_cast<size_t>(c)]);
      return t;
    };
    if (want_s) gi[1] = to_tensor(ds);
    if (want_z) gi[2] = to_tensor(dz);
  }
};

Tensor learnable_impl(const char* op, const Tensor& x_in, const Tensor& scale, const Tensor& zero_point, int axis,
                      int32_t quant_min, int32_t quant_max, double grad_factor) {
  if (!x_in.defined() || x_in.dtype() != DType::f32 || x_in.is_quantized())
    throw std::invalid_argument(fmt::format("{}: expected a float tensor, got {}", op,
                                            x_in.defined() ? dtype_name(x_in.dtype()) : "an undefined tensor"));
  if (quant_min >= quant_max)
    throw std::invalid_argument(fmt::format("{}: quant_min ({}) must be less than quant_max ({})", op, quant_min, quant_max));
  if (axis >= 0 && axis >= x_in.dim())
    throw std::invalid_argument(fmt::format("{}: axis {} is out of range for shape {}", op, axis, x_in.shape().str()));
  const int64_t channels = axis < 0 ? 1 : x_in.shape()[axis];
  for (const Tensor* t : {&scale, &zero_point})
    if (!t->defined() || t->dtype() != DType::f32 || t->dim() != 1 || t->numel() != channels)
      throw std::invalid_argument(fmt::format(
          "{}: {} must be a ({}) f32 tensor for input of shape {}{}, got {}", op, t == &scale ? "scale" : "zero_point",
          channels, x_in.shape().str(), axis < 0 ? "" : fmt::format(" along axis {}", axis),
          t->defined() ? dtype_name(t->dtype()) + std::string(" ") + t->shape().str() : "an undefined tensor"));
  if (!std::isfinite(grad_factor))
    throw std::invalid_argument(fmt::format("{}: grad_factor {} is not finite", op, grad_factor));

  const Tensor s = kernels::contiguous(scale), zp = kernels::contiguous(zero_point);
  std::vector<ChannelConstants> constants(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) {
    const float sc = s.data<float>()[c], z = zp.data<float>()[c];
    if (!(sc > 0) || !std::isfinite(sc))
      throw std::invalid_argument(fmt::format("{}: scale {} (channel {}) must be positive and finite", op, sc, c));
    if (!std::isfinite(z))
      throw std::invalid_argument(fmt::format("{}: zero point {} (channel {}) is not finite", op, z, c));
    const int32_t zi = rounded_zero_point(z, quant_min, quant_max);
    constants[static_cast<size_t>(c)] = {fake_quant_constants(sc, zi, quant_min, quant_max), zi};
  }

  // Forward (eq. 1-2): the fused fake-quant loop of FakeQuantize, per channel run.
  const Tensor x = kernels::contiguous(x_in);
  const ChannelLayout layout = layout_of(x.shape(), axis);
  Tensor y = empty(x.shape());
  for (int64_t o = 0; o < layout.outer; ++o)
    for (int64_t c = 0; c < layout.channels; ++c) {
      const int64_t off = (o * layout.channels + c) * layout.inner;
      fake_quantize_run(x.data<float>() + off, y.data<float>() + off, nullptr, layout.inner,
                        constants[static_cast<size_t>(c)].k);
    }
  // A per-tensor result lies on one grid (a QATLinear receiving it need not
  // fake-quantize it again, as with FakeQuantize).
  if (axis < 0) {
    auto grid = std::make_shared<QParams>();
    grid->scheme = QScheme::per_tensor_affine;
    grid->scale = {constants[0].k.scale};
    grid->zero_point = {constants[0].zero_point};
    grid->quant_min = quant_min;
    grid->quant_max = quant_max;
    y.impl()->fake_quant_grid = std::move(grid);
  }
  if (any_requires_grad(x_in, scale, zero_point)) {
    auto& node = record<LearnableFakeQuantizeBackward>(y, {x_in, scale, zero_point});
    node.x = x;
    node.layout = layout;
    node.constants = std::move(constants);
    node.grad_factor = static_cast<float>(grad_factor);  // PyTorch's kernel takes a float
  }
  return y;
}

// Resizes a (C) f32 tensor in place to (c) filled with `value`: every handle
// to it (the module's list, an optimizer's) sees the new storage.
void resize_in_place(const Tensor& t, int64_t c, float value) {
  Tensor fresh = full({c}, value);
  TensorImpl* impl = t.impl();
  impl->storage = fresh.impl()->storage;
  impl->shape = fresh.shape();
  impl->strides = fresh.strides();
  impl->offset = 0;
  impl->grad.reset();
}

}  // namespace

Tensor fake_quantize_learnable_per_tensor_affine(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                                                 int32_t quant_min, int32_t quant_max, double grad_factor) {
  return learnable_impl("fake_quantize_learnable_per_tensor_affine", x, scale, zero_point, -1, quant_min, quant_max,
                        grad_factor);
}

Tensor fake_quantize_learnable_per_channel_affine(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                                                  int axis, int32_t quant_min, int32_t quant_max, double grad_factor) {
  if (axis < 0)
    throw std::invalid_argument(fmt::format("fake_quantize_learnable_per_channel_affine: axis {} is negative", axis));
  return learnable_impl("fake_quantize_learnable_per_channel_affine", x, scale, zero_point, axis, quant_min,
                        quant_max, grad_factor);
}

LearnableFakeQuantizeGradients fake_quantize_learnable_gradients_value(float x, float g, float scale,
                                                                       int32_t zero_point, int32_t quant_min,
                                                                       int32_t quant_max) {
  const float inv_scale = 1.f / scale;
  const float q = std::nearbyint(x * inv_scale) + static_cast<float>(zero_point);  // eq. 1
  if (q < static_cast<float>(quant_min))  // below: y = (qmin - z) s
    return {0.f, g * static_cast<float>(quant_min - zero_point), (g * -1.f) * scale};
  if (q > static_cast<float>(quant_max))  // above: y = (qmax - z) s
    return {0.f, g * static_cast<float>(quant_max - zero_point), (g * -1.f) * scale};
  // inside: y = r s with r = q - z; the STE takes d r / d s as d (x/s) / d s
  const float r = q - static_cast<float>(zero_point);
  return {g, (g * rounded_minus(r, scale, x)) * inv_scale, 0.f};
}

// ---------------------------------------------------------------------------
// LearnableFakeQuantize
// ---------------------------------------------------------------------------

namespace {
std::shared_ptr<ObserverBase> default_observer(const QuantSpec& spec) {
  if (spec.per_channel()) return std::make_shared<MovingAveragePerChannelMinMaxObserver>(spec);
  return std::make_shared<MovingAverageMinMaxObserver>(spec);
}
}  // namespace

LearnableFakeQuantize::LearnableFakeQuantize(QuantSpec spec, LearnableFakeQuantizeOptions options)
    : LearnableFakeQuantize(default_observer(spec), options) {}

LearnableFakeQuantize::LearnableFakeQuantize(std::shared_ptr<ObserverBase> obs, LearnableFakeQuantizeOptions options)
    : QParamsSource(obs ? obs->spec() : QuantSpec{}), options_(options) {
  if (!obs) throw std::invalid_argument("LearnableFakeQuantize: the observer is null");
  validate(spec_, "LearnableFakeQuantize");
  // LSQ's initial scale and gradient scale divide by sqrt(quant_max) (eq. 6, 8).
  if (spec_.quant_max <= 0)
    throw std::invalid_argument(fmt::format("LearnableFakeQuantize: quant_max ({}) must be positive", spec_.quant_max));
  if (options_.channels < 0 || (!spec_.per_channel() && options_.channels > 1))
    throw std::invalid_argument(fmt::format("LearnableFakeQuantize: {} channels for a {} scheme", options_.channels,
                                            qscheme_name(spec_.qscheme)));
  activation_post_process = register_module("activation_post_process", std::move(obs));
  const int64_t c = spec_.per_channel() ? options_.channels : 1;
  scale = register_parameter("scale", full({c}, 1.0));
  if (spec_.symmetric())
    zero_point = register_buffer("zero_point", full({c}, symmetric_zero_point()));
  else
    zero_point = register_parameter("zero_point", zeros({c}));
  initialized_flag_ = register_buffer("initialized", zeros({1}, DType::u8));
}

int32_t LearnableFakeQuantize::symmetric_zero_point() const {
  // As calculate_qparams (qparams.h) for symmetric schemes. (PyTorch's
  // _LearnableFakeQuantize zeroes it; the same for the signed ranges used here.)
  return spec_.dtype == DType::u8 ? (spec_.quant_min + spec_.quant_max) / 2 : 0;
}

double LearnableFakeQuantize::grad_factor(int64_t numel) const {
  // eq. 6, as _LearnableFakeQuantize: 1.0 / (X.numel() * quant_max) ** 0.5,
  // with numel of the whole input (batch included, all channels).
  if (!options_.use_grad_scaling || numel <= 0) return 1.0;
  return 1.0 / std::sqrt(static_cast<double>(numel) * static_cast<double>(spec_.quant_max));
}

void LearnableFakeQuantize::resize_channels(int64_t c) {
  if (scale.numel() == c) return;
  if (scale.numel() != 0)  // sized at construction or by an earlier batch
    throw std::invalid_argument(fmt::format("{}: input has {} channels along axis {}, the learned scale has {}", owner,
                                            c, spec_.ch_axis, scale.numel()));
  resize_in_place(scale, c, 1.f);
  resize_in_place(zero_point, c, spec_.symmetric() ? static_cast<float>(symmetric_zero_point()) : 0.f);
}

void LearnableFakeQuantize::check_channels(const Tensor& x) const {
  if (!spec_.per_channel()) return;
  if (spec_.ch_axis >= x.dim())
    throw std::invalid_argument(fmt::format("{}: per-channel axis {} is out of range for input of shape {}", owner,
                                            spec_.ch_axis, x.shape().str()));
  if (x.shape()[spec_.ch_axis] != scale.numel())
    throw std::invalid_argument(fmt::format("{}: input of shape {} has {} channels along axis {}, the learned scale has {}",
                                            owner, x.shape().str(), x.shape()[spec_.ch_axis], spec_.ch_axis,
                                            scale.numel()));
}

void LearnableFakeQuantize::init_from_observer(const Tensor& x) {
  // eq. 7: the observer formula (qparams.h) on the observed range.
  observer().observe(x);
  const QParams q = observer().calculate_qparams();
  resize_channels(static_cast<int64_t>(q.scale.size()));
  for (size_t c = 0; c < q.scale.size(); ++c) {
    scale.data<float>()[c] = q.scale[c];
    zero_point.data<float>()[c] = static_cast<float>(q.zero_point[c]);
  }
}

void LearnableFakeQuantize::init_lsq(const Tensor& x_in) {
  // eq. 8: s = 2 mean(|x|) / sqrt(quant_max), per channel for per-channel
  // schemes. An affine zero point is the observer formula's for the tensor's
  // [min, max] (eq. 7): the grid keeps the observer's split between negative
  // and positive levels. (Putting min at quant_min with LSQ's smaller scale
  // instead can leave no positive level at all: a dead ReLU layer at 2 bits.)
  const Tensor x = kernels::contiguous(x_in);
  const int axis = spec_.per_channel() ? spec_.ch_axis : -1;
  if (axis >= x.dim())
    throw std::invalid_argument(fmt::format("{}: per-channel axis {} is out of range for input of shape {}", owner,
                                            axis, x.shape().str()));
  const ChannelLayout l = layout_of(x.shape(), axis);
  if (l.channels == 0 || l.outer * l.inner == 0)
    throw std::invalid_argument(fmt::format("{}: cannot initialise the scale from an empty tensor of shape {}", owner,
                                            x.shape().str()));
  resize_channels(l.channels);
  std::vector<double> abs_sum(static_cast<size_t>(l.channels), 0.0);
  std::vector<float> minimum(static_cast<size_t>(l.channels), 0.f), maximum(static_cast<size_t>(l.channels), 0.f);
  const float* p = x.data<float>();
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t c = 0; c < l.channels; ++c)
      for (int64_t i = 0; i < l.inner; ++i) {
        const float v = p[(o * l.channels + c) * l.inner + i];
        const size_t k = static_cast<size_t>(c);
        abs_sum[k] += std::fabs(v);
        minimum[k] = std::min(minimum[k], v);
        maximum[k] = std::max(maximum[k], v);
      }
  double count = static_cast<double>(l.outer * l.inner);
  if (dist::distributed()) {  // eq. 8 over the global batch (docs/distributed.md)
    abs_sum.push_back(count);
    dist::world().allreduce_sum(abs_sum.data(), static_cast<int64_t>(abs_sum.size()));
    count = abs_sum.back();
    abs_sum.pop_back();
    all_reduce_range(minimum.data(), maximum.data(), minimum.size());
  }
  for (int64_t c = 0; c < l.channels; ++c) {
    const double mean_abs = abs_sum[static_cast<size_t>(c)] / count;
    const float s = std::max(static_cast<float>(2.0 * mean_abs / std::sqrt(static_cast<double>(spec_.quant_max))),
                             kScaleEps);
    scale.data<float>()[c] = s;
    if (!spec_.symmetric())
      zero_point.data<float>()[c] = static_cast<float>(
          quant::calculate_qparams(minimum[static_cast<size_t>(c)], maximum[static_cast<size_t>(c)], spec_).zero_point);
  }
}

void LearnableFakeQuantize::clamp_scale_in_place() {
  // As PyTorch: scale.data.clamp_(min=eps) before each learning forward. A
  // step that drove a scale to or below 0 restarts it at eps.
  float* s = scale.data<float>();
  for (int64_t c = 0, c_end = scale.numel(); c < c_end; ++c)
    if (!(s[c] >= kScaleEps)) s[c] = kScaleEps;  // NaN too
}

Tensor LearnableFakeQuantize::forward(const Tensor& x) {
  if (!x.defined() || x.dtype() != DType::f32 || x.is_quantized())
    throw std::invalid_argument(fmt::format("{} (LearnableFakeQuantize): expected a float tensor, got {}", owner,
                                            x.defined() ? dtype_name(x.dtype()) : "an undefined tensor"));
  if (is_training()) {
    // Parameters change here only in training: evaluation never changes the model.
    NoGradGuard no_grad;
    if (static_enabled_ || (!initialized_ && options_.init == LsqInit::observer)) {
      init_from_observer(x);
    } else if (!initialized_) {
      init_lsq(x);
    } else {
      clamp_scale_in_place();
    }
    if (!initialized_) {
      initialized_ = true;
      initialized_flag_.data<uint8_t>()[0] = 1;
    }
  }
  if (!fake_quant_enabled_) return x;
  if (!initialized_)
    throw std::logic_error(fmt::format("{}: learnable fake quant in eval mode before any training batch set its scale; "
                                       "run the model in train mode first",
                                       owner));
  check_channels(x);
  // In eval mode a scale left below eps by the last optimizer step is
  // clamped for use only (calculate_qparams does the same), not written.
  Tensor s = scale;
  for (int64_t c = 0, c_end = scale.numel(); c < c_end; ++c)
    if (!(scale.data<float>()[c] >= kScaleEps)) {
      NoGradGuard no_grad;
      s = kernels::clone(scale);
      for (int64_t k = 0, k_end = s.numel(); k < k_end; ++k) s.data<float>()[k] = std::max(s.data<float>()[k], kScaleEps);
      break;
    }
  const double gf = grad_factor(x.numel());
  if (spec_.per_channel())
    return fake_quantize_learnable_per_channel_affine(x, s, zero_point, spec_.ch_axis, spec_.quant_min,
                                                      spec_.quant_max, gf);
  return fake_quantize_learnable_per_tensor_affine(x, s, zero_point, spec_.quant_min, spec_.quant_max, gf);
}

QParams LearnableFakeQuantize::calculate_qparams() const {
  if (!initialized_)
    throw std::logic_error(fmt::format("{} (LearnableFakeQuantize) has seen no data: run training batches through the "
                                       "model (in train mode) before convert",
                                       owner));
  std::vector<ScaleZeroPoint> pairs;
  for (int64_t c = 0, c_end = scale.numel(); c < c_end; ++c) {
    const float s = scale.data<float>()[c];
    pairs.push_back({s >= kScaleEps ? s : kScaleEps,
                     rounded_zero_point(zero_point.data<float>()[c], spec_.quant_min, spec_.quant_max)});
  }
  return make_qparams(spec_, pairs);
}

LearnableFakeQuantize& LearnableFakeQuantize::enable_param_learning() {
  return toggle_qparam_learning(true).toggle_fake_quant(true).toggle_observer_update(false);
}
LearnableFakeQuantize& LearnableFakeQuantize::enable_static_estimate() {
  return toggle_qparam_learning(false).toggle_fake_quant(true).toggle_observer_update(true);
}
LearnableFakeQuantize& LearnableFakeQuantize::enable_static_observation() {
  return toggle_qparam_learning(false).toggle_fake_quant(false).toggle_observer_update(true);
}
LearnableFakeQuantize& LearnableFakeQuantize::toggle_observer_update(bool on) {
  static_enabled_ = on;
  return *this;
}
LearnableFakeQuantize& LearnableFakeQuantize::toggle_qparam_learning(bool on) {
  learning_enabled_ = on;
  scale.requires_grad_(on);
  if (!spec_.symmetric()) zero_point.requires_grad_(on);
  return *this;
}
LearnableFakeQuantize& LearnableFakeQuantize::toggle_fake_quant(bool on) {
  fake_quant_enabled_ = on;
  return *this;
}

void LearnableFakeQuantize::on_state_loaded() {
  // Parameters are restored in place; buffers may have been replaced.
  if (spec_.symmetric()) zero_point = buffer("zero_point");
  initialized_flag_ = buffer("initialized");
  if (!zero_point.defined() || zero_point.dtype() != DType::f32 || scale.dtype() != DType::f32 ||
      !(scale.shape() == zero_point.shape()) || scale.dim() != 1 || (!spec_.per_channel() && scale.numel() != 1))
    throw std::invalid_argument(fmt::format("{}: loaded scale / zero_point must be ({}) f32, got {} {} / {} {}", owner,
                                            spec_.per_channel() ? "C" : "1", dtype_name(scale.dtype()),
                                            scale.shape().str(),
                                            zero_point.defined() ? dtype_name(zero_point.dtype()) : "none",
                                            zero_point.defined() ? zero_point.shape().str() : ""));
  if (!initialized_flag_.defined() || initialized_flag_.dtype() != DType::u8 || initialized_flag_.numel() != 1)
    throw std::invalid_argument(fmt::format("{}: loaded 'initialized' flag must be (1) u8", owner));
  initialized_ = initialized_flag_.data<uint8_t>()[0] != 0;
  // A learned scale may be left at or below 0 by the last optimizer step
  // (the next forward clamps it to eps) and a zero point off the range (it
  // is rounded and clamped), as in training; but a NaN or an infinity has no
  // meaning on any grid.
  if (initialized_) {
    require_finite(scale, owner, "scale");
    require_finite(zero_point, owner, "zero_point");
  }
}

std::string LearnableFakeQuantize::extra_repr() const {
  std::string scales, zps;
  const int64_t n = scale.numel();
  for (int64_t c = 0; c < n && c < 8; ++c) {
    if (c) {
      scales += ", ";
      zps += ", ";
    }
    scales += fmt::format("{:.6g}", scale.data<float>()[c]);
    zps += fmt::format("{:.6g}", zero_point.data<float>()[c]);
  }
  if (n > 8) {
    scales += ", ...";
    zps += ", ...";
  }
  return fmt::format("fake_quant_enabled={}, static_enabled={}, learning_enabled={}, quant_min={}, quant_max={}, "
                     "dtype={}, qscheme={}, ch_axis={}, use_grad_scaling={}, init={}, scale=[{}], zero_point=[{}]",
                     fake_quant_enabled_ ? 1 : 0, static_enabled_ ? 1 : 0, learning_enabled_ ? 1 : 0, spec_.quant_min,
                     spec_.quant_max, spec_.dtype == DType::u8 ? "quint8" : "qint8", qscheme_name(spec_.qscheme),
                     spec_.per_channel() ? spec_.ch_axis : -1, options_.use_grad_scaling ? "True" : "False",
                     options_.init == LsqInit::lsq ? "lsq" : "observer", scales, zps);
}

}  // namespace tq::quant

#include "quant/observer.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "quant/quant_kernels.h"
#include "tensor/communicator.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();

// The float values of x, contiguous: x itself when it already is a contiguous
// f32 tensor (the common case: no copy, no allocation), else a dequantized /
// compacted copy. Observers only read values, so the graph does not matter.
Tensor observed_values(const Tensor& x) {
  if (x.dtype() == DType::f32 && x.is_contiguous()) return x;
  return kernels::contiguous(kernels::to_float(x.detach()));
}

// Fills q with the spec's scheme / axis / range and one (scale, zero point)
// per channel. q's vectors keep their capacity.
void fill_qparams(QParams& q, const QuantSpec& spec, size_t channels) {
  q.scheme = spec.qscheme;
  q.axis = spec.per_channel() ? spec.ch_axis : -1;
  q.quant_min = spec.quant_min;
  q.quant_max = spec.quant_max;
  q.scale.resize(channels);
  q.zero_point.resize(channels);
}

// A range restored from a file: f32, and either "no data yet" (+inf, -inf:
// what a per-tensor observer starts from; a per-channel one starts with no
// channels) or finite with min <= max, which is all that observe() can produce. Anything else (a NaN, -inf with a finite max, min >
// max) would reach calculate_qparams or the next update as nonsense.
void check_loaded_range(const ObserverBase& o, const Tensor& lo, const Tensor& hi, bool may_be_empty) {
  if (lo.dtype() != DType::f32 || hi.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("{} ({}): loaded min_val / max_val must be f32, got {} and {}", o.owner,
                                            o.type_name(), dtype_name(lo.dtype()), dtype_name(hi.dtype())));
  const Tensor l = kernels::contiguous(lo), h = kernels::contiguous(hi);
  for (int64_t c = 0, c_end = l.numel(); c < c_end; ++c) {
    const float a = l.data<float>()[c], b = h.data<float>()[c];
    const bool empty_range = may_be_empty && a == kInf && b == -kInf;
    if (!empty_range && !(std::isfinite(a) && std::isfinite(b) && a <= b))
      throw std::invalid_argument(fmt::format("{} ({}): the loaded range [{}, {}]{} is neither an observed range "
                                              "(finite, min <= max) nor empty (inf, -inf)",
                                              o.owner, o.type_name(), a, b,
                                              l.numel() > 1 ? fmt::format(" of channel {}", c) : std::string()));
  }
}

}  // namespace

void all_reduce_range(float* lo, float* hi, size_t n) {
  if (!dist::distributed()) return;
  std::vector<float> v(2 * n);  // max of -lo is -(min of lo): one collective for both
  for (size_t i = 0; i < n; ++i) v[i] = -lo[i], v[n + i] = hi[i];
  dist::world().allreduce(v.data(), static_cast<int64_t>(2 * n), dist::ReduceOp::max);
  for (size_t i = 0; i < n; ++i) lo[i] = -v[i], hi[i] = v[n + i];
}

QParamsSource::QParamsSource(QuantSpec spec) : spec_(spec) { validate(spec_, "observer"); }

Tensor ObserverBase::forward(const Tensor& x) {
  if (enabled) observe(x);
  return x;
}

void ObserverBase::throw_no_data() const {
  throw std::logic_error(fmt::format("{} ({}) has seen no data: run calibration / training batches through the "
                                     "model before convert",
                                     owner, type_name()));
}

// ---- MinMaxObserver ----

MinMaxObserver::MinMaxObserver(QuantSpec spec) : ObserverBase(spec) {
  if (spec_.per_channel()) throw std::invalid_argument("MinMaxObserver: use PerChannelMinMaxObserver for per-channel schemes");
  min_val_ = register_buffer("min_val", full(Shape{}, kInf));
  max_val_ = register_buffer("max_val", full(Shape{}, -kInf));
}

void MinMaxObserver::observe(const Tensor& x) {
  // Data parallel, every rank takes part in the collective, even with nothing to add.
  if (x.numel() == 0 && !dist::distributed()) return;
  float lo = kInf, hi = -kInf;
  if (x.numel() > 0) {
    const Tensor v = observed_values(x);
    fold_min_max(v.data<float>(), v.numel(), lo, hi);
    if (lo > hi) throw std::invalid_argument(fmt::format("{}: the observed tensor holds only NaN", owner));
  }
  all_reduce_range(&lo, &hi, 1);  // the global batch's range (docs/distributed.md)
  if (lo > hi) return;            // no rank saw a value
  update(lo, hi);
}

void MinMaxObserver::update(float batch_min, float batch_max) {
  float& lo = min_val_.data<float>()[0];
  float& hi = max_val_.data<float>()[0];
  lo = batch_min < lo ? batch_min : lo;
  hi = batch_max > hi ? batch_max : hi;
}

void MinMaxObserver::reset() {
  min_val_.data<float>()[0] = kInf;
  max_val_.data<float>()[0] = -kInf;
}

bool MinMaxObserver::has_data() const { return min_val() <= max_val(); }

QParams MinMaxObserver::calculate_qparams() const {
  QParams q;
  calculate_qparams_into(q);
  return q;
}

void MinMaxObserver::calculate_qparams_into(QParams& q) const {
  if (!has_data()) throw_no_data();
  const ScaleZeroPoint sz = quant::calculate_qparams(min_val(), max_val(), spec_);
  fill_qparams(q, spec_, 1);
  q.scale[0] = sz.scale;
  q.zero_point[0] = sz.zero_point;
}

void MinMaxObserver::on_state_loaded() {
  min_val_ = buffer("min_val");
  max_val_ = buffer("max_val");
  if (min_val_.numel() != 1 || max_val_.numel() != 1)
    throw std::invalid_argument(fmt::format("{}: loaded min_val / max_val must hold one value each, got shapes {} and {}",
                                            owner, min_val_.shape().str(), max_val_.shape().str()));
  check_loaded_range(*this, min_val_, max_val_, /*may_be_empty=*/true);
}

std::string MinMaxObserver::extra_repr() const {
  return fmt::format("min_val={}, max_val={}, {}", min_val(), max_val(), spec_.str());
}

// ---- MovingAverageMinMaxObserver ----

MovingAverageMinMaxObserver::MovingAverageMinMaxObserver(QuantSpec spec, float c)
    : MinMaxObserver(spec), averaging_constant(c) {
  if (!(c > 0 && c <= 1)) throw std::invalid_argument(fmt::format("MovingAverageMinMaxObserver: averaging constant {} is not in (0, 1]", c));
}

void MovingAverageMinMaxObserver::update(float batch_min, float batch_max) {
  float* lo = min_val_.data<float>();
  float* hi = max_val_.data<float>();
  if (!(*lo <= *hi)) {  // no data yet: the first batch sets the range
    *lo = batch_min;
    *hi = batch_max;
    return;
  }
  *lo = *lo + averaging_constant * (batch_min - *lo);  // eq. 7
  *hi = *hi + averaging_constant * (batch_max - *hi);
}

std::string MovingAverageMinMaxObserver::extra_repr() const {
  return fmt::format("min_val={}, max_val={}, averaging_constant={}, {}", min_val(), max_val(), averaging_constant,
                     spec_.str());
}

// ---- PerChannelMinMaxObserver ----

PerChannelMinMaxObserver::PerChannelMinMaxObserver(QuantSpec spec) : ObserverBase(spec) {
  if (!spec_.per_channel()) throw std::invalid_argument("PerChannelMinMaxObserver: the scheme must be per-channel");
  min_val_ = register_buffer("min_val", empty({0}));
  max_val_ = register_buffer("max_val", empty({0}));
}

void PerChannelMinMaxObserver::observe(const Tensor& x) {
  if (x.numel() == 0) return;
  const int axis = spec_.ch_axis;
  if (axis >= x.dim())
    throw std::invalid_argument(fmt::format("{}: per-channel axis {} is out of range for a tensor of shape {}", owner,
                                            axis, x.shape().str()));
  const Tensor v = observed_values(x);
  const int64_t channels = v.shape()[axis];
  if (min_val_.numel() != 0 && min_val_.numel() != channels)
    throw std::invalid_argument(fmt::format("{}: saw {} channels, earlier {}", owner, channels, min_val_.numel()));
  int64_t inner = 1, outer = 1;
  for (int d = axis + 1; d < v.dim(); ++d) inner *= v.shape()[d];
  for (int d = 0; d < axis; ++d) outer *= v.shape()[d];
  // One pass over the tensor, viewed as (outer, channels, inner): each run of
  // `inner` values belongs to one channel.
  batch_min_.assign(static_cast<size_t>(channels), kInf);
  batch_max_.assign(static_cast<size_t>(channels), -kInf);
  float* lo = batch_min_.data();
  float* hi = batch_max_.data();
  const float* p = v.data<float>();
  for (int64_t o = 0; o < outer; ++o, p += channels * inner) {
    if (inner == 1) {
      // The channel is the last dimension: vectorize across channels.
      for (int64_t c = 0; c < channels; ++c) {
        lo[c] = p[c] < lo[c] ? p[c] : lo[c];
        hi[c] = p[c] > hi[c] ? p[c] : hi[c];
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) fold_min_max(p + c * inner, inner, lo[c], hi[c]);
    }
  }
  for (int64_t c = 0; c < channels; ++c)
    if (lo[c] > hi[c])
      throw std::invalid_argument(fmt::format("{}: channel {} holds only NaN", owner, c));
  all_reduce_range(lo, hi, static_cast<size_t>(channels));  // the global batch's ranges (docs/distributed.md)
  update(batch_min_, batch_max_);
}

void PerChannelMinMaxObserver::update(const std::vector<float>& lo, const std::vector<float>& hi) {
  if (!has_data()) {
    min_val_ = from_vector(lo, {static_cast<int64_t>(lo.size())});
    max_val_ = from_vector(hi, {static_cast<int64_t>(hi.size())});
    set_buffer("min_val", min_val_);
    set_buffer("max_val", max_val_);
    return;
  }
  float* l = min_val_.data<float>();
  float* h = max_val_.data<float>();
  for (size_t c = 0; c < lo.size(); ++c) {
    l[c] = lo[c] < l[c] ? lo[c] : l[c];
    h[c] = hi[c] > h[c] ? hi[c] : h[c];
  }
}

void PerChannelMinMaxObserver::reset() {
  min_val_ = empty({0});
  max_val_ = empty({0});
  set_buffer("min_val", min_val_);
  set_buffer("max_val", max_val_);
}

bool PerChannelMinMaxObserver::has_data() const { return min_val_.numel() > 0; }

QParams PerChannelMinMaxObserver::calculate_qparams() const {
  QParams q;
  calculate_qparams_into(q);
  return q;
}

void PerChannelMinMaxObserver::calculate_qparams_into(QParams& q) const {
  if (!has_data()) throw_no_data();
  const float* l = min_val_.data<float>();
  const float* h = max_val_.data<float>();
  const size_t channels = static_cast<size_t>(min_val_.numel());
  fill_qparams(q, spec_, channels);
  for (size_t c = 0; c < channels; ++c) {
    const ScaleZeroPoint sz = quant::calculate_qparams(l[c], h[c], spec_);
    q.scale[c] = sz.scale;
    q.zero_point[c] = sz.zero_point;
  }
}

void PerChannelMinMaxObserver::on_state_loaded() {
  min_val_ = buffer("min_val");
  max_val_ = buffer("max_val");
  if (!(min_val_.shape() == max_val_.shape()) || min_val_.dim() != 1)
    throw std::invalid_argument(fmt::format("{}: loaded min_val / max_val must be two vectors of one shape, got {} and {}",
                                            owner, min_val_.shape().str(), max_val_.shape().str()));
  check_loaded_range(*this, min_val_, max_val_, /*may_be_empty=*/false);
}

std::string PerChannelMinMaxObserver::extra_repr() const {
  return fmt::format("ch_axis={}, channels={}, {}", spec_.ch_axis, min_val_.numel(), spec_.str());
}

// ---- MovingAveragePerChannelMinMaxObserver ----

MovingAveragePerChannelMinMaxObserver::MovingAveragePerChannelMinMaxObserver(QuantSpec spec, float c)
    : PerChannelMinMaxObserver(spec), averaging_constant(c) {
  if (!(c > 0 && c <= 1))
    throw std::invalid_argument(fmt::format("MovingAveragePerChannelMinMaxObserver: averaging constant {} is not in (0, 1]", c));
}

void MovingAveragePerChannelMinMaxObserver::update(const std::vector<float>& lo, const std::vector<float>& hi) {
  if (!has_data()) {
    PerChannelMinMaxObserver::update(lo, hi);
    return;
  }
  float* l = min_val_.data<float>();
  float* h = max_val_.data<float>();
  for (size_t c = 0; c < lo.size(); ++c) {
    l[c] = l[c] + averaging_constant * (lo[c] - l[c]);  // eq. 7, per channel
    h[c] = h[c] + averaging_constant * (hi[c] - h[c]);
  }
}

std::string MovingAveragePerChannelMinMaxObserver::extra_repr() const {
  return fmt::format("ch_axis={}, channels={}, averaging_constant={}, {}", spec_.ch_axis, min_val_.numel(),
                     averaging_constant, spec_.str());
}

}  // namespace tq::quant

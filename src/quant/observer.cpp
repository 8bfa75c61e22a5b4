#include "quant/observer.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::quant {

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();

// The float values of x (dequantized if needed), contiguous, without graph.
Tensor observed_values(const Tensor& x) { return kernels::contiguous(kernels::to_float(x.detach())); }

// Replaces a registered buffer's tensor (the buffer changes shape on first data).
void set_buffer(std::vector<std::pair<std::string, Tensor>>& buffers, const std::string& name, const Tensor& t) {
  for (auto& [n, b] : buffers)
    if (n == name) b = t;
}
}  // namespace

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
  if (x.numel() == 0) return;
  const Tensor v = observed_values(x);
  const float* p = v.data<float>();
  float lo = p[0], hi = p[0];
  for (int64_t i = 1; i < v.numel(); ++i) {
    lo = std::fmin(lo, p[i]);
    hi = std::fmax(hi, p[i]);
  }
  update(lo, hi);
}

void MinMaxObserver::update(float batch_min, float batch_max) {
  float& lo = min_val_.data<float>()[0];
  float& hi = max_val_.data<float>()[0];
  lo = std::fmin(lo, batch_min);
  hi = std::fmax(hi, batch_max);
}

void MinMaxObserver::reset() {
  min_val_.data<float>()[0] = kInf;
  max_val_.data<float>()[0] = -kInf;
}

bool MinMaxObserver::has_data() const { return min_val() <= max_val(); }

QParams MinMaxObserver::calculate_qparams() const {
  if (!has_data()) throw_no_data();
  return make_qparams(spec_, {quant::calculate_qparams(min_val(), max_val(), spec_)});
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
  float& lo = min_val_.data<float>()[0];
  float& hi = max_val_.data<float>()[0];
  if (!has_data()) {  // the first batch sets the range
    lo = batch_min;
    hi = batch_max;
    return;
  }
  lo = lo + averaging_constant * (batch_min - lo);  // eq. 7
  hi = hi + averaging_constant * (batch_max - hi);
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
  int64_t inner = 1;
  for (int d = axis + 1; d < v.dim(); ++d) inner *= v.shape()[d];
  // One pass over the tensor: each element updates its channel's min and max.
  std::vector<float> lo(static_cast<size_t>(channels), kInf), hi(static_cast<size_t>(channels), -kInf);
  const float* p = v.data<float>();
  const int64_t n = v.numel();
  for (int64_t i = 0; i < n; i += inner) {
    const size_t c = static_cast<size_t>((i / inner) % channels);
    float l = lo[c], h = hi[c];
    for (int64_t j = 0; j < inner; ++j) {
      l = std::fmin(l, p[i + j]);
      h = std::fmax(h, p[i + j]);
    }
    lo[c] = l;
    hi[c] = h;
  }
  if (min_val_.numel() != 0 && min_val_.numel() != channels)
    throw std::invalid_argument(fmt::format("{}: saw {} channels, earlier {}", owner, channels, min_val_.numel()));
  update(lo, hi);
}

void PerChannelMinMaxObserver::update(const std::vector<float>& lo, const std::vector<float>& hi) {
  if (!has_data()) {
    min_val_ = from_vector(lo, {static_cast<int64_t>(lo.size())});
    max_val_ = from_vector(hi, {static_cast<int64_t>(hi.size())});
    set_buffer(buffers_, "min_val", min_val_);
    set_buffer(buffers_, "max_val", max_val_);
    return;
  }
  float* l = min_val_.data<float>();
  float* h = max_val_.data<float>();
  for (size_t c = 0; c < lo.size(); ++c) {
    l[c] = std::fmin(l[c], lo[c]);
    h[c] = std::fmax(h[c], hi[c]);
  }
}

void PerChannelMinMaxObserver::reset() {
  min_val_ = empty({0});
  max_val_ = empty({0});
  set_buffer(buffers_, "min_val", min_val_);
  set_buffer(buffers_, "max_val", max_val_);
}

bool PerChannelMinMaxObserver::has_data() const { return min_val_.numel() > 0; }

QParams PerChannelMinMaxObserver::calculate_qparams() const {
  if (!has_data()) throw_no_data();
  std::vector<ScaleZeroPoint> pairs;
  const float* l = min_val_.data<float>();
  const float* h = max_val_.data<float>();
  for (int64_t c = 0; c < min_val_.numel(); ++c) pairs.push_back(quant::calculate_qparams(l[c], h[c], spec_));
  return make_qparams(spec_, pairs);
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

#include "quant/histogram_observer.h"

#include "tensor/communicator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace tq::quant {

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();

// The search moves the clipping quantiles by this much per step (PyTorch's stepsize).
constexpr double kQuantileStep = 1e-5;

// Beyond this growth factor (in fine pieces per new bin) the old histogram
// fits inside one new bin, and is moved bin by bin instead of re-gridded.
constexpr float kMaxDownsampleRate = 16777216.f;  // 2^24: still an exact float

// The float values of x (dequantized if needed), contiguous, without graph.
Tensor observed_values(const Tensor& x) { return kernels::contiguous(kernels::to_float(x.detach())); }

// The integral of t^2 from `from` to `to`.
double integral_of_square(double from, double to) { return (to * to * to - from * from * from) / 3.0; }
}  // namespace

// ---- The math (free functions, so a reader or a test can call them on any histogram) ----

double histogram_quantization_error(const std::vector<float>& histogram, float min_val, float max_val,
                                    int start_bin, int end_bin, int levels) {
  const int bins = static_cast<int>(histogram.size());
  const double bin_width = (static_cast<double>(max_val) - min_val) / bins;
  // The candidate range (source bins start_bin..end_bin) cut into `levels`
  // destination bins; every value is rounded to the centre of its
  // destination bin, values outside the range to the centre of an end bin.
  const double dst_width = bin_width * (end_bin - start_bin + 1) / levels;
  if (dst_width == 0.0) return 0.0;
  const double half = dst_width / 2;
  auto dst_bin_of = [&](double offset) {  // offset from the left end of the candidate range
    return static_cast<int>(std::clamp(std::floor(offset / dst_width), 0.0, static_cast<double>(levels - 1)));
  };

  double error = 0;
  for (int i = 0; i < bins; ++i) {
    if (histogram[i] == 0) continue;
    const double density = histogram[i] / bin_width;  // eq. H2: values spread evenly over the bin
    const double begin = (i - start_bin) * bin_width;
    const double end = begin + bin_width;
    const int first = dst_bin_of(begin), last = dst_bin_of(end);
    const double first_centre = (first + 0.5) * dst_width, last_centre = (last + 0.5) * dst_width;
    double e;
    if (first == last) {
      // The whole source bin rounds to one centre (or is clipped to an end centre).
      e = integral_of_square(begin - first_centre, end - first_centre);
    } else {
      // Its tail in the first destination bin, whole destination bins in
      // between (each contributes dst_width^3 / 12), its head in the last one.
      e = integral_of_square(begin - first_centre, half) + (last - first - 1) * integral_of_square(-half, half) +
          integral_of_square(-half, end - last_centre);
    }
    error += density * e;
  }
  return error;
}

ClippingRange non_linear_param_search(const std::vector<float>& histogram, float min_val, float max_val, int levels) {
  const int bins = static_cast<int>(histogram.size());
  if (bins == 0 || !(max_val > min_val)) return {min_val, max_val};

  // cumulative[i] = values in bins 0..i (summed in double, stored as float,
  // as torch.cumsum does).
  std::vector<float> cumulative(static_cast<size_t>(bins));
  double total = 0;
  for (int i = 0; i < bins; ++i) cumulative[i] = static_cast<float>(total += histogram[i]);

  // eq. H4: [alpha, beta] are the quantiles of the data kept inside the range.
  // Each step raises alpha or lowers beta by kQuantileStep, on the side where
  // that moves the range edge further (the side with the thinner tail), and
  // keeps the move while the error does not grow. The first move is kept
  // unconditionally (best_error starts at +inf): the result may score worse
  // than the full range (docs/ptq.md eq. H4).
  double alpha = 0, beta = 1;
  int start_bin = 0, end_bin = bins - 1;
  double best_error = std::numeric_limits<double>::infinity();
  const auto first = cumulative.begin();
  while (alpha < beta) {
    const double next_alpha = alpha + kQuantileStep, next_beta = beta - kQuantileStep;
    const float low_count = static_cast<float>(next_alpha * total);
    const float high_count = static_cast<float>(next_beta * total);
    // l: the first bin in [start_bin, end_bin) whose cumulative count reaches
    // low_count (end_bin if none); r: the last bin in (start_bin, end_bin]
    // whose cumulative count is at most high_count (start_bin if none). The
    // cumulative counts never decrease, so binary search finds them.
    const int l = static_cast<int>(std::lower_bound(first + start_bin, first + end_bin, low_count) - first);
    const int r = static_cast<int>(std::upper_bound(first + start_bin + 1, first + end_bin + 1, high_count) - first) - 1;

    int next_start = start_bin, next_end = end_bin;
    if (l - start_bin > end_bin - r) {
      next_start = l;
      alpha = next_alpha;
    } else {
      next_end = r;
      beta = next_beta;
    }
    if (next_start == start_bin && next_end == end_bin) continue;  // this quantile step stayed in the same bin

    const double error = histogram_quantization_error(histogram, min_val, max_val, next_start, next_end, levels);
    if (error > best_error) break;  // greedy: the first step that makes it worse ends the search
    best_error = error;
    start_bin = next_start;
    end_bin = next_end;
  }
  // In float32, as PyTorch computes it, so both give the same range.
  const float width = (max_val - min_val) / static_cast<float>(bins);
  return {min_val + width * static_cast<float>(start_bin), min_val + width * static_cast<float>(end_bin + 1)};
}

// ---- HistogramObserver ----

HistogramObserver::HistogramObserver(QuantSpec spec, int bins, int upsample_rate)
    : ObserverBase(spec), bins_(bins), upsample_rate_(upsample_rate) {
  if (spec_.per_channel())
    throw std::invalid_argument("HistogramObserver: only per-tensor schemes are supported (use PerChannelMinMaxObserver)");
  if (bins < 1) throw std::invalid_argument(fmt::format("HistogramObserver: bins must be positive, got {}", bins));
  if (upsample_rate < 1)
    throw std::invalid_argument(fmt::format("HistogramObserver: upsample_rate must be positive, got {}", upsample_rate));
  histogram_ = register_buffer("histogram", zeros({bins}));
  min_val_ = register_buffer("min_val", full(Shape{}, kInf));
  max_val_ = register_buffer("max_val", full(Shape{}, -kInf));
}

void HistogramObserver::count_into(const float* values, int64_t n, float lo, float hi, float* hist) const {
  const float range = hi - lo;
  const float bins = static_cast<float>(bins_);
  for (int64_t i = 0; i < n; ++i) {
    // torch.histc's formula; the top edge belongs to the last bin.
    const float position = range > 0 ? (values[i] - lo) * bins / range : 0.f;
    // Clamped before the cast: a range that overflows float (a loaded
    // min_val / max_val of +-3e38) makes `position` NaN or infinite, and
    // casting those to an integer is undefined behaviour.
    const int64_t b = position >= bins ? bins_ - 1 : position > 0 ? static_cast<int64_t>(position) : 0;
    hist[b] += 1;
  }
}

void HistogramObserver::widen(float batch_min, float batch_max) {
  const float old_min = min_val(), old_max = max_val();
  const float new_min = std::fmin(old_min, batch_min);
  float new_max = std::fmax(old_max, batch_max);
  const float* old = histogram_.data<float>();
  std::vector<double> regridded(static_cast<size_t>(bins_), 0.0);

  // eq. H1: cut each old bin into upsample_rate fine pieces of width `fine`;
  // a new bin must hold a whole number (downsample_rate) of them, so the new
  // range is widened at the top (only there, so that a range starting at 0
  // keeps its 0). PyTorch's _adjust_min_max, in the same float32 steps.
  const float fine = (old_max - old_min) / static_cast<float>(int64_t{bins_} * upsample_rate_);
  const float coarse = static_cast<float>(bins_) * fine;  // the width of `bins` fine pieces
  const float ratio = (new_max - new_min) / coarse;
  if (fine > 0 && ratio < kMaxDownsampleRate) {
    const int64_t downsample_rate = static_cast<int64_t>(std::ceil(ratio));
    const float slack = static_cast<float>(downsample_rate) * coarse - (new_max - new_min);
    new_max = std::fmax(new_max + slack, new_max);  // never below the data
    // Where old_min falls on the fine grid of the new range.
    const int64_t start = static_cast<int64_t>(std::nearbyint((old_min - new_min) / fine));
    // PyTorch's _combine_histograms: old bin j covers fine pieces
    // [start + j U, start + (j+1) U), each holding count/U; new bin k sums
    // pieces [k D, (k+1) D). (PyTorch builds the bins*D pieces explicitly; this
    // walks the overlaps, the same sums without the memory.)
    const int64_t up = upsample_rate_;
    for (int j = 0; j < bins_; ++j) {
      if (old[j] == 0) continue;
      const double per_piece = static_cast<double>(old[j]) / static_cast<double>(up);
      int64_t piece = start + j * up;
      const int64_t end = piece + up;
      while (piece < end) {
        int64_t k = piece / downsample_rate;
        int64_t next = (k + 1) * downsample_rate;
        if (k >= bins_ - 1) {  // the last bin takes the rest (only a rounding of start can overshoot)
          k = bins_ - 1;
          next = end;
        }
        const int64_t take = std::min(end, next) - piece;
        regridded[static_cast<size_t>(k)] += per_piece * static_cast<double>(take);
        piece += take;
      }
    }
  } else {
    // The old range is a single point (a constant batch so far) or tiny next
    // to the new one: move each old bin's count to the new bin holding its centre.
    const double old_width = (static_cast<double>(old_max) - old_min) / bins_;
    const double new_width = (static_cast<double>(new_max) - new_min) / bins_;
    for (int j = 0; j < bins_; ++j) {
      if (old[j] == 0) continue;
      const double centre = old_min + (j + 0.5) * old_width;
      const double k = std::floor((centre - new_min) / new_width);
      regridded[static_cast<size_t>(std::clamp(k, 0.0, static_cast<double>(bins_ - 1)))] += old[j];
    }
  }

  float* hist = histogram_.data<float>();
  for (int k = 0; k < bins_; ++k) hist[k] = static_cast<float>(regridded[static_cast<size_t>(k)]);
  min_val_.data<float>()[0] = new_min;
  max_val_.data<float>()[0] = new_max;
}

void HistogramObserver::observe(const Tensor& x) {
  if (x.numel() == 0) return;
  const Tensor v = observed_values(x);
  const float* p = v.data<float>();
  const int64_t n = v.numel();
  float lo = kInf, hi = -kInf;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i]))
      throw std::invalid_argument(fmt::format("{} ({}): observed a non-finite value ({}) at flat index {} of a tensor of "
                                              "shape {}; a histogram needs finite values",
                                              owner, type_name(), p[i], i, x.shape().str()));
    lo = std::min(lo, p[i]);
    hi = std::max(hi, p[i]);
  }
  // Data parallel: the ranks agree on the global batch's range first, so that
  // they re-grid alike, then add up their counts over that grid (below): every
  // rank holds the histogram of the global batch (docs/distributed.md).
  all_reduce_range(&lo, &hi, 1);

  if (!has_data()) {  // the first batch sets the range
    std::fill_n(histogram_.data<float>(), bins_, 0.f);
    min_val_.data<float>()[0] = lo;
    max_val_.data<float>()[0] = hi;
  } else if (lo < min_val() || hi > max_val()) {
    widen(lo, hi);
  }
  // Count the batch over the (possibly widened) range, then add it, as
  // PyTorch adds the batch's histogram to the re-gridded one.
  std::vector<float> counts(static_cast<size_t>(bins_), 0.f);
  count_into(p, n, min_val(), max_val(), counts.data());
  if (dist::distributed()) dist::world().allreduce_sum(counts.data(), bins_);
  float* hist = histogram_.data<float>();
  for (int k = 0; k < bins_; ++k) hist[k] = counts[static_cast<size_t>(k)] + hist[k];
}

void HistogramObserver::reset() {
  std::fill_n(histogram_.data<float>(), bins_, 0.f);
  min_val_.data<float>()[0] = kInf;
  max_val_.data<float>()[0] = -kInf;
}

bool HistogramObserver::has_data() const { return min_val() <= max_val(); }

double HistogramObserver::total_count() const {
  double total = 0;
  const float* hist = histogram_.data<float>();
  for (int k = 0; k < bins_; ++k) total += hist[k];
  return total;
}

ClippingRange HistogramObserver::non_linear_param_search() const {
  if (!has_data()) throw_no_data();
  return quant::non_linear_param_search(histogram(), min_val(), max_val(), levels());
}

QParams HistogramObserver::calculate_qparams() const {
  const ClippingRange r = non_linear_param_search();
  return make_qparams(spec_, {quant::calculate_qparams(r.min, r.max, spec_)});
}

void HistogramObserver::on_state_loaded() {
  histogram_ = buffer("histogram");
  min_val_ = buffer("min_val");
  max_val_ = buffer("max_val");
  if (histogram_.dim() != 1 || histogram_.numel() != bins_ || histogram_.dtype() != DType::f32 || !histogram_.is_contiguous())
    throw std::invalid_argument(fmt::format("{} ({}): the loaded histogram must be {} f32 values, got shape {}", owner,
                                            type_name(), bins_, histogram_.shape().str()));
  if (min_val_.numel() != 1 || max_val_.numel() != 1)
    throw std::invalid_argument(fmt::format("{} ({}): loaded min_val / max_val must hold one value each, got shapes {} and {}",
                                            owner, type_name(), min_val_.shape().str(), max_val_.shape().str()));
  // observe() takes only finite values, so a histogram holding data has a
  // finite range and finite, non-negative counts; a file may say otherwise
  // (fuzz/fuzz_model: min_val = -inf made widen() compute NaN bin indices).
  if (min_val_.dtype() != DType::f32 || max_val_.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("{} ({}): loaded min_val / max_val must be f32, got {} and {}", owner,
                                            type_name(), dtype_name(min_val_.dtype()), dtype_name(max_val_.dtype())));
  if (has_data() && !(std::isfinite(min_val()) && std::isfinite(max_val())))
    throw std::invalid_argument(fmt::format("{} ({}): the loaded range [{}, {}] is not finite", owner, type_name(),
                                            min_val(), max_val()));
  const float* counts = histogram_.data<float>();
  for (int k = 0; k < bins_; ++k)
    if (!(counts[k] >= 0) || !std::isfinite(counts[k]))
      throw std::invalid_argument(fmt::format("{} ({}): loaded histogram bin {} holds {}, not a count", owner, type_name(),
                                              k, counts[k]));
}

std::string HistogramObserver::extra_repr() const {
  return fmt::format("bins={}, upsample_rate={}, min_val={}, max_val={}, {}", bins_, upsample_rate_, min_val(),
                     max_val(), spec_.str());
}

}  // namespace tq::quant

// HistogramObserver: chooses the clipping range that minimises the L2
// quantization error, instead of taking min / max (docs/ptq.md §"Histogram
// observer", eq. H1-H4).
//
// Why: MinMaxObserver stretches the grid over every value it saw, so one
// outlier (say 30 among values in [-3, 3]) makes the step ten times coarser
// for all the others. Clipping the outlier costs (30 - 3)^2 once; a finer
// step saves a little on every value. With enough data the fine step wins.
//
// How (the algorithm of PyTorch's torch.ao.quantization.HistogramObserver,
// from caffe2's NormMinimization):
//  1. observe(): keep a running histogram of `bins` equal bins over
//     [min_val, max_val]. When a batch widens the range, the stored
//     histogram is spread onto the wider grid: each old bin is cut into
//     `upsample_rate` equal pieces (assuming its values are spread evenly),
//     and every new bin sums a whole number of those pieces
//     (the range is widened at the top so that the number fits).
//  2. calculate_qparams(): a greedy search shrinks [min_val, max_val] bin by
//     bin, each time from the side that holds less of the data, and stops as
//     soon as the estimated L2 error (eq. H3) grows. The error of a candidate
//     range treats each source bin as uniform density and integrates
//     (x - nearest destination-bin centre)^2 over it (eq. H2).
//  3. The found range goes to the ONE calculate_qparams (qparams.h).
//
// Differences from PyTorch 1.13 (deliberate; see tests/test_histogram_observer.cpp):
//  - PyTorch computes each batch's histogram over [int(min), int(max)] while
//    treating it as [min, max]: values outside the truncated range are lost
//    (the golden run keeps 246 of 256 values). Here every value is counted.
//  - PyTorch sizes the destination grid as 2^bits of the dtype (256 for
//    quint8 even when the range is 0..127). Here it is the grid actually
//    used: quant_max - quant_min + 1 levels.
//  - A batch inside the current range is added without re-gridding, a
//    constant first batch is kept (PyTorch restarts the histogram), and
//    non-finite values are an error.
#pragma once

#include <string>
#include <vector>

#include "quant/observer.h"

namespace tq::quant {

// A clipping range [min, max] chosen by the search.
struct ClippingRange {
  float min;
  float max;
};

// eq. H2-H3: the estimated L2 quantization error of quantizing the values in
// `histogram` (bins over [min_val, max_val], counts per bin) onto `levels`
// equal destination bins that span source bins start_bin..end_bin
// (PyTorch's _compute_quantization_error).
double histogram_quantization_error(const std::vector<float>& histogram, float min_val, float max_val,
                                    int start_bin, int end_bin, int levels);

// eq. H4: the greedy search for the clipping range (PyTorch's
// _non_linear_param_search). Returns [min_val, max_val] shrunk to whole bins.
ClippingRange non_linear_param_search(const std::vector<float>& histogram, float min_val, float max_val, int levels);

class HistogramObserver : public ObserverBase {
 public:
  // bins: resolution of the running histogram. upsample_rate: how finely an
  // old bin is cut when the range grows (more = less smearing).
  explicit HistogramObserver(QuantSpec spec = activation_spec(7), int bins = 2048, int upsample_rate = 128);

  void observe(const Tensor& x) override;
  void reset() override;
  bool has_data() const override;
  QParams calculate_qparams() const override;
  std::string extra_repr() const override;
  // After a loader replaced the buffers: take the new tensors, check their shapes.
  void on_state_loaded() override;

  // The range the search picks (before calculate_qparams widens it to hold 0).
  ClippingRange non_linear_param_search() const;

  int bins() const { return bins_; }
  int upsample_rate() const { return upsample_rate_; }
  // Destination bins of the error estimate: the levels of the integer grid.
  int levels() const { return spec_.quant_max - spec_.quant_min + 1; }
  float min_val() const { return min_val_.data<float>()[0]; }
  float max_val() const { return max_val_.data<float>()[0]; }
  std::vector<float> histogram() const { return to_vector(histogram_); }
  // Sum of the histogram: how many values it holds.
  double total_count() const;

 private:
  // Counts `values` into bins over [lo, hi] (values a rounding error outside
  // go to the end bins, so none is lost). hist: (bins)
  void count_into(const float* values, int64_t n, float lo, float hi, float* hist) const;
  // The range grows to include [batch_min, batch_max]: re-grid the stored histogram.
  void widen(float batch_min, float batch_max);

  int bins_;
  int upsample_rate_;
  Tensor histogram_;          // (bins) float counts (fractional after widening)
  Tensor min_val_, max_val_;  // scalars, +inf / -inf before any data
};

}  // namespace tq::quant

// Observers watch the tensors that flow through a layer and remember their
// range; from that range they choose qparams (docs/quantization.md §3).
//   MinMaxObserver                      running min / max
//   MovingAverageMinMaxObserver         m <- m + c (m_batch - m), c = 0.01 (eq. 7)
//   PerChannelMinMaxObserver            one min / max per channel (weights)
//   MovingAveragePerChannelMinMaxObserver
// (HistogramObserver lives in histogram_observer.h.)
#pragma once

#include <memory>
#include <string>

#include "nn/module.h"
#include "quant/qparams.h"

namespace tq::quant {

// Anything that can tell the qparams of the tensor it watches: an observer
// (post-training quantization) or a fake quant (quantization-aware training).
class QParamsSource : public nn::Module {
 public:
  explicit QParamsSource(QuantSpec spec);
  const QuantSpec& spec() const { return spec_; }
  // Has it seen any data (so that calculate_qparams can answer)?
  virtual bool has_data() const = 0;
  // The qparams for what it has seen; throws naming `owner` if it saw nothing.
  virtual QParams calculate_qparams() const = 0;
  // The same, written into `out`, whose vectors keep their capacity: what a
  // fake quant calls on every training step, so that the step allocates nothing.
  virtual void calculate_qparams_into(QParams& out) const { out = calculate_qparams(); }
  // Where it sits in the model ("fc1.activation_post_process"), for messages.
  std::string owner = "observer";

 protected:
  QuantSpec spec_;
};

class ObserverBase : public QParamsSource {
 public:
  using QParamsSource::QParamsSource;
  // Records x's range (when enabled) and returns x unchanged.
  Tensor forward(const Tensor& x) override;
  virtual void observe(const Tensor& x) = 0;
  virtual void reset() = 0;
  bool enabled = true;

 protected:
  [[noreturn]] void throw_no_data() const;
};

// Data parallel (dist::distributed()): lo[i] <- the minimum of lo[i] over the
// ranks, hi[i] <- the maximum, so that every rank's observer updates with the
// global batch's range and holds the same qparams (docs/distributed.md). A
// single process: nothing.
void all_reduce_range(float* lo, float* hi, size_t n);

class MinMaxObserver : public ObserverBase {
 public:
  explicit MinMaxObserver(QuantSpec spec = activation_spec());
  void observe(const Tensor& x) override;
  void reset() override;
  bool has_data() const override;
  QParams calculate_qparams() const override;
  void calculate_qparams_into(QParams& out) const override;
  std::string extra_repr() const override;
  void on_state_loaded() override;
  float min_val() const { return min_val_.data<float>()[0]; }
  float max_val() const { return max_val_.data<float>()[0]; }

 protected:
  // Combines the running range with a batch's range; the plain observer keeps
  // the extremes, the moving-average one averages.
  virtual void update(float batch_min, float batch_max);
  Tensor min_val_, max_val_;  // scalars, +inf / -inf before any data
};

class MovingAverageMinMaxObserver : public MinMaxObserver {
 public:
  explicit MovingAverageMinMaxObserver(QuantSpec spec = activation_spec(7), float averaging_constant = 0.01f);
  std::string extra_repr() const override;
  float averaging_constant;

 protected:
  void update(float batch_min, float batch_max) override;
};

class PerChannelMinMaxObserver : public ObserverBase {
 public:
  explicit PerChannelMinMaxObserver(QuantSpec spec = weight_spec());
  void observe(const Tensor& x) override;
  void reset() override;
  bool has_data() const override;
  QParams calculate_qparams() const override;
  void calculate_qparams_into(QParams& out) const override;
  std::string extra_repr() const override;
  void on_state_loaded() override;
  std::vector<float> min_vals() const { return to_vector(min_val_); }
  std::vector<float> max_vals() const { return to_vector(max_val_); }

 protected:
  virtual void update(const std::vector<float>& batch_min, const std::vector<float>& batch_max);
  Tensor min_val_, max_val_;  // (C), empty before any data

 private:
  std::vector<float> batch_min_, batch_max_;  // scratch for observe(), reused from batch to batch
};

class MovingAveragePerChannelMinMaxObserver : public PerChannelMinMaxObserver {
 public:
  explicit MovingAveragePerChannelMinMaxObserver(QuantSpec spec = weight_spec(), float averaging_constant = 0.01f);
  std::string extra_repr() const override;
  float averaging_constant;

 protected:
  void update(const std::vector<float>& batch_min, const std::vector<float>& batch_max) override;
};

}  // namespace tq::quant

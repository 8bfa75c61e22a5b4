// Learned step size quantization, LSQ (Esser et al., ICLR 2020; docs/lsq.md):
// a fake quant whose scale (and, for affine tensors, zero point) are
// parameters trained by gradient descent with the rest of the model, as
// PyTorch's torch.ao.quantization._LearnableFakeQuantize and its ops
// torch._fake_quantize_learnable_per_tensor_affine / _per_channel_affine.
//
// Forward (docs/lsq.md eq. 1-2), with z = clamp(nearbyint(zero_point), qmin, qmax):
//     r = nearbyint(x * (1/s)),   q = r + z,   y = (clamp(q, qmin, qmax) - z) * s
// Backward, per element, times the gradient scale g (eq. 3-6):
//     dy/dx = 1 inside (qmin <= q <= qmax), else 0               (STE, eq. 3)
//     dy/ds = r - x/s inside,  qmin - z below,  qmax - z above   (eq. 4)
//     dy/dz = 0 inside, -s outside                               (eq. 5)
//     g = 1 / sqrt(numel(x) * quant_max)  (use_grad_scaling)     (eq. 6)
// summed over the elements that share a scale (the tensor, or a channel).
// The backward uses the forward's own r and z. PyTorch's recomputes them
// differently, which changes a few elements at ties (docs/lsq.md §5).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "quant/observer.h"

namespace tq::quant {

// ---- The differentiable ops ----
//
// x: any shape, f32. scale: (C) f32, every entry > 0 and finite.
// zero_point: (C) f32, used rounded (half to even) and clamped to
// [quant_min, quant_max]. C = 1 per tensor; C = x.shape[axis] per channel.
// Gradients flow to x, scale and zero_point (to those that require them);
// the scale and zero-point gradients are (C), multiplied by grad_factor.
// x / s is computed as x * (1 / s), bit-identical to PyTorch's forward.
Tensor fake_quantize_learnable_per_tensor_affine(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                                                 int32_t quant_min, int32_t quant_max, double grad_factor = 1.0);
Tensor fake_quantize_learnable_per_channel_affine(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                                                  int axis, int32_t quant_min, int32_t quant_max,
                                                  double grad_factor = 1.0);

// The plain reference of eq. 3-5 for one finite element, for teaching and
// tests: given the upstream gradient g of y, the gradients of x, s and z
// (before the gradient scale, and before summing over the elements).
struct LearnableFakeQuantizeGradients {
  float x, scale, zero_point;
};
LearnableFakeQuantizeGradients fake_quantize_learnable_gradients_value(float x, float g, float scale,
                                                                       int32_t zero_point, int32_t quant_min,
                                                                       int32_t quant_max);

// ---- The module ----

// Where the first training batch takes the initial scale from.
enum class LsqInit {
  observer,  // the observer's qparams for that batch (PyTorch: static estimate), eq. 7
  lsq,       // LSQ's s = 2 mean(|x|) / sqrt(quant_max) (per channel for weights), eq. 8
};

struct LearnableFakeQuantizeOptions {
  LsqInit init = LsqInit::lsq;
  // Multiply the scale / zero-point gradients by 1 / sqrt(numel(x) * quant_max)
  // (eq. 6). PyTorch's default is false; LSQ (and tinyqat) use it.
  bool use_grad_scaling = true;
  // Per channel: the number of channels, when known (PyTorch's channel_len).
  // 0: taken from the first tensor seen; the parameters are then resized in
  // place, so an optimizer made before that batch still holds them.
  int64_t channels = 0;
};

// An observer (for the initial / static estimate) plus the learnable fake
// quant. Parameters: "scale" (C) f32 and, for affine schemes, "zero_point"
// (C) f32; for symmetric schemes "zero_point" is a fixed buffer (0 for signed
// ranges, the middle of an unsigned one). C = 1 per tensor.
//
// Training mode, per batch:
//   - first batch (not yet initialised): scale (and zero point) from `init`;
//   - static_enabled (enable_static_estimate): the observer sees every batch
//     and its qparams overwrite the parameters (no learning effect);
//   - otherwise the scale is clamped in place to >= eps (as PyTorch does) and
//     fake quant runs with gradients to the parameters (learning_enabled).
// Eval mode changes nothing: no observer, no clamp; fake quant only.
class LearnableFakeQuantize : public QParamsSource {
 public:
  explicit LearnableFakeQuantize(std::shared_ptr<ObserverBase> observer, LearnableFakeQuantizeOptions options = {});
  // With a moving-average observer (per tensor or per channel, from the spec).
  explicit LearnableFakeQuantize(QuantSpec spec, LearnableFakeQuantizeOptions options = {});

  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void on_state_loaded() override;

  // Has a training batch (or a loaded file) set the parameters?
  bool has_data() const override { return initialized_; }
  // The current learned qparams: scale clamped to >= eps, zero point rounded
  // and clamped. What an eval forward uses, so what convert must use.
  QParams calculate_qparams() const override;

  // The toggles of PyTorch's _LearnableFakeQuantize.
  LearnableFakeQuantize& enable_param_learning();      // learn; no observer; fake quant on
  LearnableFakeQuantize& enable_static_estimate();     // observer sets the parameters; no learning
  LearnableFakeQuantize& enable_static_observation();  // observer only; output = input
  LearnableFakeQuantize& toggle_observer_update(bool on = true);
  LearnableFakeQuantize& toggle_qparam_learning(bool on = true);
  LearnableFakeQuantize& toggle_fake_quant(bool on = true);
  void enable_observer(bool on = true) { toggle_observer_update(on); }
  void disable_observer() { toggle_observer_update(false); }
  void enable_fake_quant(bool on = true) { toggle_fake_quant(on); }
  void disable_fake_quant() { toggle_fake_quant(false); }

  bool static_enabled() const { return static_enabled_; }
  bool learning_enabled() const { return learning_enabled_; }
  bool fake_quant_enabled() const { return fake_quant_enabled_; }
  const LearnableFakeQuantizeOptions& options() const { return options_; }
  // The number of scales: 1 per tensor; per channel 0 until sized.
  int64_t channels() const { return scale.numel(); }
  // The gradient scale the op gets for an input of `numel` elements (eq. 6).
  double grad_factor(int64_t numel) const;

  ObserverBase& observer() const { return activation_post_process.get(); }

  // (C) f32 parameters (zero_point: a buffer for symmetric schemes).
  Tensor scale, zero_point;
  nn::Slot<ObserverBase> activation_post_process;

 private:
  void resize_channels(int64_t c);
  void init_from_observer(const Tensor& x);
  void init_lsq(const Tensor& x);
  void clamp_scale_in_place();
  void check_channels(const Tensor& x) const;
  int32_t symmetric_zero_point() const;

  LearnableFakeQuantizeOptions options_;
  bool static_enabled_ = false;
  bool learning_enabled_ = true;
  bool fake_quant_enabled_ = true;
  bool initialized_ = false;
  Tensor initialized_flag_;  // (1) u8 buffer "initialized": restored with a model file
};

}  // namespace tq::quant

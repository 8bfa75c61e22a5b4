// Fake quantization (docs/quantization.md §4, eq. 8-9): during training,
// round a float tensor to the grid it will have after conversion, in float:
//     y = (clamp(nearbyint(x * (1/s)) + z, qmin, qmax) - z) * s        (eq. 8)
// The rounding has zero gradient almost everywhere, so the backward pass uses
// the straight-through estimator: the gradient passes unchanged where the
// unclamped integer lies inside [qmin, qmax], and is zero outside (eq. 9).
// x * (1/s) rather than x / s: PyTorch's choice, bit-identical to it (§8).
#pragma once

#include <cmath>
#include <functional>
#include <memory>

#include "quant/observer.h"

namespace tq::quant {

// The differentiable fake-quant op. x: f32, any shape; qp: per tensor, or
// per channel along qp.axis (one scale / zero point per index). One fused
// pass computes y and, when x requires a gradient, the STE mask (one byte
// per element); the backward is one pass selecting the gradient by the mask,
// added straight into x.grad when x is a leaf (a weight). A per-tensor
// result is tagged as lying on its grid (docs §5). The loops:
// quant/quant_kernels.h.
Tensor fake_quantize(const Tensor& x, const QParams& qp);
Tensor fake_quantize(const Tensor& x, const std::shared_ptr<const QParams>& qp);

// Storage kept from one call to the next (a FakeQuantize module keeps one):
// the output and the STE mask are written into it whenever no tensor refers
// to it any more, so a training step does not allocate, and page-fault in,
// a fresh weight-sized output and mask each time.
struct FakeQuantizeBuffers {
  Tensor out;   // f32
  Tensor mask;  // u8
};
Tensor fake_quantize(const Tensor& x, const std::shared_ptr<const QParams>& qp, FakeQuantizeBuffers& buffers);

// The plain reference of eq. 8 for one value (teaching and tests).
inline float fake_quantize_value(float x, float scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
  const float q = std::nearbyint(x * (1.f / scale)) + static_cast<float>(zero_point);
  const float clamped = std::fmin(std::fmax(q, static_cast<float>(qmin)), static_cast<float>(qmax));
  return (clamped - static_cast<float>(zero_point)) * scale;
}

// An observer plus fake quant, PyTorch's FakeQuantize. In training mode it
// lets its observer see the input, recomputes (scale, zero_point) from it
// and fake-quantizes with them; in eval mode it only fake-quantizes with the
// qparams it last used, so evaluating never changes the model.
class FakeQuantize : public QParamsSource {
 public:
  explicit FakeQuantize(std::shared_ptr<ObserverBase> observer);

  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  // After a model file restored the scale / zero_point buffers (and the
  // observer's): fake-quantize with exactly those.
  void on_state_loaded() override;

  // The qparams of the last forward (what convert uses: docs/design.md §2,
  // convert uses exactly the qparams of the last fake-quant forward).
  bool has_data() const override { return has_qparams_; }
  QParams calculate_qparams() const override;
  void calculate_qparams_into(QParams& out) const override;

  void enable_observer(bool on = true) { observer_enabled = on; }
  void disable_observer() { observer_enabled = false; }
  void enable_fake_quant(bool on = true) { fake_quant_enabled = on; }
  void disable_fake_quant() { fake_quant_enabled = false; }

  ObserverBase& observer() const {
    // The checked cast is done once per module put into the slot, not per call.
    const nn::Module* m = &activation_post_process.module();
    if (m != observer_module_) {
      observer_ = &activation_post_process.get();
      observer_module_ = m;
    }
    return *observer_;
  }

  bool observer_enabled = true;
  bool fake_quant_enabled = true;
  nn::Slot<ObserverBase> activation_post_process;

 protected:
  // Copies the observer's answer into the scale / zero_point buffers.
  void refresh_qparams();
  Tensor scale_, zero_point_;  // (C) f32 / i32; C = 1 for per-tensor
  bool has_qparams_ = false;
  // The same values, ready for the op; shared with the outputs that lie on
  // this grid, and overwritten in place only when no output refers to it.
  std::shared_ptr<QParams> qparams_;
  FakeQuantizeBuffers buffers_;

 private:
  mutable const nn::Module* observer_module_ = nullptr;
  mutable ObserverBase* observer_ = nullptr;
};

// Factories, as QConfig holds them: each call makes a fresh module.
using FakeQuantFactory = std::function<std::shared_ptr<QParamsSource>()>;

}  // namespace tq::quant

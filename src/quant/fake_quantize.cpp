#include "quant/fake_quantize.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

// STE backward (eq. 9): the gradient passes where the mask is 1.
struct FakeQuantizeBackward final : Node {
  explicit FakeQuantizeBackward(Tensor mask) : mask(std::move(mask)) {}
  Tensor mask;  // u8, 1 where qmin <= nearbyint(x / s) + z <= qmax
  const char* name() const override { return "FakeQuantizeBackward"; }
  void backward(const Tensor& g_in, Tensor* gi) override {
    const Tensor g = kernels::contiguous(g_in);
    Tensor out = empty(g.shape());
    const float* gp = g.data<float>();
    const uint8_t* m = mask.data<uint8_t>();
    float* o = out.data<float>();
    for (int64_t i = 0; i < out.numel(); ++i) o[i] = m[i] ? gp[i] : 0.f;
    gi[0] = out;
  }
};

}  // namespace

Tensor fake_quantize(const Tensor& x, const QParams& qp) {
  return fake_quantize(x, std::make_shared<const QParams>(qp));
}

Tensor fake_quantize(const Tensor& x_in, const std::shared_ptr<const QParams>& qp_ptr) {
  const QParams& qp = *qp_ptr;
  if (!x_in.defined() || x_in.dtype() != DType::f32)
    throw std::invalid_argument("fake_quantize: expected a float tensor");
  const Tensor x = kernels::contiguous(x_in);
  const bool pc = is_per_channel(qp.scheme);
  int64_t inner = 1, channels = 1;
  if (pc) {
    if (qp.axis < 0 || qp.axis >= x.dim())
      throw std::invalid_argument(fmt::format("fake_quantize: per-channel axis {} is out of range for shape {}", qp.axis,
                                              x.shape().str()));
    channels = x.shape()[qp.axis];
    if (static_cast<int64_t>(qp.scale.size()) != channels)
      throw std::invalid_argument(fmt::format("fake_quantize: {} scales for {} channels", qp.scale.size(), channels));
    for (int d = qp.axis + 1; d < x.dim(); ++d) inner *= x.shape()[d];
  }
  const bool need_grad = any_requires_grad(x);
  Tensor y = empty(x.shape());
  Tensor mask = need_grad ? empty(x.shape(), DType::u8) : Tensor();
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  uint8_t* mp = need_grad ? mask.data<uint8_t>() : nullptr;
  const float qmin = static_cast<float>(qp.quant_min), qmax = static_cast<float>(qp.quant_max);
  const int64_t n = x.numel();
  // One pass: each run of `inner` elements shares a channel's (s, z).
  for (int64_t start = 0; start < n; start += inner) {
    const int64_t c = pc ? (start / inner) % channels : 0;
    const float s = qp.scale[c], inv_s = 1.f / s, z = static_cast<float>(qp.zero_point[c]);
    const int64_t end = pc ? start + inner : n;
    for (int64_t i = start; i < end; ++i) {
      const float q = std::nearbyint(xp[i] * inv_s) + z;  // eq. 8
      yp[i] = (std::fmin(std::fmax(q, qmin), qmax) - z) * s;
      if (mp) mp[i] = (q >= qmin) & (q <= qmax);  // eq. 9
    }
    if (!pc) break;
  }
  if (!pc) y.impl()->fake_quant_grid = qp_ptr;
  if (need_grad) record<FakeQuantizeBackward>(y, {x}, std::move(mask));
  return y;
}

FakeQuantize::FakeQuantize(std::shared_ptr<ObserverBase> observer) : QParamsSource(observer->spec()) {
  activation_post_process = register_module("activation_post_process", std::move(observer));
  const int64_t c = 1;
  scale_ = register_buffer("scale", full({c}, 1.0));
  zero_point_ = register_buffer("zero_point", zeros({c}, DType::i32));
}

void FakeQuantize::refresh_qparams() {
  const QParams q = observer().calculate_qparams();
  if (scale_.numel() != static_cast<int64_t>(q.scale.size())) {
    scale_ = empty({static_cast<int64_t>(q.scale.size())});
    zero_point_ = empty({static_cast<int64_t>(q.scale.size())}, DType::i32);
    for (auto& [name, b] : buffers_) {
      if (name == "scale") b = scale_;
      if (name == "zero_point") b = zero_point_;
    }
  }
  for (size_t c = 0; c < q.scale.size(); ++c) {
    scale_.data<float>()[c] = q.scale[c];
    zero_point_.data<int32_t>()[c] = q.zero_point[c];
  }
  has_qparams_ = true;
  qparams_ = std::make_shared<const QParams>(q);
}

QParams FakeQuantize::calculate_qparams() const {
  if (!has_qparams_)
    throw std::logic_error(fmt::format("{} (FakeQuantize) has seen no data: run training batches through the model "
                                       "(in train mode) before convert",
                                       owner));
  std::vector<ScaleZeroPoint> pairs;
  for (int64_t c = 0; c < scale_.numel(); ++c) pairs.push_back({scale_.data<float>()[c], zero_point_.data<int32_t>()[c]});
  return make_qparams(spec_, pairs);
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
  if (!qparams_) qparams_ = std::make_shared<const QParams>(calculate_qparams());
  return fake_quantize(x, qparams_);
}

std::string FakeQuantize::extra_repr() const {
  std::string scales, zps;
  for (int64_t c = 0; c < scale_.numel() && c < 8; ++c) {
    scales += (c ? ", " : "") + fmt::format("{:.6g}", scale_.data<float>()[c]);
    zps += (c ? ", " : "") + std::to_string(zero_point_.data<int32_t>()[c]);
  }
  if (scale_.numel() > 8) { scales += ", ..."; zps += ", ..."; }
  return fmt::format("fake_quant_enabled={}, observer_enabled={}, quant_min={}, quant_max={}, dtype={}, qscheme={}, "
                     "ch_axis={}, scale=[{}], zero_point=[{}]",
                     fake_quant_enabled ? 1 : 0, observer_enabled ? 1 : 0, spec_.quant_min, spec_.quant_max,
                     spec_.dtype == DType::u8 ? "quint8" : "qint8", qscheme_name(spec_.qscheme),
                     spec_.per_channel() ? spec_.ch_axis : -1, scales, zps);
}

}  // namespace tq::quant

#include "quant/quantize.h"

#include <cmath>
#include <stdexcept>
#include <type_traits>

#include <fmt/format.h>

#include "quant/quant_kernels.h"
#include "tensor/affine_quant.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

void check_input(const Tensor& x, const char* op) {
  if (!x.defined()) throw std::invalid_argument(std::string(op) + ": the tensor is undefined");
  if (x.dtype() != DType::f32 || x.is_quantized())
    throw std::invalid_argument(fmt::format("{}: expected a float tensor, got {}{}", op, dtype_name(x.dtype()),
                                            x.is_quantized() ? " (already quantized)" : ""));
}

// One run of values sharing (s, z): eq. 2. A NaN lands on qmin. u8 goes
// through tinyqat's one activation quantizer (tensor/affine_quant.h), at the
// vector width the QAT loops use (quant_kernels.h: one switch, so
// set_quant_kernel(reference) makes every loop the plain one); i8 (weights)
// through the same formula in a plain loop.
template <class T>
void quantize_run(const float* x, T* q, int64_t n, float inv_scale, float z, float qmin, float qmax) {
  if constexpr (std::is_same_v<T, uint8_t>) {
    return quantize_affine_u8(x, q, n, inv_scale, static_cast<int32_t>(z), static_cast<int32_t>(qmin),
                              static_cast<int32_t>(qmax), quant_kernel_level());
  }
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv_scale) + z;
    v = v > qmin ? v : qmin;
    v = v < qmax ? v : qmax;
    q[i] = static_cast<T>(v);
  }
}

template <class T>
void quantize_into(const float* x, T* q, int64_t n, int64_t inner, int64_t channels, const QParams& qp) {
  const float qmin = static_cast<float>(qp.quant_min), qmax = static_cast<float>(qp.quant_max);
  if (!is_per_channel(qp.scheme)) {
    const float inv = 1.f / qp.scale[0], z = static_cast<float>(qp.zero_point[0]);
    return quantize_run(x, q, n, inv, z, qmin, qmax);
  }
  for (int64_t start = 0; start < n; start += inner) {
    const int64_t c = (start / inner) % channels;
    quantize_run(x + start, q + start, inner, 1.f / qp.scale[c], static_cast<float>(qp.zero_point[c]), qmin, qmax);
  }
}

}  // namespace

Tensor quantize(const Tensor& x_in, const QParams& qp, DType dtype) {
  check_input(x_in, "quantize");
  QuantSpec spec{qp.quant_min, qp.quant_max, dtype, qp.scheme, qp.axis};
  validate(spec, "quantize");
  int64_t inner = 1, channels = 1;
  if (is_per_channel(qp.scheme)) {
    if (qp.axis < 0 || qp.axis >= x_in.dim())
      throw std::invalid_argument(fmt::format("quantize: per-channel axis {} is out of range for shape {}", qp.axis,
                                              x_in.shape().str()));
    channels = x_in.shape()[qp.axis];
    if (static_cast<int64_t>(qp.scale.size()) != channels || static_cast<int64_t>(qp.zero_point.size()) != channels)
      throw std::invalid_argument(fmt::format("quantize: {} scales and {} zero points for {} channels along axis {}",
                                              qp.scale.size(), qp.zero_point.size(), channels, qp.axis));
    for (int d = qp.axis + 1; d < x_in.dim(); ++d) inner *= x_in.shape()[d];
  } else if (qp.scale.size() != 1 || qp.zero_point.size() != 1) {
    throw std::invalid_argument("quantize: per-tensor qparams need exactly one scale and one zero point");
  }
  for (size_t c = 0; c < qp.scale.size(); ++c) {
    if (!(qp.scale[c] > 0) || !std::isfinite(qp.scale[c]))
      throw std::invalid_argument(fmt::format("quantize: scale {} (channel {}) must be positive and finite", qp.scale[c], c));
    if (qp.zero_point[c] < qp.quant_min || qp.zero_point[c] > qp.quant_max)
      throw std::invalid_argument(fmt::format("quantize: zero point {} is outside [{}, {}]", qp.zero_point[c],
                                              qp.quant_min, qp.quant_max));
  }
  const Tensor x = kernels::contiguous(x_in);
  Tensor q = empty(x.shape(), dtype);
  if (dtype == DType::u8) quantize_into(x.data<float>(), q.data<uint8_t>(), x.numel(), inner, channels, qp);
  else quantize_into(x.data<float>(), q.data<int8_t>(), x.numel(), inner, channels, qp);
  return with_qparams(q, std::make_shared<const QParams>(qp));
}

Tensor quantize_per_tensor(const Tensor& x, float scale, int32_t zero_point, int32_t quant_min, int32_t quant_max,
                           DType dtype, QScheme scheme) {
  if (is_per_channel(scheme)) throw std::invalid_argument("quantize_per_tensor: scheme must be per-tensor");
  QParams qp;
  qp.scheme = scheme;
  qp.scale = {scale};
  qp.zero_point = {zero_point};
  qp.quant_min = quant_min;
  qp.quant_max = quant_max;
  return quantize(x, qp, dtype);
}

Tensor quantize_per_channel(const Tensor& x, const std::vector<float>& scales, const std::vector<int32_t>& zero_points,
                            int axis, int32_t quant_min, int32_t quant_max, DType dtype, QScheme scheme) {
  if (!is_per_channel(scheme)) throw std::invalid_argument("quantize_per_channel: scheme must be per-channel");
  QParams qp;
  qp.scheme = scheme;
  qp.scale = scales;
  qp.zero_point = zero_points;
  qp.axis = axis;
  qp.quant_min = quant_min;
  qp.quant_max = quant_max;
  return quantize(x, qp, dtype);
}

Tensor dequantize(const Tensor& q) {
  if (!q.defined() || !q.is_quantized()) throw std::invalid_argument("dequantize: the tensor is not quantized");
  return kernels::to_float(q);
}

}  // namespace tq::quant

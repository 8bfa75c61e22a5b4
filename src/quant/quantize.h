// Real quantization of float tensors into u8 / i8 tensors that carry their
// qparams, and back (docs/quantization.md eq. 1-2):
//     q = clamp(nearbyint(r / s) + z, qmin, qmax)      r ≈ s (q - z)
// Division is done as multiplication by 1/s, exactly as the fake quant does,
// so a value lands on the same integer in training and after convert.
#pragma once

#include "quant/qparams.h"

namespace tq::quant {

// x: f32 (any shape) -> dtype u8 or i8 with per-tensor qparams.
Tensor quantize_per_tensor(const Tensor& x, float scale, int32_t zero_point, int32_t quant_min, int32_t quant_max,
                           DType dtype, QScheme scheme = QScheme::per_tensor_affine);
// x: f32, one (scale, zero point) per index along `axis`.
Tensor quantize_per_channel(const Tensor& x, const std::vector<float>& scales, const std::vector<int32_t>& zero_points,
                            int axis, int32_t quant_min, int32_t quant_max, DType dtype,
                            QScheme scheme = QScheme::per_channel_affine);
// Quantizes with a complete QParams (per-tensor or per-channel).
Tensor quantize(const Tensor& x, const QParams& q, DType dtype);
// q -> f32 real values s (q - z).
Tensor dequantize(const Tensor& q);

}  // namespace tq::quant

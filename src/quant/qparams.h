// Choosing quantization parameters (docs/quantization.md §2, eq. 3-6).
// ONE function turns an observed range [min, max] into (scale, zero_point);
// every observer, the fake quant during training, and convert use it, so the
// int8 model is built on exactly the grid the training saw.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace tq::quant {

// float32 machine epsilon: the smallest scale an observer may return (eq. 6;
// PyTorch's observers use the same floor), so an all-zero tensor still gets
// a usable grid.
inline constexpr float kScaleEps = 1.1920928955078125e-07f;

// The integer range and scheme a tensor is quantized to.
struct QuantSpec {
  int32_t quant_min = 0;
  int32_t quant_max = 127;
  DType dtype = DType::u8;  // u8 (quint8) or i8 (qint8): the storage
  QScheme qscheme = QScheme::per_tensor_affine;
  int ch_axis = 0;  // per-channel schemes only

  bool symmetric() const {
    return qscheme == QScheme::per_tensor_symmetric || qscheme == QScheme::per_channel_symmetric;
  }
  bool per_channel() const { return is_per_channel(qscheme); }
  int bits() const;  // the smallest bit width that holds the range
  std::string str() const;
};

// Throws std::invalid_argument naming `who` when the spec is unusable:
// quant_min >= quant_max, a range wider than 8 bits or outside its dtype.
void validate(const QuantSpec& spec, const std::string& who);

// Presets: activations u8 in [0, 2^bits - 1]; weights i8 in [-2^(bits-1), 2^(bits-1) - 1].
QuantSpec activation_spec(int bits = 8, QScheme scheme = QScheme::per_tensor_affine);
QuantSpec weight_spec(int bits = 8, QScheme scheme = QScheme::per_channel_symmetric, int ch_axis = 0);

struct ScaleZeroPoint {
  float scale;
  int32_t zero_point;
};

// eq. 3-6: min/max widened to include 0, then
//   affine:    s = (max - min) / (qmax - qmin),  z = clamp(qmin - round(min / s), qmin, qmax)
//   symmetric: s = max(-min, max) / ((qmax - qmin) / 2),  z = 0 for signed, the middle for unsigned
// with s >= kScaleEps and round half to even. Computed in float32 as PyTorch's
// observers do, so both give bit-identical results.
ScaleZeroPoint calculate_qparams(float min_val, float max_val, const QuantSpec& spec);

// The QParams of a tensor quantized with `spec` and these per-tensor /
// per-channel (scale, zero point) pairs.
QParams make_qparams(const QuantSpec& spec, const std::vector<ScaleZeroPoint>& pairs);

}  // namespace tq::quant

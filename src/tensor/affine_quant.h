// affine_quant.h — the one affine qparams formula and the one float -> u8
// activation quantizer of tinyqat, with the one min / max loop they need.
// Static quantization (quant::quantize, convert), the observers and the
// dynamic int8 path (int8_gemm.h) all call these; docs/quantization.md eq. 2-6
// and docs/int8_kernel.md eq. 10-11.
//
// Rounding rule (everywhere in tinyqat): q = clamp(nearbyint(x * (1/s)) + z,
// qmin, qmax), with 1/s computed once in float and nearbyint rounding half to
// even. That is what PyTorch's quantize_per_tensor and its fake quant compute
// (x * inv_scale), so a value lands on the same integer in training, after
// convert, in the dynamic path and in PyTorch. True division x / s can differ
// from x * (1/s) in the last bit, and near a .5 that moves the integer.
//
// Each loop has a scalar *_reference, an AVX2 and an AVX-512 twin that give
// the same bits; the entry points take the SimdLevel to use (callers pass
// what their kernel switch resolved, cpu_features.h).
#pragma once

#include <cstdint>

#include "tensor/cpu_features.h"

namespace tq {

struct AffineQParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

// [min, max] -> (scale, zero point) on qmin..qmax, PyTorch's observer formula
// in float32: the range widened to include 0,
//   scale = max((max - min) / (qmax - qmin), float epsilon)
//   zero_point = clamp(qmin - nearbyint(min / scale), qmin, qmax).
// Throws std::invalid_argument on NaN or infinite ends, min > max, qmin >= qmax.
AffineQParams affine_qparams(float min, float max, int32_t qmin, int32_t qmax);

// Folds p[0..n) into a running [lo, hi]. NaNs are skipped (they change
// neither end); returns true when p held at least one NaN.
bool fold_min_max(const float* p, int64_t n, float& lo, float& hi, SimdLevel level);

// q[i] = clamp(nearbyint(x[i] * inv_scale) + zero_point, qmin, qmax), 0 <= qmin < qmax <= 255;
// a NaN x lands on qmin.
void quantize_affine_u8(const float* x, uint8_t* q, int64_t n, float inv_scale, int32_t zero_point, int32_t qmin,
                        int32_t qmax, SimdLevel level);

namespace detail {
bool fold_min_max_reference(const float* p, int64_t n, float& lo, float& hi);
bool fold_min_max_avx2(const float* p, int64_t n, float& lo, float& hi);
bool fold_min_max_avx512(const float* p, int64_t n, float& lo, float& hi);
void quantize_affine_u8_reference(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin,
                                  float qmax);
void quantize_affine_u8_avx2(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin, float qmax);
void quantize_affine_u8_avx512(const float* x, uint8_t* q, int64_t n, float inv_scale, float z, float qmin,
                               float qmax);
}  // namespace detail

}  // namespace tq

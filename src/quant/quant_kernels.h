// The elementwise loops of quantization-aware training, the ones a QAT step
// runs over every weight and activation: fake quant with its STE mask
// (docs/quantization.md eq. 8-9), the STE backward, and the min / max an
// observer needs (§3). Pointer-level, no Tensor.
//
// Each has a plain scalar version, *_reference: the readable one, and the
// one CPUs without AVX2 run. The AVX2 twins (quant_kernels_avx2.cpp) and the
// AVX-512 twins (quant_kernels_avx512.cpp) do the same float operations eight
// or sixteen lanes at a time and give the same values; the entry points
// without a suffix pick the widest the CPU has (tensor/cpu_features.h, see
// set_quant_kernel). tests/test_quant_kernels.cpp compares them. The min / max
// loop is the one of tensor/affine_quant.h.
#pragma once

#include <cstdint>

#include "tensor/cpu_features.h"

namespace tq::quant {

// One channel's fake-quant constants, relative to the zero point z:
//   inv_scale = 1 / scale (in float, as PyTorch computes it),
//   lo = quant_min - z, hi = quant_max - z (integers, exact in a float).
struct FakeQuantConstants {
  float scale, inv_scale, lo, hi;
};
FakeQuantConstants fake_quant_constants(float scale, int32_t zero_point, int32_t quant_min, int32_t quant_max);

// Eq. 8-9 on x[0..n), all with the same constants:
//   r = nearbyint(x * inv_scale),  y = clamp(r, lo, hi) * scale,  mask = (lo <= r <= hi)
// mask (0 / 1 bytes) may be null. NaN gives y = lo * scale and mask 0, as in PyTorch.
void fake_quantize_run(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k);
// The STE (eq. 9): out[i] = mask[i] ? g[i] : 0, or out[i] += that when
// accumulate. out may equal g.
void apply_ste_mask(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate);
// Folds p[0..n) into a running [lo, hi]; NaNs are skipped.
void fold_min_max(const float* p, int64_t n, float& lo, float& hi);

// The plain versions.
void fake_quantize_run_reference(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k);
void apply_ste_mask_reference(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate);
void fold_min_max_reference(const float* p, int64_t n, float& lo, float& hi);

// The AVX2 versions (call only when cpu_features().avx2).
void fake_quantize_run_avx2(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k);
void apply_ste_mask_avx2(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate);
void fold_min_max_avx2(const float* p, int64_t n, float& lo, float& hi);
// The AVX-512 versions (call only when cpu_features().avx512); tails are masked.
void fake_quantize_run_avx512(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k);
void apply_ste_mask_avx512(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate);
void fold_min_max_avx512(const float* p, int64_t n, float& lo, float& hi);

// Which versions the entry points run: automatic (the widest the CPU has,
// the default), the reference, or one vector width (set_quant_kernel throws
// std::runtime_error if the CPU lacks it). Process-wide; quantize() (the u8
// loop) follows the same switch.
enum class QuantKernel { automatic, reference, avx2, avx512 };
void set_quant_kernel(QuantKernel kernel);
QuantKernel quant_kernel();
SimdLevel quant_kernel_level();  // what the setting resolves to on this CPU
bool quant_kernel_uses_avx2();   // quant_kernel_level() is avx2 or wider

}  // namespace tq::quant

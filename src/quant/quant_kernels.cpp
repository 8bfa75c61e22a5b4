#include "quant/quant_kernels.h"

#include <atomic>

#include "tensor/affine_quant.h"

namespace tq::quant {

namespace {

// 1.5 * 2^23. For |v| < 2^22, (v + kRoundMagic) - kRoundMagic is v rounded to
// the nearest integer, ties to even, exactly as nearbyint rounds: the sum lies
// in [2^23, 2^24), where the floats are exactly the integers, so the addition
// itself does the rounding (in the default rounding mode). Unlike a call to
// nearbyint (which saves and restores the floating-point environment), it is
// two instructions, and it vectorizes.
constexpr float kRoundMagic = 12582912.f;

// `a > b ? a : b` and `a < b ? a : b` are what the x86 max / min instructions
// compute, NaN cases included (the second operand wins), so the AVX2 loops
// can use those instructions and still give the same bits.
inline float max_of(float a, float b) { return a > b ? a : b; }
inline float min_of(float a, float b) { return a < b ? a : b; }

// Set once at start-up (no lazy-initialisation check on every call);
// set_quant_kernel switches it. Read before this file's static initialisation
// (from another file's), it is scalar: the reference loops, correct, just
// slower.
std::atomic<QuantKernel> g_kernel{QuantKernel::automatic};
std::atomic<SimdLevel> g_level{best_simd_level()};

inline SimdLevel level() { return g_level.load(std::memory_order_relaxed); }

}  // namespace

FakeQuantConstants fake_quant_constants(float scale, int32_t zero_point, int32_t quant_min, int32_t quant_max) {
  // 1 / s in float, as PyTorch computes it: x * (1 / s) is then bit-identical
  // to PyTorch's fake quant (true division differs near ties, docs §4).
  return {scale, 1.f / scale, static_cast<float>(quant_min - zero_point), static_cast<float>(quant_max - zero_point)};
}

// Eq. 8-9 relative to the zero point: clamp(r + z, qmin, qmax) - z equals
// clamp(r, lo, hi), and qmin <= r + z <= qmax equals lo <= r <= hi, because
// every term is an integer held exactly in a float; so this is bit for bit
// fake_quantize_value (fake_quantize.h). Before rounding, x * inv_scale is
// clamped to [lo - 1, hi + 1]: that keeps |r| small enough for the rounding
// trick and changes neither y nor the mask (anything beyond lies outside the
// range either way). A NaN becomes lo - 1 there (max_of keeps its second
// operand), hence y = lo * scale and mask 0.
void fake_quantize_run_reference(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k) {
  const float below = k.lo - 1.f, above = k.hi + 1.f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = min_of(max_of(x[i] * k.inv_scale, below), above);
    const float r = (v + kRoundMagic) - kRoundMagic;
    const float c = min_of(max_of(r, k.lo), k.hi);
    y[i] = c * k.scale;
    if (mask) mask[i] = r == c;
  }
}

// A select, not a multiply by the mask: inf * 0 would be NaN.
void apply_ste_mask_reference(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate) {
  if (accumulate)
    for (int64_t i = 0; i < n; ++i) out[i] += mask[i] ? g[i] : 0.f;
  else
    for (int64_t i = 0; i < n; ++i) out[i] = mask[i] ? g[i] : 0.f;
}

void fold_min_max_reference(const float* p, int64_t n, float& lo, float& hi) {
  detail::fold_min_max_reference(p, n, lo, hi);
}
void fold_min_max_avx2(const float* p, int64_t n, float& lo, float& hi) { detail::fold_min_max_avx2(p, n, lo, hi); }
void fold_min_max_avx512(const float* p, int64_t n, float& lo, float& hi) {
  detail::fold_min_max_avx512(p, n, lo, hi);
}

// Below one vector's worth the AVX2 versions would only run their scalar
// tail; the AVX-512 ones mask it.
void fake_quantize_run(const float* x, float* y, uint8_t* mask, int64_t n, const FakeQuantConstants& k) {
  const SimdLevel l = level();
  if (l == SimdLevel::avx512) fake_quantize_run_avx512(x, y, mask, n, k);
  else if (n >= 8 && l == SimdLevel::avx2) fake_quantize_run_avx2(x, y, mask, n, k);
  else fake_quantize_run_reference(x, y, mask, n, k);
}

void apply_ste_mask(const float* g, const uint8_t* mask, float* out, int64_t n, bool accumulate) {
  const SimdLevel l = level();
  if (l == SimdLevel::avx512) apply_ste_mask_avx512(g, mask, out, n, accumulate);
  else if (n >= 8 && l == SimdLevel::avx2) apply_ste_mask_avx2(g, mask, out, n, accumulate);
  else apply_ste_mask_reference(g, mask, out, n, accumulate);
}

void fold_min_max(const float* p, int64_t n, float& lo, float& hi) { tq::fold_min_max(p, n, lo, hi, level()); }

void set_quant_kernel(QuantKernel kernel) {
  SimdLevel l = best_simd_level();
  switch (kernel) {
    case QuantKernel::automatic: break;
    case QuantKernel::reference: l = SimdLevel::scalar; break;
    case QuantKernel::avx2: l = SimdLevel::avx2; break;
    case QuantKernel::avx512: l = SimdLevel::avx512; break;
  }
  require_simd_level(l, "set_quant_kernel");
  g_kernel.store(kernel, std::memory_order_relaxed);
  g_level.store(l, std::memory_order_relaxed);
}
QuantKernel quant_kernel() { return g_kernel.load(std::memory_order_relaxed); }
SimdLevel quant_kernel_level() { return level(); }
bool quant_kernel_uses_avx2() { return level() != SimdLevel::scalar; }

}  // namespace tq::quant

// int8_gemm.h — the int8 GEMM of quantized Linear layers: u8 activations
// times i8 weights, int32 accumulation, and an epilogue that either
// requantizes to u8 (static quantization) or scales back to f32 (dynamic
// quantization). Math: docs/int8_kernel.md.
//
//   acc[m][n] = sum_k (X[m][k] - z_x) * W[n][k] + bias_q[n]            (eq. 1)
//             = sum_k X[m][k] * W[n][k] + (bias_q[n] - z_x * rowsum_n)  (eq. 2)
//
// Each fast kernel has a plain scalar twin named *_reference (the readable
// version, and the fallback on CPUs without AVX2); they agree bit for bit.
// The public entry points dispatch at run time to the best path this CPU has
// (cpu_features.h): AMX-INT8, AVX-512 VNNI, AVX-VNNI, AVX2, else the
// reference (see set_int8_kernel).
//
// This is a pointer-level API with no Tensor: X is (M, K) u8 with row stride
// ldx, W is (N, K) i8 in PyTorch's Linear layout (out_features x
// in_features), Y is (M, N) with row stride ldy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "tensor/affine_quant.h"
#include "tensor/requantize.h"

namespace tq {

namespace detail {
// Minimal allocator giving 64-byte aligned storage (one cache line, and the
// alignment of AVX loads) to std::vector.
template <class T>
struct CacheAlignedAllocator {
  using value_type = T;
  static constexpr std::size_t kAlignment = 64;
  CacheAlignedAllocator() = default;
  template <class U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kAlignment})); }
  void deallocate(T* p, std::size_t) { ::operator delete (p, std::align_val_t{kAlignment}); }
  template <class U>
  bool operator==(const CacheAlignedAllocator<U>&) const {
    return true;
  }
};
template <class T>
using CacheAlignedVector = std::vector<T, CacheAlignedAllocator<T>>;
}  // namespace detail

// Weights of an int8 Linear layer, packed once (at convert) for the kernels.
//
// Packed layout (docs/int8_kernel.md, "Packing"): columns (output channels)
// in panels of kPanelWidth, K in groups of 4, [N/16][K/4][16][4]:
//   panels()[((p * k_groups() + g) * kPanelWidth + c) * 4 + j] = W[p * 16 + c][g * 4 + j]
// zero-padded past N and K. One 32-byte load gives 8 channels x 4 k.
// Also kept: the plain (N, K) copy (for the reference kernels), the row sums
// sum_k W[n][k] (for eq. 2) and max |W| (which decides the AVX2 path, eq. 9).
// On a CPU whose AMX tiles are usable, also the AMX copy: the same layout with
// the k groups zero-padded to whole tiles of 16 groups (64 k), panel after
// panel: amx_panels()[((p * amx_k_tiles() + t) * 16 + r) * 64 + c * 4 + j]
// = W[p * 16 + c][(t * 16 + r) * 4 + j], i.e. each 1024 bytes is one B tile.
class PackedWeightsI8 {
 public:
  static constexpr int64_t kPanelWidth = 16;  // output channels per panel (two ymm registers)
  static constexpr int64_t kGroup = 4;        // k values per packed group (one vpmaddubsw dword)
  // K above this could overflow the int32 accumulator: 255 * 128 * 32768 < 2^30.
  static constexpr int64_t kMaxK = 32768;

  PackedWeightsI8() = default;
  // W: (N, K) i8, row-major, row stride ldw (ldw = 0 means K). Throws
  // std::invalid_argument on N < 1, K < 1, K > kMaxK, ldw < K, null W.
  PackedWeightsI8(const int8_t* W, int64_t N, int64_t K, int64_t ldw = 0);

  int64_t N() const { return N_; }
  int64_t K() const { return K_; }
  int64_t n_panels() const { return n_panels_; }
  int64_t k_groups() const { return k_groups_; }
  bool empty() const { return N_ == 0; }
  int32_t max_abs() const { return max_abs_; }
  const int8_t* plain() const { return plain_.data(); }         // (N, K)
  const int8_t* panels() const { return panels_.data(); }       // [n_panels][k_groups][16][4]
  const int32_t* row_sums() const { return row_sums_.data(); }  // (n_panels * 16), zero past N
  bool has_amx_panels() const { return !amx_panels_.empty(); }
  int64_t amx_k_tiles() const { return (k_groups_ + 15) / 16; }
  const int8_t* amx_panels() const { return amx_panels_.data(); }  // [n_panels][amx_k_tiles][16][16][4]

 private:
  int64_t N_ = 0, K_ = 0, n_panels_ = 0, k_groups_ = 0;
  int32_t max_abs_ = 0;
  detail::CacheAlignedVector<int8_t> plain_;
  detail::CacheAlignedVector<int8_t> panels_;
  detail::CacheAlignedVector<int8_t> amx_panels_;
  detail::CacheAlignedVector<int32_t> row_sums_;
};

// ---------------------------------------------------------------------------
// Kernel selection.

enum class Int8Kernel {
  automatic,               // the best path of this CPU: amx > avx512vnni > avxvnni > avx2 (path per call, eq. 9) > reference
  reference,               // the plain scalar kernels
  avx2,                    // AVX2, path per call (vpmaddubsw where exact, else widening)
  avx2_widening,           // AVX2, always the exact widening path
  avx2_maddubs_unchecked,  // AVX2, always vpmaddubsw, even where it saturates (wrong there: tests only)
  avxvnni,                 // AVX-VNNI: vpdpbusd on ymm
  avx512vnni,              // AVX-512 VNNI: vpdpbusd on zmm
  amx,                     // AMX-INT8: tdpbusd on tiles
};

// Which inner loop a call runs.
enum class Int8Path { reference, avx2_maddubs, avx2_widening, avxvnni, avx512vnni, amx };

// Chooses the kernel for every later call in the process. The environment
// variable TINYQAT_INT8_KERNEL=reference|avx2|widening|avxvnni|avx512vnni|amx|auto
// sets the initial choice (a kernel this CPU cannot run is reported on stderr
// and `auto` is used). set_int8_kernel throws std::runtime_error, naming what
// is missing, when the CPU (or, for AMX, the OS) cannot run the kernel asked for.
void set_int8_kernel(Int8Kernel kernel);
Int8Kernel int8_kernel();
const char* to_string(Int8Kernel kernel);
const char* to_string(Int8Path path);
bool cpu_has_avx2();
// Whether this CPU and OS can run `kernel` (automatic and reference: always).
bool int8_kernel_available(Int8Kernel kernel);

// True when vpmaddubsw cannot saturate: 2 * x_quant_max * max|w| <= 32767
// (docs/int8_kernel.md eq. 9): 7-bit activations with any i8 weights, or
// 8-bit activations with |w| <= 64.
bool maddubs_is_exact(int32_t x_quant_max, int32_t w_max_abs);

// The path a call with these activations and weights takes under the current
// kernel setting.
Int8Path select_int8_path(int32_t x_quant_max, const PackedWeightsI8& W);

// Calls of at least this many multiply-adds (M * N * K) are split across
// threads; smaller ones run on the calling thread. Default 10 M: on the 2-core
// machine of docs/speed.md, waking a second thread costs tens of
// microseconds, so 8.4 M ran slower on two threads and 12.8 M 1.3x faster.
// Results never depend on it. Tests lower it to exercise the split.
inline constexpr int64_t kDefaultInt8ParallelMinMacs = 10'000'000;
int64_t int8_parallel_min_macs();
void set_int8_parallel_min_macs(int64_t macs);  // >= 0

// Sets the kernel for the lifetime of this object, then restores the old one.
class ScopedInt8Kernel {
 public:
  explicit ScopedInt8Kernel(Int8Kernel kernel) : saved_(int8_kernel()) { set_int8_kernel(kernel); }
  ~ScopedInt8Kernel() { set_int8_kernel(saved_); }
  ScopedInt8Kernel(const ScopedInt8Kernel&) = delete;
  ScopedInt8Kernel& operator=(const ScopedInt8Kernel&) = delete;

 private:
  Int8Kernel saved_;
};

// ---------------------------------------------------------------------------
// Static quantization: u8 in, u8 out.
//
// X: (M, K) u8 (row stride ldx), values in [0, x_quant_max], zero point zx.
// W: packed (N, K) i8, symmetric.
// bias_q: (N) i32 with scale s_x * s_w (eq. 3), |bias_q| <= 2^30, or null.
// multipliers: (N) s_x * s_w[n] / s_y (per-tensor weights: all equal), eq. 5.
// Y: (M, N) u8 (row stride ldy) = clamp(zy + round(acc * M_n), y_min, y_max)
//   with acc from eq. 1 (eq. 8). Fused ReLU: y_min = max(y_min, zy).
// threads: 0 = default_thread_count(); the result never depends on it.
void gemm_u8i8_requant(const uint8_t* X, int64_t M, int64_t ldx, int32_t zx, int32_t x_quant_max,
                       const PackedWeightsI8& W, const int32_t* bias_q, const FixedPointMultiplier* multipliers,
                       int32_t zy, int32_t y_min, int32_t y_max, uint8_t* Y, int64_t ldy, int threads = 0);

// The scalar twin: eq. 1 as a triple loop, then requantize(). Single thread.
void gemm_u8i8_requant_reference(const uint8_t* X, int64_t M, int64_t ldx, int32_t zx, int32_t x_quant_max,
                                 const PackedWeightsI8& W, const int32_t* bias_q,
                                 const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min, int32_t y_max,
                                 uint8_t* Y, int64_t ldy);

// ---------------------------------------------------------------------------
// Dynamic quantization: u8 in, f32 out.
//
// X: (M, K) u8 as above with scale x_scale. w_scale: (N) weight scales.
// bias: (N) f32 or null. Y: (M, N) f32 (row stride ldy):
//   Y[m][n] = fma(float(acc[m][n]), x_scale * w_scale[n], bias[n])   (eq. 12)
// with acc from eq. 1 without bias; fma rounds once, so this formula is
// bit-identical in every kernel.
void gemm_u8i8_dynamic(const uint8_t* X, int64_t M, int64_t ldx, float x_scale, int32_t zx, int32_t x_quant_max,
                       const PackedWeightsI8& W, const float* w_scale, const float* bias, float* Y, int64_t ldy,
                       int threads = 0);

void gemm_u8i8_dynamic_reference(const uint8_t* X, int64_t M, int64_t ldx, float x_scale, int32_t zx,
                                 int32_t x_quant_max, const PackedWeightsI8& W, const float* w_scale, const float* bias,
                                 float* Y, int64_t ldy);

// Scale and zero point of dynamically quantized activations.
using ActivationQParams = AffineQParams;

// Affine qparams for [min, max] on 0..quant_max (docs/int8_kernel.md eq. 10):
// affine_qparams(min, max, 0, quant_max), the one formula that the observers
// use too (tensor/affine_quant.h).
ActivationQParams dynamic_activation_qparams(float min, float max, int32_t quant_max);

// Finds min/max of X in one pass, picks qparams (eq. 10), and writes
// Xq[m][k] = clamp(nearbyint(X[m][k] * (1 / scale)) + zero_point, 0, quant_max)
// (round half to even): tinyqat's one activation quantizer,
// quantize_affine_u8, as static quantization and PyTorch use it. X: (M, K)
// f32 (row stride ldx), Xq: (M, K) u8 (row stride ldq). Throws
// std::invalid_argument on NaN or infinity in X.
ActivationQParams quantize_activations_u8(const float* X, int64_t M, int64_t K, int64_t ldx, int32_t quant_max,
                                          uint8_t* Xq, int64_t ldq);
ActivationQParams quantize_activations_u8_reference(const float* X, int64_t M, int64_t K, int64_t ldx,
                                                    int32_t quant_max, uint8_t* Xq, int64_t ldq);

// Dynamic quantized Linear in one call: X: (M, K) f32 is quantized per tensor
// to 0..x_quant_max (quantize_activations_u8), then gemm_u8i8_dynamic.
// Y: (M, N) f32. Returns the activation qparams it used.
ActivationQParams gemm_f32_dynamic(const float* X, int64_t M, int64_t ldx, int32_t x_quant_max,
                                   const PackedWeightsI8& W, const float* w_scale, const float* bias, float* Y,
                                   int64_t ldy, int threads = 0);

// ---------------------------------------------------------------------------
// Internals shared by int8_gemm.cpp and int8_gemm_avx2.cpp.
namespace detail {

// Everything one GEMM call needs; kernels compute a block of it.
struct Int8GemmProblem {
  const uint8_t* X = nullptr;
  int64_t M = 0, ldx = 0;
  int32_t zx = 0;
  const PackedWeightsI8* W = nullptr;
  bool widening = false;  // the exact widening path instead of vpmaddubsw (eq. 9)
  bool float_output = false;
  // u8 output (requantized)
  const int32_t* bias_q = nullptr;
  const FixedPointMultiplier* multipliers = nullptr;
  int32_t zy = 0, y_min = 0, y_max = 255;
  uint8_t* Y_u8 = nullptr;
  // f32 output (dynamic)
  float x_scale = 1.0f;
  const float* w_scale = nullptr;
  const float* bias_f = nullptr;
  float* Y_f32 = nullptr;
  int64_t ldy = 0;
};

// The kernels, one per path (int8_gemm_<path>.cpp). Each computes rows
// [m_begin, m_end) and the output channels of panels [panel_begin, panel_end).
void int8_gemm_avx2(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                    int64_t panel_end);
void int8_gemm_avxvnni(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                       int64_t panel_end);
void int8_gemm_avx512vnni(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                          int64_t panel_end);
// Needs W.has_amx_panels().
void int8_gemm_amx(const Int8GemmProblem& problem, int64_t m_begin, int64_t m_end, int64_t panel_begin,
                   int64_t panel_end);

}  // namespace detail

}  // namespace tq

// int8_gemm.cpp — weight packing, the scalar reference kernels, argument
// checks, kernel selection and the split of a GEMM across threads. The fast
// kernels are in int8_gemm_<path>.cpp. Math: docs/int8_kernel.md.
#include "tensor/int8_gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "tensor/cpu_features.h"
#include "tensor/thread_pool.h"

namespace tq {

namespace {

std::atomic<int64_t> parallel_min_macs{kDefaultInt8ParallelMinMacs};

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw std::invalid_argument(message.str());
}

}  // namespace

// ---------------------------------------------------------------------------
// Packing (docs/int8_kernel.md, "Packing").

PackedWeightsI8::PackedWeightsI8(const int8_t* W, int64_t N, int64_t K, int64_t ldw) {
  if (ldw == 0) ldw = K;
  if (N < 1 || K < 1) fail("PackedWeightsI8: weight shape (", N, ", ", K, ") must have N >= 1 and K >= 1");
  if (K > kMaxK) fail("PackedWeightsI8: K = ", K, " exceeds ", kMaxK, " (the int32 accumulator could overflow)");
  if (ldw < K) fail("PackedWeightsI8: row stride ", ldw, " is smaller than K = ", K);
  if (W == nullptr) fail("PackedWeightsI8: weight pointer is null for shape (", N, ", ", K, ")");

  N_ = N;
  K_ = K;
  n_panels_ = (N + kPanelWidth - 1) / kPanelWidth;
  k_groups_ = (K + kGroup - 1) / kGroup;
  plain_.resize(static_cast<size_t>(N * K));
  row_sums_.assign(static_cast<size_t>(n_panels_ * kPanelWidth), 0);
  panels_.assign(static_cast<size_t>(n_panels_ * k_groups_ * kPanelWidth * kGroup), 0);

  for (int64_t n = 0; n < N; ++n) {
    const int8_t* row = W + n * ldw;
    std::memcpy(plain_.data() + n * K, row, static_cast<size_t>(K));
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      sum += row[k];
      max_abs_ = std::max(max_abs_, std::abs(int32_t{row[k]}));
      // [panel p][group g][channel c][j]
      const int64_t p = n / kPanelWidth, c = n % kPanelWidth, g = k / kGroup, j = k % kGroup;
      panels_[static_cast<size_t>(((p * k_groups_ + g) * kPanelWidth + c) * kGroup + j)] = row[k];
    }
    row_sums_[static_cast<size_t>(n)] = sum;
  }
  // The AMX copy: the same bytes, the k groups of each panel padded to whole
  // tiles of 16 groups (the padding is zero).
  if (cpu_features().amx_permitted) {
    const int64_t tile_bytes = 16 * kPanelWidth * kGroup, group_bytes = kPanelWidth * kGroup;
    amx_panels_.assign(static_cast<size_t>(n_panels_ * amx_k_tiles() * tile_bytes), 0);
    for (int64_t p = 0; p < n_panels_; ++p) {
      std::memcpy(amx_panels_.data() + p * amx_k_tiles() * tile_bytes, panels_.data() + p * k_groups_ * group_bytes,
                  static_cast<size_t>(k_groups_ * group_bytes));
    }
  }
}

// ---------------------------------------------------------------------------
// Kernel selection.

bool cpu_has_avx2() { return cpu_features().avx2; }

namespace {

// What is missing for `kernel` on this machine, or null when it can run.
const char* missing_for(Int8Kernel kernel) {
  const CpuFeatures& f = cpu_features();
  switch (kernel) {
    case Int8Kernel::automatic:
    case Int8Kernel::reference: return nullptr;
    case Int8Kernel::avx2:
    case Int8Kernel::avx2_widening:
    case Int8Kernel::avx2_maddubs_unchecked: return f.avx2 ? nullptr : "a CPU with AVX2 and FMA";
    case Int8Kernel::avxvnni: return f.avx_vnni ? nullptr : "a CPU with AVX-VNNI";
    case Int8Kernel::avx512vnni: return f.avx512_vnni ? nullptr : "a CPU with AVX-512 F/BW/VL/DQ and AVX512_VNNI";
    case Int8Kernel::amx:
      if (!f.amx_int8) return "a CPU with AMX-TILE and AMX-INT8 whose OS enables tile state";
      return f.amx_permitted ? nullptr : "the Linux permission for AMX tile data, which the kernel refused";
  }
  return "a kernel this build does not know";
}

Int8Kernel kernel_from_environment() {
  const char* value = std::getenv("TINYQAT_INT8_KERNEL");
  if (value == nullptr) return Int8Kernel::automatic;
  const std::string name = value;
  Int8Kernel kernel = Int8Kernel::automatic;
  if (name == "reference") kernel = Int8Kernel::reference;
  else if (name == "avx2") kernel = Int8Kernel::avx2;
  else if (name == "widening") kernel = Int8Kernel::avx2_widening;
  else if (name == "avxvnni") kernel = Int8Kernel::avxvnni;
  else if (name == "avx512vnni") kernel = Int8Kernel::avx512vnni;
  else if (name == "amx") kernel = Int8Kernel::amx;
  else if (name != "auto" && name != "automatic") {
    std::fprintf(stderr, "tinyqat: TINYQAT_INT8_KERNEL=%s is not one of reference, avx2, widening, avxvnni, "
                 "avx512vnni, amx, auto; using auto\n", value);
  }
  if (const char* missing = missing_for(kernel)) {
    std::fprintf(stderr, "tinyqat: TINYQAT_INT8_KERNEL=%s needs %s; using auto\n", value, missing);
    kernel = Int8Kernel::automatic;
  }
  return kernel;
}

std::atomic<Int8Kernel>& kernel_setting() {
  static std::atomic<Int8Kernel> setting{kernel_from_environment()};
  return setting;
}

}  // namespace

bool int8_kernel_available(Int8Kernel kernel) { return missing_for(kernel) == nullptr; }

void set_int8_kernel(Int8Kernel kernel) {
  if (const char* missing = missing_for(kernel)) {
    throw std::runtime_error(std::string("set_int8_kernel: ") + to_string(kernel) + " needs " + missing +
                             "; this machine has: " + cpu_feature_summary());
  }
  kernel_setting().store(kernel);
}

Int8Kernel int8_kernel() { return kernel_setting().load(); }

const char* to_string(Int8Kernel kernel) {
  switch (kernel) {
    case Int8Kernel::automatic: return "automatic";
    case Int8Kernel::reference: return "reference";
    case Int8Kernel::avx2: return "avx2";
    case Int8Kernel::avx2_widening: return "avx2_widening";
    case Int8Kernel::avx2_maddubs_unchecked: return "avx2_maddubs_unchecked";
    case Int8Kernel::avxvnni: return "avxvnni";
    case Int8Kernel::avx512vnni: return "avx512vnni";
    case Int8Kernel::amx: return "amx";
  }
  return "?";
}

const char* to_string(Int8Path path) {
  switch (path) {
    case Int8Path::reference: return "reference";
    case Int8Path::avx2_maddubs: return "avx2_maddubs";
    case Int8Path::avx2_widening: return "avx2_widening";
    case Int8Path::avxvnni: return "avxvnni";
    case Int8Path::avx512vnni: return "avx512vnni";
    case Int8Path::amx: return "amx";
  }
  return "?";
}

bool maddubs_is_exact(int32_t x_quant_max, int32_t w_max_abs) {
  // eq. 9: a vpmaddubsw pair x0 w0 + x1 w1 stays within int16.
  return 2 * int64_t{x_quant_max} * w_max_abs <= std::numeric_limits<int16_t>::max();
}

Int8Path select_int8_path(int32_t x_quant_max, const PackedWeightsI8& W) {
  const CpuFeatures& f = cpu_features();
  const Int8Path avx2 = maddubs_is_exact(x_quant_max, W.max_abs()) ? Int8Path::avx2_maddubs : Int8Path::avx2_widening;
  switch (int8_kernel()) {
    case Int8Kernel::reference: return Int8Path::reference;
    case Int8Kernel::automatic:
      if (f.amx_permitted && W.has_amx_panels()) return Int8Path::amx;
      if (f.avx512_vnni) return Int8Path::avx512vnni;
      if (f.avx_vnni) return Int8Path::avxvnni;
      return f.avx2 ? avx2 : Int8Path::reference;
    case Int8Kernel::avx2: return avx2;
    case Int8Kernel::avx2_widening: return Int8Path::avx2_widening;
    case Int8Kernel::avx2_maddubs_unchecked: return Int8Path::avx2_maddubs;
    case Int8Kernel::avxvnni: return Int8Path::avxvnni;
    case Int8Kernel::avx512vnni: return Int8Path::avx512vnni;
    // Weights packed before AMX was usable have no tile copy: the next best path.
    case Int8Kernel::amx: return W.has_amx_panels() ? Int8Path::amx : Int8Path::avx512vnni;
  }
  return Int8Path::reference;
}

// ---------------------------------------------------------------------------
// Argument checks shared by the fast and reference entry points.

namespace {

void check_common(const char* op, const uint8_t* X, int64_t M, int64_t ldx, int32_t zx, int32_t x_quant_max,
                  const PackedWeightsI8& W, const void* Y, int64_t ldy) {
  if (W.empty()) fail(op, ": the packed weights are empty");
  if (M < 0) fail(op, ": M = ", M, " is negative");
  if (M > 0 && (X == nullptr || Y == nullptr)) fail(op, ": null input or output pointer with M = ", M);
  if (ldx < W.K())
    fail(op, ": input row stride ", ldx, " is smaller than K = ", W.K(), " (X is (", M, ", ", W.K(), "))");
  if (ldy < W.N()) fail(op, ": output row stride ", ldy, " is smaller than N = ", W.N());
  if (x_quant_max < 1 || x_quant_max > 255) fail(op, ": x_quant_max = ", x_quant_max, " is outside 1..255");
  if (zx < 0 || zx > x_quant_max) fail(op, ": input zero point ", zx, " is outside 0..", x_quant_max);
}

void check_requant(const char* op, const PackedWeightsI8& W, const int32_t* bias_q,
                   const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min, int32_t y_max) {
  if (multipliers == nullptr) fail(op, ": multipliers is null (need one per output channel, N = ", W.N(), ")");
  if (zy < 0 || zy > 255) fail(op, ": output zero point ", zy, " is outside 0..255");
  if (y_min < 0 || y_max > 255 || y_min > y_max)
    fail(op, ": output range ", y_min, "..", y_max, " is not within 0..255");
  // |bias_q| <= 2^30 keeps eq. 1 and eq. 2 within int32 (K <= kMaxK bounds
  // the sum to 2^30). One branch-free pass, since this runs on every call.
  if (bias_q == nullptr) return;
  constexpr uint32_t kBiasLimit = uint32_t{1} << 30;
  uint32_t bad = 0;
  for (int64_t n = 0; n < W.N(); ++n) bad |= (static_cast<uint32_t>(bias_q[n]) + kBiasLimit) > 2 * kBiasLimit;
  if (bad == 0) return;
  for (int64_t n = 0; n < W.N(); ++n) {
    if ((static_cast<uint32_t>(bias_q[n]) + kBiasLimit) > 2 * kBiasLimit) {
      fail(op, ": quantized bias of output channel ", n, " is ", bias_q[n], ", outside +-2^30");
    }
  }
}

void check_dynamic(const char* op, float x_scale, const float* w_scale) {
  if (!(x_scale > 0.0f) || !std::isfinite(x_scale)) fail(op, ": x_scale = ", x_scale, " must be positive and finite");
  if (w_scale == nullptr) fail(op, ": w_scale is null");
}

using KernelFn = void (*)(const detail::Int8GemmProblem&, int64_t, int64_t, int64_t, int64_t);

// The kernel of a path and the row count its tiles are multiples of (a row
// split across threads keeps to it, so no thread gets a ragged tile it need not).
struct PathKernel {
  KernelFn fn;
  int64_t row_align;
};

PathKernel kernel_of(Int8Path path) {
  switch (path) {
    case Int8Path::avx2_maddubs:
    case Int8Path::avx2_widening: return {detail::int8_gemm_avx2, 4};
    case Int8Path::avxvnni: return {detail::int8_gemm_avxvnni, 4};
    case Int8Path::avx512vnni: return {detail::int8_gemm_avx512vnni, 8};
    case Int8Path::amx: return {detail::int8_gemm_amx, 32};
    case Int8Path::reference: break;
  }
  throw std::logic_error("int8 GEMM: no fast kernel for the reference path");
}

// Runs the kernel of `path` on `problem`, split across threads: by rows when
// there are enough of them, else by panels of output channels. The split
// never changes a result: each output is computed by exactly one thread
// with the same integer arithmetic.
void run_kernel(const detail::Int8GemmProblem& problem, Int8Path path, int threads) {
  const PathKernel kernel = kernel_of(path);
  const PackedWeightsI8& W = *problem.W;
  const int64_t M = problem.M;
  if (M == 0) return;
  if (threads <= 0) threads = default_thread_count();
  const int64_t macs = M * W.N() * W.K();
  if (threads == 1 || macs < parallel_min_macs.load(std::memory_order_relaxed)) {
    kernel.fn(problem, 0, M, 0, W.n_panels());
    return;
  }
  // Many small tasks rather than one per thread: threads take tasks from a
  // shared counter, so when one of them starts late or runs slowly (its core
  // is busy, e.g. with an OpenBLAS thread still spinning after a float call)
  // the others take its share, and the call is never slower than on one
  // thread (with 4 tasks per thread it was, by up to 1.35x: docs/speed.md §4).
  constexpr int64_t kTasksPerThread = 16;
  const int64_t align = kernel.row_align;
  if (M >= 2 * align * threads) {
    int64_t rows = std::max<int64_t>(2 * align, (M + kTasksPerThread * threads - 1) / (kTasksPerThread * threads));
    rows = (rows + align - 1) / align * align;
    const int64_t tasks = (M + rows - 1) / rows;
    ThreadPool::global().parallel_for(tasks, threads, [&](int64_t t) {
      kernel.fn(problem, t * rows, std::min(M, (t + 1) * rows), 0, W.n_panels());
    });
  } else {
    const int64_t panels = (W.n_panels() + threads - 1) / threads;
    const int64_t tasks = (W.n_panels() + panels - 1) / panels;
    ThreadPool::global().parallel_for(tasks, threads, [&](int64_t t) {
      kernel.fn(problem, 0, M, t * panels, std::min(W.n_panels(), (t + 1) * panels));
    });
  }
}

}  // namespace

int64_t int8_parallel_min_macs() { return parallel_min_macs.load(); }

void set_int8_parallel_min_macs(int64_t macs) {
  if (macs < 0) throw std::invalid_argument("set_int8_parallel_min_macs: macs " + std::to_string(macs) + " must be >= 0");
  parallel_min_macs.store(macs);
}

// ---------------------------------------------------------------------------
// Static quantization.

void gemm_u8i8_requant_reference(const uint8_t* X, int64_t M, int64_t ldx, int32_t zx, int32_t x_quant_max,
                                 const PackedWeightsI8& W, const int32_t* bias_q,
                                 const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min, int32_t y_max,
                                 uint8_t* Y, int64_t ldy) {
  // X: (M, K) u8, W: (N, K) i8, Y: (M, N) u8
  const char* op = "gemm_u8i8_requant_reference";
  check_common(op, X, M, ldx, zx, x_quant_max, W, Y, ldy);
  check_requant(op, W, bias_q, multipliers, zy, y_min, y_max);
  const int64_t N = W.N(), K = W.K();
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* x = X + m * ldx;
    for (int64_t n = 0; n < N; ++n) {
      const int8_t* w = W.plain() + n * K;
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (int32_t{x[k]} - zx) * int32_t{w[k]};  // eq. 1
      if (bias_q != nullptr) acc += bias_q[n];
      Y[m * ldy + n] = static_cast<uint8_t>(requantize(acc, multipliers[n], zy, y_min, y_max));  // eq. 8
    }
  }
}

void gemm_u8i8_requant(const uint8_t* X, int64_t M, int64_t ldx, int32_t zx, int32_t x_quant_max,
                       const PackedWeightsI8& W, const int32_t* bias_q, const FixedPointMultiplier* multipliers,
                       int32_t zy, int32_t y_min, int32_t y_max, uint8_t* Y, int64_t ldy, int threads) {
  // X: (M, K) u8, W: (N, K) i8, Y: (M, N) u8
  const Int8Path path = select_int8_path(x_quant_max, W);
  if (path == Int8Path::reference) {
    gemm_u8i8_requant_reference(X, M, ldx, zx, x_quant_max, W, bias_q, multipliers, zy, y_min, y_max, Y, ldy);
    return;
  }
  const char* op = "gemm_u8i8_requant";
  check_common(op, X, M, ldx, zx, x_quant_max, W, Y, ldy);
  check_requant(op, W, bias_q, multipliers, zy, y_min, y_max);
  run_kernel({.X = X, .M = M, .ldx = ldx, .zx = zx, .W = &W, .widening = path == Int8Path::avx2_widening,
              .bias_q = bias_q, .multipliers = multipliers, .zy = zy, .y_min = y_min, .y_max = y_max, .Y_u8 = Y,
              .ldy = ldy},
             path, threads);
}

// ---------------------------------------------------------------------------
// Dynamic quantization.

void gemm_u8i8_dynamic_reference(const uint8_t* X, int64_t M, int64_t ldx, float x_scale, int32_t zx,
                                 int32_t x_quant_max, const PackedWeightsI8& W, const float* w_scale, const float* bias,
                                 float* Y, int64_t ldy) {
  // X: (M, K) u8, W: (N, K) i8, Y: (M, N) f32
  const char* op = "gemm_u8i8_dynamic_reference";
  check_common(op, X, M, ldx, zx, x_quant_max, W, Y, ldy);
  check_dynamic(op, x_scale, w_scale);
  const int64_t N = W.N(), K = W.K();
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* x = X + m * ldx;
    for (int64_t n = 0; n < N; ++n) {
      const int8_t* w = W.plain() + n * K;
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (int32_t{x[k]} - zx) * int32_t{w[k]};  // eq. 1, no bias
      const float scale = x_scale * w_scale[n];
      Y[m * ldy + n] = std::fma(static_cast<float>(acc), scale, bias != nullptr ? bias[n] : 0.0f);  // eq. 12
    }
  }
}

void gemm_u8i8_dynamic(const uint8_t* X, int64_t M, int64_t ldx, float x_scale, int32_t zx, int32_t x_quant_max,
                       const PackedWeightsI8& W, const float* w_scale, const float* bias, float* Y, int64_t ldy,
                       int threads) {
  // X: (M, K) u8, W: (N, K) i8, Y: (M, N) f32
  const Int8Path path = select_int8_path(x_quant_max, W);
  if (path == Int8Path::reference) {
    gemm_u8i8_dynamic_reference(X, M, ldx, x_scale, zx, x_quant_max, W, w_scale, bias, Y, ldy);
    return;
  }
  const char* op = "gemm_u8i8_dynamic";
  check_common(op, X, M, ldx, zx, x_quant_max, W, Y, ldy);
  check_dynamic(op, x_scale, w_scale);
  run_kernel({.X = X, .M = M, .ldx = ldx, .zx = zx, .W = &W, .widening = path == Int8Path::avx2_widening,
              .float_output = true, .x_scale = x_scale, .w_scale = w_scale, .bias_f = bias, .Y_f32 = Y, .ldy = ldy},
             path, threads);
}

ActivationQParams dynamic_activation_qparams(float min, float max, int32_t quant_max) {
  if (quant_max < 1 || quant_max > 255)
    fail("dynamic_activation_qparams: quant_max = ", quant_max, " is outside 1..255");
  if (!(min <= max)) fail("dynamic_activation_qparams: min ", min, " is not <= max ", max);
  return affine_qparams(min, max, 0, quant_max);  // eq. 10
}

namespace {
void check_quantize(const char* op, const float* X, int64_t M, int64_t K, int64_t ldx, const uint8_t* Xq, int64_t ldq) {
  if (M < 0 || K < 0) fail(op, ": shape (", M, ", ", K, ") is negative");
  if (ldx < K || ldq < K) fail(op, ": row strides ", ldx, " and ", ldq, " must be >= K = ", K);
  if (M > 0 && K > 0 && (X == nullptr || Xq == nullptr)) fail(op, ": null input or output pointer");
}

// One pass for min / max (eq. 10), then quantize_affine_u8 with x * (1 / s) (eq. 11):
// the same loops as static quantization, at the vector width `level`.
ActivationQParams quantize_activations(const char* op, const float* X, int64_t M, int64_t K, int64_t ldx,
                                       int32_t quant_max, uint8_t* Xq, int64_t ldq, SimdLevel level) {
  check_quantize(op, X, M, K, ldx, Xq, ldq);
  float min = 0.0f, max = 0.0f;  // starting from 0 widens the range to include 0
  bool nan = false;
  for (int64_t m = 0; m < M; ++m) nan |= fold_min_max(X + m * ldx, K, min, max, level);
  if (nan || std::isinf(min) || std::isinf(max))
    fail(op, ": the input (", M, ", ", K, ") holds NaN or infinity; it cannot be quantized");
  const ActivationQParams q = dynamic_activation_qparams(min, max, quant_max);
  const float inv_scale = 1.0f / q.scale;
  if (ldx == K && ldq == K) {
    quantize_affine_u8(X, Xq, M * K, inv_scale, q.zero_point, 0, quant_max, level);
  } else {
    for (int64_t m = 0; m < M; ++m)
      quantize_affine_u8(X + m * ldx, Xq + m * ldq, K, inv_scale, q.zero_point, 0, quant_max, level);
  }
  return q;
}
}  // namespace

ActivationQParams quantize_activations_u8_reference(const float* X, int64_t M, int64_t K, int64_t ldx,
                                                    int32_t quant_max, uint8_t* Xq, int64_t ldq) {
  // X: (M, K) f32, Xq: (M, K) u8
  return quantize_activations("quantize_activations_u8_reference", X, M, K, ldx, quant_max, Xq, ldq,
                              SimdLevel::scalar);
}

ActivationQParams quantize_activations_u8(const float* X, int64_t M, int64_t K, int64_t ldx, int32_t quant_max,
                                          uint8_t* Xq, int64_t ldq) {
  // X: (M, K) f32, Xq: (M, K) u8
  const SimdLevel level = int8_kernel() == Int8Kernel::reference ? SimdLevel::scalar : best_simd_level();
  return quantize_activations("quantize_activations_u8", X, M, K, ldx, quant_max, Xq, ldq, level);
}

ActivationQParams gemm_f32_dynamic(const float* X, int64_t M, int64_t ldx, int32_t x_quant_max,
                                   const PackedWeightsI8& W, const float* w_scale, const float* bias, float* Y,
                                   int64_t ldy, int threads) {
  // X: (M, K) f32, W: (N, K) i8, Y: (M, N) f32
  if (W.empty()) fail("gemm_f32_dynamic: the packed weights are empty");
  // A scratch buffer per thread, reused across calls: no allocation per layer call.
  thread_local detail::CacheAlignedVector<uint8_t> scratch;
  const int64_t K = W.K();
  if (scratch.size() < static_cast<size_t>(M * K)) scratch.resize(static_cast<size_t>(M * K));
  const ActivationQParams q = quantize_activations_u8(X, M, K, ldx, x_quant_max, scratch.data(), K);
  gemm_u8i8_dynamic(scratch.data(), M, K, q.scale, q.zero_point, x_quant_max, W, w_scale, bias, Y, ldy, threads);
  return q;
}

}  // namespace tq

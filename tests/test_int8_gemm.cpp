// Tests of the int8 GEMM (src/tensor/int8_gemm.h, docs/int8_kernel.md): the
// AVX2 kernels against the scalar reference, bit for bit, over edge shapes
// and every range combination; the saturation guard; the dynamic path against
// a float GEMM; the thread pool.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "tensor/cpu_features.h"
#include "tensor/int8_gemm.h"
#include "tensor/requantize.h"
#include "tensor/thread_pool.h"

namespace {

using tq::FixedPointMultiplier;
using tq::Int8Kernel;
using tq::Int8Path;
using tq::PackedWeightsI8;

// Relative tolerance of the f32 output against a double computation of the
// same integer math: one float rounding of acc, of the scale and of the fma.
constexpr double kFloatEpilogueRelativeError = 4e-7;

struct Range {
  int lo, hi;
};
constexpr Range kActivationRanges[] = {{0, 127}, {0, 255}};
constexpr Range kWeightRanges[] = {{-128, 127}, {-64, 63}, {-8, 7}};

// One random GEMM problem with every option of the static path.
struct Case {
  int64_t M = 0, N = 0, K = 0;
  int64_t ldx = 0, ldy = 0;
  Range x_range{0, 127}, w_range{-128, 127};
  int32_t zx = 0, zy = 0, y_min = 0, y_max = 255;
  bool has_bias = false, relu = false, per_channel = false;
  std::vector<uint8_t> X;
  std::vector<int8_t> W;
  std::vector<int32_t> bias;
  std::vector<FixedPointMultiplier> multipliers;
  PackedWeightsI8 packed;

  std::string describe() const {
    std::ostringstream s;
    s << "M=" << M << " N=" << N << " K=" << K << " x in " << x_range.lo << ".." << x_range.hi << " w in " << w_range.lo
      << ".." << w_range.hi << " zx=" << zx << " zy=" << zy << " y " << y_min << ".." << y_max
      << (has_bias ? " bias" : "") << (relu ? " relu" : "") << (per_channel ? " per-channel" : " per-tensor");
    return s.str();
  }
};

Case make_case(std::mt19937& rng, int64_t M, int64_t N, int64_t K, Range x_range, Range w_range, bool has_bias,
               bool relu, bool per_channel) {
  Case c;
  c.M = M, c.N = N, c.K = K, c.x_range = x_range, c.w_range = w_range;
  c.has_bias = has_bias, c.relu = relu, c.per_channel = per_channel;
  c.ldx = K + (rng() % 3);  // sometimes a row stride larger than K
  c.ldy = N + (rng() % 3);
  std::uniform_int_distribution<int> x(x_range.lo, x_range.hi), w(w_range.lo, w_range.hi);
  c.X.resize(static_cast<size_t>(M * c.ldx));
  for (auto& v : c.X) v = static_cast<uint8_t>(x(rng));
  c.W.resize(static_cast<size_t>(N * K));
  for (auto& v : c.W) v = static_cast<int8_t>(w(rng));
  c.packed = PackedWeightsI8(c.W.data(), N, K);
  c.zx = std::uniform_int_distribution<int>(1, x_range.hi)(rng);  // nonzero
  c.zy = std::uniform_int_distribution<int>(0, 255)(rng);
  c.y_max = rng() % 4 == 0 ? 200 : 255;
  c.zy = std::min(c.zy, c.y_max);
  c.y_min = relu ? c.zy : 0;  // fused ReLU clamps at the zero point
  if (has_bias) {
    std::uniform_int_distribution<int32_t> b(-(1 << 16), 1 << 16);
    c.bias.resize(static_cast<size_t>(N));
    for (auto& v : c.bias) v = b(rng);
  }
  // M so that outputs spread over ~100 levels: acc has a spread of about
  // sqrt(K) * x_range * w_range / 6. Sometimes M >= 1 (a negative shift).
  const double spread = std::sqrt(static_cast<double>(K)) * (x_range.hi - x_range.lo) * (w_range.hi - w_range.lo) / 6.0;
  std::uniform_real_distribution<double> factor(0.3, 3.0);
  const double base = 50.0 / std::max(spread, 1.0);
  const int64_t count = per_channel ? N : 1;
  std::vector<FixedPointMultiplier> chosen;
  for (int64_t n = 0; n < count; ++n) {
    const double M_n = rng() % 16 == 0 ? 1.0 + 3.0 * (rng() % 100) / 100.0 : base * factor(rng);
    chosen.push_back(tq::quantize_multiplier(M_n));
  }
  for (int64_t n = 0; n < N; ++n) c.multipliers.push_back(chosen[static_cast<size_t>(per_channel ? n : 0)]);
  return c;
}

std::vector<uint8_t> run_requant(const Case& c, int threads) {
  std::vector<uint8_t> Y(static_cast<size_t>(c.M * c.ldy), 0xAB);
  tq::gemm_u8i8_requant(c.X.data(), c.M, c.ldx, c.zx, c.x_range.hi, c.packed, c.has_bias ? c.bias.data() : nullptr,
                        c.multipliers.data(), c.zy, c.y_min, c.y_max, Y.data(), c.ldy, threads);
  return Y;
}

std::vector<uint8_t> run_requant_reference(const Case& c) {
  std::vector<uint8_t> Y(static_cast<size_t>(c.M * c.ldy), 0xAB);
  tq::gemm_u8i8_requant_reference(c.X.data(), c.M, c.ldx, c.zx, c.x_range.hi, c.packed,
                                  c.has_bias ? c.bias.data() : nullptr, c.multipliers.data(), c.zy, c.y_min, c.y_max,
                                  Y.data(), c.ldy);
  return Y;
}

// Index of the first differing byte, or -1.
int64_t first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<int64_t>(std::min(a.size(), b.size()));
}

void require_same(const Case& c, const std::vector<uint8_t>& expected, const std::vector<uint8_t>& got,
                  const char* what) {
  const int64_t at = first_difference(expected, got);
  if (at >= 0) {
    FAIL(what << " differs from the reference at row " << at / c.ldy << ", column " << at % c.ldy << ": "
              << int{got[static_cast<size_t>(at)]} << " vs " << int{expected[static_cast<size_t>(at)]} << " ("
              << c.describe() << ")");
  }
}

// Every fast kernel setting, the AVX2 ones first.
constexpr Int8Kernel kFastKernels[] = {Int8Kernel::avx2, Int8Kernel::avx2_widening, Int8Kernel::avxvnni,
                                       Int8Kernel::avx512vnni, Int8Kernel::amx};

// The fast kernels this CPU runs; names the others once (a message, not a failure).
std::vector<Int8Kernel> available_fast_kernels() {
  std::vector<Int8Kernel> have;
  std::string missing;
  for (Int8Kernel k : kFastKernels) {
    if (tq::int8_kernel_available(k)) have.push_back(k);
    else missing += std::string(missing.empty() ? "" : ", ") + tq::to_string(k);
  }
  static bool told = false;
  if (!missing.empty() && !told) {
    told = true;
    WARN("int8 paths this CPU cannot run, so not tested here: " << missing << " (CPU: " << tq::cpu_feature_summary()
                                                                  << ")");
  }
  return have;
}

bool skip_without_avx2() {
  if (tq::cpu_has_avx2()) return false;
  WARN("this CPU has no AVX2: only the reference kernels are tested");
  return true;
}

}  // namespace

TEST_CASE("the reference kernel computes eq. 1 and requantizes with eq. 8", "[int8_gemm]") {
  // A hand-checkable 2x3 case: X = [[1 2] [3 4]] - 1, W = [[1 0] [0 1] [1 1]], bias 10, M = 0.5.
  const uint8_t X[] = {1, 2, 3, 4};
  const int8_t W[] = {1, 0, 0, 1, 1, 1};
  const int32_t bias[] = {10, 10, 10};
  const PackedWeightsI8 packed(W, 3, 2);
  const FixedPointMultiplier half = tq::quantize_multiplier(0.5);
  const FixedPointMultiplier multipliers[] = {half, half, half};
  uint8_t Y[6];
  tq::gemm_u8i8_requant_reference(X, 2, 2, 1, 255, packed, bias, multipliers, 100, 0, 255, Y, 3);
  // acc row 0: (0, 1, 1) + 10 -> 10, 11, 11 -> *0.5 -> 5, 6 (5.5 rounds away), 6 -> + 100
  CHECK(std::vector<int>(Y, Y + 3) == std::vector<int>{105, 106, 106});
  // row 1: (2, 3, 5) + 10 -> 12, 13, 15 -> 6, 7, 8
  CHECK(std::vector<int>(Y + 3, Y + 6) == std::vector<int>{106, 107, 108});
}

TEST_CASE("packing keeps row sums, max |w| and the plain copy", "[int8_gemm]") {
  std::mt19937 rng(7);
  std::vector<int8_t> W(17 * 9);
  for (auto& v : W) v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  W[5] = -128;
  const PackedWeightsI8 packed(W.data(), 17, 9);
  CHECK(packed.max_abs() == 128);
  CHECK(packed.n_panels() == 2);
  CHECK(packed.k_groups() == 3);
  CHECK(reinterpret_cast<uintptr_t>(packed.panels()) % 64 == 0);
  for (int n = 0; n < 17; ++n) {
    int32_t sum = 0;
    for (int k = 0; k < 9; ++k) {
      sum += W[n * 9 + k];
      CHECK(packed.plain()[n * 9 + k] == W[n * 9 + k]);
      const int64_t p = n / 16, c = n % 16, g = k / 4, j = k % 4;
      CHECK(packed.panels()[((p * 3 + g) * 16 + c) * 4 + j] == W[n * 9 + k]);
    }
    CHECK(packed.row_sums()[n] == sum);
  }
  CHECK_THROWS_AS(PackedWeightsI8(W.data(), 0, 9), std::invalid_argument);
  CHECK_THROWS_AS(PackedWeightsI8(W.data(), 1, PackedWeightsI8::kMaxK + 1), std::invalid_argument);
  CHECK_THROWS_AS(PackedWeightsI8(nullptr, 2, 2), std::invalid_argument);
}

TEST_CASE("AVX2 requantized GEMM equals the reference bit for bit on edge shapes", "[int8_gemm]") {
  if (skip_without_avx2()) return;
  std::mt19937 rng(42);
  const int64_t Ms[] = {1, 2, 3, 5, 7, 13, 64, 100};
  const int64_t Ns[] = {1, 3, 7, 8, 9, 15, 16, 17, 33, 100};
  const int64_t Ks[] = {1, 2, 3, 4, 5, 7, 15, 16, 31, 33, 100, 784};
  int variant = 0;
  for (int64_t M : Ms) {
    for (int64_t N : Ns) {
      for (int64_t K : Ks) {
        // Cycle through every range and option combination across the shapes.
        const Range x_range = kActivationRanges[variant % 2];
        const Range w_range = kWeightRanges[(variant / 2) % 3];
        const bool has_bias = (variant / 6) % 2, relu = (variant / 12) % 2, per_channel = (variant / 24) % 2;
        ++variant;
        const Case c = make_case(rng, M, N, K, x_range, w_range, has_bias, relu, per_channel);
        const std::vector<uint8_t> expected = run_requant_reference(c);
        {
          tq::ScopedInt8Kernel kernel(Int8Kernel::avx2);
          require_same(c, expected, run_requant(c, 1), "avx2 (path chosen per call)");
        }
        {
          tq::ScopedInt8Kernel kernel(Int8Kernel::avx2_widening);
          require_same(c, expected, run_requant(c, 1), "avx2 widening path");
        }
      }
    }
  }
  CHECK(variant == 960);
}

// Splits every call across threads, however small, for one scope (by
// default only calls above int8_parallel_min_macs() are split).
struct SplitEveryCall {
  int64_t saved = tq::int8_parallel_min_macs();
  SplitEveryCall() { tq::set_int8_parallel_min_macs(0); }
  ~SplitEveryCall() { tq::set_int8_parallel_min_macs(saved); }
  SplitEveryCall(const SplitEveryCall&) = delete;
  SplitEveryCall& operator=(const SplitEveryCall&) = delete;
};

TEST_CASE("every range combination on both AVX2 paths, threads 1 and 2, split by rows and by panels", "[int8_gemm]") {
  if (skip_without_avx2()) return;
  std::mt19937 rng(5);
  const SplitEveryCall split;
  CHECK_THROWS_WITH(tq::set_int8_parallel_min_macs(-1), Catch::Contains("must be >= 0"));
  for (const Range& x_range : kActivationRanges) {
    for (const Range& w_range : kWeightRanges) {
      for (int options = 0; options < 8; ++options) {
        // Split by rows (M >= 16), by panels (M < 16), uneven tails, one panel.
        for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{100, 64, 400}, {3, 1000, 784}, {37, 50, 9}, {1, 15, 33}}) {
          const Case c = make_case(rng, M, N, K, x_range, w_range, options & 1, options & 2, options & 4);
          const std::vector<uint8_t> expected = run_requant_reference(c);
          const bool exact_fast_path = tq::maddubs_is_exact(x_range.hi, c.packed.max_abs());
          tq::ScopedInt8Kernel kernel(Int8Kernel::avx2);
          CHECK(tq::select_int8_path(x_range.hi, c.packed) ==
                (exact_fast_path ? Int8Path::avx2_maddubs : Int8Path::avx2_widening));
          require_same(c, expected, run_requant(c, 1), "avx2, 1 thread");
          require_same(c, expected, run_requant(c, 2), "avx2, 2 threads");
          tq::set_int8_kernel(Int8Kernel::avx2_widening);
          require_same(c, expected, run_requant(c, 2), "avx2 widening, 2 threads");
          if (exact_fast_path) {
            tq::set_int8_kernel(Int8Kernel::avx2_maddubs_unchecked);
            require_same(c, expected, run_requant(c, 2), "avx2 maddubs, 2 threads");
          }
        }
      }
    }
  }
}

TEST_CASE("AVX2 epilogue equals the reference for unusual multipliers", "[int8_gemm]") {
  if (skip_without_avx2()) return;
  // Not all made by quantize_multiplier: unnormalized, negative, huge and
  // tiny shifts, M >= 1. Blocks holding any of them take the scalar function.
  std::mt19937 rng(21);
  Case c = make_case(rng, 9, 40, 50, {0, 255}, {-128, 127}, true, false, true);
  const FixedPointMultiplier odd[] = {{3, 0},         {-5000000, 10}, {2147483647, 40}, {1 << 30, -3},
                                      {1 << 30, -40}, {1 << 30, 70},  {123456789, 5},   {2147483647, 0}};
  for (int64_t n = 0; n < 16; ++n) c.multipliers[static_cast<size_t>(n)] = odd[n % 8];
  // Channels 16..31: one block all normal, one block with a single M >= 1.
  c.multipliers[27] = tq::quantize_multiplier(1.5);
  const std::vector<uint8_t> expected = run_requant_reference(c);
  tq::ScopedInt8Kernel kernel(Int8Kernel::avx2);
  require_same(c, expected, run_requant(c, 1), "avx2 with unusual multipliers");
}

TEST_CASE("the saturation guard routes 8-bit x 8-bit ranges to the widening path", "[int8_gemm]") {
  if (skip_without_avx2()) return;
  // x = 255 and w = -128 everywhere: a vpmaddubsw pair would be 2 * 255 * -128 = -65280.
  const int64_t M = 4, N = 16, K = 64;
  std::vector<uint8_t> X(M * K, 255);
  std::vector<int8_t> W(N * K, -128);
  const PackedWeightsI8 packed(W.data(), N, K);
  std::vector<float> w_scale(N, 1.0f), expected(M * N), got(M * N);
  tq::gemm_u8i8_dynamic_reference(X.data(), M, K, 1.0f, 0, 255, packed, w_scale.data(), nullptr, expected.data(), N);
  CHECK(expected[0] == 255.0f * -128.0f * K);

  // The AVX2 path per call (automatic picks a VNNI path where the CPU has one: no guard needed there).
  tq::ScopedInt8Kernel kernel(Int8Kernel::avx2);
  REQUIRE(tq::select_int8_path(255, packed) == Int8Path::avx2_widening);
  REQUIRE(tq::select_int8_path(127, packed) == Int8Path::avx2_maddubs);
  tq::gemm_u8i8_dynamic(X.data(), M, K, 1.0f, 0, 255, packed, w_scale.data(), nullptr, got.data(), N);
  CHECK(got == expected);

  // The guard is needed: forcing vpmaddubsw here saturates and gives a wrong answer.
  tq::set_int8_kernel(Int8Kernel::avx2_maddubs_unchecked);
  tq::gemm_u8i8_dynamic(X.data(), M, K, 1.0f, 0, 255, packed, w_scale.data(), nullptr, got.data(), N);
  CHECK(got[0] == -32768.0f * (K / 2));
  CHECK(got != expected);
}

TEST_CASE("dynamic GEMM: AVX2 f32 output equals the reference bit for bit and the real value", "[int8_gemm]") {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 60; ++trial) {
    const int64_t M = 1 + rng() % 40, N = 1 + rng() % 70, K = 1 + rng() % 300;
    const Range x_range = kActivationRanges[trial % 2];
    const Range w_range = kWeightRanges[trial % 3];
    const Case c = make_case(rng, M, N, K, x_range, w_range, false, false, false);
    std::vector<float> w_scale(N), bias(N);
    for (auto& s : w_scale) s = std::uniform_real_distribution<float>(1e-3f, 1e-1f)(rng);
    for (auto& b : bias) b = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
    const float x_scale = 0.02f;
    const float* bias_or_null = trial % 4 == 0 ? nullptr : bias.data();
    std::vector<float> expected(M * c.ldy, -7.0f), got(M * c.ldy, -7.0f);
    tq::gemm_u8i8_dynamic_reference(c.X.data(), M, c.ldx, x_scale, c.zx, x_range.hi, c.packed, w_scale.data(),
                                    bias_or_null, expected.data(), c.ldy);
    INFO(c.describe());
    // The reference is the real number sum (x - zx) s_x * w s_w + b, up to float rounding.
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        double real = 0.0;
        for (int64_t k = 0; k < K; ++k) real += (c.X[m * c.ldx + k] - c.zx) * static_cast<double>(c.W[n * K + k]);
        real = real * x_scale * w_scale[n] + (bias_or_null ? bias[n] : 0.0);
        REQUIRE(std::abs(expected[m * c.ldy + n] - real) <= kFloatEpilogueRelativeError * (std::abs(real) + 1.0));
      }
    }
    if (!tq::cpu_has_avx2()) continue;
    const SplitEveryCall split;  // so that the 2-thread trials really split
    for (Int8Kernel kernel : {Int8Kernel::avx2, Int8Kernel::avx2_widening}) {
      tq::ScopedInt8Kernel scoped(kernel);
      tq::gemm_u8i8_dynamic(c.X.data(), M, c.ldx, x_scale, c.zx, x_range.hi, c.packed, w_scale.data(), bias_or_null,
                            got.data(), c.ldy, 1 + trial % 2);
      REQUIRE(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("dynamic activation qparams follow the observer formula", "[int8_gemm]") {
  // scale = (max - min) / 127 over the range widened to include 0.
  tq::ActivationQParams q = tq::dynamic_activation_qparams(-1.0f, 3.0f, 127);
  CHECK(q.scale == Approx(4.0f / 127));
  CHECK(q.zero_point == 32);                            // round(1 / (4/127)) = round(31.75)
  q = tq::dynamic_activation_qparams(0.5f, 2.0f, 255);  // min widened to 0
  CHECK(q.scale == Approx(2.0f / 255));
  CHECK(q.zero_point == 0);
  q = tq::dynamic_activation_qparams(-2.0f, -1.0f, 255);  // max widened to 0
  CHECK(q.zero_point == 255);
  q = tq::dynamic_activation_qparams(0.0f, 0.0f, 127);  // empty range: scale is epsilon
  CHECK(q.scale == std::numeric_limits<float>::epsilon());
  CHECK(q.zero_point == 0);
  CHECK_THROWS_AS(tq::dynamic_activation_qparams(1.0f, 0.0f, 127), std::invalid_argument);
}

TEST_CASE("dynamic GEMM from f32: fast equals reference, and is within quantization error", "[int8_gemm]") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t M = 1 + rng() % 20, N = 1 + rng() % 50, K = 1 + rng() % 200;
    std::vector<float> X(M * K), Wf(N * K), bias(N), w_scale(N);
    const float x_shift = trial % 3 == 0 ? 0.0f : -0.5f;  // all >= 0 (zero point 0) or mixed signs
    for (auto& v : X) v = std::uniform_real_distribution<float>(0.0f, 2.0f)(rng) + x_shift;
    for (auto& b : bias) b = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
    // Per-channel symmetric weights.
    std::vector<int8_t> W(N * K);
    for (int64_t n = 0; n < N; ++n) {
      float max_abs = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        Wf[n * K + k] = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
        max_abs = std::max(max_abs, std::abs(Wf[n * K + k]));
      }
      w_scale[n] = std::max(max_abs, 1e-6f) / 127.5f;
      for (int64_t k = 0; k < K; ++k) {
        W[n * K + k] = static_cast<int8_t>(std::clamp(std::nearbyint(Wf[n * K + k] / w_scale[n]), -128.0f, 127.0f));
      }
    }
    const PackedWeightsI8 packed(W.data(), N, K);
    const int32_t x_quant_max = trial % 2 ? 127 : 255;
    std::vector<float> expected(M * N), got(M * N);
    tq::ActivationQParams q_ref;
    {
      tq::ScopedInt8Kernel kernel(Int8Kernel::reference);
      q_ref =
          tq::gemm_f32_dynamic(X.data(), M, K, x_quant_max, packed, w_scale.data(), bias.data(), expected.data(), N);
    }
    // Against the float GEMM with dequantized weights: each input is off by at
    // most s_x / 2 (round to nearest), so |error| <= s_x / 2 * sum_k |w_f|.
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        double real = bias[n], bound = 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const double w = W[n * K + k] * double{w_scale[n]};
          real += X[m * K + k] * w;
          bound += std::abs(w);
        }
        bound = bound * q_ref.scale / 2 + 1e-5 * (std::abs(real) + 1.0);
        REQUIRE(std::abs(expected[m * N + n] - real) <= bound);
      }
    }
    if (!tq::cpu_has_avx2()) continue;
    tq::ScopedInt8Kernel kernel(Int8Kernel::automatic);
    const tq::ActivationQParams q =
        tq::gemm_f32_dynamic(X.data(), M, K, x_quant_max, packed, w_scale.data(), bias.data(), got.data(), N);
    CHECK(q.scale == q_ref.scale);
    CHECK(q.zero_point == q_ref.zero_point);
    REQUIRE(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("activation quantization: AVX2 equals the reference, and rejects NaN", "[int8_gemm]") {
  std::mt19937 rng(13);
  const int64_t M = 7, K = 37;
  std::vector<float> X(M * K);
  for (auto& v : X) v = std::uniform_real_distribution<float>(-3.0f, 5.0f)(rng);
  X[3] = 0.5f * 8.0f / 127.0f;  // a value near a rounding tie
  std::vector<uint8_t> a(M * K), b(M * K);
  tq::ActivationQParams qa, qb;
  {
    tq::ScopedInt8Kernel kernel(Int8Kernel::reference);
    qa = tq::quantize_activations_u8(X.data(), M, K, K, 127, a.data(), K);
  }
  qb = tq::quantize_activations_u8(X.data(), M, K, K, 127, b.data(), K);
  CHECK(qa.scale == qb.scale);
  CHECK(qa.zero_point == qb.zero_point);
  CHECK(a == b);
  CHECK(*std::max_element(a.begin(), a.end()) <= 127);
  X[40] = std::nanf("");
  CHECK_THROWS_WITH(tq::quantize_activations_u8(X.data(), M, K, K, 127, b.data(), K), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(tq::quantize_activations_u8_reference(X.data(), M, K, K, 127, b.data(), K), Catch::Contains("NaN"));
  X[40] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(tq::quantize_activations_u8(X.data(), M, K, K, 127, b.data(), K), std::invalid_argument);
}

TEST_CASE("int8 GEMM rejects bad arguments with clear messages", "[int8_gemm]") {
  const int8_t W[] = {1, 2, 3, 4};
  const PackedWeightsI8 packed(W, 2, 2);
  const uint8_t X[] = {1, 2};
  const FixedPointMultiplier m[] = {tq::quantize_multiplier(0.1), tq::quantize_multiplier(0.1)};
  uint8_t Y[2];
  CHECK_THROWS_WITH(tq::gemm_u8i8_requant(X, 1, 1, 0, 255, packed, nullptr, m, 0, 0, 255, Y, 2),
                    Catch::Contains("row stride"));
  CHECK_THROWS_WITH(tq::gemm_u8i8_requant(X, 1, 2, 200, 127, packed, nullptr, m, 0, 0, 255, Y, 2),
                    Catch::Contains("zero point"));
  CHECK_THROWS_WITH(tq::gemm_u8i8_requant(X, 1, 2, 0, 255, packed, nullptr, nullptr, 0, 0, 255, Y, 2),
                    Catch::Contains("multipliers"));
  CHECK_THROWS_WITH(tq::gemm_u8i8_requant(X, 1, 2, 0, 255, PackedWeightsI8(), nullptr, m, 0, 0, 255, Y, 2),
                    Catch::Contains("empty"));
  const int32_t huge_bias[] = {(1 << 30) + 1, 0};
  CHECK_THROWS_WITH(tq::gemm_u8i8_requant(X, 1, 2, 0, 255, packed, huge_bias, m, 0, 0, 255, Y, 2),
                    Catch::Contains("bias"));
  CHECK_THROWS_AS(tq::gemm_u8i8_requant_reference(X, 1, 2, 0, 255, packed, nullptr, m, 0, 10, 5, Y, 2),
                  std::invalid_argument);
}

TEST_CASE("thread pool runs every task once and rethrows task errors", "[int8_gemm][thread_pool]") {
  tq::ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  pool.parallel_for(1000, 3, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
  for (auto& h : hits) REQUIRE(h.load() == 1);
  // A nested call runs inline instead of deadlocking.
  std::atomic<int> inner{0};
  pool.parallel_for(4, 3, [&](int64_t) { pool.parallel_for(5, 3, [&](int64_t) { inner++; }); });
  CHECK(inner.load() == 20);
  CHECK_THROWS_WITH(pool.parallel_for(10, 2,
                                      [](int64_t i) {
                                        if (i == 7) throw std::runtime_error("task 7 failed");
                                      }),
                    "task 7 failed");
  // Still usable after an error.
  std::atomic<int> after{0};
  pool.parallel_for(10, 2, [&](int64_t) { after++; });
  CHECK(after.load() == 10);
}

TEST_CASE("every int8 path the CPU has equals the reference bit for bit on edge shapes", "[int8_gemm][paths]") {
  const std::vector<Int8Kernel> kernels = available_fast_kernels();
  std::mt19937 rng(77);
  // Every remainder of the tiles: rows mod 4 (AVX2, AVX-VNNI), mod 8
  // (AVX-512), mod 16 and 32 (AMX); channels mod 8, 16 (a panel), 32 (two
  // panels), 64; K mod 4 (a group) and mod 64 (an AMX tile).
  const int64_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40};
  const int64_t Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 49, 64, 65};
  const int64_t Ks[] = {1, 2, 3, 4, 5, 63, 64, 65, 127, 128, 129, 200};
  int variant = 0;
  for (int64_t M : Ms) {
    for (int64_t N : Ns) {
      for (int64_t K : Ks) {
        // Both activation ranges (7 and 8 bits), every weight range, bias,
        // ReLU (y_min = zy), a ReLU6-like upper clamp, per-channel multipliers.
        const Range x_range = kActivationRanges[variant % 2];
        const Range w_range = kWeightRanges[(variant / 2) % 3];
        const bool has_bias = (variant / 6) % 2, relu = (variant / 12) % 2, per_channel = (variant / 24) % 2;
        ++variant;
        Case c = make_case(rng, M, N, K, x_range, w_range, has_bias, relu, per_channel);
        if (variant % 3 == 0) c.y_max = std::min(255, c.zy + 40);  // ReLU6: a clamp at zy + round(6 / s_y)
        const std::vector<uint8_t> expected = run_requant_reference(c);
        for (Int8Kernel k : kernels) {
          if (k == Int8Kernel::avx2_widening && variant % 4 != 0) continue;  // the slow path: a quarter suffices
          tq::ScopedInt8Kernel kernel(k);
          require_same(c, expected, run_requant(c, 1), tq::to_string(k));
        }
      }
    }
  }
  CHECK(variant == 16 * 14 * 12);
}

TEST_CASE("every int8 path: threads 1 and 2, split by rows and by panels, both epilogues", "[int8_gemm][paths]") {
  const std::vector<Int8Kernel> kernels = available_fast_kernels();
  std::mt19937 rng(78);
  const SplitEveryCall split;
  for (const Range& x_range : kActivationRanges) {
    for (int options = 0; options < 8; ++options) {
      for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{100, 64, 400}, {3, 1000, 784}, {37, 50, 9},
                                    {1, 15, 33}, {70, 33, 130}}) {
        Case c = make_case(rng, M, N, K, x_range, {-128, 127}, options & 1, options & 2, options & 4);
        if (options & 1) c.y_max = std::min(255, c.zy + 60);
        const std::vector<uint8_t> expected = run_requant_reference(c);
        std::vector<float> w_scale(static_cast<size_t>(N)), bias(static_cast<size_t>(N));
        for (auto& s : w_scale) s = std::uniform_real_distribution<float>(1e-3f, 1e-1f)(rng);
        for (auto& b : bias) b = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
        std::vector<float> f_expected(static_cast<size_t>(M * c.ldy), -7.0f);
        tq::gemm_u8i8_dynamic_reference(c.X.data(), M, c.ldx, 0.02f, c.zx, x_range.hi, c.packed, w_scale.data(),
                                        bias.data(), f_expected.data(), c.ldy);
        for (Int8Kernel k : kernels) {
          tq::ScopedInt8Kernel kernel(k);
          for (int threads : {1, 2}) {
            INFO(tq::to_string(k) << ", " << threads << " thread(s)");
            require_same(c, expected, run_requant(c, threads), tq::to_string(k));
            std::vector<float> got(static_cast<size_t>(M * c.ldy), -7.0f);
            tq::gemm_u8i8_dynamic(c.X.data(), M, c.ldx, 0.02f, c.zx, x_range.hi, c.packed, w_scale.data(),
                                  bias.data(), got.data(), c.ldy, threads);
            REQUIRE(std::memcmp(got.data(), f_expected.data(), got.size() * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("VNNI paths are exact for 8-bit activations where vpmaddubsw saturates", "[int8_gemm][paths]") {
  // x = 255 and w = -128 everywhere: a vpmaddubsw pair would be 2 * 255 * -128 = -65280.
  const int64_t M = 9, N = 40, K = 100;
  std::vector<uint8_t> X(M * K, 255);
  std::vector<int8_t> W(N * K, -128);
  const PackedWeightsI8 packed(W.data(), N, K);
  std::vector<float> w_scale(N, 1.0f), expected(M * N), got(M * N);
  tq::gemm_u8i8_dynamic_reference(X.data(), M, K, 1.0f, 0, 255, packed, w_scale.data(), nullptr, expected.data(), N);
  REQUIRE(expected[0] == 255.0f * -128.0f * K);
  for (Int8Kernel k : available_fast_kernels()) {
    if (k == Int8Kernel::avx2 || k == Int8Kernel::avx2_widening) continue;
    tq::ScopedInt8Kernel kernel(k);
    CHECK(tq::select_int8_path(255, packed) != Int8Path::avx2_widening);  // no slow path needed
    tq::gemm_u8i8_dynamic(X.data(), M, K, 1.0f, 0, 255, packed, w_scale.data(), nullptr, got.data(), N);
    CHECK(got == expected);
  }
}

TEST_CASE("the kernel switch: automatic takes the best path, unavailable kernels are refused by name", "[int8_gemm]") {
  const tq::CpuFeatures& f = tq::cpu_features();
  std::vector<int8_t> W(16 * 8, 3);
  const PackedWeightsI8 packed(W.data(), 16, 8);
  tq::ScopedInt8Kernel kernel(Int8Kernel::automatic);
  const Int8Path best = tq::select_int8_path(127, packed);
  if (f.amx_permitted) CHECK(best == Int8Path::amx);
  else if (f.avx512_vnni) CHECK(best == Int8Path::avx512vnni);
  else if (f.avx_vnni) CHECK(best == Int8Path::avxvnni);
  else if (f.avx2) CHECK(best == Int8Path::avx2_maddubs);
  else CHECK(best == Int8Path::reference);
  CHECK(packed.has_amx_panels() == f.amx_permitted);
  for (Int8Kernel k : kFastKernels) {
    if (tq::int8_kernel_available(k)) {
      CHECK_NOTHROW(tq::set_int8_kernel(k));
      CHECK(tq::int8_kernel() == k);
    } else {
      CHECK_THROWS_WITH(tq::set_int8_kernel(k), Catch::Contains(tq::to_string(k)) && Catch::Contains("needs"));
    }
  }
  CHECK_NOTHROW(tq::set_int8_kernel(Int8Kernel::reference));
  CHECK(tq::select_int8_path(255, packed) == Int8Path::reference);
}

TEST_CASE("the AMX copy of the packed weights is the panel layout padded to whole tiles", "[int8_gemm][paths]") {
  if (!tq::cpu_features().amx_permitted) {
    WARN("no usable AMX on this machine (" << tq::cpu_feature_summary() << "): the AMX packing is not checked here");
    return;
  }
  std::mt19937 rng(3);
  std::vector<int8_t> W(20 * 70);
  for (auto& v : W) v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  const PackedWeightsI8 packed(W.data(), 20, 70);
  REQUIRE(packed.amx_k_tiles() == 2);
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t r = 0; r < 16; ++r)
        for (int64_t c = 0; c < 16; ++c)
          for (int64_t j = 0; j < 4; ++j) {
            const int64_t n = p * 16 + c, k = (t * 16 + r) * 4 + j;
            const int8_t want = n < 20 && k < 70 ? W[static_cast<size_t>(n * 70 + k)] : 0;
            REQUIRE(packed.amx_panels()[(((p * 2 + t) * 16 + r) * 16 + c) * 4 + j] == want);
          }
}

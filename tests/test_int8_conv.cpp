// Tests of the integer-only CNN kernels (src/tensor/int8_conv.h): im2col pads
// with the input zero point; im2col + GEMM equals the direct reference
// convolution bit for bit; the AVX2 and AVX-512 depthwise kernels equal
// their scalar twin bit for bit on edge shapes (odd sizes, padding, stride 2,
// every channel count mod 8 and mod 16, batch 1); the quantized add against
// the real-valued sum; pooling against its definition.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "tensor/int8_conv.h"
#include "tensor/int8_gemm.h"
#include "tensor/requantize.h"

namespace {

using tq::FixedPointMultiplier;

std::vector<uint8_t> random_u8(std::mt19937& rng, size_t n, int lo = 0, int hi = 255) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(d(rng));
  return v;
}

std::vector<int8_t> random_i8(std::mt19937& rng, size_t n, int lo = -128, int hi = 127) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

std::vector<int32_t> random_bias(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int32_t> d(-20000, 20000);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Per-channel multipliers around the scale a real layer has (1e-4 .. 1e-2);
// with `large`, some are >= 1 (negative shift: the scalar fallback).
std::vector<FixedPointMultiplier> random_multipliers(std::mt19937& rng, size_t n, bool large = false) {
  std::uniform_real_distribution<double> e(-4.0, -2.0);
  std::vector<FixedPointMultiplier> v(n);
  for (size_t i = 0; i < n; ++i) {
    double m = std::pow(10.0, e(rng));
    if (large && i % 3 == 1) m = 1.5 + static_cast<double>(i);
    v[i] = tq::quantize_multiplier(m);
  }
  return v;
}

// The value tap (iy, ix) of a convolution reads from channel c of image n:
// the input there, or the zero point z_x (real 0) where it falls in the
// padding. x is NCHW or NHWC of (N, C, H, W) = (any, C, H, W).
enum class Layout { nchw, nhwc };
int32_t tap_value(const std::vector<uint8_t>& x, Layout layout, int64_t C, int64_t H, int64_t W, int64_t n, int64_t c,
                  int64_t iy, int64_t ix, int32_t zx) {
  if (iy < 0 || iy >= H || ix < 0 || ix >= W) return zx;
  const int64_t at = layout == Layout::nchw ? ((n * C + c) * H + iy) * W + ix : ((n * H + iy) * W + ix) * C + c;
  return x[static_cast<size_t>(at)];
}

}  // namespace

TEST_CASE("im2col on u8 pads with the input zero point, not 0", "[int8_conv]") {
  std::mt19937 rng(1);
  tq::Conv2dShapeU8 s;
  s.batch = 2;
  s.in_h = 3;
  s.in_w = 4;
  s.in_channels = 3;
  s.out_channels = 1;
  s.kernel_h = s.kernel_w = 3;
  s.pad_h = s.pad_w = 1;
  const auto x = random_u8(rng, static_cast<size_t>(2 * 3 * 4 * 3), 1, 255);  // never 0
  const uint8_t zp = 77;
  std::vector<uint8_t> cols(static_cast<size_t>(s.batch * s.out_h() * s.out_w() * s.patch_size()), 0);
  tq::im2col_u8(x.data(), s, zp, cols.data());
  // Row of output (n=1, oy=0, ox=0): taps with kh=0 or kw=0 are padding.
  const int64_t row = (1 * s.out_h() + 0) * s.out_w() + 0;
  for (int64_t kh = 0; kh < 3; ++kh)
    for (int64_t kw = 0; kw < 3; ++kw)
      for (int64_t c = 0; c < 3; ++c) {
        const uint8_t got = cols[static_cast<size_t>(row * s.patch_size() + (kh * 3 + kw) * 3 + c)];
        if (kh == 0 || kw == 0) {
          CHECK(got == zp);
        } else {
          const int64_t iy = kh - 1, ix = kw - 1;
          CHECK(got == x[static_cast<size_t>(((1 * 3 + iy) * 4 + ix) * 3 + c)]);
        }
      }
  // No byte 0 anywhere: every padded tap holds zp, every other one an input value.
  CHECK(std::count(cols.begin(), cols.end(), uint8_t{0}) == 0);
}

TEST_CASE("int8 convolution: im2col + GEMM equals the direct reference bit for bit", "[int8_conv]") {
  std::mt19937 rng(2);
  struct Geometry {
    int64_t n, h, w, c, oc, kh, kw, stride, pad, dilation;
  };
  const Geometry cases[] = {
      {1, 5, 5, 1, 1, 3, 3, 1, 1, 1},   {2, 7, 6, 3, 17, 3, 3, 2, 1, 1},  {1, 9, 9, 8, 5, 1, 1, 1, 0, 1},
      {3, 4, 5, 16, 33, 1, 1, 1, 0, 1}, {1, 8, 7, 5, 9, 5, 5, 2, 2, 1},   {1, 11, 10, 4, 7, 3, 3, 1, 2, 2},
      {2, 6, 6, 7, 16, 2, 3, 1, 0, 1},  {1, 3, 3, 2, 31, 3, 3, 2, 1, 1},  {1, 6, 6, 4, 4, 1, 1, 2, 0, 1},
  };
  for (const auto& g : cases) {
    for (int zx : {0, 3, 128, 255}) {
      tq::Conv2dShapeU8 s;
      s.batch = g.n;
      s.in_h = g.h;
      s.in_w = g.w;
      s.in_channels = g.c;
      s.out_channels = g.oc;
      s.kernel_h = g.kh;
      s.kernel_w = g.kw;
      s.stride_h = s.stride_w = g.stride;
      s.pad_h = s.pad_w = g.pad;
      s.dilation_h = s.dilation_w = g.dilation;
      const auto x = random_u8(rng, static_cast<size_t>(g.n * g.h * g.w * g.c));
      const auto w_oihw = random_i8(rng, static_cast<size_t>(g.oc * g.c * g.kh * g.kw));
      std::vector<int8_t> w(w_oihw.size());
      tq::conv_weight_to_ohwi(w_oihw.data(), g.oc, g.c, g.kh, g.kw, w.data());
      const auto bias = random_bias(rng, static_cast<size_t>(g.oc));
      const auto mult = random_multipliers(rng, static_cast<size_t>(g.oc));
      const tq::PackedWeightsI8 packed(w.data(), g.oc, s.patch_size());
      const size_t out = static_cast<size_t>(g.n * s.out_h() * s.out_w() * g.oc);
      const int32_t zy = 100, y_min = zx == 3 ? 100 : 0, y_max = zx == 128 ? 180 : 255;
      std::vector<uint8_t> ref(out), fast(out);
      tq::conv2d_u8i8_requant_reference(x.data(), s, zx, w.data(), bias.data(), mult.data(), zy, y_min, y_max,
                                        ref.data());
      tq::conv2d_u8i8_requant(x.data(), s, zx, 255, packed, bias.data(), mult.data(), zy, y_min, y_max, fast.data());
      INFO("n=" << g.n << " h=" << g.h << " w=" << g.w << " c=" << g.c << " oc=" << g.oc << " k=" << g.kh << "x"
                << g.kw << " stride=" << g.stride << " pad=" << g.pad << " dilation=" << g.dilation << " zx=" << zx);
      CHECK(fast == ref);

      // The reference itself against the NCHW / OIHW definition (checks the
      // layout helpers): the accumulator in int64 over the padded input.
      std::vector<uint8_t> x_nchw(x.size());
      tq::nhwc_to_nchw_u8(x.data(), g.n, g.h, g.w, g.c, x_nchw.data());
      std::vector<uint8_t> back(x.size());
      tq::nchw_to_nhwc_u8(x_nchw.data(), g.n, g.c, g.h, g.w, back.data());
      REQUIRE(back == x);
      int64_t mismatches = 0;
      for (int64_t n = 0; n < g.n; ++n)
        for (int64_t o = 0; o < g.oc; ++o)
          for (int64_t oy = 0; oy < s.out_h(); ++oy)
            for (int64_t ox = 0; ox < s.out_w(); ++ox) {
              int64_t acc = bias[static_cast<size_t>(o)];
              for (int64_t c = 0; c < g.c; ++c)
                for (int64_t kh = 0; kh < g.kh; ++kh)
                  for (int64_t kw = 0; kw < g.kw; ++kw) {
                    const int64_t xv = tap_value(x_nchw, Layout::nchw, g.c, g.h, g.w, n, c,
                                                 oy * g.stride - g.pad + kh * g.dilation,
                                                 ox * g.stride - g.pad + kw * g.dilation, zx);
                    acc += (xv - zx) * w_oihw[static_cast<size_t>(((o * g.c + c) * g.kh + kh) * g.kw + kw)];
                  }
              const int32_t expected =
                  tq::requantize(static_cast<int32_t>(acc), mult[static_cast<size_t>(o)], zy, y_min, y_max);
              const uint8_t got = ref[static_cast<size_t>(((n * s.out_h() + oy) * s.out_w() + ox) * g.oc + o)];
              if (got != expected) ++mismatches;
            }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("int8 depthwise 3x3: every SIMD kernel equals the reference bit for bit", "[int8_conv]") {
  if (!tq::cpu_has_avx2()) {
    WARN("no AVX2 on this CPU: only the reference kernel runs");
    return;
  }
  std::mt19937 rng(3);
  int64_t cases = 0;
  for (int64_t channels = 1; channels <= 35; ++channels) {
    for (int64_t stride : {1, 2}) {
      for (int64_t pad : {0, 1, 2}) {
        // Sizes vary with the channel count: odd and even, down to the kernel size.
        const int64_t h = 3 + (channels * 5 + stride) % 6;
        const int64_t w = 3 + (channels * 3 + pad) % 7;
        const int64_t batch = channels % 4 == 0 ? 2 : 1;
        tq::Depthwise3x3ShapeU8 s;
        s.batch = batch;
        s.in_h = h;
        s.in_w = w;
        s.channels = channels;
        s.stride = stride;
        s.pad = pad;
        const auto x = random_u8(rng, static_cast<size_t>(batch * h * w * channels));
        const auto w_c133 = random_i8(rng, static_cast<size_t>(channels * 9));
        std::vector<int8_t> taps(w_c133.size());
        tq::depthwise_weight_to_taps(w_c133.data(), channels, taps.data());
        const auto bias = random_bias(rng, static_cast<size_t>(channels));
        const bool large = channels % 5 == 0;  // some multipliers >= 1: the scalar epilogue
        const auto mult = random_multipliers(rng, static_cast<size_t>(channels), large);
        const int32_t zx = static_cast<int32_t>((channels * 37) % 256);
        const int32_t zy = static_cast<int32_t>((channels * 11) % 200);
        // Plain, ReLU (y_min = zy) and ReLU6-like (y_max below 255) clamps.
        const int32_t y_min = pad == 1 ? zy : 0;
        const int32_t y_max = stride == 2 ? std::min(255, zy + 60) : 255;
        const size_t out = static_cast<size_t>(batch * s.out_h() * s.out_w() * channels);
        const bool with_bias = channels % 3 != 0;
        const int32_t* b = with_bias ? bias.data() : nullptr;
        std::vector<uint8_t> ref(out), avx2(out, 0xAB), avx512(out, 0xCD), dispatched(out);
        tq::depthwise3x3_u8i8_requant_reference(x.data(), s, zx, taps.data(), b, mult.data(), zy, y_min, y_max,
                                                ref.data());
        tq::detail::depthwise3x3_avx2(x.data(), s, zx, taps.data(), b, mult.data(), zy, y_min, y_max, avx2.data());
        tq::depthwise3x3_u8i8_requant(x.data(), s, zx, taps.data(), b, mult.data(), zy, y_min, y_max,
                                      dispatched.data());
        INFO("C=" << channels << " stride=" << stride << " pad=" << pad << " H=" << h << " W=" << w
                  << " batch=" << batch << " zx=" << zx << " zy=" << zy << " clamp " << y_min << ".." << y_max);
        CHECK(avx2 == ref);
        CHECK(dispatched == ref);
        if (tq::cpu_has_avx512()) {
          tq::detail::depthwise3x3_avx512(x.data(), s, zx, taps.data(), b, mult.data(), zy, y_min, y_max,
                                          avx512.data());
          CHECK(avx512 == ref);
        }
        // The reference against the (C, 1, 3, 3) definition on one output pixel per channel.
        const int64_t oy = s.out_h() - 1, ox = 0;
        for (int64_t c = 0; c < channels; ++c) {
          int32_t acc = with_bias ? bias[static_cast<size_t>(c)] : 0;
          for (int64_t kh = 0; kh < 3; ++kh)
            for (int64_t kw = 0; kw < 3; ++kw) {
              const int32_t xv = tap_value(x, Layout::nhwc, channels, h, w, batch - 1, c, oy * stride - pad + kh,
                                           ox * stride - pad + kw, zx);
              acc += (xv - zx) * w_c133[static_cast<size_t>(c * 9 + kh * 3 + kw)];
            }
          const size_t at = static_cast<size_t>((((batch - 1) * s.out_h() + oy) * s.out_w() + ox) * channels + c);
          CHECK(int32_t{ref[at]} == tq::requantize(acc, mult[static_cast<size_t>(c)], zy, y_min, y_max));
        }
        ++cases;
      }
    }
  }
  CHECK(cases == 35 * 2 * 3);
}

TEST_CASE("int8 depthwise 3x3 rejects bad shapes with a clear error", "[int8_conv]") {
  std::vector<uint8_t> x(64), y(64);
  std::vector<int8_t> taps(9 * 2);
  std::vector<FixedPointMultiplier> m(2, tq::quantize_multiplier(0.01));
  tq::Depthwise3x3ShapeU8 s;
  s.in_h = s.in_w = 4;
  s.channels = 2;
  s.stride = 3;
  CHECK_THROWS_WITH(tq::depthwise3x3_u8i8_requant(x.data(), s, 0, taps.data(), nullptr, m.data(), 0, 0, 255, y.data()),
                    Catch::Contains("stride must be 1 or 2"));
  s.stride = 1;
  CHECK_THROWS_WITH(tq::depthwise3x3_u8i8_requant(x.data(), s, 300, taps.data(), nullptr, m.data(), 0, 0, 255, y.data()),
                    Catch::Contains("input zero point 300"));
  CHECK_THROWS_WITH(tq::depthwise3x3_u8i8_requant(x.data(), s, 0, taps.data(), nullptr, m.data(), 0, 200, 100, y.data()),
                    Catch::Contains("output clamp"));
  CHECK_THROWS_WITH(
      tq::depthwise3x3_u8i8_requant(nullptr, s, 0, taps.data(), nullptr, m.data(), 0, 0, 255, y.data()),
      Catch::Contains("x is null"));
}

TEST_CASE("quantized add: two fixed-point multipliers onto the output grid", "[int8_conv]") {
  std::mt19937 rng(4);
  struct Grid {
    double sa;
    int za;
    double sb;
    int zb;
    double sy;
    int zy;
  };
  const Grid grids[] = {
      {0.02, 128, 0.03, 100, 0.05, 110}, {0.1, 0, 0.1, 0, 0.2, 0},         {0.013, 7, 0.4, 250, 0.41, 200},
      {0.05, 255, 0.05, 0, 0.02, 128},   {1e-3, 30, 2e-3, 60, 2.5e-3, 90},
  };
  for (const auto& g : grids) {
    const auto p = tq::QuantizedAddParams::make(g.sa, g.za, g.sb, g.zb, g.sy, g.zy);
    int64_t mismatches = 0, halves = 0;
    const size_t n = 4099;  // odd
    const auto a = random_u8(rng, n), b = random_u8(rng, n);
    std::vector<uint8_t> y(n);
    tq::add_u8_requant(a.data(), b.data(), static_cast<int64_t>(n), p, y.data());
    for (size_t i = 0; i < n; ++i) {
      CHECK(int32_t{y[i]} == tq::quantized_add_one(a[i], b[i], p));
      // The real sum on the output grid, in double. Within 1e-6 of a half
      // either neighbour is right (double itself cannot tell exact halves).
      const double v = (g.sa * (a[i] - g.za) + g.sb * (b[i] - g.zb)) / g.sy;
      const double below = std::floor(v);
      const bool half = std::abs(v - below - 0.5) < 1e-6;
      const auto on_grid = [&](double q) { return std::clamp(g.zy + q, 0.0, 255.0); };
      if (half) {
        ++halves;
        if (y[i] != on_grid(below) && y[i] != on_grid(below + 1)) ++mismatches;
      } else if (y[i] != on_grid(std::round(v))) {
        ++mismatches;
      }
    }
    INFO("sa=" << g.sa << " sb=" << g.sb << " sy=" << g.sy << " halves=" << halves);
    CHECK(mismatches == 0);
  }
  // In place (y aliases a).
  auto a = random_u8(rng, 33);
  const auto b = random_u8(rng, 33);
  const auto p = tq::QuantizedAddParams::make(0.02, 128, 0.03, 100, 0.05, 110, 110, 230);
  std::vector<uint8_t> expected(33);
  tq::add_u8_requant(a.data(), b.data(), 33, p, expected.data());
  tq::add_u8_requant(a.data(), b.data(), 33, p, a.data());
  CHECK(a == expected);
  CHECK(*std::min_element(expected.begin(), expected.end()) >= 110);
  CHECK(*std::max_element(expected.begin(), expected.end()) <= 230);
  CHECK_THROWS_WITH(tq::QuantizedAddParams::make(10.0, 0, 0.1, 0, 0.1, 0), Catch::Contains("64 or more times"));
  CHECK_THROWS_WITH(tq::QuantizedAddParams::make(0.1, 0, -0.1, 0, 0.1, 0), Catch::Contains("positive and finite"));
}

TEST_CASE("pooling on u8: max exact, average with integer rounding", "[int8_conv]") {
  std::mt19937 rng(5);
  struct Geometry {
    int64_t n, h, w, c, k, stride, pad;
  };
  const Geometry cases[] = {{1, 5, 5, 3, 2, 2, 0}, {2, 7, 6, 17, 3, 2, 1}, {1, 4, 4, 1, 3, 1, 1},
                            {1, 9, 7, 8, 3, 3, 0}, {1, 2, 2, 5, 2, 1, 1}};
  for (const auto& g : cases) {
    tq::Pool2dShapeU8 s;
    s.batch = g.n;
    s.in_h = g.h;
    s.in_w = g.w;
    s.channels = g.c;
    s.kernel_h = s.kernel_w = g.k;
    s.stride_h = s.stride_w = g.stride;
    s.pad_h = s.pad_w = g.pad;
    const auto x = random_u8(rng, static_cast<size_t>(g.n * g.h * g.w * g.c));
    const size_t out = static_cast<size_t>(g.n * s.out_h() * s.out_w() * g.c);
    std::vector<uint8_t> mx(out), avg(out), avg_ex(out);
    const int32_t zp = 40;
    tq::max_pool2d_u8(x.data(), s, mx.data());
    tq::avg_pool2d_u8(x.data(), s, zp, true, avg.data());
    tq::avg_pool2d_u8(x.data(), s, zp, false, avg_ex.data());
    INFO("h=" << g.h << " w=" << g.w << " c=" << g.c << " k=" << g.k << " stride=" << g.stride << " pad=" << g.pad);
    int64_t bad = 0;
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t oy = 0; oy < s.out_h(); ++oy)
        for (int64_t ox = 0; ox < s.out_w(); ++ox)
          for (int64_t c = 0; c < g.c; ++c) {
            int best = -1;
            double sum = 0, count_in = 0, count_all = 0;
            for (int64_t kh = 0; kh < g.k; ++kh)
              for (int64_t kw = 0; kw < g.k; ++kw) {
                const int64_t iy = oy * g.stride - g.pad + kh, ix = ox * g.stride - g.pad + kw;
                if (iy >= g.h + g.pad || ix >= g.w + g.pad) continue;
                ++count_all;
                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
                  sum += 0;  // real 0 (quantized zp) counted below
                  continue;
                }
                const int v = x[static_cast<size_t>(((n * g.h + iy) * g.w + ix) * g.c + c)];
                best = std::max(best, v);
                sum += v;
                ++count_in;
              }
            const size_t at = static_cast<size_t>(((n * s.out_h() + oy) * s.out_w() + ox) * g.c + c);
            // Averages on the quantized scale: y = zp + round_half_up(mean of (v - zp)) == round_half_up(mean of v).
            const double with_pad = (sum + (count_all - count_in) * zp) / count_all;
            const double without_pad = sum / count_in;
            if (mx[at] != best) ++bad;
            if (avg[at] != static_cast<int>(std::floor(with_pad + 0.5))) ++bad;
            if (avg_ex[at] != static_cast<int>(std::floor(without_pad + 0.5))) ++bad;
          }
    CHECK(bad == 0);
  }
  // Adaptive: 7x5 -> 3x2 and -> 1x1 (global).
  const int64_t H = 7, W = 5, C = 9;
  const auto x = random_u8(rng, static_cast<size_t>(2 * H * W * C));
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{3, 2}, {1, 1}, {7, 5}, {4, 4}}) {
    std::vector<uint8_t> y(static_cast<size_t>(2 * oh * ow * C));
    tq::adaptive_avg_pool2d_u8(x.data(), 2, H, W, C, oh, ow, y.data());
    int64_t bad = 0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t y0 = static_cast<int64_t>(std::floor(double(i) * H / oh));
            const int64_t y1 = static_cast<int64_t>(std::ceil(double(i + 1) * H / oh));
            const int64_t x0 = static_cast<int64_t>(std::floor(double(j) * W / ow));
            const int64_t x1 = static_cast<int64_t>(std::ceil(double(j + 1) * W / ow));
            double sum = 0;
            for (int64_t a = y0; a < y1; ++a)
              for (int64_t b = x0; b < x1; ++b) sum += x[static_cast<size_t>(((n * H + a) * W + b) * C + c)];
            const int expected = static_cast<int>(std::floor(sum / double((y1 - y0) * (x1 - x0)) + 0.5));
            if (y[static_cast<size_t>(((n * oh + i) * ow + j) * C + c)] != expected) ++bad;
          }
    INFO("adaptive to " << oh << "x" << ow);
    CHECK(bad == 0);
  }
}

TEST_CASE("im2col_u8 equals im2col_u8_reference byte for byte on edge shapes", "[int8_conv]") {
  std::mt19937 rng(11);
  int64_t checked = 0;
  // Channel counts around every run length copy_run switches at (kernel_w * C
  // from 1 to 3 * 35 bytes), kernels 1-5, stride 1-2, padding 0-2, dilation 1-2.
  for (int64_t c : {1, 2, 3, 4, 5, 7, 8, 11, 16, 21, 22, 32, 35})
    for (int64_t k : {1, 2, 3, 5})
      for (int64_t stride : {1, 2})
        for (int64_t pad : {0, 1, 2})
          for (int64_t dilation : {1, 2}) {
            tq::Conv2dShapeU8 s;
            s.batch = c % 2 == 0 ? 1 : 2;
            s.in_h = 7;
            s.in_w = 6 + c % 3;
            s.in_channels = c;
            s.kernel_h = k;
            s.kernel_w = k == 5 ? 3 : k;
            s.stride_h = stride;
            s.stride_w = stride;
            s.pad_h = std::min<int64_t>(pad, k - 1);
            s.pad_w = std::min<int64_t>(pad, s.kernel_w - 1);
            s.dilation_h = s.dilation_w = dilation;
            if (s.in_h + 2 * s.pad_h < dilation * (s.kernel_h - 1) + 1) continue;
            if (s.in_w + 2 * s.pad_w < dilation * (s.kernel_w - 1) + 1) continue;
            const auto x = random_u8(rng, static_cast<size_t>(s.batch * s.in_h * s.in_w * c));
            const size_t n = static_cast<size_t>(s.batch * s.out_h() * s.out_w() * s.patch_size());
            std::vector<uint8_t> fast(n, 1), ref(n, 2);
            const uint8_t zp = static_cast<uint8_t>(rng() % 256);
            tq::im2col_u8(x.data(), s, zp, fast.data());
            tq::im2col_u8_reference(x.data(), s, zp, ref.data());
            INFO("c=" << c << " k=" << k << " stride=" << stride << " pad=" << pad << " dilation=" << dilation);
            REQUIRE(fast == ref);
            ++checked;
          }
  CHECK(checked > 400);
}

TEST_CASE("max_pool2d_u8 equals max_pool2d_u8_reference byte for byte on edge shapes", "[int8_conv]") {
  std::mt19937 rng(12);
  int64_t checked = 0;
  // Every channel count mod 16 (the SSE2 width) from 1 to 35, and 64.
  std::vector<int64_t> channels;
  for (int64_t c = 1; c <= 35; ++c) channels.push_back(c);
  channels.push_back(64);
  for (int64_t c : channels)
    for (int64_t k : {2, 3})
      for (int64_t stride : {1, 2})
        for (int64_t pad : {0, 1}) {
          tq::Pool2dShapeU8 s;
          s.batch = c % 2 + 1;
          s.in_h = 5 + c % 4;  // odd and even sizes
          s.in_w = 7 - c % 3;
          s.channels = c;
          s.kernel_h = s.kernel_w = k;
          s.stride_h = s.stride_w = stride;
          s.pad_h = s.pad_w = pad;
          const auto x = random_u8(rng, static_cast<size_t>(s.batch * s.in_h * s.in_w * c));
          const size_t n = static_cast<size_t>(s.batch * s.out_h() * s.out_w() * c);
          std::vector<uint8_t> fast(n, 1), ref(n, 2);
          tq::max_pool2d_u8(x.data(), s, fast.data());
          tq::max_pool2d_u8_reference(x.data(), s, ref.data());
          INFO("c=" << c << " k=" << k << " stride=" << stride << " pad=" << pad);
          REQUIRE(fast == ref);
          ++checked;
        }
  CHECK(checked == 36 * 8);
}

TEST_CASE("int8 convolution with kernel rows padded to 4 equals the direct reference bit for bit", "[int8_conv]") {
  // The layout of a first layer with one input channel (3 bytes per kernel
  // row, padded to a group of 4 with zero weights): the weight repacked,
  // im2col from a zero-point-padded copy, the GEMM on every path this CPU has.
  std::mt19937 rng(13);
  CHECK(tq::conv_uses_padded_rows(1, 3, 3, 1));
  CHECK(tq::conv_uses_padded_rows(2, 3, 3, 1));
  CHECK_FALSE(tq::conv_uses_padded_rows(4, 3, 3, 1));  // already whole groups
  CHECK_FALSE(tq::conv_uses_padded_rows(3, 3, 3, 1));  // would cost 2 groups more
  CHECK_FALSE(tq::conv_uses_padded_rows(1, 3, 3, 2));  // dilated
  CHECK_FALSE(tq::conv_uses_padded_rows(1, 1, 1, 1));  // 1x1: no kernel rows to pad
  struct Geometry {
    int64_t n, h, w, c, oc, kh, kw, stride, pad, dilation_h;
  };
  const Geometry cases[] = {
      {1, 28, 28, 1, 32, 3, 3, 1, 1, 1}, {2, 7, 6, 1, 17, 3, 3, 2, 1, 1}, {1, 5, 9, 2, 33, 3, 3, 1, 2, 1},
      {1, 6, 5, 1, 5, 2, 3, 1, 0, 1},    {3, 9, 8, 1, 16, 3, 3, 1, 1, 2}, {1, 3, 3, 2, 8, 3, 3, 2, 0, 1},
      {1, 8, 7, 1, 31, 7, 7, 1, 3, 1},
  };
  std::vector<tq::Int8Kernel> kernels = {tq::Int8Kernel::reference};
  for (auto k : {tq::Int8Kernel::avx2, tq::Int8Kernel::avxvnni, tq::Int8Kernel::avx512vnni})
    if (tq::int8_kernel_available(k)) kernels.push_back(k);
  for (const auto& g : cases) {
    REQUIRE(tq::conv_uses_padded_rows(g.c, g.kh, g.kw, 1));
    tq::Conv2dShapeU8 s;
    s.batch = g.n;
    s.in_h = g.h;
    s.in_w = g.w;
    s.in_channels = g.c;
    s.out_channels = g.oc;
    s.kernel_h = g.kh;
    s.kernel_w = g.kw;
    s.stride_h = s.stride_w = g.stride;
    s.pad_h = s.pad_w = g.pad;
    s.dilation_h = g.dilation_h;
    const auto x = random_u8(rng, static_cast<size_t>(g.n * g.h * g.w * g.c));
    const auto w_oihw = random_i8(rng, static_cast<size_t>(g.oc * g.c * g.kh * g.kw));
    std::vector<int8_t> w(w_oihw.size());
    tq::conv_weight_to_ohwi(w_oihw.data(), g.oc, g.c, g.kh, g.kw, w.data());
    const int64_t row4 = (g.kw * g.c + 3) / 4 * 4;
    std::vector<int8_t> wp(static_cast<size_t>(g.oc * g.kh * row4));
    tq::conv_weight_to_ohwi_padded_rows(w_oihw.data(), g.oc, g.c, g.kh, g.kw, wp.data());
    const tq::PackedWeightsI8 packed(wp.data(), g.oc, g.kh * row4);
    const auto bias = random_bias(rng, static_cast<size_t>(g.oc));
    const auto mult = random_multipliers(rng, static_cast<size_t>(g.oc));
    const size_t out = static_cast<size_t>(g.n * s.out_h() * s.out_w() * g.oc);
    for (int zx : {0, 77, 255}) {
      std::vector<uint8_t> expected(out), got(out);
      tq::conv2d_u8i8_requant_reference(x.data(), s, zx, w.data(), bias.data(), mult.data(), 100, 0, 255,
                                        expected.data());
      for (auto k : kernels) {
        tq::ScopedInt8Kernel scoped(k);
        std::fill(got.begin(), got.end(), uint8_t{0});
        tq::conv2d_u8i8_requant(x.data(), s, zx, 255, packed, bias.data(), mult.data(), 100, 0, 255, got.data(), 1);
        INFO("c=" << g.c << " k=" << g.kh << "x" << g.kw << " stride=" << g.stride << " pad=" << g.pad
                  << " zx=" << zx << " kernel=" << tq::to_string(k));
        REQUIRE(got == expected);
      }
    }
  }
}

TEST_CASE("NCHW <-> NHWC transposes equal their plain twins byte for byte on edge shapes", "[int8_conv]") {
  // 16 x 16 blocks in registers, the edges in the plain loop: planes and
  // channel counts below, at and around multiples of 16 (7x7x64 is the
  // classifier input of the cnn).
  std::mt19937 rng(14);
  int64_t checked = 0;
  for (int64_t c : {1, 3, 15, 16, 17, 32, 33, 64})
    for (auto [h, w] : {std::pair<int64_t, int64_t>{1, 1}, {4, 4}, {3, 5}, {7, 7}, {4, 8}, {5, 7}, {6, 11}})
      for (int64_t n : {1, 2}) {
        const auto x = random_u8(rng, static_cast<size_t>(n * c * h * w));
        std::vector<uint8_t> fast(x.size(), 1), ref(x.size(), 2);
        tq::nhwc_to_nchw_u8(x.data(), n, h, w, c, fast.data());
        tq::nhwc_to_nchw_u8_reference(x.data(), n, h, w, c, ref.data());
        INFO("n=" << n << " h=" << h << " w=" << w << " c=" << c);
        REQUIRE(fast == ref);
        // The definition: x[n][y][x][c] lands at [n][c][y][x].
        CHECK(ref[static_cast<size_t>(((n - 1) * c + c - 1) * h * w + h * w - 1)] == x.back());
        tq::nchw_to_nhwc_u8(x.data(), n, c, h, w, fast.data());
        tq::nchw_to_nhwc_u8_reference(x.data(), n, c, h, w, ref.data());
        REQUIRE(fast == ref);
        std::vector<uint8_t> back(x.size());
        tq::nhwc_to_nchw_u8(fast.data(), n, h, w, c, back.data());
        REQUIRE(back == x);
        ++checked;
      }
  CHECK(checked == 8 * 7 * 2);
}

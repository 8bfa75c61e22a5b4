// bench_int8_conv: the int8 CNN kernels of tensor/int8_conv.h, one thread.
//  1. The 3x3 depthwise kernel (reference, AVX2, AVX-512) on MobileNetV2
//     shapes, batch 1, and the same convolution through im2col + the GEMM
//     for comparison.
//  2. Why depthwise layers need per-channel weight scales: a depthwise weight
//     whose channels were scaled by gamma / sqrt(var + eps) of a BatchNorm
//     (folding) — factors spread log-uniformly over `spread` decades — is
//     quantized per tensor and per channel; printed: the weight SQNR (dB).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "bench_util.h"
#include "tensor/int8_conv.h"
#include "tensor/int8_gemm.h"

namespace {

double sqnr_db(const std::vector<float>& ref, const std::vector<float>& q) {
  double s = 0, e = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    s += double(ref[i]) * ref[i];
    e += (double(ref[i]) - q[i]) * (double(ref[i]) - q[i]);
  }
  return 10 * std::log10(s / std::max(e, 1e-30));
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> u8(0, 255), i8(-127, 127);
  std::printf("int8 depthwise 3x3, batch 1, 1 thread (median of 15)\n");
  std::printf("%-26s %12s %12s %12s %14s\n", "H x W x C, stride", "reference", "avx2", "avx512", "im2col+gemm");
  struct Shape {
    int64_t h, w, c, stride;
  };
  for (const Shape& sh : {Shape{112, 112, 32, 1}, Shape{112, 112, 96, 2}, Shape{56, 56, 144, 1}, Shape{28, 28, 192, 1},
                          Shape{14, 14, 384, 1}, Shape{14, 14, 576, 2}, Shape{7, 7, 960, 1}, Shape{28, 28, 24, 1}}) {
    tq::Depthwise3x3ShapeU8 s;
    s.in_h = sh.h;
    s.in_w = sh.w;
    s.channels = sh.c;
    s.stride = sh.stride;
    s.pad = 1;
    std::vector<uint8_t> x(static_cast<size_t>(sh.h * sh.w * sh.c));
    for (auto& v : x) v = static_cast<uint8_t>(u8(rng));
    std::vector<int8_t> taps(static_cast<size_t>(9 * sh.c));
    for (auto& v : taps) v = static_cast<int8_t>(i8(rng));
    std::vector<int32_t> bias(static_cast<size_t>(sh.c), 100);
    std::vector<tq::FixedPointMultiplier> m(static_cast<size_t>(sh.c), tq::quantize_multiplier(0.0013));
    std::vector<uint8_t> y(static_cast<size_t>(s.out_h() * s.out_w() * sh.c));
    auto run = [&](auto f) {
      return tq::bench::measure(f, {.repeats = 15, .inner = 3}).median * 1e6;
    };
    const double ref = run([&] {
      tq::detail::depthwise3x3_channels_reference(x.data(), s, 128, taps.data(), bias.data(), m.data(), 0, 0, 255,
                                                  y.data(), 0, sh.c);
    });
    const double avx2 = run([&] {
      tq::detail::depthwise3x3_avx2(x.data(), s, 128, taps.data(), bias.data(), m.data(), 0, 0, 255, y.data());
    });
    const double avx512 = tq::cpu_has_avx512() ? run([&] {
      tq::detail::depthwise3x3_avx512(x.data(), s, 128, taps.data(), bias.data(), m.data(), 0, 0, 255, y.data());
    })
                                               : 0.0;
    // The same convolution as groups=1 would cost C times more; as a
    // block-diagonal GEMM it is C separate (OH*OW, 9) x (9, 1) products:
    // time one channel's im2col + GEMM and scale by C.
    tq::Conv2dShapeU8 cs;
    cs.in_h = sh.h;
    cs.in_w = sh.w;
    cs.in_channels = 1;
    cs.out_channels = 1;
    cs.kernel_h = cs.kernel_w = 3;
    cs.stride_h = cs.stride_w = sh.stride;
    cs.pad_h = cs.pad_w = 1;
    std::vector<uint8_t> x1(static_cast<size_t>(sh.h * sh.w));
    for (auto& v : x1) v = static_cast<uint8_t>(u8(rng));
    const tq::PackedWeightsI8 w1(taps.data(), 1, 9);
    std::vector<uint8_t> y1(static_cast<size_t>(cs.out_h() * cs.out_w()));
    const double gemm = run([&] {
                          tq::conv2d_u8i8_requant(x1.data(), cs, 128, 255, w1, bias.data(), m.data(), 0, 0, 255,
                                                  y1.data(), 1);
                        }) *
                        static_cast<double>(sh.c);
    char label[64];
    std::snprintf(label, sizeof label, "%ldx%ldx%ld, s%ld", long(sh.h), long(sh.w), long(sh.c), long(sh.stride));
    std::printf("%-26s %10.1f us %10.1f us %10.1f us %12.1f us\n", label, ref, avx2, avx512, gemm);
  }

  std::printf("\nDepthwise weight after BN folding: SQNR (dB) of i8 weights, 9 x 96 channels\n");
  std::printf("%-28s %12s %12s %18s %18s\n", "gamma/sqrt(var) spread", "per-tensor", "per-channel",
              "median ch, tensor", "median ch, channel");
  std::normal_distribution<float> normal(0.f, 0.3f);
  for (double spread : {0.0, 1.0, 2.0, 3.0}) {
    const int64_t C = 96;
    std::uniform_real_distribution<double> e(-spread / 2, spread / 2);
    std::vector<float> w(static_cast<size_t>(C * 9));
    for (int64_t c = 0; c < C; ++c) {
      const double f = std::pow(10.0, e(rng));
      for (int64_t t = 0; t < 9; ++t) w[static_cast<size_t>(c * 9 + t)] = static_cast<float>(normal(rng) * f);
    }
    auto quantize_with = [&](bool per_channel) {
      std::vector<float> q(w.size());
      float all = 0;
      for (float v : w) all = std::max(all, std::abs(v));
      for (int64_t c = 0; c < C; ++c) {
        float m = 0;
        for (int64_t t = 0; t < 9; ++t) m = std::max(m, std::abs(w[static_cast<size_t>(c * 9 + t)]));
        const float scale = (per_channel ? m : all) / 127.f;
        for (int64_t t = 0; t < 9; ++t) {
          const size_t i = static_cast<size_t>(c * 9 + t);
          q[i] = std::clamp(std::nearbyint(w[i] / scale), -127.f, 127.f) * scale;
        }
      }
      // Median over channels of each channel's own SQNR: a small channel
      // quantized with the large channels' scale loses its bits.
      std::vector<double> per;
      for (int64_t c = 0; c < C; ++c) {
        const std::vector<float> wc(w.begin() + c * 9, w.begin() + c * 9 + 9), qc(q.begin() + c * 9, q.begin() + c * 9 + 9);
        per.push_back(sqnr_db(wc, qc));
      }
      std::sort(per.begin(), per.end());
      return std::pair<double, double>(sqnr_db(w, q), per[per.size() / 2]);
    };
    char label[64];
    std::snprintf(label, sizeof label, "%.0f decades", spread);
    const auto t = quantize_with(false), c = quantize_with(true);
    std::printf("%-28s %12.1f %12.1f %18.1f %18.1f\n", label, t.first, c.first, t.second, c.second);
  }
  return 0;
}

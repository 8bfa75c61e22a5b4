// int8 walkthrough: one small Linear layer, y = x W^T + b, quantized by hand,
// every number printed so you can check it with a calculator.
// Equations: docs/quantization.md (eq. 1-5, 12-13) and docs/int8_kernel.md.
//
// Part A (offline, floats allowed): choose scales and zero points, quantize
// the weights, the bias and the multipliers.
// Part B (run time, integers only): what QuantizedLinear does for one input.
// Part C: the library's QuantizedLinear gives the same integers.
//
// Run: ./build/examples/int8_walkthrough
#include <cmath>
#include <cstdio>
#include <vector>

#include "tinyqat.h"

using namespace tq;

int main() {
  // A 4 -> 3 Linear with round numbers.
  const int K = 4, N = 3;
  const std::vector<float> W = {0.50f, -0.25f, 0.10f, 0.80f,   // output 0
                                -0.60f, 0.30f, 0.45f, -0.15f,  // output 1
                                0.20f, 0.70f, -0.35f, 0.05f};  // output 2
  const std::vector<float> b = {0.10f, -0.20f, 0.05f};
  const std::vector<float> x = {1.20f, -0.40f, 0.90f, 2.00f};

  std::printf("=== float reference ===\n");
  std::vector<float> y(N);
  for (int n = 0; n < N; ++n) {
    float s = b[n];
    for (int k = 0; k < K; ++k) s += x[k] * W[n * K + k];
    y[n] = s;
    std::printf("y_float[%d] = %.6f\n", n, s);
  }

  std::printf("\n=== Part A: offline (float) ===\n");
  // Input: per-tensor affine on 0..127 (the x86 preset), from its range.
  const quant::QuantSpec act = quant::activation_spec(7);
  float xmin = x[0], xmax = x[0];
  for (float v : x) xmin = std::min(xmin, v), xmax = std::max(xmax, v);
  const quant::ScaleZeroPoint xq = quant::calculate_qparams(xmin, xmax, act);
  std::printf("input min = %.6f, max = %.6f, range %d..%d\n", xmin, xmax, act.quant_min, act.quant_max);
  std::printf("input scale s_x = (max - min) / (qmax - qmin) = %.9g\n", xq.scale);
  std::printf("input zero point z_x = qmin - round(min / s_x) = %d\n", xq.zero_point);

  // Weights: per output channel, symmetric on -128..127.
  const quant::QuantSpec wspec = quant::weight_spec(8, QScheme::per_channel_symmetric);
  std::vector<float> s_w(N);
  for (int n = 0; n < N; ++n) {
    float lo = W[n * K], hi = W[n * K];
    for (int k = 0; k < K; ++k) lo = std::min(lo, W[n * K + k]), hi = std::max(hi, W[n * K + k]);
    s_w[n] = quant::calculate_qparams(lo, hi, wspec).scale;
    std::printf("weight scale s_w[%d] = max|W[%d]| / 127.5 = %.9g\n", n, n, s_w[n]);
  }
  // Output: per-tensor affine on 0..127, from the float outputs' range.
  float ymin = y[0], ymax = y[0];
  for (float v : y) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
  const quant::ScaleZeroPoint yq = quant::calculate_qparams(ymin, ymax, act);
  std::printf("output scale s_y = %.9g, zero point z_y = %d\n", yq.scale, yq.zero_point);

  std::vector<int32_t> qW(N * K), b_q(N), rowsum(N, 0);
  std::vector<FixedPointMultiplier> M(N);
  for (int n = 0; n < N; ++n) {
    for (int k = 0; k < K; ++k) {
      const float q = std::nearbyint(W[n * K + k] * (1.f / s_w[n]));
      qW[n * K + k] = static_cast<int32_t>(std::clamp(q, -128.f, 127.f));
      rowsum[n] += qW[n * K + k];
      std::printf("qW[%d][%d] = round(%.2f / s_w[%d]) = %d\n", n, k, W[n * K + k], n, qW[n * K + k]);
    }
    const double s_acc = static_cast<double>(xq.scale) * s_w[n];
    b_q[n] = static_cast<int32_t>(std::nearbyint(b[n] / s_acc));
    std::printf("b_q[%d] = round(b / (s_x s_w)) = round(%.2f / %.9g) = %d\n", n, b[n], s_acc, b_q[n]);
    M[n] = quantize_multiplier(s_acc / yq.scale);
    std::printf("M[%d] = s_x s_w / s_y = %.9g = M0 * 2^-(31+shift): M0 = %d, shift = %d\n", n, s_acc / yq.scale,
                M[n].multiplier, M[n].shift);
    std::printf("rowsum[%d] = %d\n", n, rowsum[n]);
  }

  std::printf("note: each row's largest |W| is +-127.5 steps in exact arithmetic (s_w = max|W| / 127.5); in float32,\n"
              "      W * (1 / s_w) lands a hair to one side, which decides between 127 / -127 and -128.\n");

  std::printf("\n=== Part B: run time (integers only) ===\n");
  std::vector<int32_t> qx(K);
  for (int k = 0; k < K; ++k) {
    // The one float step left at run time: the layer's input arrives as float.
    const float q = std::nearbyint(x[k] * (1.f / xq.scale)) + static_cast<float>(xq.zero_point);
    qx[k] = static_cast<int32_t>(std::clamp(q, 0.f, 127.f));
    std::printf("qx[%d] = round(%.2f / s_x) + z_x = %d\n", k, x[k], qx[k]);
  }
  std::vector<int32_t> y_q(N);
  for (int n = 0; n < N; ++n) {
    int32_t raw = 0;
    for (int k = 0; k < K; ++k) raw += qx[k] * qW[n * K + k];
    const int32_t correction = xq.zero_point * rowsum[n];
    const int32_t acc = raw - correction + b_q[n];
    std::printf("raw[%d] = sum_k qx*qW = %d\n", n, raw);
    std::printf("correction[%d] = z_x * rowsum = %d\n", n, correction);
    std::printf("acc[%d] = raw - correction + b_q = %d\n", n, acc);
    const int32_t scaled = multiply_by_quantized_multiplier(acc, M[n]);
    y_q[n] = requantize(acc, M[n], yq.zero_point, act.quant_min, act.quant_max);
    std::printf("scaled[%d] = (acc * M0) >> (31 + shift), rounded = %d\n", n, scaled);
    std::printf("y_q[%d] = clamp(z_y + scaled, 0, 127) = %d\n", n, y_q[n]);
  }

  std::printf("\n=== dequantized result ===\n");
  for (int n = 0; n < N; ++n) {
    const float deq = yq.scale * static_cast<float>(y_q[n] - yq.zero_point);
    std::printf("y_int8[%d] = s_y (y_q - z_y) = %.6f   float %.6f   error %.6f (%.2f steps)\n", n, deq, y[n], deq - y[n],
                (deq - y[n]) / yq.scale);
  }

  std::printf("\n=== Part C: the library's QuantizedLinear ===\n");
  QParams wq;
  wq.scheme = QScheme::per_channel_symmetric;
  wq.axis = 0;
  wq.quant_min = -128;
  wq.quant_max = 127;
  wq.scale = s_w;
  wq.zero_point.assign(N, 0);
  QParams oq;
  oq.scale = {yq.scale};
  oq.zero_point = {yq.zero_point};
  oq.quant_min = 0;
  oq.quant_max = 127;
  auto iq = std::make_shared<QParams>();
  iq->scale = {xq.scale};
  iq->zero_point = {xq.zero_point};
  iq->quant_min = 0;
  iq->quant_max = 127;
  quant::QuantizedLinear layer(from_vector(W, {N, K}), from_vector(b, {N}), wq, oq, iq, quant::FusedActivation::none, "walkthrough");
  const Tensor out = layer(from_vector(x, {1, K}));
  bool same = true;
  for (int n = 0; n < N; ++n) {
    const int v = out.data<uint8_t>()[n];
    std::printf("QuantizedLinear y_q[%d] = %d\n", n, v);
    same &= v == y_q[n];
  }
  std::printf("%s\n", same ? "the library computes exactly the integers above" : "MISMATCH with the hand computation");
  return same ? 0 : 1;
}

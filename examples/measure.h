// Two measurements the MobileNetV2 examples print: a model's state size and
// its latency. Public API only (tinyqat.h).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "tinyqat.h"

// Bytes of every parameter and buffer: what a saved state_dict holds.
inline int64_t state_bytes(const tq::nn::Module& m) {
  int64_t n = 0;
  for (auto& [name, t] : tq::io::state_dict(m)) n += t.numel() * static_cast<int64_t>(tq::dtype_size(t.dtype()));
  return n;
}

// The median of `repeats` timed forward passes, in milliseconds.
inline double latency_ms(tq::nn::Module& m, const tq::Tensor& x, int repeats) {
  tq::NoGradGuard no_grad;
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    m(x);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

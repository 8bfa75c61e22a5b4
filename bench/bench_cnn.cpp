// Convolutional networks on one thread (run with OPENBLAS_NUM_THREADS=1):
//   1. the cnn model's SGD train step at batch 64 (1x28x28 inputs), and the
//      time of the same step's convolution and linear GEMMs alone (the same
//      cblas_sgemm calls, shapes and transposes, with nothing around them);
//   2. MobileNetV2 forward, 1x3x224x224, eval mode.
// The PyTorch figures for the same work come from bench/pytorch_cnn_reference.py.
//
//   OPENBLAS_NUM_THREADS=1 ./build/bench/bench_cnn
//   OPENBLAS_NUM_THREADS=1 ./build/bench/bench_cnn --loop 200   # only 200 train steps, for a profiler
//   OPENBLAS_NUM_THREADS=1 ./build/bench/bench_cnn --loop-mobilenet 100   # only MobileNetV2 forwards
//   --loops scalar|avx2|avx512: the build of the fused loops (pool_kernels.h)
//   to run, by default the best the CPU has: what a CPU without AVX-512 (or
//   without AVX2) runs, beside this machine's OpenBLAS kernel
#include <cblas.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "tensor/pool_kernels.h"
#include "tinyqat.h"

using namespace tq;

namespace {

struct Gemm {
  bool ta, tb;
  int M, N, K, count;  // C (M, N) = op(A) (M, K) op(B) (K, N), `count` times per step
};

// The sgemm calls of one cnn train step at batch 64 (conv1's input gradient is never needed).
std::vector<Gemm> cnn_step_gemms(int B) {
  return {
      {false, false, 32, 784, 9, B},     // conv1 forward: W (32, 9) @ col (9, 784), per image
      {false, true, 32, 9, 784, B},      // conv1 weight gradient: dy (32, 784) @ col^T
      {false, false, 64, 196, 288, B},   // conv2 forward
      {true, false, 288, 196, 64, B},    // conv2 input gradient: W^T @ dy
      {false, true, 64, 288, 196, B},    // conv2 weight gradient
      {false, true, B, 128, 3136, 1},    // fc1 forward: x W^T
      {false, false, B, 3136, 128, 1},   // fc1 input gradient: g W
      {true, false, 128, 3136, B, 1},    // fc1 weight gradient: g^T x
      {false, true, B, 10, 128, 1},      // fc2 forward
      {false, false, B, 128, 10, 1},     // fc2 input gradient
      {true, false, 10, 128, B, 1},      // fc2 weight gradient
  };
}

void run_gemms(const std::vector<Gemm>& gemms, std::vector<float>& a, std::vector<float>& b, std::vector<float>& c) {
  for (const Gemm& g : gemms)
    for (int i = 0; i < g.count; ++i)
      cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.M, g.N, g.K,
                  1.f, a.data(), g.ta ? g.M : g.K, b.data(), g.tb ? g.K : g.N, 1.f, c.data(), g.N);
}

}  // namespace

int main(int argc, char** argv) {
  tune_allocator_for_training();  // as the tinyqat command does: freed activations stay in the heap
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--loops") {
      const std::string level = argv[i + 1];
      if (level != "scalar" && level != "avx2" && level != "avx512") {
        std::fprintf(stderr, "bench_cnn: --loops takes scalar, avx2 or avx512, not '%s'\n", level.c_str());
        return 2;
      }
      kernels::set_fused_kernels(level == "avx512" ? SimdLevel::avx512
                                 : level == "avx2" ? SimdLevel::avx2
                                                   : SimdLevel::scalar);
    }
  std::printf("fused loops: %s build\n", to_string(kernels::fused_kernels()));
  const int B = 64;
  manual_seed(0);
  auto model = models::cnn();
  nn::SGD opt(model->parameters(), nn::SGDOptions{.lr = 0.01, .momentum = 0.9});
  const Tensor x = randn({B, 1, 28, 28});
  const Tensor y = randint(0, 10, {B});
  auto step = [&] {
    opt.zero_grad();
    cross_entropy((*model)(x), y).backward();
    opt.step();
  };
  if (const long loop = bench::flag_value(argc, argv, "--loop", 0); loop > 0) {
    for (long i = 0; i < loop; ++i) step();
    return 0;
  }
  if (const long loop = bench::flag_value(argc, argv, "--loop-mobilenet", 0); loop > 0) {
    auto mobilenet = models::mobilenet_v2();
    mobilenet->eval();
    const Tensor image = randn({1, 3, 224, 224});
    NoGradGuard no_grad;
    for (long i = 0; i < loop; ++i) (*mobilenet)(image);
    return 0;
  }

  const auto gemms = cnn_step_gemms(B);
  size_t most = 0;
  for (const Gemm& g : gemms) most = std::max<size_t>(most, static_cast<size_t>(std::max({g.M * g.K, g.K * g.N, g.M * g.N})));
  std::vector<float> a(most, 0.01f), b(most, 0.02f), c(most, 0.f);
  // The step and its GEMMs in alternating samples: a change of load during
  // the run slows both sides of the ratio alike.
  const bench::PairTiming t = bench::measure_pair(step, [&] { run_gemms(gemms, a, b, c); }, 21, 1, 1, 5);
  const bench::Timing &t_step = t.a, &t_gemm = t.b;

  std::printf("cnn train step, batch 64: %.2f ms (thread CPU %.2f ms)\n", t_step.median * 1e3, t_step.cpu_median * 1e3);
  std::printf("  its conv + linear GEMMs alone: %.2f ms (CPU %.2f ms); step / GEMMs = %.2fx (target <= 1.3x)\n",
              t_gemm.median * 1e3, t_gemm.cpu_median * 1e3, t_step.cpu_median / t_gemm.cpu_median);
  std::printf("  step / GEMMs, median of the 21 alternating pairs (thread CPU): %.2fx\n", 1.0 / t.cpu_ratio);

  manual_seed(0);
  auto mobilenet = models::mobilenet_v2();
  mobilenet->eval();
  const Tensor image = randn({1, 3, 224, 224});
  const bench::Timing t_mb = bench::measure(
      [&] {
        NoGradGuard no_grad;
        (*mobilenet)(image);
      },
      {.repeats = 15, .inner = 1, .warmup = 3});
  std::printf("mobilenet_v2 forward, 1x3x224x224: %.2f ms (thread CPU %.2f ms)\n", t_mb.median * 1e3,
              t_mb.cpu_median * 1e3);
  return 0;
}

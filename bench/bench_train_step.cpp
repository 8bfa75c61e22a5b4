// What does a float training step cost beyond its matrix products?
//
// (a) MLP 784-256-128-10, batch 64, one thread: forward + cross-entropy +
//     backward + SGD (momentum) step, beside the very same GEMMs called
//     directly through cblas_sgemm in the same run. The ratio step / GEMMs is
//     the framework's overhead (goal: <= 1.25).
// (b) The seed's SimpleNN (10 -> 5 -> 2, ReLUs) at batch 1: the whole train
//     step in microseconds, where per-op overhead is all there is (goal: <= 5 us;
//     PyTorch 1.13 takes about 250 us on this machine).
//
// Both the wall clock and the thread's CPU time are reported; on a machine
// shared with other work the CPU time is the figure to trust.
//
// Run: ./build/bench/bench_train_step [--json] [--repeats N]
#include <cblas.h>

#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "tinyqat.h"

// OpenBLAS's own call (declared in its cblas.h, repeated here for builds that
// use a cblas.h without it).
extern "C" void openblas_set_num_threads(int num_threads);

using namespace tq;

namespace {

constexpr double kStepOverGemmGoal = 1.25;
constexpr double kSimpleNNGoalMicroseconds = 5.0;

struct MLP : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(784, 256));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(256, 128));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(128, 10));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

// One row-major GEMM of the step: C (M, N) = op(A) op(B) (+ C when beta = 1).
struct Gemm {
  const char* what;
  bool trans_a, trans_b;
  int M, N, K;
  float beta;
  std::vector<float> a, b, c;
  Gemm(const char* what, bool ta, bool tb, int M, int N, int K, float beta)
      : what(what), trans_a(ta), trans_b(tb), M(M), N(N), K(K), beta(beta),
        a(static_cast<size_t>(M) * K, 0.01f), b(static_cast<size_t>(K) * N, 0.02f), c(static_cast<size_t>(M) * N, 0.f) {}
  void run() {
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.f,
                a.data(), lda, b.data(), ldb, beta, c.data(), N);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const bool json = bench::has_flag(argc, argv, "--json");
  const int repeats = static_cast<int>(bench::flag_value(argc, argv, "--repeats", 51));
  openblas_set_num_threads(1);

  // ---- (a) MLP 784-256-128-10, batch 64 ----
  constexpr int B = 64;
  manual_seed(0);
  MLP mlp;
  nn::SGD mlp_opt(mlp.parameters(), {.lr = 0.01, .momentum = 0.9});
  const Tensor x = randn({B, 784});
  const Tensor y = randint(0, 10, {B});
  auto mlp_step = [&] {
    mlp_opt.zero_grad();
    Tensor loss = cross_entropy(mlp(x), y);
    loss.backward();
    mlp_opt.step();
  };

  // The same products the step makes (x W^T forward with the bias already in
  // C; dW = dY^T X; dX = dY W; no dX for the first layer, whose input needs no gradient).
  std::vector<Gemm> gemms = {
      {"fwd fc1  (64x784)(784x256)^T", false, true, B, 256, 784, 1.f},
      {"fwd fc2  (64x256)(256x128)^T", false, true, B, 128, 256, 1.f},
      {"fwd fc3  (64x128)(128x10)^T", false, true, B, 10, 128, 1.f},
      {"dW fc3   (10x64)(64x128)", true, false, 10, 128, B, 1.f},
      {"dX fc3   (64x10)(10x128)", false, false, B, 128, 10, 0.f},
      {"dW fc2   (128x64)(64x256)", true, false, 128, 256, B, 1.f},
      {"dX fc2   (64x128)(128x256)", false, false, B, 256, 128, 0.f},
      {"dW fc1   (256x64)(64x784)", true, false, 256, 784, B, 1.f},
  };
  auto gemms_only = [&] {
    for (auto& g : gemms) g.run();
  };

  // Alternate the two measurements, and take the ratio within each pair:
  // a busy machine or a clock change then slows both sides of a ratio alike.
  // Both clocks are kept: wall time, and the thread's CPU time, which stays
  // meaningful when other processes compete for the cores.
  std::vector<double> step_samples, gemm_samples, ratios, step_cpu, gemm_cpu, cpu_ratios;
  // One step per sample: a sample then fits in a scheduler time slice, so on
  // a busy machine most samples run undisturbed and the median ignores the rest.
  const bench::MeasureOptions one{.repeats = 1, .inner = 1, .warmup = 0};
  bench::measure(mlp_step, {.repeats = 1, .inner = 10, .warmup = 0});
  bench::measure(gemms_only, {.repeats = 1, .inner = 10, .warmup = 0});
  for (int r = 0; r < repeats; ++r) {
    const bench::Timing s = bench::measure(mlp_step, one), g = bench::measure(gemms_only, one);
    step_samples.push_back(s.median);
    gemm_samples.push_back(g.median);
    ratios.push_back(s.median / g.median);
    step_cpu.push_back(s.cpu_median);
    gemm_cpu.push_back(g.cpu_median);
    cpu_ratios.push_back(s.cpu_median / g.cpu_median);
  }
  const double step_s = bench::median_of(step_samples), gemm_s = bench::median_of(gemm_samples);
  const double ratio = bench::median_of(ratios);
  const double step_cpu_s = bench::median_of(step_cpu), gemm_cpu_s = bench::median_of(gemm_cpu);
  const double cpu_ratio = bench::median_of(cpu_ratios);

  // Two parts alone, for orientation: forward + loss (no graph), and the optimizer.
  auto forward_only = [&] {
    NoGradGuard no_grad;
    cross_entropy(mlp(x), y);
  };
  const bench::Timing fwd_nograd = bench::measure(forward_only, {.repeats = repeats, .inner = 1});
  const bench::Timing opt_t = bench::measure([&] { mlp_opt.zero_grad(); mlp_opt.step(); }, {.repeats = repeats, .inner = 5});

  // ---- (b) SimpleNN, batch 1 ----
  manual_seed(0);
  SimpleNN net;
  nn::SGD net_opt(net.parameters(), 0.01);
  const Tensor x1 = randn({1, 10});
  const Tensor y1 = from_vector_i64({1}, {1});
  auto net_step = [&] {
    net_opt.zero_grad();
    Tensor loss = cross_entropy(net(x1), y1);
    loss.backward();
    net_opt.step();
  };
  // Short samples (about 0.2 ms), many of them, for the same reason as above.
  const int inner = bench::calibrate_inner(net_step, 0.0002);
  const bench::Timing net_t = bench::measure(net_step, {.repeats = 4 * repeats, .inner = inner});
  const double net_us = net_t.median * 1e6, net_cpu_us = net_t.cpu_median * 1e6;

  if (json) {
    bench::Json mlp_json;
    mlp_json.add("model", "784-256-128-10")
        .add("batch", B)
        .add("threads", 1)
        .add("step_median_s", step_s)
        .add("gemms_median_s", gemm_s)
        .add("step_over_gemms", ratio)
        .add("step_cpu_median_s", step_cpu_s)
        .add("gemms_cpu_median_s", gemm_cpu_s)
        .add("step_over_gemms_cpu", cpu_ratio)
        .add("goal_step_over_gemms", kStepOverGemmGoal)
        .add("forward_loss_nograd", fwd_nograd)
        .add("optimizer_zero_grad_step", opt_t);
    bench::Json net_json;
    net_json.add("model", "10-5-2").add("batch", 1).add("step", net_t).add("step_median_us", net_us)
        .add("step_cpu_median_us", net_cpu_us).add("goal_us", kSimpleNNGoalMicroseconds);
    bench::Json out;
    out.add("benchmark", "train_step").add("mlp", mlp_json).add("simple_nn", net_json);
    std::puts(out.str().c_str());
    return 0;
  }

  auto verdict = [](bool ok) { return ok ? "ok" : "MISSED"; };
  std::printf("train step benchmark (1 OpenBLAS thread, median of %d pairs; wall clock, and thread CPU time in [])\n\n",
              repeats);
  std::printf("(a) MLP 784-256-128-10, batch %d, SGD momentum 0.9\n", B);
  std::printf("    train step (fwd + loss + bwd + SGD)   %8.1f us  [%8.1f us]\n", step_s * 1e6, step_cpu_s * 1e6);
  std::printf("    the same 8 GEMMs via cblas_sgemm      %8.1f us  [%8.1f us]\n", gemm_s * 1e6, gemm_cpu_s * 1e6);
  std::printf("    ratio step / GEMMs (median of pairs)  %8.3f     [%8.3f   ]  goal <= %.2f: %s [%s]\n", ratio, cpu_ratio,
              kStepOverGemmGoal, verdict(ratio <= kStepOverGemmGoal), verdict(cpu_ratio <= kStepOverGemmGoal));
  std::printf("    forward + loss alone (no grad)        %8.1f us  [%8.1f us]\n", fwd_nograd.median * 1e6,
              fwd_nograd.cpu_median * 1e6);
  std::printf("    zero_grad + SGD step alone            %8.1f us  [%8.1f us]\n\n", opt_t.median * 1e6,
              opt_t.cpu_median * 1e6);
  std::printf("(b) SimpleNN 10-5-2, batch 1, SGD (median of %d samples of %d steps)\n", net_t.repeats, net_t.inner);
  std::printf("    train step                            %8.2f us  [%8.2f us]  goal <= %.1f us: %s [%s]\n", net_us,
              net_cpu_us, kSimpleNNGoalMicroseconds, verdict(net_us <= kSimpleNNGoalMicroseconds),
              verdict(net_cpu_us <= kSimpleNNGoalMicroseconds));
  return 0;
}

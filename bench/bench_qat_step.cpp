// What does quantization-aware training cost beyond float training?
//
// (a) The seed's SimpleNN (10 -> 5 -> 2, ReLUs) at batch 1: a float train step
//     and a QAT train step (prepare_qat with the x86 preset), in microseconds.
//     At this size per-op overhead is all there is (goal: <= 5 us each;
//     PyTorch 1.13 takes about 250 us float / 590 us QAT on this machine).
// (b) MLP 784-256-128-10 at batch 64, one OpenBLAS thread: the QAT step
//     against the float step of an identical model, measured in the same run
//     (goal: QAT / float <= 1.25).
// (c) Where the QAT extra goes: the pieces a QAT step adds, each alone, on the
//     MLP's largest tensors (fc1's weight, 256 x 784, and its input, 64 x 784).
//
// All figures are medians over many short samples (a fraction of a
// millisecond each, so that on a busy machine most samples run undisturbed);
// the float and QAT steps are sampled in alternating pairs, and the QAT /
// float ratio is the median of the per-pair ratios, so that load changing
// during the run hits both alike. Each sample is timed twice: wall clock, and
// the thread's CPU time, which other processes sharing the core disturb much
// less. The goals are judged on wall time; the load average is printed too.
//
// Run: ./build/bench/bench_qat_step [--json] [--repeats N]   (N pairs, default 101)
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <vector>

#include "bench_util.h"
#include "quant/quant_kernels.h"
#include "tinyqat.h"

// OpenBLAS's own call (declared in its cblas.h, repeated here for builds that
// use a cblas.h without it).
extern "C" void openblas_set_num_threads(int num_threads);

using namespace tq;

namespace {

constexpr double kSimpleNNGoalMicroseconds = 5.0;
constexpr double kQatOverFloatGoal = 1.25;

struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

struct MLP : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(784, 256));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(256, 128));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(128, 10));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

// A train step of `model`: zero_grad, forward, cross-entropy, backward, SGD.
template <class M>
struct Trainer {
  M& model;
  nn::SGD opt;
  Tensor x, y;
  Trainer(M& m, nn::SGDOptions o, Tensor x, Tensor y) : model(m), opt(m.parameters(), o), x(x), y(y) {}
  void step() {
    opt.zero_grad();
    Tensor loss = cross_entropy(model(x), y);
    loss.backward();
    opt.step();
  }
};

// The 1-minute load average (Linux), or -1.
double load_average() {
  std::ifstream f("/proc/loadavg");
  double load = -1;
  f >> load;
  return load;
}

// Two functions sampled in alternating pairs (a, b, a, b, ...) after a
// warm-up. Per call: the median (and min / max) of the wall-clock samples
// and the median of the same samples in thread CPU time; and the medians of
// the per-pair ratios b / a (wall, CPU).
struct PairResult {
  bench::Timing a, b;
  double ratio = 0, cpu_ratio = 0;
};

template <class A, class B>
PairResult measure_pair(A&& a, B&& b, int repeats, int inner_a, int inner_b) {
  struct Samples {
    std::vector<double> wall, cpu;
  } sa, sb, warmup;
  auto sample = [](auto& fn, int inner, Samples& out) {
    const double w0 = bench::now_seconds(), c0 = bench::thread_cpu_seconds();
    for (int i = 0; i < inner; ++i) fn();
    out.cpu.push_back((bench::thread_cpu_seconds() - c0) / inner);
    out.wall.push_back((bench::now_seconds() - w0) / inner);
  };
  for (int w = 0; w < 5; ++w) {
    sample(a, inner_a, warmup);
    sample(b, inner_b, warmup);
  }
  std::vector<double> ratios, cpu_ratios;
  for (int r = 0; r < repeats; ++r) {
    sample(a, inner_a, sa);
    sample(b, inner_b, sb);
    ratios.push_back(sb.wall.back() / sa.wall.back());
    cpu_ratios.push_back(sb.cpu.back() / sa.cpu.back());
  }
  auto summary = [&](const Samples& s, int inner) {
    bench::Timing t;
    t.median = bench::median_of(s.wall);
    t.min = *std::min_element(s.wall.begin(), s.wall.end());
    t.max = *std::max_element(s.wall.begin(), s.wall.end());
    t.cpu_median = bench::median_of(s.cpu);
    t.repeats = repeats;
    t.inner = inner;
    return t;
  };
  return {summary(sa, inner_a), summary(sb, inner_b), bench::median_of(ratios), bench::median_of(cpu_ratios)};
}

}  // namespace

int main(int argc, char** argv) {
  const bool json = bench::has_flag(argc, argv, "--json");
  const int repeats = static_cast<int>(bench::flag_value(argc, argv, "--repeats", 101));
  openblas_set_num_threads(1);
  const double load_before = load_average();

  // ---- (a) SimpleNN, batch 1 ----
  manual_seed(0);
  SimpleNN float_net, qat_net;
  qat_net.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(qat_net);
  const Tensor x1 = randn({1, 10});
  const Tensor y1 = from_vector_i64({1}, {1});
  Trainer float_small(float_net, {.lr = 0.01}, x1, y1);
  Trainer qat_small(qat_net, {.lr = 0.01}, x1, y1);
  // Samples of about 0.2 ms: long enough for the clocks, short enough to
  // fall between other processes' time slices.
  const int inner_small_f = bench::calibrate_inner([&] { float_small.step(); }, 2e-4);
  const int inner_small_q = bench::calibrate_inner([&] { qat_small.step(); }, 2e-4);
  const PairResult small_pair = measure_pair([&] { float_small.step(); }, [&] { qat_small.step(); }, 4 * repeats,
                                        inner_small_f, inner_small_q);
  const bench::Timing& small_f = small_pair.a;
  const bench::Timing& small_q = small_pair.b;

  // ---- (b) MLP 784-256-128-10, batch 64 ----
  constexpr int B = 64;
  manual_seed(0);
  MLP float_mlp, qat_mlp;
  qat_mlp.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(qat_mlp);
  const Tensor x = randn({B, 784});
  const Tensor y = randint(0, 10, {B});
  Trainer float_big(float_mlp, {.lr = 0.01, .momentum = 0.9}, x, y);
  Trainer qat_big(qat_mlp, {.lr = 0.01, .momentum = 0.9}, x, y);
  const PairResult big_pair = measure_pair([&] { float_big.step(); }, [&] { qat_big.step(); }, repeats, 1, 1);
  const bench::Timing& big_f = big_pair.a;
  const bench::Timing& big_q = big_pair.b;
  const double ratio = big_pair.ratio, ratio_cpu = big_pair.cpu_ratio;

  // ---- (c) The QAT pieces alone, on fc1's weight and input ----
  const Tensor w = kernels::clone(float_mlp.fc1->weight);  // (256, 784)
  quant::MovingAveragePerChannelMinMaxObserver w_obs(quant::weight_spec(8, QScheme::per_channel_symmetric));
  quant::MovingAverageMinMaxObserver x_obs(quant::activation_spec(7));
  const bench::MeasureOptions piece{.repeats = repeats, .inner = 4};
  const bench::Timing t_wobs = bench::measure([&] { w_obs.observe(w); }, piece);
  const bench::Timing t_xobs = bench::measure([&] { x_obs.observe(x); }, piece);
  const QParams wq = w_obs.calculate_qparams(), xq = x_obs.calculate_qparams();
  const bench::Timing t_wfq = bench::measure([&] { NoGradGuard g; quant::fake_quantize(w, wq); }, piece);
  const bench::Timing t_xfq = bench::measure([&] { NoGradGuard g; quant::fake_quantize(x, xq); }, piece);
  // As in training: the weight's .grad is zeroed in place (SGD::zero_grad),
  // and the STE adds the masked gradient into it.
  Tensor w_leaf = kernels::clone(w);
  w_leaf.requires_grad_();
  w_leaf.set_grad(zeros({256, 784}));
  const Tensor g_w = randn({256, 784});
  const bench::Timing t_wfq_grad = bench::measure(
      [&] {
        kernels::fill_(w_leaf.grad(), 0.0);
        Tensor out = quant::fake_quantize(w_leaf, wq);
        backward(out, g_w);
      },
      piece);
  const double load_after = load_average();

  if (json) {
    bench::Json small;
    small.add("model", "10-5-2").add("batch", 1).add("float_step", small_f).add("qat_step", small_q)
        .add("float_step_median_us", small_f.median * 1e6).add("qat_step_median_us", small_q.median * 1e6)
        .add("qat_over_float", small_pair.ratio).add("qat_over_float_cpu", small_pair.cpu_ratio)
        .add("goal_us", kSimpleNNGoalMicroseconds);
    bench::Json big;
    big.add("model", "784-256-128-10").add("batch", B).add("threads", 1).add("float_step", big_f)
        .add("qat_step", big_q).add("qat_over_float", ratio).add("qat_over_float_cpu", ratio_cpu).add("goal_qat_over_float", kQatOverFloatGoal);
    bench::Json pieces;
    pieces.add("per_channel_observer_256x784", t_wobs).add("per_tensor_observer_64x784", t_xobs)
        .add("fake_quant_per_channel_256x784", t_wfq).add("fake_quant_per_tensor_64x784", t_xfq)
        .add("zero_grad_fake_quant_ste_256x784", t_wfq_grad);
    bench::Json out;
    out.add("benchmark", "qat_step").add("quant_kernels", quant::quant_kernel_uses_avx2() ? "avx2" : "reference")
        .add("load_average_before", load_before).add("load_average_after", load_after)
        .add("simple_nn", small).add("mlp", big).add("pieces", pieces);
    std::puts(out.str().c_str());
    return 0;
  }

  auto ok = [](bool b) { return b ? "ok" : "MISSED"; };
  const double sf = small_f.median * 1e6, sq = small_q.median * 1e6;
  std::printf("QAT train step benchmark (1 OpenBLAS thread; medians of %d / %d sample pairs; QAT loops: %s)\n",
              4 * repeats, repeats, quant::quant_kernel_uses_avx2() ? "AVX2" : "reference");
  std::printf("load average %.2f before, %.2f after (2 cores: above ~1, other processes share the core)\n\n",
              load_before, load_after);
  std::printf("                                            wall        thread CPU\n");
  std::printf("(a) SimpleNN 10-5-2, batch 1, SGD\n");
  std::printf("    float train step                  %8.2f us   %8.2f us   (goal <= %.1f us) %s\n", sf,
              small_f.cpu_median * 1e6, kSimpleNNGoalMicroseconds, ok(sf <= kSimpleNNGoalMicroseconds));
  std::printf("    QAT train step                    %8.2f us   %8.2f us   (goal <= %.1f us) %s\n", sq,
              small_q.cpu_median * 1e6, kSimpleNNGoalMicroseconds, ok(sq <= kSimpleNNGoalMicroseconds));
  std::printf("    ratio QAT / float (median of pairs) %6.2f      %8.2f\n\n", small_pair.ratio, small_pair.cpu_ratio);
  std::printf("(b) MLP 784-256-128-10, batch %d, SGD momentum 0.9\n", B);
  std::printf("    float train step                  %8.1f us   %8.1f us\n", big_f.median * 1e6,
              big_f.cpu_median * 1e6);
  std::printf("    QAT train step                    %8.1f us   %8.1f us\n", big_q.median * 1e6,
              big_q.cpu_median * 1e6);
  std::printf("    ratio QAT / float (median of pairs) %6.3f      %8.3f      (goal <= %.2f) %s\n\n", ratio, ratio_cpu,
              kQatOverFloatGoal, ok(ratio <= kQatOverFloatGoal));
  std::printf("(c) QAT pieces alone (wall)\n");
  std::printf("    per-channel observer, W (256, 784)      %8.1f us\n", t_wobs.median * 1e6);
  std::printf("    per-tensor observer, x (64, 784)        %8.1f us\n", t_xobs.median * 1e6);
  std::printf("    fake quant per channel, W               %8.1f us\n", t_wfq.median * 1e6);
  std::printf("    fake quant per tensor, x                %8.1f us\n", t_xfq.median * 1e6);
  std::printf("    zero W.grad + fake quant W + STE        %8.1f us\n", t_wfq_grad.median * 1e6);
  return 0;
}

// bench_qat_step — where the extra cost of a QAT step goes. `bench_train_step`
// (or `tinyqat bench`) gives the QAT / float ratio of a whole step; this
// program times the pieces QAT adds, each alone, on the MLP's largest
// tensors: fc1's weight (256 x 784) and its input at batch 64 (64 x 784).
//
//   bench_qat_step [--quick] [--json]
#include <cstdio>

#include "quant/quant_kernels.h"
#include "suite.h"
#include "tinyqat.h"

using namespace tq;

int main(int argc, char** argv) {
  const auto o = bench::parse_program_options(argc, argv);
  manual_seed(0);
  const Tensor w = randn({256, 784});
  const Tensor x = randn({64, 784});
  quant::MovingAveragePerChannelMinMaxObserver w_obs(quant::weight_spec(8, QScheme::per_channel_symmetric));
  quant::MovingAverageMinMaxObserver x_obs(quant::activation_spec(7));
  const bench::MeasureOptions piece{.repeats = o.suite.quick ? 5 : 51, .inner = 4};
  const bench::Timing t_wobs = bench::measure([&] { w_obs.observe(w); }, piece);
  const bench::Timing t_xobs = bench::measure([&] { x_obs.observe(x); }, piece);
  const QParams wq = w_obs.calculate_qparams(), xq = x_obs.calculate_qparams();
  const bench::Timing t_wfq = bench::measure([&] { NoGradGuard g; quant::fake_quantize(w, wq); }, piece);
  const bench::Timing t_xfq = bench::measure([&] { NoGradGuard g; quant::fake_quantize(x, xq); }, piece);
  // As in training: the weight's .grad is zeroed in place (SGD::zero_grad),
  // and the straight-through estimator adds the masked gradient into it.
  Tensor w_leaf = kernels::clone(w);
  w_leaf.requires_grad_();
  w_leaf.set_grad(zeros({256, 784}));
  const Tensor g_w = randn({256, 784});
  const bench::Timing t_ste = bench::measure(
      [&] {
        kernels::fill_(w_leaf.grad(), 0.0);
        Tensor out = quant::fake_quantize(w_leaf, wq);
        backward(out, g_w);
      },
      piece);

  const char* kernels = to_string(quant::quant_kernel_level());
  if (o.json) {
    const nlohmann::ordered_json j = {{"quant_kernels", kernels},
                                      {"per_channel_observer_256x784", t_wobs},
                                      {"per_tensor_observer_64x784", t_xobs},
                                      {"fake_quant_per_channel_256x784", t_wfq},
                                      {"fake_quant_per_tensor_64x784", t_xfq},
                                      {"zero_grad_fake_quant_ste_256x784", t_ste}};
    std::puts(j.dump().c_str());
    return 0;
  }
  std::printf("QAT pieces alone (%s loops; median of %d samples, wall [thread CPU])\n", kernels, piece.repeats);
  auto row = [](const char* what, const bench::Timing& t) {
    std::printf("    %-40s %8.1f us [%8.1f]\n", what, t.median * 1e6, t.cpu_median * 1e6);
  };
  row("per-channel observer, W (256, 784)", t_wobs);
  row("per-tensor observer, x (64, 784)", t_xobs);
  row("fake quant per channel, W", t_wfq);
  row("fake quant per tensor, x", t_xfq);
  row("zero W.grad + fake quant W + STE", t_ste);
  return 0;
}

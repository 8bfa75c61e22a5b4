// A training recipe measured over several seeds (docs/optim.md §9): the MLP
// 784-256-128-10 on Fashion-MNIST, float training then LSQ QAT at one or
// more bit widths (WnAn), each choosing its best epoch on a validation set
// carved from the training set; the test set is touched once per model, at
// the end.
//
//   bench_recipes [first_seed [last_seed [float_epochs [qat_epochs [bits]]]]]
//
// bits: comma-separated widths, e.g. 4,3,8 (default 4): W4A4, W3A3, W8A8.
// Recipe (float): SGD, momentum 0.9, nesterov, lr 0.05, weight decay 5e-4
// (not on biases), batch 128, linear warm-up over the first epoch then cosine
// to 0, stepped per batch; 5000 validation samples.
// Recipe (QAT, each width from the same float model and the same loader
// position): fused Linear+ReLU, make_lsq_qat_qconfig(n, n); SGD momentum
// 0.9, lr 0.005 (a tenth of the float rate) on the weights and the
// quantizers' step sizes (no weight decay on those), cosine per batch.
// Prints one line per seed and width, and the mean / sd / worst per width.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "tinyqat.h"

using namespace tq;

namespace {

double accuracy(nn::Module& model, const io::Dataset& data) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  io::DataLoader loader(data, {.batch_size = 1000, .shuffle = false});
  io::Batch b;
  int64_t correct = 0;
  while (loader.next(b)) {
    const Tensor pred = kernels::argmax(kernels::contiguous(kernels::to_float(model(b.images))), 1);
    for (int64_t i = 0; i < b.size(); ++i) correct += pred.data<int64_t>()[i] == b.labels.data<int64_t>()[i];
  }
  model.train(was_training);
  return 100.0 * static_cast<double>(correct) / static_cast<double>(data.size());
}

std::vector<int64_t> predictions(nn::Module& model, const io::Dataset& data) {
  model.eval();
  NoGradGuard no_grad;
  io::DataLoader loader(data, {.batch_size = 1000, .shuffle = false});
  io::Batch b;
  std::vector<int64_t> out;
  while (loader.next(b)) {
    const Tensor pred = kernels::argmax(kernels::contiguous(kernels::to_float(model(b.images))), 1);
    out.insert(out.end(), pred.data<int64_t>(), pred.data<int64_t>() + b.size());
  }
  return out;
}

struct Fit {
  double best_val = -1;
  int best_epoch = -1;
};

// Trains for `epochs`, validating after each; restores the best epoch's weights.
Fit fit(nn::Module& model, nn::Optimizer& opt, nn::LRScheduler& schedule, io::DataLoader& loader,
        const io::Dataset& val, int epochs, const char* label) {
  Fit f;
  nn::ModelSnapshot best;
  io::Batch batch;
  for (int e = 0; e < epochs; ++e) {
    model.train();
    double loss_sum = 0;
    int64_t steps = 0;
    while (loader.next(batch)) {
      opt.zero_grad();
      Tensor loss = cross_entropy(model(batch.images), batch.labels);
      loss_sum += loss.item();
      loss.backward();
      opt.step();
      schedule.step();
      ++steps;
    }
    const double v = accuracy(model, val);
    std::fprintf(stderr, "  %s epoch %d: loss %.4f, validation %.2f%%, lr %.2e\n", label, e + 1,
                 loss_sum / static_cast<double>(steps), v, opt.lr(0));
    if (v > f.best_val) {
      f.best_val = v;
      f.best_epoch = e + 1;
      best = nn::ModelSnapshot::take(model);
    }
  }
  best.restore(model);
  model.eval();
  return f;
}

}  // namespace

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double sd_of(const std::vector<double>& v) {  // sample standard deviation
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

int main(int argc, char** argv) {
  const int first = argc > 1 ? std::atoi(argv[1]) : 0;
  const int last = argc > 2 ? std::atoi(argv[2]) : 4;
  const int float_epochs = argc > 3 ? std::atoi(argv[3]) : 15;
  const int qat_epochs = argc > 4 ? std::atoi(argv[4]) : 4;
  std::vector<int> widths;
  {
    std::stringstream ss(argc > 5 ? argv[5] : "4");
    std::string item;
    while (std::getline(ss, item, ',')) widths.push_back(std::atoi(item.c_str()));
  }
  for (int b : widths)
    if (b < 2 || b > 8) {
      std::fprintf(stderr, "bench_recipes: bit width %d is outside 2..8\n", b);
      return 2;
    }
  const io::Dataset full_train = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::train);
  const io::Dataset test = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::test);
  std::printf("seed | float best epoch | float val %% | float test %% | bits | QAT best epoch | QAT val %% | fake-quant test %% | int8 test %% | int8 - float | fq/int8 agreement %%\n");
  std::vector<double> floats;
  std::vector<std::vector<double>> int8s(widths.size()), gaps(widths.size()), agreements(widths.size());
  for (int seed = first; seed <= last; ++seed) {
    const auto t0 = std::chrono::steady_clock::now();
    manual_seed(static_cast<uint64_t>(seed));
    const io::TrainValidationSplit split = io::split_validation(full_train, 5000, static_cast<uint64_t>(seed));
    io::DataLoader loader(split.train, {.batch_size = 128, .seed = static_cast<uint64_t>(seed)});
    auto model = nn::make_mlp({784, 256, 128, 10});

    // ---- float ----
    const nn::ParameterSplit biases = nn::split_parameters(*model, nn::is_bias_name);
    nn::SGD opt({{.name = "weights", .params = nn::ParameterSplit::tensors(biases.rest)},
                 {.name = "biases", .params = nn::ParameterSplit::tensors(biases.selected), .weight_decay = 0.0}},
                {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
    const int64_t steps = loader.num_batches();
    auto schedule = nn::make_lr_scheduler(opt, {.kind = nn::LRScheduleKind::cosine,
                                                .total_steps = steps * float_epochs,
                                                .warmup_steps = steps,
                                                .warmup_start_factor = 0.1});
    const Fit ff = fit(*model, opt, *schedule, loader, split.validation, float_epochs, "float");
    const double float_test = accuracy(*model, test);
    floats.push_back(float_test);
    const nn::ModelSnapshot float_weights = nn::ModelSnapshot::take(*model);
    const io::LoaderState after_float = loader.state();

    // ---- LSQ QAT at each width, each from the float model and the same loader position ----
    for (size_t k = 0; k < widths.size(); ++k) {
      const int bits = widths[k];
      auto qmodel = nn::make_mlp({784, 256, 128, 10});
      float_weights.restore(*qmodel);
      loader.set_state(after_float);
      quant::fuse_linear_relu(*qmodel);
      qmodel->qconfig = quant::make_lsq_qat_qconfig(bits, bits);
      quant::prepare_qat(*qmodel);
      qmodel->train();
      {  // one batch sets the LSQ step sizes before the optimizer sees their final shapes
        NoGradGuard no_grad;
        io::Batch b;
        loader.next(b);
        (*qmodel)(b.images);
      }
      auto groups = quant::lsq_param_groups(*qmodel);
      nn::SGD qopt(groups, {.lr = 0.005, .momentum = 0.9, .weight_decay = 5e-4});
      auto qschedule =
          nn::make_lr_scheduler(qopt, {.kind = nn::LRScheduleKind::cosine, .total_steps = steps * qat_epochs});
      const Fit qf = fit(*qmodel, qopt, *qschedule, loader, split.validation, qat_epochs, "qat");
      const double fq_test = accuracy(*qmodel, test);
      const std::vector<int64_t> fq_pred = predictions(*qmodel, test);
      quant::convert(*qmodel);
      const double int8_test = accuracy(*qmodel, test);
      const std::vector<int64_t> int8_pred = predictions(*qmodel, test);
      int64_t same = 0;
      for (size_t i = 0; i < fq_pred.size(); ++i) same += fq_pred[i] == int8_pred[i];
      const double agree = 100.0 * static_cast<double>(same) / static_cast<double>(fq_pred.size());
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%4d | %16d | %11.2f | %12.2f | W%dA%d | %14d | %9.2f | %17.2f | %11.2f | %+12.2f | %18.2f   (%.0f s)\n",
                  seed, ff.best_epoch, ff.best_val, float_test, bits, bits, qf.best_epoch, qf.best_val, fq_test, int8_test,
                  int8_test - float_test, agree, secs);
      std::fflush(stdout);
      int8s[k].push_back(int8_test);
      gaps[k].push_back(int8_test - float_test);
      agreements[k].push_back(agree);
    }
  }
  std::printf("float: mean %.2f%% +- %.2f (sd), worst %.2f%%\n", mean_of(floats), sd_of(floats),
              *std::min_element(floats.begin(), floats.end()));
  for (size_t k = 0; k < widths.size(); ++k)
    std::printf("W%dA%d int8: mean %.2f%% +- %.2f (sd), mean int8 - float %+.2f, worst %+.2f, lowest agreement %.2f%%\n",
                widths[k], widths[k], mean_of(int8s[k]), sd_of(int8s[k]), mean_of(gaps[k]),
                *std::min_element(gaps[k].begin(), gaps[k].end()),
                *std::min_element(agreements[k].begin(), agreements[k].end()));
  return 0;
}

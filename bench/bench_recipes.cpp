// A training recipe measured over several seeds (docs/optim.md §9): the MLP
// 784-256-128-10 on Fashion-MNIST, float training then W4A4 LSQ QAT, each
// choosing its best epoch on a validation set carved from the training set;
// the test set is touched once per model, at the end.
//
//   bench_recipes [first_seed [last_seed [float_epochs [qat_epochs]]]]
//
// Recipe (float): SGD, momentum 0.9, nesterov, lr 0.05, weight decay 5e-4
// (not on biases), batch 128, linear warm-up over the first epoch then cosine
// to 0, stepped per batch; 5000 validation samples.
// Recipe (QAT): fused Linear+ReLU, make_lsq_qat_qconfig(4, 4); SGD momentum
// 0.9, lr 0.005 (a tenth of the float rate) on the weights and the
// quantizers' step sizes (no weight decay on those), cosine per batch.
// Prints one line per seed and the mean / worst.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

int main(int argc, char** argv) {
  const int first = argc > 1 ? std::atoi(argv[1]) : 0;
  const int last = argc > 2 ? std::atoi(argv[2]) : 4;
  const int float_epochs = argc > 3 ? std::atoi(argv[3]) : 15;
  const int qat_epochs = argc > 4 ? std::atoi(argv[4]) : 4;
  const io::Dataset full_train = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::train);
  const io::Dataset test = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::test);
  std::printf("seed | float best epoch | float val %% | float test %% | W4A4 best epoch | W4A4 val %% | W4A4 fake-quant test %% | W4A4 int8 test %% | int8 - float | fq/int8 agreement %%\n");
  double sum_float = 0, sum_int8 = 0, worst_gap = 1e9;
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

    // ---- W4A4 LSQ QAT ----
    quant::fuse_linear_relu(*model);
    model->qconfig = quant::make_lsq_qat_qconfig(4, 4);
    quant::prepare_qat(*model);
    model->train();
    {  // one batch sets the LSQ step sizes before the optimizer sees their final shapes
      NoGradGuard no_grad;
      io::Batch b;
      loader.next(b);
      (*model)(b.images);
    }
    auto groups = quant::lsq_param_groups(*model);
    nn::SGD qopt(groups, {.lr = 0.005, .momentum = 0.9, .weight_decay = 5e-4});
    auto qschedule =
        nn::make_lr_scheduler(qopt, {.kind = nn::LRScheduleKind::cosine, .total_steps = steps * qat_epochs});
    const Fit qf = fit(*model, qopt, *qschedule, loader, split.validation, qat_epochs, "qat");
    const double fq_test = accuracy(*model, test);
    const std::vector<int64_t> fq_pred = predictions(*model, test);
    quant::convert(*model);
    const double int8_test = accuracy(*model, test);
    const std::vector<int64_t> int8_pred = predictions(*model, test);
    int64_t same = 0;
    for (size_t i = 0; i < fq_pred.size(); ++i) same += fq_pred[i] == int8_pred[i];
    const double agree = 100.0 * static_cast<double>(same) / static_cast<double>(fq_pred.size());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%4d | %16d | %11.2f | %12.2f | %15d | %10.2f | %22.2f | %16.2f | %+12.2f | %18.2f   (%.0f s)\n", seed,
                ff.best_epoch, ff.best_val, float_test, qf.best_epoch, qf.best_val, fq_test, int8_test,
                int8_test - float_test, agree, secs);
    std::fflush(stdout);
    sum_float += float_test;
    sum_int8 += int8_test;
    worst_gap = std::min(worst_gap, int8_test - float_test);
  }
  const double n = last - first + 1;
  std::printf("mean float %.2f%%, mean W4A4 int8 %.2f%%, worst int8 - float %+.2f\n", sum_float / n, sum_int8 / n,
              worst_gap);
  return 0;
}

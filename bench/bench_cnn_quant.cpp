// Quantizing models::cnn on Fashion-MNIST, one thread: the float model (SGD
// lr 0.01 momentum 0.9, batch 64, seed 0), then from it
//   QAT      1 epoch at lr 0.001, BatchNorm statistics frozen after half the
//            epoch and observers disabled after 80% of it, then convert;
//   PTQ      histogram observers, 32 calibration batches of 64, convert;
//   dynamic  quantize_dynamic (the Linear layers);
// test accuracy of each, fake-quant vs int8 agreement and largest output
// difference in output steps, and the latency of the float and the QAT int8
// model at batch 64 and batch 1 (median of repeats, thread CPU time beside
// the wall time: the machine may be shared).
//
//   ./build/bench/bench_cnn_quant [float epochs = 5] [train images = 0 (all)] [data dir]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench_util.h"
#include "tinyqat.h"

extern "C" void openblas_set_num_threads(int num_threads);

using namespace tq;

namespace {

quant::Evaluation test_eval(nn::Module& model, const io::Dataset& test) {
  io::DataLoader loader(test, {.batch_size = 500, .shuffle = false, .as_images = true});
  io::Batch b;
  return quant::evaluate(model, [&](Tensor& x, Tensor& y) {
    if (!loader.next(b)) return false;
    x = b.images;
    y = b.labels;
    return true;
  });
}

// One epoch of SGD; before_step(fraction of the epoch done) runs before each step.
void train_epoch(nn::Module& model, io::DataLoader& loader, nn::SGD& opt,
                 const std::function<void(double)>& before_step = nullptr) {
  model.train();
  io::Batch b;
  int64_t step = 0;
  const double n = static_cast<double>(loader.num_batches());
  while (loader.next(b)) {
    if (before_step) before_step(static_cast<double>(step) / n);
    opt.zero_grad();
    const Tensor loss = cross_entropy(model(b.images), b.labels);
    loss.backward();
    opt.step();
    ++step;
  }
}

double output_scale(nn::Module& m) {
  double s = 0;
  for (auto& [path, mod] : m.named_modules())
    if (auto* q = quant::as_quantized_layer(mod))
      if (auto o = q->qparams(quant::QuantRole::output)) s = o->scale[0];
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 5;
  const int64_t limit = argc > 2 ? std::atoll(argv[2]) : 0;
  const std::string dir = argc > 3 ? argv[3] : io::kFashionMnistDir;
  openblas_set_num_threads(1);
  io::Dataset train = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test = io::load_fashion_mnist(dir, io::Split::test);
  if (limit > 0 && limit < train.size()) train = train.slice(0, limit);
  std::printf("models::cnn on Fashion-MNIST: %d float epochs on %lld training images, %lld test images, one thread\n",
              epochs, static_cast<long long>(train.size()), static_cast<long long>(test.size()));

  // 1. Float.
  manual_seed(0);
  auto model = models::cnn();
  {
    nn::SGD opt(model->parameters(), nn::SGDOptions{.lr = 0.01, .momentum = 0.9});
    io::DataLoader loader(train, {.batch_size = 64, .seed = 0, .as_images = true});
    for (int e = 1; e <= epochs; ++e) {
      const double t0 = bench::now_seconds();
      train_epoch(*model, loader, opt);
      std::printf("  float epoch %d: test accuracy %.2f%% (%.0f s)\n", e, test_eval(*model, test).accuracy,
                  bench::now_seconds() - t0);
      std::fflush(stdout);
    }
  }
  const std::string path = "/tmp/bench_cnn_quant_float.safetensors";
  io::save_model(*model, path);
  const quant::Evaluation fl = test_eval(*model, test);

  // 2. QAT: one epoch from the float model, BN frozen at 0.5, observers off at 0.8.
  auto qat = io::load_model(path);
  qat->train();
  quant::fuse_known_modules(*qat);
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);
  const double tq0 = bench::now_seconds();
  {
    nn::SGD opt(qat->parameters(), nn::SGDOptions{.lr = 0.001, .momentum = 0.9});
    io::DataLoader loader(train, {.batch_size = 64, .seed = 1, .as_images = true});
    bool bn = false, obs = false;
    train_epoch(*qat, loader, opt, [&](double done) {
      if (!bn && done >= 0.5) quant::freeze_bn_stats(*qat), bn = true;
      if (!obs && done >= 0.8) quant::disable_observer(*qat), obs = true;
    });
  }
  const double qat_seconds = bench::now_seconds() - tq0;
  const quant::Evaluation fq = test_eval(*qat, test);
  quant::convert(*qat);
  quant::set_int8_threads(*qat, 1);
  const quant::Evaluation q8 = test_eval(*qat, test);

  // 3. PTQ, histogram observers, 32 batches.
  auto ptq = io::load_model(path);
  ptq->eval();
  quant::fuse_known_modules(*ptq);
  ptq->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*ptq);
  {
    io::DataLoader loader(train, {.batch_size = 64, .seed = 2, .as_images = true});
    io::Batch b;
    quant::calibrate(
        *ptq,
        [&](Tensor& x) {
          if (!loader.next(b)) return false;
          x = b.images;
          return true;
        },
        32);
  }
  quant::convert(*ptq);
  quant::set_int8_threads(*ptq, 1);
  const quant::Evaluation p8 = test_eval(*ptq, test);

  // 4. Dynamic.
  auto dyn = io::load_model(path);
  quant::quantize_dynamic(*dyn);
  quant::set_int8_threads(*dyn, 1);
  const quant::Evaluation d8 = test_eval(*dyn, test);

  std::printf("\n| model | test accuracy | vs float |\n|---|---|---|\n");
  std::printf("| float | %.2f%% | |\n", fl.accuracy);
  std::printf("| QAT int8 (fake quant %.2f%%) | %.2f%% | %+.2f |\n", fq.accuracy, q8.accuracy, q8.accuracy - fl.accuracy);
  std::printf("| PTQ int8 | %.2f%% | %+.2f |\n", p8.accuracy, p8.accuracy - fl.accuracy);
  std::printf("| dynamic int8 | %.2f%% | %+.2f |\n", d8.accuracy, d8.accuracy - fl.accuracy);
  std::printf("QAT epoch: %.0f s; fake quant vs int8: predictions agree on %.2f%%, largest difference %.3f output steps\n",
              qat_seconds, quant::agreement(fq, q8), quant::max_step_difference(fq, q8, output_scale(*qat)));

  // 5. Speed, float vs QAT int8, one thread.
  model->eval();
  qat->eval();
  for (int64_t batch : {64, 1}) {
    io::DataLoader loader(test, {.batch_size = batch, .shuffle = false, .as_images = true});
    io::Batch b;
    loader.next(b);
    NoGradGuard no_grad;
    const int inner = batch == 1 ? 50 : 3;
    const bench::Timing tf = bench::measure([&] { (*model)(b.images); }, {.repeats = 15, .inner = inner});
    const bench::Timing ti = bench::measure([&] { (*qat)(b.images); }, {.repeats = 15, .inner = inner});
    std::printf("batch %2lld: float %9.1f us (thread CPU %9.1f), int8 %9.1f us (thread CPU %9.1f): int8 %.2fx faster "
                "(CPU time %.2fx)\n",
                static_cast<long long>(batch), tf.median * 1e6, tf.cpu_median * 1e6, ti.median * 1e6, ti.cpu_median * 1e6,
                tf.median / ti.median, tf.cpu_median / ti.cpu_median);
  }
  return 0;
}

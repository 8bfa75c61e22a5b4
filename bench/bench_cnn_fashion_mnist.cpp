// Trains models::cnn on Fashion-MNIST with the reference recipe and prints
// the test accuracy after each epoch: 5 epochs, SGD lr 0.01 momentum 0.9,
// batch 64, seed 0 (target: >= 89.5% after the last epoch). The loader hands
// flat rows (B, 784); they are viewed as images (B, 1, 28, 28) for the CNN.
//
//   OPENBLAS_NUM_THREADS=1 ./build/bench/bench_cnn_fashion_mnist [epochs] [data dir]
// It ends with the peak resident memory of the run.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench_util.h"
#include "suite.h"
#include "tinyqat.h"

using namespace tq;

static Tensor as_images(const Tensor& rows) { return reshape(rows, {rows.size(0), 1, 28, 28}); }

static double test_accuracy(nn::Module& model, const io::Dataset& test) {
  NoGradGuard no_grad;
  model.eval();
  // Batches of 200: the first activation of a batch of 1000 alone is 100 MB
  // (1000 x 32 x 28 x 28 floats), and the peak memory of the run is set here.
  io::DataLoader loader(test, {.batch_size = 200, .shuffle = false});
  io::Batch b;
  int64_t correct = 0;
  while (loader.next(b)) {
    const Tensor pred = kernels::argmax(model(as_images(b.images)), 1);
    const int64_t* p = pred.data<int64_t>();
    const int64_t* y = b.labels.data<int64_t>();
    for (int64_t i = 0; i < b.size(); ++i) correct += p[i] == y[i];
  }
  model.train();
  return 100.0 * static_cast<double>(correct) / static_cast<double>(test.size());
}

int main(int argc, char** argv) {
  tune_allocator_for_training();  // as the tinyqat command does: freed activations stay in the heap
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 5;
  const std::string dir = argc > 2 ? argv[2] : io::kFashionMnistDir;
  const io::Dataset train = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test = io::load_fashion_mnist(dir, io::Split::test);
  manual_seed(0);
  auto model = models::cnn();
  nn::SGD opt(model->parameters(), nn::SGDOptions{.lr = 0.01, .momentum = 0.9});
  io::DataLoader loader(train, {.batch_size = 64, .seed = 0});
  io::Batch b;
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    const double t0 = bench::now_seconds(), c0 = bench::thread_cpu_seconds();
    double loss_sum = 0;
    int64_t steps = 0;
    while (loader.next(b)) {
      opt.zero_grad();
      const Tensor loss = cross_entropy((*model)(as_images(b.images)), b.labels);
      loss.backward();
      opt.step();
      loss_sum += loss.item();
      ++steps;
    }
    const double wall = bench::now_seconds() - t0, cpu = bench::thread_cpu_seconds() - c0;
    std::printf("epoch %d: train loss %.4f, test accuracy %.2f%% (%lld steps, %.1f s wall, %.1f s thread CPU)\n", epoch,
                loss_sum / static_cast<double>(steps), test_accuracy(*model, test), static_cast<long long>(steps), wall,
                cpu);
    std::fflush(stdout);
  }
  std::printf("peak resident memory: %.1f MiB\n", bench::peak_rss_mib());
  return 0;
}

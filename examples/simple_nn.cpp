// The SimpleNN of PyTorch's QAT lesson (docs/lesson.md), in C++: two Linear layers with ReLUs, trained with SGD
// and cross-entropy on a small fixed data set. Run: ./build/examples/simple_nn
#include <cstdio>
#include <iostream>

#include "tinyqat.h"

using namespace tq;

// class SimpleNN(nn.Module): fc1 = Linear(10, 5); fc2 = Linear(5, 2)
struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));

  Tensor forward(const Tensor& x) override {
    Tensor h = relu(fc1(x));
    return relu(fc2(h));
  }
};

int main() {
  manual_seed(0);
  SimpleNN model;
  std::cout << model << "\n\n";

  // A small fixed data set: 32 points in 10-D; the class is 1 when the sum of
  // the first five features exceeds the sum of the last five.
  Generator data_rng(42);
  Tensor x = randn({32, 10}, data_rng);
  std::vector<int64_t> labels(32);
  for (int64_t i = 0; i < 32; ++i) {
    double s = 0;
    for (int64_t j = 0; j < 10; ++j) s += (j < 5 ? 1 : -1) * x.at({i, j});
    labels[static_cast<size_t>(i)] = s > 0 ? 1 : 0;
  }
  Tensor y = from_vector_i64(labels, {32});

  nn::SGD optimizer(model.parameters(), {.lr = 0.1, .momentum = 0.9});
  nn::CrossEntropyLoss criterion;
  for (int step = 0; step <= 100; ++step) {
    optimizer.zero_grad();
    Tensor loss = criterion(model(x), y);
    loss.backward();
    optimizer.step();
    if (step % 10 == 0) std::printf("step %3d  loss %.4f\n", step, loss.item());
  }

  NoGradGuard no_grad;
  Tensor predicted = argmax(model(x), 1);
  int correct = 0;
  for (int64_t i = 0; i < 32; ++i) correct += predicted.at({i}) == labels[static_cast<size_t>(i)];
  std::printf("training accuracy: %d / 32\n", correct);
  return 0;
}

// A program outside the tinyqat tree: a small model trained a few steps with
// the README's API. Prints "outside: ok" when the loss went down.
#include <cstdio>

#include "tinyqat.h"

using namespace tq;

int main() {
  manual_seed(0);
  Generator rng(1);
  const Tensor x = randn({16, 4}, rng);
  std::vector<int64_t> labels(16);
  for (int64_t i = 0; i < 16; ++i) labels[static_cast<size_t>(i)] = x.at({i, 0}) > 0 ? 1 : 0;
  const Tensor y = from_vector_i64(labels, {16});

  nn::Sequential model(nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2));
  nn::SGD optimizer(model.parameters(), {.lr = 0.5});
  nn::CrossEntropyLoss criterion;
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    optimizer.zero_grad();
    Tensor loss = criterion(model(x), y);
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item();
  }
  std::printf("outside: loss %.4f -> %.4f\n", first, last);
  return last < first ? (std::puts("outside: ok"), 0) : 1;
}

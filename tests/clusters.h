// Seeded Gaussian clusters, the small MLP the PTQ and LSQ tests train on them,
// and the plain SGD loop that trains it: data that overlaps, so that accuracy
// can move and a quantizer's choice shows.
#pragma once

#include <cstdint>
#include <vector>

#include "tinyqat.h"

namespace tq_test {

struct Clusters {
  tq::Tensor x;  // (N, features) f32
  tq::Tensor y;  // (N) i64
};

// `classes` clusters in `features`-D: centres N(0, 1) (always drawn with seed
// 2024, so train and test sets share them), points centre + spread * N(0, 1),
// labels uniform; `seed` draws the points.
inline Clusters make_clusters(int64_t n, int64_t classes, int64_t features, float spread, uint64_t seed) {
  using namespace tq;
  Generator centres_gen(2024);
  const std::vector<float> centres = to_vector(randn({classes, features}, centres_gen));
  Generator g(seed);
  const std::vector<float> noise = to_vector(randn({n, features}, g));
  const Tensor labels = randint(0, classes, {n}, g);
  std::vector<float> x(static_cast<size_t>(n * features));
  for (int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<int64_t>(labels.at({i}));
    for (int64_t f = 0; f < features; ++f)
      x[static_cast<size_t>(i * features + f)] =
          centres[static_cast<size_t>(c * features + f)] + spread * noise[static_cast<size_t>(i * features + f)];
  }
  return {from_vector(x, {n, features}), labels};
}

// features -> 64 -> 32 -> classes, ReLUs between.
struct ClusterMLP : tq::nn::Module {
  ClusterMLP(int64_t features, int64_t classes) : features_(features), classes_(classes) {}
  const int64_t features_, classes_;  // declared first: the slots below are built from them
  tq::nn::Slot<tq::nn::Linear> fc1 = register_module("fc1", tq::nn::Linear(features_, 64));
  tq::nn::Slot<tq::nn::Linear> fc2 = register_module("fc2", tq::nn::Linear(64, 32));
  tq::nn::Slot<tq::nn::Linear> fc3 = register_module("fc3", tq::nn::Linear(32, classes_));
  tq::Tensor forward(const tq::Tensor& x) override { return fc3(tq::relu(fc2(tq::relu(fc1(x))))); }
};

// SGD with momentum 0.9 over whole batches of `batch` rows, in order.
inline void train_sgd(tq::nn::Module& model, const Clusters& data, int epochs, double lr, int64_t batch) {
  using namespace tq;
  nn::SGD optimizer(model.parameters(), {.lr = lr, .momentum = 0.9});
  nn::CrossEntropyLoss criterion;
  for (int epoch = 0; epoch < epochs; ++epoch)
    for (int64_t b = 0; b + batch <= data.x.size(0); b += batch) {
      optimizer.zero_grad();
      criterion(model(kernels::slice(data.x, 0, b, b + batch)), kernels::slice(data.y, 0, b, b + batch)).backward();
      optimizer.step();
    }
}

}  // namespace tq_test

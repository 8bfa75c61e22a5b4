// A small MLP trained against PyTorch (tests/golden/mlp.txt): the model
// Linear(6,8)-ReLU-Linear(8,5)-ReLU-Linear(5,3) starts from PyTorch's initial
// weights (copied in place into the nn::Linear parameters), then
//   - forward activations, logits, cross-entropy loss and every gradient
//     (the six parameters and the input) match one PyTorch forward/backward;
//   - four torch.optim.SGD configurations (plain, momentum, Nesterov,
//     dampening + weight decay) give the same loss at each of 5 steps and
//     the same final weights.
#include <catch2/catch.hpp>

#include "golden_reader.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// One forward / backward: same math as PyTorch in f32, different summation order.
constexpr double kForwardRelTol = 1e-5;
constexpr double kGradientRelTol = 1e-5;
// Five optimizer steps let rounding differences grow a little.
constexpr double kTrajectoryRelTol = 1e-5;

struct MLP : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(6, 8));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(8, 5));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(5, 3));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

// Overwrites the parameters' values in place with the golden ones: the
// parameter tensors (and so the optimizer's view of them) stay the same objects.
void load(MLP& model, const std::string& prefix) {
  for (auto& [name, param] : model.named_parameters()) {
    // "fc1.weight" -> "<prefix>/fc1/weight"
    std::string key = name;
    key[key.find('.')] = '/';
    const Tensor value = golden::load("mlp.txt").tensor(prefix + "/" + key);
    REQUIRE(value.shape() == param.shape());
    kernels::copy_(param, value);
  }
}

void check_close(const Tensor& got, const std::string& golden_name, double tolerance) {
  const golden::Comparison c = golden::compare(got, golden::load("mlp.txt").tensor(golden_name));
  INFO(c.describe(golden_name));
  CHECK(c.same_shape);
  CHECK(c.relative_error <= tolerance);
}

}  // namespace

TEST_CASE("golden MLP: activations, loss and all gradients match PyTorch", "[golden][nn]") {
  const golden::File& g = golden::load("mlp.txt");
  MLP model;
  load(model, "init");
  Tensor x = g.tensor("input/x").requires_grad_(true);
  const Tensor target = g.tensor("input/target");

  const Tensor h1 = model.fc1(x);
  const Tensor a1 = relu(h1);
  const Tensor h2 = model.fc2(a1);
  const Tensor a2 = relu(h2);
  const Tensor logits = model.fc3(a2);
  Tensor loss = nn::CrossEntropyLoss()(logits, target);
  check_close(h1, "fwd/fc1", kForwardRelTol);
  check_close(a1, "fwd/relu1", kForwardRelTol);
  check_close(h2, "fwd/fc2", kForwardRelTol);
  check_close(a2, "fwd/relu2", kForwardRelTol);
  check_close(logits, "logits", kForwardRelTol);
  check_close(loss, "loss", kForwardRelTol);
  // The module's own forward is the same computation.
  check_close(model(x), "logits", kForwardRelTol);

  loss.backward();
  for (auto& [name, param] : model.named_parameters()) {
    std::string key = name;
    key[key.find('.')] = '/';
    REQUIRE(param.grad().defined());
    check_close(param.grad(), "grad/" + key, kGradientRelTol);
  }
  check_close(x.grad(), "grad/x", kGradientRelTol);
}

TEST_CASE("golden MLP: SGD trajectories match torch.optim.SGD", "[golden][nn][sgd]") {
  const golden::File& g = golden::load("mlp.txt");
  const Tensor x = g.tensor("input/x");
  const Tensor target = g.tensor("input/target");
  const std::pair<const char*, nn::SGDOptions> settings[] = {
      {"plain", {.lr = 0.1}},
      {"momentum", {.lr = 0.1, .momentum = 0.9}},
      {"nesterov", {.lr = 0.1, .momentum = 0.9, .nesterov = true}},
      {"damp_wd", {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01}},
  };
  for (const auto& [tag, options] : settings) {
    SECTION(tag) {
      const std::string base = std::string("sgd/") + tag;
      MLP model;
      load(model, "init");
      nn::SGD optimizer(model.parameters(), options);
      nn::CrossEntropyLoss criterion;
      std::vector<float> losses;
      for (int step = 0; step < 5; ++step) {
        optimizer.zero_grad();
        Tensor loss = criterion(model(x), target);
        losses.push_back(static_cast<float>(loss.item()));
        loss.backward();
        optimizer.step();
      }
      check_close(from_vector(losses, {5}), base + "/loss", kTrajectoryRelTol);
      for (auto& [name, param] : model.named_parameters()) {
        std::string key = name;
        key[key.find('.')] = '/';
        check_close(param, base + "/final/" + key, kTrajectoryRelTol);
      }
      NoGradGuard no_grad;
      check_close(criterion(model(x), target), base + "/loss_after", kTrajectoryRelTol);
    }
  }
}

// nn: Module (named parameters, slots and swapping, modes, printing), Linear,
// ReLU, Sequential, the loss modules and SGD's torch.optim.SGD semantics
// (docs/sgd.md eq. 1-4).
#include <catch2/catch.hpp>

#include <cmath>

#include "tinyqat.h"

using namespace tq;
using Catch::Contains;

namespace {

constexpr double kTol = 1e-6;  // f32 results against double formulas, relative

bool close(double a, double b) { return std::fabs(a - b) <= kTol * std::max(1.0, std::fabs(b)); }

// The seed example's model.
struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

// A replacement for a Linear: counts its calls and adds a parameter of its own.
struct CountingLinear : nn::Linear {
  CountingLinear(int64_t in, int64_t out) : nn::Linear(in, out) { scale = register_parameter("scale", ones({1})); }
  Tensor forward(const Tensor& x) override {
    ++calls;
    return nn::Linear::forward(x) * scale;
  }
  Tensor scale;
  int calls = 0;
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> out;
  for (auto& [n, t] : named) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("printing a model looks like PyTorch's print(model)", "[nn][print]") {
  SimpleNN model;
  CHECK(model.repr() ==
        "SimpleNN(\n"
        "  (fc1): Linear(in_features=10, out_features=5, bias=True)\n"
        "  (fc2): Linear(in_features=5, out_features=2, bias=True)\n"
        ")");
  std::ostringstream os;
  os << model;
  CHECK(os.str() == model.repr());

  nn::Sequential seq(nn::Linear(3, 4, false), nn::ReLU(), nn::Sequential(nn::Linear(4, 1)));
  CHECK(seq.repr() ==
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=False)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Linear(in_features=4, out_features=1, bias=True)\n"
        "  )\n"
        ")");
}

TEST_CASE("named_parameters and named_modules use dotted names in registration order", "[nn]") {
  SimpleNN model;
  CHECK(names_of(model.named_parameters()) ==
        std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
  CHECK(model.parameters().size() == 4);
  CHECK(model.named_parameters(false).empty());
  CHECK(model.named_parameters()[0].second.same(model.fc1->weight));

  std::vector<std::string> modules;
  for (auto& [n, m] : model.named_modules()) modules.push_back(n + ":" + m->type_name());
  CHECK(modules == std::vector<std::string>{":SimpleNN", "fc1:Linear", "fc2:Linear"});

  nn::Sequential seq(nn::Linear(2, 3), nn::ReLU(), nn::Sequential(nn::Linear(3, 1)));
  CHECK(names_of(seq.named_parameters()) ==
        std::vector<std::string>{"0.weight", "0.bias", "2.0.weight", "2.0.bias"});
  CHECK(&seq.get_submodule("2.0") == &static_cast<nn::Sequential&>(seq[2])[0]);
  REQUIRE_THROWS_WITH(seq.get_submodule("2.5"), Contains("'2.5'") && Contains("no child '5'"));
  for (const Tensor& p : seq.parameters()) CHECK(p.requires_grad());
}

TEST_CASE("buffers are named like parameters but are not trained", "[nn]") {
  struct WithBuffer : nn::Module {
    WithBuffer() {
      register_buffer("running", zeros({3}));
      register_parameter("w", ones({2}));
    }
  };
  WithBuffer m;
  CHECK(names_of(m.named_buffers()) == std::vector<std::string>{"running"});
  CHECK(names_of(m.named_parameters()) == std::vector<std::string>{"w"});
  CHECK_FALSE(m.named_buffers()[0].second.requires_grad());
  REQUIRE_THROWS_WITH(m.register_parameter("w", ones({1})), Contains("'w' registered twice"));
  REQUIRE_THROWS_WITH(m.register_parameter("a.b", ones({1})), Contains("invalid name 'a.b'"));
}

TEST_CASE("slot swapping: the parent's forward runs the new module, named_parameters lists its parameters", "[nn][slots]") {
  manual_seed(1);
  SimpleNN model;
  const Tensor x = randn({3, 10});
  const Tensor before = model(x);

  auto replacement = std::make_shared<CountingLinear>(10, 5);
  kernels::fill_(replacement->scale, 0.0);  // makes fc1's output zero: easy to recognise
  model.replace_module("fc1", replacement);

  // The user's forward() is unchanged, but `fc1(x)` now runs the replacement.
  const Tensor after = model(x);
  CHECK(replacement->calls == 1);
  // relu(fc2(relu(0))) = relu(fc2.bias) in every row.
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j) CHECK(after.at({i, j}) == std::max(0.0, model.fc2->bias.at({j})));
  CHECK(to_vector(after) != to_vector(before));

  CHECK(names_of(model.named_parameters()) ==
        std::vector<std::string>{"fc1.weight", "fc1.bias", "fc1.scale", "fc2.weight", "fc2.bias"});
  CHECK(model.named_parameters()[0].second.same(replacement->weight));
  CHECK(model.named_modules()[1].second == replacement.get());
  CHECK(model.repr().find("(fc1): CountingLinear(in_features=10, out_features=5, bias=True)") != std::string::npos);

  // The typed handle reaches the new module (a Linear subclass)...
  CHECK(&model.fc1.get() == replacement.get());
  // ...and says clearly when the slot holds an unrelated type.
  model.replace_module("fc2", std::make_shared<nn::ReLU>());
  REQUIRE_THROWS_WITH(model.fc2->weight, Contains("slot 'fc2'") && Contains("ReLU"));
  REQUIRE_THROWS_WITH(model.replace_module("fc3", replacement), Contains("no submodule 'fc3'"));
}

TEST_CASE("replace_module reaches nested slots by dotted path", "[nn][slots]") {
  nn::Sequential seq(nn::Linear(2, 2), nn::Sequential(nn::Linear(2, 2), nn::ReLU()));
  auto id = std::make_shared<nn::Sequential>();  // an empty Sequential is the identity
  seq.replace_module("1.0", id);
  CHECK(&seq.get_submodule("1.0") == id.get());
  CHECK(names_of(seq.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias"});
}

TEST_CASE("train() and eval() reach every module", "[nn]") {
  SimpleNN model;
  CHECK(model.is_training());
  model.eval();
  for (auto& [n, m] : model.named_modules()) CHECK_FALSE(m->is_training());
  model.train();
  for (auto& [n, m] : model.named_modules()) CHECK(m->is_training());
}

TEST_CASE("Linear: PyTorch default init, shapes, bias, errors", "[nn][linear]") {
  manual_seed(42);
  nn::Linear a(100, 30);
  manual_seed(42);
  nn::Linear b(100, 30);
  CHECK(to_vector(a.weight) == to_vector(b.weight));  // a global seed makes init reproducible
  CHECK(to_vector(a.bias) == to_vector(b.bias));
  nn::Linear c(100, 30);
  CHECK(to_vector(a.weight) != to_vector(c.weight));

  // U(-1/sqrt(in), 1/sqrt(in)) for both weight and bias.
  const double bound = 1 / std::sqrt(100.0);
  CHECK(kernels::max_all(a.weight) <= bound);
  CHECK(kernels::min_all(a.weight) >= -bound);
  CHECK(kernels::max_all(a.weight) > 0.95 * bound);  // 3000 samples reach close to the edges
  CHECK(kernels::min_all(a.weight) < -0.95 * bound);
  CHECK(kernels::max_all(a.bias) <= bound);
  CHECK(a.weight.shape() == Shape{30, 100});
  CHECK(a.bias.shape() == Shape{30});
  CHECK(a.in_features == 100);
  CHECK(a.out_features == 30);

  nn::Linear small(3, 2);
  const Tensor x = randn({4, 3});
  CHECK(small(x).shape() == Shape{4, 2});
  const Tensor one = small(kernels::slice(x, 0, 0, 1));
  const Tensor single = small(kernels::reshape(kernels::slice(x, 0, 0, 1), {3}));  // 1-D input: one sample
  CHECK(single.shape() == Shape{2});
  CHECK(to_vector(single) == to_vector(one));

  nn::Linear no_bias(3, 2, false);
  CHECK_FALSE(no_bias.bias.defined());
  CHECK(no_bias.named_parameters().size() == 1);
  CHECK(no_bias.extra_repr() == "in_features=3, out_features=2, bias=False");

  REQUIRE_THROWS_WITH(small(zeros({4, 5})), Contains("Linear") && Contains("(4, 5)") && Contains("in_features=3"));
  REQUIRE_THROWS_WITH(nn::Linear(0, 3), Contains("Linear") && Contains("must be positive"));
}

TEST_CASE("Sequential runs its children in order, with ReLU and Flatten", "[nn]") {
  manual_seed(3);
  auto fc = std::make_shared<nn::Linear>(4, 3);
  nn::Sequential seq;
  seq.push_back(nn::Flatten());
  seq.push_back(fc);
  seq.push_back(nn::ReLU());
  CHECK(seq.size() == 3);
  const Tensor x = randn({2, 2, 2});
  const Tensor want = relu(fc->forward(kernels::reshape(x, {2, 4})));
  CHECK(to_vector(seq(x)) == to_vector(want));
}

TEST_CASE("Module::zero_grad zeroes every parameter's gradient in place", "[nn]") {
  SimpleNN model;
  Tensor loss = cross_entropy(model(randn({4, 10})), from_vector_i64({0, 1, 1, 0}, {4}));
  loss.backward();
  const float* buffer = model.fc1->weight.grad().data<float>();
  model.zero_grad();
  for (auto& [n, p] : model.named_parameters()) {
    INFO(n);
    REQUIRE(p.grad().defined());
    CHECK(kernels::max_all(kernels::abs(p.grad())) == 0);
  }
  CHECK(model.fc1->weight.grad().data<float>() == buffer);
}

TEST_CASE("loss modules: CrossEntropyLoss and MSELoss", "[nn]") {
  const Tensor logits = from_vector({1, 2, 3, 1, 1, 1}, {2, 3});
  const Tensor target = from_vector_i64({2, 0}, {2});
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3, l1 = std::log(3.0);
  CHECK(close(nn::CrossEntropyLoss()(logits, target).item(), (l0 + l1) / 2));
  CHECK(close(nn::CrossEntropyLoss{Reduction::sum}(logits, target).item(), l0 + l1));
  const Tensor per = nn::CrossEntropyLoss{Reduction::none}(logits, target);
  CHECK(close(per.at({0}), l0));
  CHECK(close(per.at({1}), l1));

  const Tensor a = from_vector({1, 2, 3}, {3}), b = from_vector({1, 0, 0}, {3});
  CHECK(close(nn::MSELoss()(a, b).item(), (0 + 4 + 9) / 3.0));
  CHECK(close(nn::MSELoss{Reduction::sum}(a, b).item(), 13));
  CHECK(to_vector(nn::MSELoss{Reduction::none}(a, b)) == std::vector<float>{0, 4, 9});
}

TEST_CASE("a global seed makes initialisation and shuffling reproducible", "[nn][random]") {
  manual_seed(2024);
  SimpleNN m1;
  const auto order1 = to_vector(randperm(10));
  manual_seed(2024);
  SimpleNN m2;
  const auto order2 = to_vector(randperm(10));
  for (size_t i = 0; i < 4; ++i) CHECK(to_vector(m1.parameters()[i]) == to_vector(m2.parameters()[i]));
  CHECK(order1 == order2);
  std::vector<float> sorted = order1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == to_vector(arange(10)));  // a permutation
  CHECK(order1 != to_vector(randperm(10)));
}

// ---- SGD: torch.optim.SGD semantics, step by step on one parameter ----
//
// With gradient g_t of the loss L = sum(c * w) (so g = c, constant), the
// expected updates follow docs/sgd.md eq. 1-4, written out here in double.

namespace {

struct Trajectory {
  std::vector<double> w;  // after each step
};

Trajectory run_sgd(const nn::SGDOptions& o, int steps) {
  Tensor w = from_vector({1.0f}, {1}).requires_grad_();
  nn::SGD opt({w}, o);
  Trajectory t;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    sum(w * 0.5f).backward();  // g = 0.5
    opt.step();
    t.w.push_back(w.item());
  }
  return t;
}

Trajectory reference_sgd(const nn::SGDOptions& o, int steps) {
  double w = 1, b = 0;
  Trajectory t;
  for (int s = 0; s < steps; ++s) {
    double d = 0.5 + o.weight_decay * w;                   // eq. 2
    if (o.momentum != 0) {
      b = s == 0 ? d : o.momentum * b + (1 - o.dampening) * d;  // eq. 3
      d = o.nesterov ? d + o.momentum * b : b;             // eq. 4
    }
    w -= o.lr * d;                                         // eq. 1
    t.w.push_back(w);
  }
  return t;
}

}  // namespace

TEST_CASE("SGD follows torch.optim.SGD: lr, weight decay, momentum, dampening, nesterov", "[nn][sgd]") {
  const nn::SGDOptions cases[] = {
      {.lr = 0.1},
      {.lr = 0.1, .weight_decay = 0.1},
      {.lr = 0.1, .momentum = 0.9},
      {.lr = 0.1, .momentum = 0.9, .dampening = 0.5},
      {.lr = 0.1, .momentum = 0.9, .nesterov = true},
      {.lr = 0.05, .momentum = 0.5, .dampening = 0.1, .weight_decay = 0.01},
      {.lr = 0.05, .momentum = 0.5, .weight_decay = 0.2, .nesterov = true},
  };
  for (const nn::SGDOptions& o : cases) {
    const Trajectory got = run_sgd(o, 4), want = reference_sgd(o, 4);
    for (size_t s = 0; s < got.w.size(); ++s) {
      INFO("lr " << o.lr << " momentum " << o.momentum << " dampening " << o.dampening << " weight_decay "
                 << o.weight_decay << " nesterov " << o.nesterov << " step " << s);
      CHECK(close(got.w[s], want.w[s]));
    }
  }
  // The first momentum step ignores dampening: b_1 = g (as PyTorch).
  CHECK(close(run_sgd({.lr = 1, .momentum = 0.9, .dampening = 0.5}, 1).w[0], 1 - 0.5));
}

TEST_CASE("SGD updates in place, skips parameters without gradient, and rejects bad settings", "[nn][sgd]") {
  Tensor a = from_vector({1, 2}, {2}).requires_grad_();
  Tensor b = from_vector({3}, {1}).requires_grad_();
  nn::SGD opt({a, b}, {.lr = 0.5, .momentum = 0.9});
  const float* storage = a.data<float>();
  sum(a).backward();
  opt.step();
  CHECK(to_vector(a) == std::vector<float>{0.5f, 1.5f});
  CHECK(a.data<float>() == storage);
  CHECK(to_vector(b) == std::vector<float>{3});  // no gradient: untouched
  CHECK(opt.momentum_buffers()[0].defined());
  CHECK_FALSE(opt.momentum_buffers()[1].defined());

  Tensor c = ones({1}).requires_grad_();
  nn::SGD no_grads({c}, 0.1);
  REQUIRE_THROWS_WITH(no_grads.step(), Contains("SGD") && Contains("no parameter has a gradient"));
  REQUIRE_THROWS_WITH(nn::SGD({c}, -1.0), Contains("SGD") && Contains("learning rate -1"));
  REQUIRE_THROWS_WITH(nn::SGD({c}, {.lr = 0.1, .nesterov = true}), Contains("Nesterov"));
  REQUIRE_THROWS_WITH(nn::SGD({c}, {.lr = 0.1, .momentum = -0.5}), Contains("momentum"));
  REQUIRE_THROWS_WITH(nn::SGD({kernels::transpose(zeros({2, 3}), 0, 1)}, 0.1), Contains("contiguous"));
}

// The autograd engine: accumulation, topological order, no-grad scope,
// leaves and grad_fn, and the errors of bad input.
#include <catch2/catch.hpp>

#include <algorithm>

#include "tinyqat.h"

using namespace tq;
using Catch::Contains;

namespace {
constexpr double kTol = 1e-6;
bool close(double a, double b) { return std::fabs(a - b) <= kTol * std::max(1.0, std::fabs(b)); }
}  // namespace

TEST_CASE("a tensor used twice receives both gradient contributions", "[autograd]") {
  Tensor x = from_vector({1, -2, 3}, {3}).requires_grad_();
  // y = sum(x * x + x): dy/dx = 2x + 1
  Tensor y = sum(x * x + x);
  y.backward();
  CHECK(to_vector(x.grad()) == std::vector<float>{3, -3, 7});
}

TEST_CASE("a gradient sent to two inputs at once is not added into twice", "[autograd]") {
  // s1 = a + b hands the same gradient to a and b; a also gets one from
  // s2 = s1 + a, which must not change what b receives.
  // loss = sum(2x + 3x + 2x): d loss / dx = 7.
  Tensor x = from_vector({1, 2}, {2}).requires_grad_();
  Tensor a = x * 2.f, b = x * 3.f;
  Tensor loss = sum((a + b) + a);
  loss.backward();
  CHECK(to_vector(x.grad()) == std::vector<float>{7, 7});
}

TEST_CASE("topological_order lists every node after the nodes that feed it", "[autograd]") {
  Tensor x = from_vector({1, 2}, {2}).requires_grad_();
  Tensor a = x * 2.f;
  Tensor loss = sum(a * a + exp(a));
  const std::vector<Node*> order = topological_order(loss.grad_fn().get());
  REQUIRE(order.size() == 5);  // MulBackward (a), MulBackward (a*a), ExpBackward, AddBackward, SumBackward
  CHECK(order.front() == a.grad_fn().get());
  CHECK(order.back() == loss.grad_fn().get());
  for (size_t i = 0; i < order.size(); ++i)
    for (int j = 0; j < order[i]->num_inputs; ++j) {
      const Tensor& in = order[i]->inputs[j];
      if (!in.grad_fn()) continue;
      const auto at = std::find(order.begin(), order.end(), in.grad_fn().get());
      CHECK(at - order.begin() < static_cast<std::ptrdiff_t>(i));
    }
}

TEST_CASE("a diamond graph runs each node once, after all its consumers", "[autograd]") {
  // a -> b = 2a -> c = b * b, d = exp(b) -> loss = sum(c + d)
  // d loss / d a = 2 * (2b + exp(b)); b is interior and used twice.
  Tensor a = from_vector({0.5f, -1.f}, {2}).requires_grad_();
  Tensor b = a * 2.f;
  Tensor loss = sum(b * b + exp(b));
  loss.backward();
  for (int i = 0; i < 2; ++i) {
    const double bv = 2 * a.at({i});
    CHECK(close(a.grad().at({i}), 2 * (2 * bv + std::exp(bv))));
  }
  // Interior tensors keep no .grad (only leaves do).
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("backward accumulates into .grad across calls until zeroed", "[autograd]") {
  Tensor w = from_vector({1, 2}, {2}).requires_grad_();
  sum(w * 3.f).backward();
  CHECK(to_vector(w.grad()) == std::vector<float>{3, 3});
  const float* buffer = w.grad().data<float>();
  sum(w * w).backward();  // + 2w
  CHECK(to_vector(w.grad()) == std::vector<float>{5, 7});
  CHECK(w.grad().data<float>() == buffer);  // accumulated in place

  nn::SGD opt({w}, 0.1);
  opt.zero_grad();
  CHECK(to_vector(w.grad()) == std::vector<float>{0, 0});
  CHECK(w.grad().data<float>() == buffer);  // zeroed in place, buffer kept
  sum(w).backward();
  CHECK(to_vector(w.grad()) == std::vector<float>{1, 1});
}

TEST_CASE("no_grad records no graph and restores the previous mode", "[autograd]") {
  Tensor x = ones({2}).requires_grad_();
  CHECK(grad_mode_enabled());
  {
    NoGradGuard guard;
    CHECK_FALSE(grad_mode_enabled());
    Tensor y = x * 2.f + x;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
    {
      NoGradGuard nested;
    }
    CHECK_FALSE(grad_mode_enabled());  // the inner guard restores "off", not "on"
  }
  CHECK(grad_mode_enabled());
  CHECK((x * 2.f).requires_grad());
}

TEST_CASE("leaves, grad_fn, detach and requires_grad", "[autograd]") {
  Tensor x = ones({2, 2}).requires_grad_();
  const Tensor c = ones({2, 2});  // a constant
  CHECK(x.is_leaf());
  Tensor y = matmul(x, c);
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  CHECK(std::string(y.grad_fn()->name()) == "MatmulBackward");
  CHECK_FALSE((c + c).requires_grad());  // nothing requires grad: no node

  const Tensor d = y.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.impl()->storage == y.impl()->storage);
  REQUIRE_THROWS_WITH(y.requires_grad_(false), Contains("only leaf tensors"));

  // Only the inputs that need a gradient get one.
  sum(y).backward();
  CHECK(x.grad().defined());
  CHECK_FALSE(c.grad().defined());
}

TEST_CASE("views are differentiable: transpose, reshape, flatten", "[autograd]") {
  Tensor x = kernels::reshape(arange(6), {2, 3}).requires_grad_();
  const Tensor w = from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  // sum(x^T * w): d/dx = w^T
  sum(t(x) * w).backward();
  CHECK(to_vector(x.grad()) == std::vector<float>{1, 3, 5, 2, 4, 6});
  CHECK(x.grad().is_contiguous());
  x.set_grad(Tensor());
  sum(flatten(x, 0) * reshape(w, {6})).backward();
  CHECK(to_vector(x.grad()) == std::vector<float>{1, 2, 3, 4, 5, 6});
}

TEST_CASE("a long chain of ops back-propagates and is freed without deep recursion", "[autograd]") {
  Tensor x = scalar_tensor(1.0).requires_grad_();
  Tensor y = x;
  constexpr int kDepth = 100000;
  for (int i = 0; i < kDepth; ++i) y = y * 1.0f + 0.f;
  y.backward();
  CHECK(x.grad().item() == 1.0);
  y = Tensor();  // dropping the graph must not recurse 200000 destructors deep either
  CHECK(x.grad().item() == 1.0);
}

TEST_CASE("backward from an explicit upstream gradient", "[autograd]") {
  Tensor x = from_vector({1, 2, 3}, {3}).requires_grad_();
  Tensor y = x * x;
  backward(y, from_vector({1, 0, 2}, {3}));
  CHECK(to_vector(x.grad()) == std::vector<float>{2, 0, 12});
  REQUIRE_THROWS_WITH(backward(x * x, ones({2})), Contains("backward") && Contains("(2,)") && Contains("(3,)"));
}

TEST_CASE("bad input: backward from a non-scalar or from a tensor without graph", "[autograd][errors]") {
  Tensor x = ones({2, 3}).requires_grad_();
  REQUIRE_THROWS_WITH((x * 2.f).backward(), Contains("backward") && Contains("scalar") && Contains("(2, 3)"));
  REQUIRE_THROWS_WITH(ones({1}).backward(), Contains("backward") && Contains("does not require grad"));
  REQUIRE_THROWS_WITH(Tensor().backward(), Contains("backward") && Contains("undefined"));
}

TEST_CASE("bad input: cross_entropy targets out of range or of the wrong kind", "[autograd][errors]") {
  const Tensor logits = zeros({3, 4});
  REQUIRE_THROWS_WITH(cross_entropy(logits, from_vector_i64({0, 4, 1}, {3})),
                      Contains("cross_entropy") && Contains("target 4") && Contains("position 1") &&
                          Contains("4 classes"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, from_vector_i64({0, -1, 1}, {3})),
                      Contains("cross_entropy") && Contains("target -1"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, from_vector_i64({0, 1}, {2})),
                      Contains("cross_entropy") && Contains("(2,)") && Contains("(3, 4)"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, zeros({3})), Contains("cross_entropy") && Contains("f32"));
  REQUIRE_THROWS_WITH(cross_entropy(zeros({4}), from_vector_i64({0}, {1})), Contains("cross_entropy") && Contains("(4,)"));
  REQUIRE_THROWS_WITH(mse_loss(zeros({2, 3}), zeros({3, 2})), Contains("mse_loss") && Contains("(2, 3)") && Contains("(3, 2)"));
}

TEST_CASE("cross_entropy: the loss value and its fused gradient (softmax - onehot) / N", "[autograd]") {
  Tensor logits = from_vector({0, 0, 0, 2, 0, 0}, {2, 3}).requires_grad_();
  const Tensor target = from_vector_i64({1, 0}, {2});
  Tensor loss = cross_entropy(logits, target);
  const double z = std::log(std::exp(2.0) + 2) - 2;  // row 2: lse - x_0
  CHECK(close(loss.item(), (std::log(3.0) + z) / 2));
  loss.backward();
  const double e = std::exp(2.0) / (std::exp(2.0) + 2), o = 1 / (std::exp(2.0) + 2);
  const std::vector<double> want = {1 / 3.0 / 2, (1 / 3.0 - 1) / 2, 1 / 3.0 / 2, (e - 1) / 2, o / 2, o / 2};
  for (int i = 0; i < 6; ++i) CHECK(close(to_vector(logits.grad())[i], want[i]));
  // The per-sample losses and their sum.
  const Tensor none = cross_entropy(logits.detach(), target, Reduction::none);
  CHECK(none.shape() == Shape{2});
  CHECK(close(none.at({0}), std::log(3.0)));
  CHECK(close(cross_entropy(logits.detach(), target, Reduction::sum).item(), std::log(3.0) + z));
}

namespace {
// A custom node whose backward returns a gradient of the wrong shape.
struct BadShapeBackward final : Node {
  const char* name() const override { return "BadShapeBackward"; }
  void backward(const Tensor& /*g*/, Tensor* gi) override { gi[0] = zeros({7}); }
};
}  // namespace

TEST_CASE("a backward that returns a gradient of the wrong shape is named in the error", "[autograd][errors]") {
  Tensor x = ones({2, 3}).requires_grad_();
  Tensor y = kernels::mul_scalar(x, 2.f);
  record<BadShapeBackward>(y, {x});
  REQUIRE_THROWS_WITH(sum(y).backward(), Contains("BadShapeBackward") && Contains("(7,)") && Contains("(2, 3)"));
}

TEST_CASE("bad input: an undefined tensor is named by the op that received it", "[autograd][errors]") {
  const Tensor none;
  REQUIRE_THROWS_WITH(relu(none), Contains("relu") && Contains("undefined"));
  REQUIRE_THROWS_WITH(add(ones({2}), none), Contains("add") && Contains("undefined"));
  REQUIRE_THROWS_WITH(flatten(none), Contains("flatten") && Contains("undefined"));
  REQUIRE_THROWS_WITH(cross_entropy(zeros({2, 3}), none), Contains("cross_entropy") && Contains("undefined"));
}

// Gradient checks: every differentiable op of src/autograd/functions.h, its
// backward against central finite differences (tests/gradcheck.h), including
// broadcasting, transposed (non-contiguous) matmul operands and the losses,
// then Linear + cross-entropy end to end, and a check that the helper itself
// fails on a deliberately wrong backward.
#include <catch2/catch.hpp>

#include "gradcheck.h"
#include "tinyqat.h"

using namespace tq;
using tq::testing::gradcheck;
using tq::testing::GradcheckOptions;
using tq::testing::Inputs;

namespace {

// Finite-difference step and tolerances. The forward pass runs in f32, so a
// central difference of step 2h carries a rounding error of about
// 1e-7 |f| / h; h = 1e-3 keeps that near 1e-4 while the truncation error
// (h^2 / 6 |f'''|) stays below 1e-6 for these smooth ops.
constexpr double kEps = 1e-3;
constexpr double kAtol = 1e-3;
constexpr double kRtol = 1e-2;
// ReLU inputs and max competitors closer than this to their kink are skipped
// (several steps h, so no central difference straddles the kink).
constexpr double kKinkMargin = 5 * kEps;

GradcheckOptions default_options() {
  GradcheckOptions o;
  o.eps = kEps;
  o.atol = kAtol;
  o.rtol = kRtol;
  return o;
}
const GradcheckOptions kDefault = default_options();

GradcheckOptions with_kink(tq::testing::KinkPredicate k) {
  GradcheckOptions o = kDefault;
  o.kink = std::move(k);
  return o;
}

Tensor randn_seeded(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return randn(shape, g);
}

// Values with magnitude in [lo, hi] and random sign: divisors, log inputs.
Tensor away_from_zero(const Shape& shape, uint64_t seed, double lo, double hi, bool allow_negative = true) {
  Generator g(seed);
  Tensor t = rand_uniform(shape, lo, hi, g);
  if (allow_negative) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (g.uniform() < 0.5) p[i] = -p[i];
  }
  return t;
}

#define REQUIRE_GRADCHECK(expr)            \
  do {                                     \
    const auto gc_result_ = (expr);        \
    INFO(gc_result_.message);              \
    REQUIRE(gc_result_.ok);                \
    REQUIRE(gc_result_.checked > 0);       \
  } while (0)

// The broadcasting cases each binary op is checked on: (name, a shape, b shape).
struct BroadcastCase {
  const char* name;
  Shape a, b;
};
const BroadcastCase kBroadcastCases[] = {
    {"same (3,4)+(3,4)", {3, 4}, {3, 4}},
    {"row (3,4)+(4)", {3, 4}, {4}},
    {"column (3,4)+(3,1)", {3, 4}, {3, 1}},
    {"outer (3,1)+(1,4)", {3, 1}, {1, 4}},
    {"0-d (3,4)+()", {3, 4}, {}},
    {"rank 3 (2,3,4)+(3,1)", {2, 3, 4}, {3, 1}},
    {"left operand broadcast (4)+(2,4)", {4}, {2, 4}},
};

}  // namespace

TEST_CASE("gradcheck: add, sub, mul, div with broadcasting", "[autograd][gradcheck]") {
  using BinaryOp = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, BinaryOp> ops[] = {
      {"add", [](const Tensor& a, const Tensor& b) { return tq::add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return tq::sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return tq::mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return tq::div(a, b); }},
  };
  uint64_t seed = 1;
  for (auto [name, op] : ops) {
    for (const BroadcastCase& c : kBroadcastCases) {
      SECTION(std::string(name) + " " + c.name) {
        const Tensor a = randn_seeded(c.a, seed);
        // Divisors in [0.5, 2] in magnitude: 1/b stays smooth over the step.
        const Tensor b = std::string(name) == "div" ? away_from_zero(c.b, seed + 100, 0.5, 2.0) : randn_seeded(c.b, seed + 100);
        REQUIRE_GRADCHECK(gradcheck([op = op](const Inputs& in) { return op(in[0], in[1]); }, {a, b}, kDefault));
      }
      ++seed;
    }
  }
}

TEST_CASE("gradcheck: operators and scalar forms", "[autograd][gradcheck]") {
  const Tensor a = randn_seeded({3, 4}, 11), b = away_from_zero({3, 4}, 12, 0.5, 2.0);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return in[0] + in[1] * in[0] - in[1] / in[0]; },
                              {b, away_from_zero({3, 4}, 13, 0.5, 2.0)}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::add(in[0], 2.5f); }, {a}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::mul(in[0], -1.5f); }, {a}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return 3.f - in[0] * 2.f + 1.f; }, {a}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return in[0] / 4.f; }, {a}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return 2.f / in[0]; }, {b}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return -in[0]; }, {a}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::neg(in[0]); }, {a}, kDefault));
}

TEST_CASE("gradcheck: unary elementwise ops", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({3, 4}, 21);
  SECTION("exp") { REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::exp(in[0]); }, {x}, kDefault)); }
  SECTION("log, inputs in [0.5, 3]") {
    const Tensor pos = away_from_zero({3, 4}, 22, 0.5, 3.0, false);
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::log(in[0]); }, {pos}, kDefault));
  }
  SECTION("relu, skipping inputs near the kink at 0") {
    // Include values right at the kink so the predicate has work to do.
    Tensor r = randn_seeded({4, 5}, 23);
    r.data<float>()[0] = 0.f;
    r.data<float>()[7] = 1e-4f;
    const auto res = gradcheck([](const Inputs& in) { return tq::relu(in[0]); }, {r},
                               with_kink(tq::testing::near_zero(kKinkMargin)));
    INFO(res.message);
    REQUIRE(res.ok);
    REQUIRE(res.skipped >= 2);
    REQUIRE(res.skipped < res.elements / 2);
  }
  SECTION("sigmoid") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::sigmoid(in[0]); }, {x * 2.f}, kDefault));
  }
  SECTION("tanh") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::tanh(in[0]); }, {x * 2.f}, kDefault));
  }
  SECTION("pow2") { REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::pow2(in[0]); }, {x}, kDefault)); }
}

TEST_CASE("gradcheck: reductions", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({2, 3, 4}, 31);
  SECTION("sum of all") { REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::sum(in[0]); }, {x}, kDefault)); }
  SECTION("mean of all") { REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::mean(in[0]); }, {x}, kDefault)); }
  for (int dim : {0, 1, 2, -1}) {
    for (bool keepdim : {false, true}) {
      SECTION("sum and mean over dim " + std::to_string(dim) + (keepdim ? " keepdim" : "")) {
        REQUIRE_GRADCHECK(gradcheck([=](const Inputs& in) { return tq::sum(in[0], dim, keepdim); }, {x}, kDefault));
        REQUIRE_GRADCHECK(gradcheck([=](const Inputs& in) { return tq::mean(in[0], dim, keepdim); }, {x}, kDefault));
      }
      SECTION("max over dim " + std::to_string(dim) + (keepdim ? " keepdim" : "") + ", skipping near-ties") {
        REQUIRE_GRADCHECK(gradcheck([=](const Inputs& in) { return tq::max(in[0], dim, keepdim); }, {x},
                                    with_kink(tq::testing::near_tie_along(dim, kKinkMargin))));
      }
    }
  }
}

TEST_CASE("gradcheck: reshape, flatten, transpose", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({2, 3, 4}, 41);
  // A non-uniform weight after the view op makes every output position count
  // differently, so a gradient routed to the wrong element is caught.
  const Tensor w = randn_seeded({24}, 42);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::reshape(in[0], {6, 4}); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::reshape(in[0], {-1}); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::flatten(in[0]); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::flatten(in[0], 0); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::transpose(in[0], 0, 2); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::transpose(in[0], -1, 1); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::t(tq::reshape(in[0], {6, 4})); }, {x}, kDefault));
  // A view of a view, then an op that reads it through its strides.
  REQUIRE_GRADCHECK(gradcheck(
      [](const Inputs& in) { return tq::reshape(tq::transpose(in[0], 0, 1), {-1}) * in[1]; }, {x, w}, kDefault));
}

TEST_CASE("gradcheck: slice", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({4, 5}, 43);
  const Tensor w = randn_seeded({4, 2}, 44);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::slice(in[0], 0, 1, 3); }, {x}, kDefault));
  // Negative bounds, a strided view, then a weight that tells positions apart.
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::slice(in[0], 1, -3, -1) * in[1]; }, {x, w}, kDefault));
}

TEST_CASE("gradcheck: matmul with plain and transposed operands", "[autograd][gradcheck]") {
  // a is stored (3, 4) or (4, 3), b is stored (4, 5) or (5, 4); t() makes a
  // transposed view that reaches BLAS as a transpose flag, never copied.
  const Tensor a = randn_seeded({3, 4}, 51), at = randn_seeded({4, 3}, 52);
  const Tensor b = randn_seeded({4, 5}, 53), bt = randn_seeded({5, 4}, 54);
  SECTION("A B") { REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::matmul(in[0], in[1]); }, {a, b}, kDefault)); }
  SECTION("A^T B") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::matmul(tq::t(in[0]), in[1]); }, {at, b}, kDefault));
  }
  SECTION("A B^T") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::matmul(in[0], tq::t(in[1])); }, {a, bt}, kDefault));
  }
  SECTION("A^T B^T") {
    REQUIRE_GRADCHECK(
        gradcheck([](const Inputs& in) { return tq::matmul(tq::t(in[0]), tq::t(in[1])); }, {at, bt}, kDefault));
  }
  SECTION("large enough for the BLAS path (M N K > kSmallGemmMacs)") {
    const Tensor big_a = randn_seeded({9, 24}, 55), big_b = randn_seeded({24, 20}, 56);
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::matmul(in[0], in[1]); }, {big_a, big_b}, kDefault));
  }
  SECTION("a chain: (A B) C") {
    const Tensor c = randn_seeded({5, 2}, 57);
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::matmul(tq::matmul(in[0], in[1]), in[2]); }, {a, b, c}, kDefault));
  }
}

TEST_CASE("gradcheck: linear with and without bias", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({3, 4}, 61), w = randn_seeded({5, 4}, 62), bias = randn_seeded({5}, 63);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::linear(in[0], in[1], in[2]); }, {x, w, bias}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::linear(in[0], in[1], Tensor()); }, {x, w}, kDefault));
  // The input as a transposed view: (4, 3) stored, used as (3, 4).
  const Tensor xt = randn_seeded({4, 3}, 64);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::linear(tq::t(in[0]), in[1], in[2]); }, {xt, w, bias}, kDefault));
}

TEST_CASE("gradcheck: softmax family", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({3, 5}, 71);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::log_softmax(in[0]); }, {x}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::softmax(in[0]); }, {x}, kDefault));
  // Rank 3 (softmax over the last dimension) and a non-contiguous input.
  const Tensor x3 = randn_seeded({2, 3, 4}, 72);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::log_softmax(in[0]); }, {x3}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::softmax(tq::transpose(in[0], 0, 2)); }, {x3}, kDefault));
}

TEST_CASE("gradcheck: cross_entropy and mse_loss", "[autograd][gradcheck]") {
  const Tensor logits = randn_seeded({4, 5}, 81);
  const Tensor target = from_vector_i64({1, 0, 4, 2}, {4});
  SECTION("cross_entropy, mean") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::cross_entropy(in[0], in[1]); }, {logits, target}, kDefault));
  }
  SECTION("cross_entropy, sum") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::cross_entropy(in[0], in[1], Reduction::sum); },
                                {logits, target}, kDefault));
  }
  SECTION("cross_entropy, none") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::cross_entropy(in[0], in[1], Reduction::none); },
                                {logits, target}, kDefault));
  }
  SECTION("cross_entropy of a scaled loss (upstream gradient != 1)") {
    REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::cross_entropy(in[0], in[1]) * 3.f; }, {logits, target}, kDefault));
  }
  const Tensor pred = randn_seeded({3, 4}, 82), want = randn_seeded({3, 4}, 83);
  for (auto [r, name] : {std::pair{Reduction::mean, "mean"}, {Reduction::sum, "sum"}, {Reduction::none, "none"}}) {
    SECTION(std::string("mse_loss, ") + name) {
      REQUIRE_GRADCHECK(gradcheck([r = r](const Inputs& in) { return tq::mse_loss(in[0], in[1], r); }, {pred, want}, kDefault));
    }
  }
}

TEST_CASE("gradcheck: a tensor used twice accumulates both paths", "[autograd][gradcheck]") {
  const Tensor a = randn_seeded({3, 4}, 91), b = randn_seeded({3, 4}, 92);
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return in[0] * in[0] + tq::exp(in[0]) * in[1]; }, {a, b}, kDefault));
  REQUIRE_GRADCHECK(gradcheck([](const Inputs& in) { return tq::matmul(in[0], tq::t(in[0])); }, {a}, kDefault));
}

TEST_CASE("gradcheck: Linear + ReLU + Linear + cross-entropy end to end", "[autograd][gradcheck][nn]") {
  manual_seed(7);
  nn::Linear fc1(6, 8), fc2(8, 3);
  const Tensor x = randn_seeded({5, 6}, 101);
  const Tensor target = from_vector_i64({0, 2, 1, 2, 0}, {5});
  // The gradcheck owns copies of the parameters; the modules compute with them.
  auto model = [&](const Inputs& in) {
    fc1.weight = in[1];
    fc1.bias = in[2];
    fc2.weight = in[3];
    fc2.bias = in[4];
    return cross_entropy(fc2(relu(fc1(in[0]))), in[5]);
  };
  // The ReLU sits inside: its kinks are found by comparing one-sided differences.
  GradcheckOptions opt = kDefault;
  opt.skip_nonsmooth = true;
  const auto res = gradcheck(model, {x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, target}, opt);
  INFO(res.message);
  REQUIRE(res.ok);
  REQUIRE(res.skipped * 10 < res.elements);  // nearly every element was checked

  SECTION("and without the ReLU (a smooth function: nothing may be skipped)") {
    auto smooth = [&](const Inputs& in) {
      fc1.weight = in[1];
      fc1.bias = in[2];
      fc2.weight = in[3];
      fc2.bias = in[4];
      return cross_entropy(fc2(fc1(in[0])), in[5]);
    };
    const auto r2 = gradcheck(smooth, {x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, target}, kDefault);
    INFO(r2.message);
    REQUIRE(r2.ok);
    REQUIRE(r2.skipped == 0);
  }
}

// ---- The helper must be able to fail ----

namespace {

// square(x) = x^2 with a backward that forgets the factor 2: a plausible bug.
struct WrongSquareBackward final : Node {
  const char* name() const override { return "WrongSquareBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = kernels::mul(g, inputs[0]); }  // should be 2 g x
};
struct RightSquareBackward final : Node {
  const char* name() const override { return "RightSquareBackward"; }
  void backward(const Tensor& g, Tensor* gi) override { gi[0] = kernels::mul_scalar(kernels::mul(g, inputs[0]), 2.f); }
};
// Sends the gradient to the wrong elements (a transposed route for a reshape).
struct ShuffledBackward final : Node {
  const char* name() const override { return "ShuffledBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    gi[0] = kernels::contiguous(kernels::transpose(kernels::reshape(g, {4, 3}), 0, 1));
  }
};

template <class N>
Tensor square_with(const Tensor& x) {
  Tensor out = kernels::mul(x, x);
  if (any_requires_grad(x)) record<N>(out, {x});
  return out;
}

}  // namespace

TEST_CASE("gradcheck fails on a wrong backward and passes on the right one", "[autograd][gradcheck]") {
  const Tensor x = randn_seeded({3, 4}, 111);
  const auto wrong = gradcheck([](const Inputs& in) { return square_with<WrongSquareBackward>(in[0]); }, {x}, kDefault);
  REQUIRE_FALSE(wrong.ok);
  REQUIRE_THAT(wrong.message, Catch::Contains("FAILED") && Catch::Contains("analytic") && Catch::Contains("numeric"));

  const auto right = gradcheck([](const Inputs& in) { return square_with<RightSquareBackward>(in[0]); }, {x}, kDefault);
  INFO(right.message);
  REQUIRE(right.ok);

  // A gradient with the right values in the wrong places fails as well.
  const Tensor y = randn_seeded({3, 4}, 112);
  const auto shuffled = gradcheck(
      [](const Inputs& in) {
        Tensor out = kernels::reshape(kernels::contiguous(in[0]), {12});
        out = kernels::clone(out);
        if (any_requires_grad(in[0])) record<ShuffledBackward>(out, {in[0]});
        return out;
      },
      {y}, kDefault);
  REQUIRE_FALSE(shuffled.ok);
}

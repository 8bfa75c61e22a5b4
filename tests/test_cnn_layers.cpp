// Convolutional layers as modules: gradcheck of every op, the errors each
// misuse gets, dropout's statistics, Add's two-input forward, the models'
// parameter counts and names, and state_dict loading errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>

#include "gradcheck.h"
#include "tinyqat.h"

using namespace tq;
using Catch::Matchers::Contains;
using tq::testing::gradcheck;
using tq::testing::Inputs;

namespace {

int64_t parameter_count(const nn::Module& m) {
  int64_t n = 0;
  for (const Tensor& p : m.parameters()) n += p.numel();
  return n;
}

tq::testing::GradcheckOptions options(double eps, double atol, double rtol, bool skip_nonsmooth = false) {
  tq::testing::GradcheckOptions o;
  o.eps = eps;
  o.atol = atol;
  o.rtol = rtol;
  o.skip_nonsmooth = skip_nonsmooth;
  return o;
}

void require_ok(const tq::testing::GradcheckResult& r) {
  INFO(r.message);
  REQUIRE(r.ok);
  REQUIRE(r.checked > 0);
}

}  // namespace

TEST_CASE("gradcheck: conv2d with stride, padding, dilation, groups and depthwise", "[cnn][gradcheck]") {
  manual_seed(11);
  struct C { int64_t C, OC, groups, stride, pad, dil; };
  for (const C c : {C{2, 3, 1, 2, 1, 1}, C{4, 4, 2, 1, 1, 2}, C{3, 3, 3, 2, 1, 1}, C{3, 2, 1, 1, 0, 1}}) {
    const Tensor x = randn({2, c.C, 5, 4}), w = randn({c.OC, c.C / c.groups, 3, 3}), b = randn({c.OC});
    const Conv2dOptions o{{c.stride, c.stride}, {c.pad, c.pad}, {c.dil, c.dil}, c.groups};
    require_ok(gradcheck([&](const Inputs& in) { return conv2d(in[0], in[1], in[2], o); }, {x, w, b},
                         options(1e-2, 2e-3, 2e-3)));
  }
}

TEST_CASE("gradcheck: batch_norm in training (the statistics depend on x) and in eval", "[cnn][gradcheck]") {
  manual_seed(12);
  const Tensor x = randn({3, 2, 3, 2}), gamma = rand_uniform({2}, 0.5, 1.5), beta = randn({2});
  for (bool training : {true, false}) {
    INFO((training ? "training" : "eval"));
    const Tensor rm = randn({2}), rv = rand_uniform({2}, 0.5, 1.5);
    // Running statistics are updated in training; pass copies so every call sees the same.
    require_ok(gradcheck(
        [&](const Inputs& in) {
          return batch_norm(in[0], kernels::clone(rm), kernels::clone(rv), in[1], in[2], training);
        },
        {x, gamma, beta}, options(1e-3, 2e-3, 1e-2)));
  }
}

TEST_CASE("gradcheck: pooling, relu6 and dropout", "[cnn][gradcheck]") {
  manual_seed(13);
  const Tensor x = randn({2, 2, 5, 5});
  require_ok(gradcheck([](const Inputs& in) { return max_pool2d(in[0], {{3, 3}, {2, 2}, {1, 1}, {1, 1}}); }, {x},
                       options(1e-3, 1e-3, 1e-2, true)));
  require_ok(gradcheck([](const Inputs& in) { return avg_pool2d(in[0], {{3, 3}, {2, 2}, {1, 1}, {1, 1}}); }, {x},
                       options(1e-2, 1e-3, 1e-2)));
  require_ok(gradcheck([](const Inputs& in) { return adaptive_avg_pool2d(in[0], 3, 2); }, {x},
                       options(1e-2, 1e-3, 1e-2)));
  const Tensor wide = kernels::mul_scalar(x, 4.f);  // reaches past 6 and below 0
  require_ok(gradcheck([](const Inputs& in) { return nn::relu6(in[0]); }, {wide},
                       options(1e-3, 1e-3, 1e-2, true)));
  require_ok(gradcheck(
      [](const Inputs& in) {
        Generator g(7);  // the same mask on every call
        return dropout(in[0], 0.3, true, g);
      },
      {x}, options(1e-2, 1e-3, 1e-2)));
}

TEST_CASE("Dropout: inverted scaling, seeded mask, identity in eval, p in [0, 1]", "[cnn]") {
  nn::Dropout d(0.25);
  const Tensor x = ones({100, 100});
  manual_seed(1);
  const Tensor y1 = d(x);
  manual_seed(1);
  const Tensor y2 = d(x);
  REQUIRE(to_vector(y1) == to_vector(y2));
  int64_t zeros_seen = 0;
  for (float v : to_vector(y1)) {
    REQUIRE((v == 0.f || std::fabs(v - 1.f / 0.75f) < 1e-6f));
    zeros_seen += v == 0.f;
  }
  REQUIRE(zeros_seen > 2300);  // 2500 expected; 5 standard deviations is 217
  REQUIRE(zeros_seen < 2700);
  d.eval();
  REQUIRE(d(x).same(x));
  REQUIRE(to_vector(nn::Dropout(1.0)(x)) == std::vector<float>(10000, 0.f));
  REQUIRE_THROWS_WITH(nn::Dropout(1.5), Contains("between 0 and 1") && Contains("1.5"));
  REQUIRE(d.repr() == "Dropout(p=0.25, inplace=False)");
}

TEST_CASE("Add is a two-input module; one-input calls to it, and two-input calls to others, are named errors", "[cnn]") {
  auto add = std::make_shared<nn::Add>();
  const Tensor a = from_vector({1, 2}, {2}), b = from_vector({10, 20}, {2});
  REQUIRE(to_vector((*add)(a, b)) == std::vector<float>{11, 22});
  REQUIRE_THROWS_WITH(add->forward(a), Contains("Add") && Contains("forward(Tensor)"));
  nn::ReLU relu;
  nn::Module& m = relu;
  REQUIRE_THROWS_WITH(m.forward(a, b), Contains("ReLU") && Contains("one input"));
  // Gradients flow to both inputs.
  const Tensor x = from_vector({1, 2}, {2}).requires_grad_(true), y = from_vector({3, 4}, {2}).requires_grad_(true);
  sum((*add)(x, y)).backward();
  REQUIRE(to_vector(x.grad()) == std::vector<float>{1, 1});
  REQUIRE(to_vector(y.grad()) == std::vector<float>{1, 1});
}

TEST_CASE("Convolution layers name every misuse", "[cnn][errors]") {
  manual_seed(2);
  nn::Conv2d conv(3, 4, 3, 1, 1);
  REQUIRE_THROWS_WITH(conv(randn({2, 5, 6, 6})), Contains("in_channels=3") && Contains("(2, 5, 6, 6)"));
  REQUIRE_THROWS_WITH(conv(randn({5, 6, 6})), Contains("in_channels=3") && Contains("(5, 6, 6)"));
  REQUIRE_THROWS_WITH(nn::Conv2d(4, 6, 3, 1, 0, 1, 3), Contains("groups (3)") && Contains("divide"));
  REQUIRE_THROWS_WITH(nn::Conv2d(0, 6, 3), Contains("must be positive"));
  REQUIRE_THROWS_WITH(nn::Conv2d(3, 6, 3, 0), Contains("stride"));
  REQUIRE_THROWS_WITH(nn::Conv2d(3, 6, 3, 1, 0)(randn({1, 3, 2, 2})), Contains("smaller than the dilated kernel"));
  // The functional form checks the weight against the input and the bias.
  REQUIRE_THROWS_WITH(conv2d(randn({1, 4, 5, 5}), randn({2, 3, 3, 3}), Tensor()),
                      Contains("4 channels") && Contains("expects 3"));
  REQUIRE_THROWS_WITH(conv2d(randn({1, 4, 5, 5}), randn({2, 4, 3}), Tensor()), Contains("4-D weight"));
  REQUIRE_THROWS_WITH(conv2d(randn({1, 3, 5, 5}), randn({2, 3, 3, 3}), randn({3})), Contains("bias of shape (3,)"));
  REQUIRE_THROWS_WITH(conv2d(randn({1, 4, 5, 5}), randn({3, 2, 3, 3}), Tensor(), {{1, 1}, {0, 0}, {1, 1}, 2}),
                      Contains("divisible by groups"));

  nn::BatchNorm2d bn(4);
  REQUIRE_THROWS_WITH(bn(randn({2, 3, 4, 4})), Contains("3 channels") && Contains("expected 4"));
  REQUIRE_THROWS_WITH(bn(randn({2, 4})), Contains("4-D input"));
  REQUIRE_THROWS_WITH(bn(randn({1, 4, 1, 1})), Contains("more than 1 value per channel"));
  REQUIRE_THROWS_WITH(nn::BatchNorm2d(4, 0.0), Contains("eps"));
  REQUIRE_THROWS_WITH(batch_norm(randn({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), false),
                      Contains("running_mean"));

  REQUIRE_THROWS_WITH(nn::MaxPool2d(3, 1, 2)(randn({1, 1, 5, 5})), Contains("at most half"));
  REQUIRE_THROWS_WITH(nn::MaxPool2d(4)(randn({1, 1, 3, 3})), Contains("larger than the padded input"));
  REQUIRE_THROWS_WITH(nn::AvgPool2d(2)(randn({4, 4})), Contains("4-D input"));
  REQUIRE_THROWS_WITH(nn::AdaptiveAvgPool2d(0), Contains("output_size"));
}

TEST_CASE("BatchNorm2d registers PyTorch's parameters and buffers and counts its batches", "[cnn]") {
  nn::BatchNorm2d bn(3);
  std::vector<std::string> names;
  for (auto& [n, t] : bn.named_parameters()) names.push_back(n);
  for (auto& [n, t] : bn.named_buffers()) names.push_back(n);
  REQUIRE(names == std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
  REQUIRE(bn.repr() == "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)");
  manual_seed(3);
  bn(randn({2, 3, 2, 2}));
  bn(randn({2, 3, 2, 2}));
  REQUIRE(bn.num_batches_tracked() == 2);
  bn.eval();
  bn(randn({2, 3, 2, 2}));
  REQUIRE(bn.num_batches_tracked() == 2);
}

TEST_CASE("cnn() has 421,834 parameters and maps (N, 1, 28, 28) to (N, 10)", "[cnn][models]") {
  manual_seed(0);
  auto m = models::cnn();
  REQUIRE(parameter_count(*m) == 421834);
  const Tensor y = (*m)(randn({2, 1, 28, 28}));
  REQUIRE(y.shape() == Shape{2, 10});
  // One SGD step moves every parameter (the gradients reach the first layer).
  nn::SGD opt(m->parameters(), 0.1);
  cross_entropy(y, from_vector_i64({3, 7}, {2})).backward();
  for (auto& [name, p] : m->named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
  opt.step();
}

TEST_CASE("mobilenet_v2() has torchvision's 3,504,872 parameters and names", "[cnn][models]") {
  manual_seed(0);
  auto m = models::mobilenet_v2();
  REQUIRE(parameter_count(*m) == 3504872);
  const auto params = m->named_parameters();
  REQUIRE(params.front().first == "features.0.0.weight");
  REQUIRE(params[3].first == "features.1.conv.0.0.weight");
  REQUIRE(params.back().first == "classifier.1.bias");
  const auto buffers = m->named_buffers();
  REQUIRE(buffers.front().first == "features.0.1.running_mean");
  REQUIRE(buffers.size() == 52 * 3);  // 52 batch norms
  REQUIRE(models::make_divisible(32 * 0.25) == 8);
  REQUIRE(models::make_divisible(1280 * 1.0) == 1280);
  REQUIRE(models::make_divisible(24 * 0.35) == 8);
}

TEST_CASE("mobilenet_v2_small_input keeps 28x28 images at 4x4 before pooling and trains", "[cnn][models]") {
  manual_seed(0);
  auto m = models::mobilenet_v2_small_input(10, 0.25);
  const Tensor x = randn({2, 1, 28, 28});
  const Tensor feats = m->features(x);
  REQUIRE(feats.shape() == Shape{2, 1280, 4, 4});
  const Tensor y = (*m)(x);
  REQUIRE(y.shape() == Shape{2, 10});
  cross_entropy(y, from_vector_i64({1, 2}, {2})).backward();
  REQUIRE(m->named_parameters().front().second.grad().defined());
}

TEST_CASE("load_state_dict names missing, unexpected and mis-shaped keys and changes nothing then", "[cnn][state_dict]") {
  manual_seed(0);
  auto m = models::cnn();
  auto state = io::state_dict(*m);
  const std::vector<float> before = to_vector(m->named_parameters().front().second);
  io::StateDict bad = state;
  bad.erase("bn1.running_var");
  bad["extra.weight"] = zeros({1});
  REQUIRE_THROWS_WITH(io::load_state_dict(*m, bad), Contains("Missing: [bn1.running_var]") &&
                                                        Contains("Unexpected: [extra.weight]"));
  const auto r = io::load_state_dict(*m, bad, false);
  REQUIRE(r.missing_keys == std::vector<std::string>{"bn1.running_var"});
  io::StateDict shapes;
  for (auto& [k, v] : state) shapes[k] = zeros(v.shape(), v.dtype());
  shapes["fc2.weight"] = zeros({10, 127});
  REQUIRE_THROWS_WITH(io::load_state_dict(*m, shapes), Contains("'fc2.weight'") && Contains("(10, 127)") &&
                                                           Contains("(10, 128)"));
  REQUIRE(to_vector(m->named_parameters().front().second) == before);

  // Save and load round trip through a plain safetensors file.
  const std::string path = "state_dict_roundtrip.safetensors";
  io::save_state_dict_file(*m, path);
  manual_seed(99);
  auto other = models::cnn();
  io::load_state_dict_file(*other, path);
  for (auto& [k, v] : io::state_dict(*other)) {
    INFO(k);
    REQUIRE(to_vector(v) == to_vector(state.at(k)));
  }
  std::remove(path.c_str());
  REQUIRE_THROWS_WITH(io::load_state_dict_file(*other, "no_such_file.safetensors"), Contains("no_such_file"));
}

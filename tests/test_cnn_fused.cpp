// Training's fused Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2) (docs/convolution.md §6):
// the fused kernels against their plain twins, the fused op against the four
// ops one after another (values, every gradient, running statistics), its
// gradcheck, and Sequential taking the fused path exactly when it applies.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "autograd/fused_conv_ops.h"
#include "golden_reader.h"
#include "gradcheck.h"
#include "tensor/conv_kernels.h"
#include "tensor/cpu_features.h"
#include "tensor/norm_kernels.h"
#include "tensor/pool_kernels.h"
#include "tinyqat.h"

using namespace tq;
namespace k = tq::kernels;
using Catch::Matchers::Contains;

namespace {

// Largest |a - b| / (|b| + floor) over the elements.
double max_rel_diff(const Tensor& a, const Tensor& b, double floor = 1e-3) {
  const std::vector<float> x = to_vector(a), y = to_vector(b);
  REQUIRE(x.size() == y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(x[i]) - y[i]) / (std::fabs(static_cast<double>(y[i])) + floor));
  return worst;
}

// y with ties: values on a coarse grid, so that windows hold equal maxima.
Tensor tied(const Shape& s) {
  Tensor t = randn(s);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::round(p[i] * 2.f) / 2.f;
  return t;
}

// The builds of the fused kernels this CPU can run: baseline, then AVX2 and
// AVX-512 when present (a test names the ones it had to skip).
std::vector<SimdLevel> builds() {
  std::vector<SimdLevel> levels{SimdLevel::scalar};
  for (SimdLevel l : {SimdLevel::avx2, SimdLevel::avx512}) {
    if (static_cast<int>(l) <= static_cast<int>(best_simd_level())) levels.push_back(l);
    else WARN("this CPU has no " << to_string(l) << ": that build of the fused kernels is skipped");
  }
  return levels;
}

// Restores the default build when a test ends.
struct BuildGuard {
  SimdLevel saved = k::fused_kernels();
  ~BuildGuard() { k::set_fused_kernels(saved); }
};

}  // namespace

TEST_CASE("fused batch-norm + ReLU + 2x2 max-pool forward equals its twin and the three kernels in a row",
          "[cnn][kernels][fused]") {
  BuildGuard guard;
  for (SimdLevel level : builds()) {
  k::set_fused_kernels(level);
  INFO(to_string(level) << " build");
  manual_seed(21);
  for (const Shape& s : {Shape{2, 3, 8, 8}, Shape{1, 2, 7, 9}, Shape{3, 4, 28, 28}, Shape{2, 5, 14, 14}, Shape{1, 1, 2, 2},
                         Shape{2, 3, 6, 34}}) {
    INFO(s.str());
    const int64_t C = s[1];
    const Tensor y = tied(s);
    // Negative scales too: the maximum of relu(y a + b) is then at y's minimum.
    const Tensor scale = rand_uniform({C}, -1.5, 1.5), shift = rand_uniform({C}, -0.5, 0.5);
    Tensor out, at, y_at, ref_out, ref_at;
    k::batch_norm_relu_max_pool2x2_forward(y, scale, shift, out, at, y_at);
    k::batch_norm_relu_max_pool2x2_forward_reference(y, scale, shift, ref_out, ref_at);
    REQUIRE(to_vector(out) == to_vector(ref_out));  // the same arithmetic: bit for bit
    REQUIRE(to_vector(at) == to_vector(ref_at));

    // The unfused kernels: apply, relu, pool.
    const Tensor r = k::relu(k::batch_norm_apply(y, scale, shift));
    const k::Pool2dGeometry g = k::pool2d_geometry(s, 2, 2, 2, 2, 0, 0, 1, 1, "test");
    Tensor pooled, argmax;
    k::max_pool2d_forward(r, g, pooled, argmax);
    REQUIRE(to_vector(out) == to_vector(pooled));
    const std::vector<float> o = to_vector(out), am = to_vector(argmax), ia = to_vector(at), ya = to_vector(y_at);
    const std::vector<float> yv = to_vector(y);
    const int64_t hw = s[2] * s[3], ohw = g.OH * g.OW;
    int64_t open = 0;
    for (size_t i = 0; i < o.size(); ++i) {
      if (o[i] > 0.f) {
        ++open;
        REQUIRE(ia[i] == am[i]);  // where the gradient flows, the same place
        REQUIRE(ya[i] == yv[static_cast<size_t>(static_cast<int64_t>(i) / ohw * hw + static_cast<int64_t>(ia[i]))]);
      } else {
        REQUIRE(ia[i] == -1.f);  // the ReLU is closed: no gradient
      }
    }
    if (o.size() > 8) REQUIRE(open > 0);
  }
  }
}

TEST_CASE("fused batch-norm + ReLU + 2x2 max-pool backward agrees with its double twin", "[cnn][kernels][fused]") {
  BuildGuard guard;
  for (SimdLevel level : builds()) {
  k::set_fused_kernels(level);
  INFO(to_string(level) << " build");
  manual_seed(22);
  for (const Shape& s : {Shape{2, 3, 8, 8}, Shape{1, 2, 7, 9}, Shape{3, 4, 28, 28}, Shape{2, 5, 14, 14}}) {
    for (bool affine : {true, false}) {
      INFO(s.str() << (affine ? " affine" : " no affine"));
      const int64_t C = s[1];
      const Tensor y = k::add_scalar(randn(s), 3.f);  // a mean away from 0
      Tensor mean, var;
      k::batch_norm_stats(y, mean, var);
      Tensor invstd = empty({C}), scale = empty({C}), shift = empty({C});
      const Tensor gamma = affine ? rand_uniform({C}, -1.5, 1.5) : Tensor();
      for (int64_t c = 0; c < C; ++c) {
        invstd.data<float>()[c] = 1.f / std::sqrt(var.data<float>()[c] + 1e-5f);
        scale.data<float>()[c] = (affine ? gamma.data<float>()[c] : 1.f) * invstd.data<float>()[c];
        shift.data<float>()[c] = 0.1f - mean.data<float>()[c] * scale.data<float>()[c];
      }
      Tensor out, at, y_at;
      k::batch_norm_relu_max_pool2x2_forward(y, scale, shift, out, at, y_at);
      const Tensor dout = randn(out.shape());
      Tensor s_dz, s_dzx, bias, r_dz, r_dzx, r_bias;
      const Tensor dy = k::batch_norm_relu_max_pool2x2_backward(dout, at, y_at, y, mean, invstd, gamma, s_dz, s_dzx, &bias);
      const Tensor ref = k::batch_norm_relu_max_pool2x2_backward_reference(dout, at, y, mean, invstd, gamma, r_dz, r_dzx,
                                                                           r_bias);
      CHECK(max_rel_diff(dy, ref) < 1e-5);
      CHECK(max_rel_diff(s_dz, r_dz) < 1e-5);
      CHECK(max_rel_diff(s_dzx, r_dzx) < 1e-5);
      // The bias gradient is a float sum of up to 2352 terms of size about 1
      // that cancel (to about 0): its error is some sqrt(M) float epsilons of
      // the terms' size, so it is compared against that size, not its own.
      CHECK(max_rel_diff(bias, r_bias, 1.0) < 1e-4);
      Tensor dy_no_bias = k::batch_norm_relu_max_pool2x2_backward(dout, at, y_at, y, mean, invstd, gamma, s_dz, s_dzx,
                                                                  nullptr);
      REQUIRE(to_vector(dy_no_bias) == to_vector(dy));
    }
  }
  }
}

TEST_CASE("the AVX-512, AVX2 and baseline builds of the fused kernels give the same bits", "[cnn][kernels][fused]") {
  const std::vector<SimdLevel> levels = builds();
  if (levels.size() == 1) {
    WARN("no AVX2 or AVX-512 on this CPU: one build only");
    return;
  }
  BuildGuard guard;
  manual_seed(26);
  const size_t B = levels.size();
  for (const Shape& s : {Shape{2, 3, 28, 28}, Shape{2, 5, 14, 14}, Shape{1, 2, 7, 9}, Shape{1, 2, 66, 70}}) {
    INFO(s.str());
    const int64_t C = s[1];
    const Tensor y = tied(s), scale = rand_uniform({C}, -1.5, 1.5), shift = rand_uniform({C}, -0.5, 0.5);
    const Tensor gamma = rand_uniform({C}, -1.5, 1.5);
    std::vector<Tensor> out(B), at(B), y_at(B), mean(B), var(B), dy(B), s_dz(B), s_dzx(B), bias(B), applied(B),
        clamped(B), dx(B);
    Tensor dout;
    // col2im of a 3x3 / stride 1 / padding 1 convolution over s's planes.
    const k::Conv2dGeometry g3 = k::conv2d_geometry(s, Shape{1, s[1], 3, 3}, 1, 1, 1, 1, 1, 1, 1);
    const Tensor col = randn({s[1] * 9, s[2] * s[3]});
    for (size_t b = 0; b < B; ++b) {
      k::set_fused_kernels(levels[b]);
      k::batch_norm_stats(y, mean[b], var[b]);
      k::batch_norm_relu_max_pool2x2_forward(y, scale, shift, out[b], at[b], y_at[b]);
      if (!dout.defined()) dout = randn(out[0].shape());
      const Tensor invstd = k::add_scalar(var[0], 1.f);  // any positive values
      dy[b] = k::batch_norm_relu_max_pool2x2_backward(dout, at[b], y_at[b], y, mean[b], invstd, gamma, s_dz[b],
                                                      s_dzx[b], &bias[b]);
      applied[b] = k::batch_norm_apply(y, scale, shift);
      clamped[b] = k::batch_norm_apply(k::mul_scalar(y, 4.f), scale, shift, /*then_relu6=*/true);
      dx[b] = zeros({1, s[1], s[2], s[3]});
      k::col2im_assign(col.data<float>(), g3, dx[b].data<float>());
    }
    for (size_t b = 1; b < B; ++b) {
      INFO(to_string(levels[b]) << " against the baseline");
      for (const auto* t : {&out, &at, &y_at, &mean, &var, &dy, &s_dz, &s_dzx, &bias, &applied, &clamped, &dx})
        REQUIRE(to_vector((*t)[b]) == to_vector((*t)[0]));
    }
  }
}

TEST_CASE("every build of the fused kernels equals the baseline on plane sizes from 2x2 to 21x21",
          "[cnn][kernels][fused]") {
  // Every row length around the eight- and sixteen-lane blocks: whole
  // blocks, a block and a tail, a tail only; odd sizes leave a column and a
  // row outside every window.
  const std::vector<SimdLevel> levels = builds();
  if (levels.size() == 1) return;
  BuildGuard guard;
  manual_seed(27);
  for (int64_t H = 2; H <= 21; H += 3)
    for (int64_t W = 2; W <= 21; ++W) {
      INFO(H << " x " << W);
      const Shape s{2, 2, H, W};
      const Tensor y = tied(s), scale = rand_uniform({2}, -1.5, 1.5), shift = rand_uniform({2}, -0.5, 0.5);
      const Tensor gamma = rand_uniform({2}, -1.5, 1.5);
      const k::Conv2dGeometry g3 = k::conv2d_geometry(s, Shape{1, 2, 3, 3}, 1, 1, 1, 1, 1, 1, 1);
      const Tensor col = randn({2 * 9, H * W});
      const Tensor xd = randn({1, 2, H, W}), wd = randn({2, 1, 3, 3});
      std::vector<std::vector<float>> results;
      Tensor dout;
      for (SimdLevel level : levels) {
        k::set_fused_kernels(level);
        Tensor out, at, y_at, mean, var, s_dz, s_dzx, bias;
        k::batch_norm_stats(y, mean, var);
        k::batch_norm_relu_max_pool2x2_forward(y, scale, shift, out, at, y_at);
        if (!dout.defined()) dout = randn(out.shape());
        const Tensor dy = k::batch_norm_relu_max_pool2x2_backward(dout, at, y_at, y, mean, k::add_scalar(var, 1.f),
                                                                  gamma, s_dz, s_dzx, &bias);
        Tensor dx = zeros({1, 2, H, W});
        k::col2im_assign(col.data<float>(), g3, dx.data<float>());
        std::vector<float> all;
        for (const Tensor& t : {out, at, y_at, mean, var, dy, s_dz, s_dzx, bias, dx,
                                k::conv2d_forward(xd, wd, Tensor(), k::conv2d_geometry(xd.shape(), wd.shape(), 1, 2, 1,
                                                                                       1, 1, 1, 2))}) {
          const std::vector<float> v = to_vector(t);
          all.insert(all.end(), v.begin(), v.end());
        }
        results.push_back(std::move(all));
      }
      for (size_t b = 1; b < results.size(); ++b) {
        INFO(to_string(levels[b]) << " against the baseline");
        REQUIRE(results[b].size() == results[0].size());
        for (size_t i = 0; i < results[0].size(); ++i)
          if (std::memcmp(&results[b][i], &results[0][i], sizeof(float)) != 0) FAIL("element " << i << " differs");
      }
    }
}

TEST_CASE("batch-norm statistics one image at a time equal batch_norm_stats", "[cnn][kernels][fused]") {
  manual_seed(23);
  const Tensor x = k::add_scalar(randn({3, 4, 5, 7}), 100.f);
  Tensor mean, var, m2, v2;
  k::batch_norm_stats(x, mean, var);
  k::BatchNormStats stats(4, 35);
  for (int64_t n = 0; n < 3; ++n) stats.add(x.data<float>() + n * 4 * 35);
  stats.finish(m2, v2);
  REQUIRE(to_vector(m2) == to_vector(mean));
  REQUIRE(to_vector(v2) == to_vector(var));
  Tensor rm, rv;
  k::batch_norm_stats_reference(x, rm, rv);
  REQUIRE(max_rel_diff(m2, rm) < 1e-6);
  REQUIRE(max_rel_diff(v2, rv, 1e-2) < 1e-3);
  REQUIRE_THROWS_WITH(k::BatchNormStats(4, 35).finish(m2, v2), Contains("no image"));
}

namespace {

struct Block {
  nn::Conv2d conv;
  nn::BatchNorm2d bn;
  Block(int64_t in, int64_t out, bool bias, int64_t stride) : conv(in, out, 3, stride, 1, 1, 1, bias), bn(out) {}
};

// conv -> bn -> relu -> pool one op at a time, and the fused op, on copies of
// the same parameters; every output, gradient and running statistic compared.
void compare_with_unfused(const Shape& xs, int64_t OC, bool bias, int64_t stride) {
  manual_seed(31);
  Block a(xs[1], OC, bias, stride), b(xs[1], OC, bias, stride);
  {
    NoGradGuard no_grad;
    k::copy_(b.conv.weight, a.conv.weight);
    if (bias) k::copy_(b.conv.bias, a.conv.bias);
    k::copy_(a.bn.weight, rand_uniform({OC}, -1.5, 1.5));
    k::copy_(b.bn.weight, a.bn.weight);
    k::copy_(a.bn.bias, randn({OC}));
    k::copy_(b.bn.bias, a.bn.bias);
  }
  const Tensor x0 = randn(xs);
  for (int step = 0; step < 2; ++step) {
    Tensor xa = k::clone(x0), xb = k::clone(x0);
    xa.requires_grad_();
    xb.requires_grad_();
    const Tensor ya = max_pool2d(relu(a.bn(a.conv(xa))), {{2, 2}, {2, 2}, {0, 0}, {1, 1}});
    const Tensor yb = conv2d_batch_norm_relu_max_pool2x2(xb, b.conv.weight, b.conv.bias, b.conv.options(),
                                                         b.bn.running_mean(), b.bn.running_var(), b.bn.weight,
                                                         b.bn.bias, b.bn.momentum, b.bn.eps);
    REQUIRE(std::string(yb.grad_fn()->name()) == "BatchNormReluMaxPool2dBackward");
    CHECK(max_rel_diff(yb, ya) < 1e-5);
    const Tensor g = randn(ya.shape());
    sum(mul(ya, g)).backward();
    sum(mul(yb, g)).backward();
    CHECK(max_rel_diff(xb.grad(), xa.grad()) < 1e-4);
    CHECK(max_rel_diff(b.conv.weight.grad(), a.conv.weight.grad()) < 1e-4);
    // The conv bias's gradient cancels to about 0 (batch norm removes the
    // mean): compared against the size of dy's terms.
    if (bias) CHECK(max_rel_diff(b.conv.bias.grad(), a.conv.bias.grad(), 1.0) < 1e-5);
    CHECK(max_rel_diff(b.bn.weight.grad(), a.bn.weight.grad()) < 1e-4);
    CHECK(max_rel_diff(b.bn.bias.grad(), a.bn.bias.grad()) < 1e-4);
    // The running statistics take the same statistics in the same order.
    REQUIRE(to_vector(b.bn.running_mean()) == to_vector(a.bn.running_mean()));
    REQUIRE(to_vector(b.bn.running_var()) == to_vector(a.bn.running_var()));
  }
}

}  // namespace

TEST_CASE("the fused conv + batch-norm + ReLU + max-pool op equals the four ops in a row", "[cnn][fused]") {
  SECTION("the cnn model's first block, small") { compare_with_unfused({3, 1, 10, 10}, 4, true, 1); }
  SECTION("several input channels, odd sizes, no bias") { compare_with_unfused({2, 3, 9, 7}, 5, false, 1); }
  SECTION("stride 2") { compare_with_unfused({2, 2, 12, 11}, 3, true, 2); }
}

TEST_CASE("gradcheck: the fused conv + batch-norm + ReLU + max-pool op", "[cnn][gradcheck][fused]") {
  manual_seed(24);
  const Tensor x = randn({2, 2, 6, 5}), w = randn({3, 2, 3, 3}), b = randn({3});
  const Tensor gamma = rand_uniform({3}, 0.5, 1.5), beta = randn({3});
  const Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}, 1};
  tq::testing::GradcheckOptions opt;
  opt.eps = 1e-3, opt.atol = 3e-3, opt.rtol = 2e-2, opt.skip_nonsmooth = true;
  const auto f = [&](const tq::testing::Inputs& in) {
    return conv2d_batch_norm_relu_max_pool2x2(in[0], in[1], in[2], o, Tensor(), Tensor(), gamma, beta);
  };
  const auto r = tq::testing::gradcheck(f, {x, w, b}, opt);
  INFO(r.message);
  REQUIRE(r.ok);
  REQUIRE(r.checked > r.skipped);
  const auto r2 = tq::testing::gradcheck(
      [&](const tq::testing::Inputs& in) {
        return conv2d_batch_norm_relu_max_pool2x2(x, w, b, o, Tensor(), Tensor(), in[0], in[1]);
      },
      {gamma, beta}, opt);
  INFO(r2.message);
  REQUIRE(r2.ok);
}

TEST_CASE("Sequential fuses Conv2d, BatchNorm2d, ReLU, MaxPool2d(2) in training only", "[cnn][fused]") {
  manual_seed(25);
  auto m = models::cnn();
  const Tensor x = randn({4, 1, 28, 28});
  const int64_t before = dynamic_cast<nn::BatchNorm2d&>((*m)[1]).num_batches_tracked();
  (*m)(x);
  REQUIRE(dynamic_cast<nn::BatchNorm2d&>((*m)[1]).num_batches_tracked() == before + 1);
  REQUIRE(dynamic_cast<nn::BatchNorm2d&>((*m)[5]).num_batches_tracked() == before + 1);

  // The fused op is in the graph of a training forward...
  nn::Sequential block;
  block.push_back("conv", nn::Conv2d(1, 4, 3, 1, 1));
  block.push_back("bn", nn::BatchNorm2d(4));
  block.push_back("relu", nn::ReLU());
  block.push_back("pool", nn::MaxPool2d(2));
  REQUIRE(std::string(block(x).grad_fn()->name()) == "BatchNormReluMaxPool2dBackward");
  // ...not in eval (running statistics), nor for another pool.
  block.eval();
  REQUIRE(std::string(block(x).grad_fn()->name()) == "MaxPool2DWithIndicesBackward");
  nn::Sequential other;
  other.push_back("conv", nn::Conv2d(1, 4, 3, 1, 1));
  other.push_back("bn", nn::BatchNorm2d(4));
  other.push_back("relu", nn::ReLU());
  other.push_back("pool", nn::MaxPool2d(3));
  REQUIRE(std::string(other(x).grad_fn()->name()) == "MaxPool2DWithIndicesBackward");
  // A wrong input still gets the layer's own error.
  block.train();
  REQUIRE_THROWS_WITH(block(randn({2, 3, 8, 8})), Contains("in_channels=1"));
}

TEST_CASE("im2col's 3x3 / stride 1 / padding 1 walk equals the general walk", "[cnn][kernels][fused]") {
  manual_seed(27);
  for (const Shape& s : {Shape{1, 1, 28, 28}, Shape{1, 3, 14, 14}, Shape{1, 2, 1, 1}, Shape{1, 2, 1, 5}, Shape{1, 2, 4, 1},
                         Shape{1, 2, 2, 3}, Shape{1, 1, 7, 9}}) {
    INFO(s.str());
    const Tensor x = randn(s);
    const k::Conv2dGeometry g = k::conv2d_geometry(s, {4, s[1], 3, 3}, 1, 1, 1, 1, 1, 1, 1);
    const size_t n = static_cast<size_t>(g.patch() * g.OH * g.OW);
    std::vector<float> fast(n, 7.f), general(n, -7.f);  // every entry must be written
    k::im2col(x.data<float>(), g, fast.data());
    k::im2col_general(x.data<float>(), g, general.data());
    REQUIRE(fast == general);
  }
}

TEST_CASE("col2im_assign's 3x3 / stride 1 / padding 1 walks equal zeroing + col2im's general walk",
          "[cnn][kernels][fused]") {
  BuildGuard guard;
  manual_seed(28);
  for (SimdLevel level : builds()) {
    k::set_fused_kernels(level);
    for (const Shape& s : {Shape{1, 1, 28, 28}, Shape{1, 3, 14, 14}, Shape{1, 2, 1, 1}, Shape{1, 2, 1, 5},
                           Shape{1, 2, 4, 1}, Shape{1, 2, 2, 3}, Shape{1, 1, 7, 9}, Shape{1, 2, 5, 17},
                           Shape{1, 1, 3, 33}}) {
      INFO(s.str() << " " << to_string(level));
      const k::Conv2dGeometry g = k::conv2d_geometry(s, {4, s[1], 3, 3}, 1, 1, 1, 1, 1, 1, 1);
      Tensor col = randn({g.patch(), g.OH * g.OW});
      col.data<float>()[0] = -0.f;  // a negative zero must come out as col2im makes it
      std::vector<float> fast(static_cast<size_t>(s.numel()), 7.f);  // every entry must be written
      std::vector<float> general(fast.size(), 0.f);
      k::col2im_assign(col.data<float>(), g, fast.data());
      k::col2im(col.data<float>(), g, general.data());
      REQUIRE(std::memcmp(fast.data(), general.data(), sizeof(float) * fast.size()) == 0);
    }
    // Any other geometry: zeroing + col2im itself.
    const k::Conv2dGeometry g = k::conv2d_geometry({1, 2, 7, 6}, {3, 2, 3, 3}, 2, 1, 1, 0, 1, 1, 1);
    const Tensor col = randn({g.patch(), g.OH * g.OW});
    std::vector<float> fast(2 * 7 * 6, 7.f), general(fast.size(), 0.f);
    k::col2im_assign(col.data<float>(), g, fast.data());
    k::col2im(col.data<float>(), g, general.data());
    REQUIRE(fast == general);
  }
}

TEST_CASE("the fused op sends gradients to exactly the inputs that ask, equal to the ops in a row", "[cnn][fused]") {
  manual_seed(29);
  const Tensor x0 = randn({2, 2, 6, 6}), w0 = randn({3, 2, 3, 3}), b0 = randn({3});
  const Tensor gamma0 = rand_uniform({3}, 0.5, 1.5), beta0 = randn({3});
  const Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}, 1};
  // Which of x, w, b, gamma, beta require a gradient, as bits.
  for (int mask : {1, 2, 4, 8, 16, 1 | 8, 2 | 4, 31}) {
    INFO("mask " << mask);
    Tensor in[2][5];
    for (int side = 0; side < 2; ++side) {
      const Tensor* src[5] = {&x0, &w0, &b0, &gamma0, &beta0};
      for (int i = 0; i < 5; ++i) {
        in[side][i] = k::clone(*src[i]);
        if (mask & (1 << i)) in[side][i].requires_grad_();
      }
    }
    const Tensor fused = conv2d_batch_norm_relu_max_pool2x2(in[0][0], in[0][1], in[0][2], o, Tensor(), Tensor(),
                                                            in[0][3], in[0][4]);
    const Tensor plain = max_pool2d(relu(batch_norm(conv2d(in[1][0], in[1][1], in[1][2], o), Tensor(), Tensor(),
                                                    in[1][3], in[1][4], true, 0.1, 1e-5)),
                                    {{2, 2}, {2, 2}, {0, 0}, {1, 1}});
    const Tensor g = randn(plain.shape());
    sum(mul(fused, g)).backward();
    sum(mul(plain, g)).backward();
    for (int i = 0; i < 5; ++i) {
      INFO("input " << i);
      REQUIRE(in[0][i].grad().defined() == ((mask & (1 << i)) != 0));
      if (in[0][i].grad().defined()) CHECK(max_rel_diff(in[0][i].grad(), in[1][i].grad(), 1.0) < 1e-4);
    }
  }
}

namespace {

// Running statistics, gamma and beta that push outputs far beyond 0 and 6 on both sides.
void set_batch_norm(nn::BatchNorm2d& bn) {
  const int64_t C = bn.num_features;
  k::copy_(bn.running_mean(), randn({C}));
  k::copy_(bn.running_var(), rand_uniform({C}, 0.1, 2.0));
  k::copy_(bn.weight, k::mul_scalar(randn({C}), 3.f));
  k::copy_(bn.bias, randn({C}));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), sizeof(float) * a.numel()) == 0;
}

// m(x) with no gradient recorded (as eval and the benchmarks run it).
Tensor run_without_grad(nn::Module& m, const Tensor& x) {
  NoGradGuard no_grad;
  return m(x);
}

// A module that is not a BatchNorm2d by type: breaks every fusion run.
struct Pass : nn::Module {
  Tensor forward(const Tensor& x) override { return x; }
};

}  // namespace

TEST_CASE("eval BatchNorm2d -> ReLU6 without autograd runs in one pass, the same bits as the two modules",
          "[cnn][fused]") {
  manual_seed(31);
  nn::Sequential block;
  block.push_back("0", Pass());
  block.push_back("1", nn::BatchNorm2d(5));
  block.push_back("2", nn::ReLU6());
  set_batch_norm(static_cast<nn::BatchNorm2d&>(block.get_submodule("1")));
  block.eval();
  Tensor x = k::mul_scalar(randn({2, 5, 9, 7}), 4.f);
  x.data<float>()[5] = std::nanf("");  // NaN goes through as relu6 lets it
  const Tensor two_passes = block(x);  // grad mode on: the modules one by one
  CHECK(block.fused_runs() == 0);
  const Tensor one_pass = run_without_grad(block, x);
  CHECK(block.fused_runs() == 1);
  CHECK(same_bits(one_pass, two_passes));
  int64_t low = 0, high = 0;
  for (int64_t i = 0; i < one_pass.numel(); ++i) {
    low += one_pass.data<float>()[i] == 0.f;
    high += one_pass.data<float>()[i] == 6.f;
  }
  CHECK(low > 0);
  CHECK(high > 0);  // both clamps were reached
  // The op itself refuses to run where a gradient would be needed.
  auto& bn = static_cast<nn::BatchNorm2d&>(block.get_submodule("1"));
  Tensor w = randn({5});
  w.requires_grad_(true);
  CHECK_THROWS_WITH(batch_norm_relu6_eval(randn({1, 5, 2, 2}), bn.running_mean(), bn.running_var(), w, bn.bias),
                    Catch::Contains("inference only"));
}

TEST_CASE("eval Conv2d -> BatchNorm2d [-> ReLU6] without autograd runs in the convolution's pass, the same bits",
          "[cnn][fused]") {
  BuildGuard guard;
  struct Case {
    const char* name;
    int64_t in, out, kernel, stride, groups;
    bool bias, relu6;
  };
  const Case cases[] = {
      {"3x3 with ReLU6", 3, 5, 3, 1, 1, false, true},   {"3x3 stride 2 with a bias", 3, 4, 3, 2, 1, true, false},
      {"depthwise with ReLU6", 6, 6, 3, 1, 6, false, true}, {"depthwise stride 2, bias", 4, 4, 3, 2, 4, true, true},
      {"1x1 (MobileNetV2's projection)", 8, 3, 1, 1, 1, false, false}, {"groups 2", 4, 6, 3, 1, 2, true, true},
  };
  for (SimdLevel level : builds()) {
    k::set_fused_kernels(level);
    for (const Case& c : cases) {
      INFO(c.name << " (" << to_string(level) << ")");
      manual_seed(32);
      nn::Sequential block;
      block.push_back("0", nn::Conv2d(c.in, c.out, c.kernel, c.stride, c.kernel / 2, 1, c.groups, c.bias));
      block.push_back("1", nn::BatchNorm2d(c.out));
      if (c.relu6) block.push_back("2", nn::ReLU6());
      set_batch_norm(static_cast<nn::BatchNorm2d&>(block.get_submodule("1")));
      block.eval();
      Tensor x = k::mul_scalar(randn({2, c.in, 19, 35}), 4.f);
      x.data<float>()[40] = std::nanf("");
      const Tensor by_modules = block(x);
      REQUIRE(block.fused_runs() == 0);
      const Tensor fused = run_without_grad(block, x);
      CHECK(block.fused_runs() == 1);
      CHECK(same_bits(fused, by_modules));
      // In training the batch norm takes batch statistics: no eval fusion.
      block.train();
      (void)run_without_grad(block, x);
      CHECK(block.fused_runs() == 1);
    }
  }
  // Runs it must not take: a module in between, a batch norm without running
  // statistics; a ReLU (not ReLU6) after the batch norm runs on its own.
  manual_seed(35);
  {
    nn::Sequential between;
    between.push_back("0", nn::Conv2d(3, 4, 3, 1, 1));
    between.push_back("1", Pass());
    between.push_back("2", nn::BatchNorm2d(4));
    nn::Sequential untracked;
    untracked.push_back("0", nn::Conv2d(3, 4, 3, 1, 1));
    untracked.push_back("1", nn::BatchNorm2d(4, 1e-5, 0.1, true, false));
    nn::Sequential relu;
    relu.push_back("0", nn::Conv2d(3, 4, 3, 1, 1));
    relu.push_back("1", nn::BatchNorm2d(4));
    relu.push_back("2", nn::ReLU());
    set_batch_norm(static_cast<nn::BatchNorm2d&>(relu.get_submodule("1")));
    const Tensor x = randn({2, 3, 6, 6});
    for (nn::Sequential* block : {&between, &untracked, &relu}) {
      block->eval();
      const Tensor by_modules = block->forward(x);
      CHECK(same_bits(run_without_grad(*block, x), by_modules));
    }
    CHECK(between.fused_runs() == 0);
    CHECK(untracked.fused_runs() == 0);
    CHECK(relu.fused_runs() == 1);  // Conv2d -> BatchNorm2d; the ReLU after it
    // An input too small for the kernel: the convolution's own error, as without the fusion.
    nn::Sequential unpadded;
    unpadded.push_back("0", nn::Conv2d(3, 4, 3));
    unpadded.push_back("1", nn::BatchNorm2d(4));
    unpadded.eval();
    CHECK_THROWS_WITH(run_without_grad(unpadded, randn({1, 3, 2, 2})), Contains("conv2d"));
    CHECK_THROWS_WITH(run_without_grad(unpadded, randn({1, 3, 2, 2})), !Contains("conv2d_batch_norm_eval"));
  }
  // The op itself: inference only, and names what is wrong.
  const Tensor x = randn({1, 2, 5, 5}), w = randn({3, 2, 3, 3}), rm = zeros({3}), rv = ones({3});
  Tensor g = randn({3});
  g.requires_grad_(true);
  CHECK_THROWS_WITH(conv2d_batch_norm_eval(x, w, Tensor(), Conv2dOptions{}, rm, rv, g, Tensor()),
                    Contains("inference only"));
  CHECK_THROWS_WITH(conv2d_batch_norm_eval(x, w, Tensor(), Conv2dOptions{}, zeros({4}), rv, Tensor(), Tensor()),
                    Contains("running_mean of shape (4,) does not match the convolution's 3 output channels"));
  CHECK_THROWS_WITH(conv2d_batch_norm_eval(x, w, Tensor(), Conv2dOptions{}, Tensor(), Tensor(), Tensor(), Tensor()),
                    Contains("needs running_mean and running_var"));
  CHECK_THROWS_WITH(conv2d_batch_norm_eval(x, w, Tensor(), Conv2dOptions{}, rm, rv, Tensor(), Tensor(), 0.0),
                    Contains("eps must be positive"));
}

TEST_CASE("conv2d_forward's epilogue equals the convolution then batch_norm_apply, bit for bit", "[cnn][kernels][fused]") {
  BuildGuard guard;
  struct Geometry {
    int64_t N, C, H, W, OC, K, stride, pad, dil, groups;
  };
  const Geometry geometries[] = {
      {2, 3, 9, 21, 4, 3, 1, 1, 1, 1},  {1, 4, 8, 8, 6, 1, 1, 0, 1, 1},   {2, 5, 17, 33, 5, 3, 1, 1, 1, 5},
      {1, 3, 15, 40, 3, 3, 2, 1, 1, 3}, {1, 2, 11, 12, 2, 5, 1, 4, 2, 2}, {1, 4, 7, 7, 8, 3, 1, 1, 1, 2},
  };
  for (SimdLevel level : builds()) {
    k::set_fused_kernels(level);
    manual_seed(33);
    for (const Geometry& c : geometries)
      for (int variant = 0; variant < 4; ++variant) {
        const bool relu6 = variant & 1, with_bias = variant & 2;
        INFO("N " << c.N << " C " << c.C << " " << c.H << "x" << c.W << " OC " << c.OC << " K " << c.K << " groups "
                  << c.groups << (relu6 ? " relu6" : "") << (with_bias ? " bias" : "") << " " << to_string(level));
        const Tensor x = k::mul_scalar(randn({c.N, c.C, c.H, c.W}), 3.f);
        const Tensor w = randn({c.OC, c.C / c.groups, c.K, c.K});
        const Tensor b = with_bias ? randn({c.OC}) : Tensor();
        const Tensor scale = rand_uniform({c.OC}, -3, 3), shift = rand_uniform({c.OC}, -2, 2);
        const auto g = k::conv2d_geometry(x.shape(), w.shape(), c.stride, c.stride, c.pad, c.pad, c.dil, c.dil, c.groups);
        k::ChannelEpilogue then;
        then.scale = scale.data<float>();
        then.shift = shift.data<float>();
        then.relu6 = relu6;
        const Tensor fused = k::conv2d_forward(x, w, b, g, {}, then);
        const Tensor apart = k::batch_norm_apply(k::conv2d_forward(x, w, b, g), scale, shift, relu6);
        CHECK(same_bits(fused, apart));
      }
    const Tensor x = randn({1, 2, 5, 5}), w = randn({2, 1, 3, 3}), scale = ones({2});
    const auto g = k::conv2d_geometry(x.shape(), w.shape(), 1, 1, 1, 1, 1, 1, 2);
    k::ChannelEpilogue half;
    half.scale = scale.data<float>();
    CHECK_THROWS_WITH(k::conv2d_forward(x, w, Tensor(), g, {}, half), Contains("both its scale and its shift"));
  }
}

TEST_CASE("depthwise forward: the AVX2 and AVX-512 builds equal the baseline bit for bit, and all the reference",
          "[cnn][kernels][fused]") {
  BuildGuard guard;
  struct Geometry {
    const char* name;
    int64_t N, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw;
  };
  const Geometry geometries[] = {
      {"3x3, 7x7 (one partial block)", 1, 3, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1},
      {"3x3, 37 wide (three blocks)", 2, 2, 20, 37, 3, 3, 1, 1, 1, 1, 1, 1},
      {"3x3 stride 2, odd", 1, 2, 17, 33, 3, 3, 2, 2, 1, 1, 1, 1},
      {"3x3 stride 2, even", 1, 3, 16, 64, 3, 3, 2, 2, 1, 1, 1, 1},
      {"5x5 padding 2", 1, 2, 11, 40, 5, 5, 1, 1, 2, 2, 1, 1},
      {"3x3 dilation 2, stride 2 across", 1, 2, 12, 45, 3, 3, 1, 2, 2, 2, 2, 2},
      {"1x1", 1, 2, 9, 18, 1, 1, 1, 1, 0, 0, 1, 1},
      {"3x7 stride 3 (baseline walk in all)", 1, 2, 13, 50, 3, 7, 1, 3, 1, 3, 1, 1},
      {"padding wider than the image", 1, 2, 3, 3, 3, 3, 1, 1, 4, 4, 1, 1},
      {"3x3 without padding", 2, 2, 10, 20, 3, 3, 1, 1, 0, 0, 1, 1},
  };
  manual_seed(34);
  for (const Geometry& c : geometries) {
    INFO(c.name);
    Tensor x = k::mul_scalar(randn({c.N, c.C, c.H, c.W}), 3.f);
    const Tensor w = randn({c.C, 1, c.KH, c.KW}), b = randn({c.C});
    const Tensor scale = rand_uniform({c.C}, -3, 3), shift = rand_uniform({c.C}, -2, 2);
    const auto g = k::conv2d_geometry(x.shape(), w.shape(), c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.C);
    REQUIRE(g.is_depthwise());
    for (const bool with_bias : {false, true}) {
      const Tensor bias = with_bias ? b : Tensor();
      // Finite inputs: both builds agree with the direct reference in double.
      for (SimdLevel level : builds()) {
        k::set_fused_kernels(level);
        const golden::Comparison cmp = golden::compare(k::conv2d_forward(x, w, bias, g),
                                                       k::conv2d_forward_reference(x, w, bias, g));
        INFO(cmp.describe(to_string(level)));
        CHECK(cmp.relative_error <= 2e-6);
      }
      // An infinite weight at tap (0, 0): where that tap lies in the padding
      // (output (0, 0) with padding) it is skipped, not multiplied by 0 (NaN).
      if (c.ph > 0 && c.pw > 0 && c.H + 2 * c.ph >= c.KH && c.dh == 1 && c.dw == 1)
        for (SimdLevel level : builds()) {
          k::set_fused_kernels(level);
          Tensor wi = k::clone(w);
          wi.data<float>()[0] = std::numeric_limits<float>::infinity();
          INFO(to_string(level) << ": an infinite weight in the padding");
          CHECK(std::isfinite(k::conv2d_forward(x, wi, bias, g).data<float>()[0]));
        }
      // -0, NaN and an infinite weight: the taps in the padding are skipped
      // in both builds (inf * 0 would be NaN), and every epilogue.
      Tensor xs = k::clone(x), ws = k::clone(w);
      xs.data<float>()[1] = -0.f;
      xs.data<float>()[xs.numel() / 2] = std::nanf("");
      ws.data<float>()[0] = std::numeric_limits<float>::infinity();
      for (int e = 0; e < 3; ++e) {
        k::ChannelEpilogue then;
        if (e > 0) then.scale = scale.data<float>(), then.shift = shift.data<float>(), then.relu6 = e == 2;
        std::vector<Tensor> y;
        for (SimdLevel level : builds()) {
          k::set_fused_kernels(level);
          y.push_back(k::conv2d_forward(xs, ws, bias, g, {}, then));
        }
        INFO("epilogue " << e << (with_bias ? " with a bias" : ""));
        for (size_t b = 1; b < y.size(); ++b) CHECK(same_bits(y[b], y[0]));
      }
    }
  }
}

// The fast convolution, pooling and batch-norm kernels against their plain
// reference twins, on shapes chosen to reach every path: padding on all
// sides, strides, dilation, groups, depthwise (with and without a channel
// multiplier), 1x1, odd sizes and batch 1.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "golden_reader.h"
#include "tensor/conv_kernels.h"
#include "tensor/norm_kernels.h"
#include "tensor/pool_kernels.h"
#include "tinyqat.h"

using namespace tq;
namespace k = tq::kernels;

namespace {

// The twins add in different orders (sgemm blocks against one double sum).
constexpr double kKernelRelTol = 2e-6;

struct ConvCase {
  const char* name;
  int64_t N, C, H, W, OC, KH, KW, sh, sw, ph, pw, dh, dw, groups;
};

const ConvCase kConvCases[] = {
    {"3x3 pad 1", 2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"stride 2 odd", 2, 3, 9, 8, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {"no padding", 1, 2, 5, 7, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1},
    {"dilation 2", 2, 2, 9, 9, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1},
    {"groups 2", 2, 4, 6, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2},
    {"depthwise", 2, 4, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4},
    {"depthwise stride 2", 1, 6, 9, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 6},
    {"depthwise dilated 5x5", 1, 3, 11, 10, 3, 5, 5, 1, 2, 4, 3, 2, 1, 3},
    {"depthwise multiplier 2", 1, 3, 5, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3},
    {"pointwise", 2, 8, 5, 5, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    {"pointwise stride 2", 2, 4, 6, 6, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1},
    {"rectangular", 1, 2, 6, 9, 3, 2, 3, 2, 1, 1, 0, 1, 2, 1},
    {"kernel equals input", 1, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1},
};

void require_close(const Tensor& got, const Tensor& want, const std::string& what, double tol = kKernelRelTol) {
  const golden::Comparison c = golden::compare(got, want);
  INFO(c.describe(what));
  REQUIRE(c.same_shape);
  REQUIRE(c.relative_error <= tol);
}

}  // namespace

TEST_CASE("conv2d fast kernels (im2col + sgemm, col2im, depthwise) agree with the direct reference loops", "[cnn][kernels]") {
  manual_seed(3);
  for (const ConvCase& cc : kConvCases) {
    SECTION(cc.name) {
      const Tensor x = randn({cc.N, cc.C, cc.H, cc.W});
      const Tensor w = randn({cc.OC, cc.C / cc.groups, cc.KH, cc.KW});
      const Tensor b = randn({cc.OC});
      const auto g = k::conv2d_geometry(x.shape(), w.shape(), cc.sh, cc.sw, cc.ph, cc.pw, cc.dh, cc.dw, cc.groups);
      const Tensor y = k::conv2d_forward(x, w, b, g);
      require_close(y, k::conv2d_forward_reference(x, w, b, g), "forward");
      const Tensor dy = randn(g.output_shape());
      require_close(k::conv2d_backward_input(dy, w, g), k::conv2d_backward_input_reference(dy, w, g), "input gradient");
      const Tensor dw = empty(w.shape());
      k::conv2d_backward_weight(dy, x, g, dw, false);
      const Tensor dw_ref = k::conv2d_backward_weight_reference(dy, x, g);
      require_close(dw, dw_ref, "weight gradient");
      // accumulate = true adds to what is there.
      k::conv2d_backward_weight(dy, x, g, dw, true);
      require_close(dw, k::mul_scalar(dw_ref, 2.f), "accumulated weight gradient");
    }
  }
}

TEST_CASE("conv2d_backward_images: both gradients image by image equal the separate kernels", "[cnn][kernels]") {
  manual_seed(13);
  for (const ConvCase& cc : kConvCases) {
    INFO(cc.name);
    const Tensor x = randn({cc.N, cc.C, cc.H, cc.W});
    const Tensor w = randn({cc.OC, cc.C / cc.groups, cc.KH, cc.KW});
    const auto g = k::conv2d_geometry(x.shape(), w.shape(), cc.sh, cc.sw, cc.ph, cc.pw, cc.dh, cc.dw, cc.groups);
    const Tensor dy = randn(g.output_shape());
    const int64_t image = g.OC * g.OH * g.OW;
    std::vector<int64_t> asked;
    // Each image's gradient from a buffer of its own, filled on request and
    // spoilt after use: the kernel must take it when it asks, not later.
    std::vector<float> buffer(static_cast<size_t>(image));
    const k::ImageGradient dy_of = [&](int64_t n) {
      asked.push_back(n);
      if (n > 0) std::fill(buffer.begin(), buffer.end(), std::numeric_limits<float>::quiet_NaN());
      std::copy_n(dy.data<float>() + n * image, image, buffer.data());
      return buffer.data();
    };
    const Tensor dx = empty(x.shape()), dw = full(w.shape(), 5.f);
    k::conv2d_backward_images(dy_of, x, w, g, dx, dw, true);
    std::vector<int64_t> in_order(static_cast<size_t>(cc.N));
    for (int64_t n = 0; n < cc.N; ++n) in_order[static_cast<size_t>(n)] = n;
    REQUIRE(asked == in_order);
    REQUIRE(to_vector(dx) == to_vector(k::conv2d_backward_input(dy, w, g)));
    const Tensor dw_alone = full(w.shape(), 5.f);
    k::conv2d_backward_weight(dy, x, g, dw_alone, true);
    REQUIRE(to_vector(dw) == to_vector(dw_alone));
    require_close(k::add_scalar(dw, -5.f), k::conv2d_backward_weight_reference(dy, x, g), "weight gradient", 1e-5);
    // Neither gradient: every image is still asked for.
    asked.clear();
    k::conv2d_backward_images(dy_of, x, w, g, Tensor(), Tensor(), false);
    REQUIRE(asked == in_order);
  }
  const Tensor x = randn({1, 2, 5, 5}), w = randn({3, 2, 3, 3});
  const auto g = k::conv2d_geometry(x.shape(), w.shape(), 1, 1, 1, 1, 1, 1, 1);
  const Tensor dy = randn(g.output_shape());
  const k::ImageGradient dy_of = [&](int64_t) { return dy.data<float>(); };
  REQUIRE_THROWS_WITH(k::conv2d_backward_images(dy_of, x, w, g, empty({1, 2, 5, 4}), Tensor(), false),
                      Catch::Matchers::Contains("dx of shape"));
  REQUIRE_THROWS_WITH(k::conv2d_backward_images(dy_of, x, w, g, Tensor(), empty({3, 2, 3}), false),
                      Catch::Matchers::Contains("dw of shape"));
}

TEST_CASE("im2col and col2im are adjoint: <col2im(c), x> = <c, im2col(x)>", "[cnn][kernels]") {
  manual_seed(4);
  const Tensor x = randn({1, 2, 6, 5}), w = randn({3, 2, 3, 2});
  const auto g = k::conv2d_geometry(x.shape(), w.shape(), 2, 1, 1, 1, 1, 2, 1);
  const int64_t rows = g.patch(), cols = g.OH * g.OW;
  std::vector<float> col(static_cast<size_t>(rows * cols));
  k::im2col(x.data<float>(), g, col.data());
  const Tensor c = randn({rows, cols});
  std::vector<float> back(static_cast<size_t>(x.numel()), 0.f);
  k::col2im(c.data<float>(), g, back.data());
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < x.numel(); ++i) lhs += static_cast<double>(back[i]) * x.data<float>()[i];
  for (int64_t i = 0; i < rows * cols; ++i) rhs += static_cast<double>(c.data<float>()[i]) * col[i];
  REQUIRE(std::fabs(lhs - rhs) <= 1e-4 * std::fabs(rhs));
}

TEST_CASE("pooling kernels agree with their reference twins", "[cnn][kernels]") {
  manual_seed(5);
  struct P { int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw; };
  for (const P& p : {P{2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 1, 1}, P{1, 2, 7, 5, 2, 2, 2, 2, 0, 0, 1, 1},
                    P{2, 2, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1}, P{1, 2, 7, 7, 3, 3, 1, 1, 1, 1, 2, 2},
                    P{1, 1, 5, 6, 3, 2, 1, 2, 1, 1, 1, 1}}) {
    const Tensor x = randn({p.N, p.C, p.H, p.W});
    const auto g = k::pool2d_geometry(x.shape(), p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dh, p.dw, "max_pool2d");
    Tensor y, argmax;
    k::max_pool2d_forward(x, g, y, argmax);
    REQUIRE(to_vector(y) == to_vector(k::max_pool2d_forward_reference(x, g)));  // a max is exact
    const Tensor dy = randn(g.output_shape());
    REQUIRE(to_vector(k::max_pool2d_backward(dy, argmax, g)) == to_vector(k::max_pool2d_backward_reference(dy, x, g)));
    if (p.dh == 1 && p.dw == 1) {
      require_close(k::avg_pool2d_forward(x, g), k::avg_pool2d_forward_reference(x, g), "avg_pool2d");
    }
  }
  const Tensor x = randn({2, 5, 7, 6});
  require_close(k::adaptive_avg_pool2d_forward(x, 1, 1), k::adaptive_avg_pool2d_forward_reference(x, 1, 1),
                "global average");
}

TEST_CASE("2x2 / stride 2 max pool: the vector path equals the reference on ties, NaN and every width", "[cnn][kernels]") {
  // Values from a set of four make ties in most windows (the first maximum
  // wins); a few NaN must win their window and keep it. Widths 2..13 give
  // every count of outputs past the 4-wide vector loop; odd sizes leave a
  // last row / column in no window.
  std::mt19937 rng(11);
  for (int64_t H : {2, 3, 6, 7}) {
    for (int64_t W = 2; W <= 13; ++W) {
      std::vector<float> v(static_cast<size_t>(2 * 3 * H * W));
      for (float& e : v) {
        const uint32_t r = rng() % 64;
        e = r == 0 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(r % 4) - 1.f;
      }
      const Tensor x = from_vector(v, {2, 3, H, W});
      const auto g = k::pool2d_geometry(x.shape(), 2, 2, 2, 2, 0, 0, 1, 1, "max_pool2d");
      Tensor y, argmax;
      k::max_pool2d_forward(x, g, y, argmax);
      const Tensor y_ref = k::max_pool2d_forward_reference(x, g);
      INFO("H = " << H << ", W = " << W);
      REQUIRE(std::memcmp(y.data<float>(), y_ref.data<float>(), sizeof(float) * y.numel()) == 0);  // NaN included
      const Tensor dy = randn(g.output_shape());
      // The backward lands each dy on the argmax: equal dx means equal indices.
      REQUIRE(to_vector(k::max_pool2d_backward(dy, argmax, g)) == to_vector(k::max_pool2d_backward_reference(dy, x, g)));
    }
  }
}

TEST_CASE("conv2d bias gradient equals the sum of dy in double", "[cnn][kernels]") {
  manual_seed(12);
  for (int64_t plane : {1, 15, 16, 17, 49, 784}) {
    const Tensor dy = randn({3, 5, 1, plane});
    const Tensor db = empty({5});
    k::conv2d_backward_bias(dy, db, false);
    for (int64_t oc = 0; oc < 5; ++oc) {
      double want = 0;
      for (int64_t n = 0; n < 3; ++n)
        for (int64_t i = 0; i < plane; ++i) want += dy.data<float>()[(n * 5 + oc) * plane + i];
      INFO("plane " << plane << ", channel " << oc);
      REQUIRE(std::fabs(db.data<float>()[oc] - want) <= 1e-5 * (1 + std::fabs(want)));
    }
    k::conv2d_backward_bias(dy, db, true);  // accumulates
    double first = 0;
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t i = 0; i < plane; ++i) first += dy.data<float>()[n * 5 * plane + i];
    REQUIRE(std::fabs(db.data<float>()[0] - 2 * first) <= 2e-5 * (1 + std::fabs(first)));
  }
}

TEST_CASE("batch-norm kernels agree with their reference twins, also for a large mean", "[cnn][kernels]") {
  manual_seed(6);
  for (float offset : {0.f, 1000.f}) {
    const Tensor x = k::add_scalar(randn({4, 3, 5, 7}), offset);
    Tensor mean, var, mean_ref, var_ref;
    k::batch_norm_stats(x, mean, var);
    k::batch_norm_stats_reference(x, mean_ref, var_ref);
    require_close(mean, mean_ref, "mean", 1e-5);
    require_close(var, var_ref, "variance", offset == 0.f ? 1e-5 : 1e-3);
    Tensor invstd = empty({3});
    for (int c = 0; c < 3; ++c) invstd.data<float>()[c] = 1.f / std::sqrt(var_ref.data<float>()[c] + 1e-5f);
    const Tensor gamma = randn({3}), dy = randn(x.shape());
    Tensor s, sx;
    k::batch_norm_backward_sums(dy, x, mean_ref, invstd, s, sx);
    for (bool training : {true, false}) {
      const Tensor dx = k::batch_norm_backward_input(dy, x, mean_ref, invstd, gamma, s, sx, training);
      require_close(dx, k::batch_norm_backward_input_reference(dy, x, mean_ref, invstd, gamma, training),
                    training ? "training input gradient" : "eval input gradient", 1e-4);
    }
  }
}

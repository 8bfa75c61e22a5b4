// BatchNorm folding (src/quant/conv_bn_fold.h, docs/quantized_cnn.md §6):
// conv(x, W', b') equals BatchNorm_eval(conv(x, W, b)) to float precision,
// a BN weight of exactly 0 gives a zero filter and b' = beta (no NaN), and
// bad statistics are rejected by name.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "quant/conv_bn_fold.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace {

// Direct 2-D convolution, groups = 1, stride 1, padding 1, in double.
std::vector<double> conv(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                         int64_t N, int64_t C, int64_t H, int64_t W, int64_t OC, int64_t K) {
  std::vector<double> y(static_cast<size_t>(N * OC * H * W));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          double acc = b.empty() ? 0 : b[static_cast<size_t>(o)];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t a = 0; a < K; ++a)
              for (int64_t d = 0; d < K; ++d) {
                const int64_t iy = i - 1 + a, ix = j - 1 + d;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += double(x[static_cast<size_t>(((n * C + c) * H + iy) * W + ix)]) *
                       w[static_cast<size_t>(((o * C + c) * K + a) * K + d)];
              }
          y[static_cast<size_t>(((n * OC + o) * H + i) * W + j)] = acc;
        }
  return y;
}

}  // namespace

TEST_CASE("BN folding: conv with W', b' equals BatchNorm(conv) in eval mode; gamma = 0 gives no NaN", "[conv_bn]") {
  tq::Generator g(21);
  const int64_t N = 2, C = 3, H = 5, W = 4, OC = 5, K = 3;
  const tq::Tensor x = tq::randn(tq::Shape{N, C, H, W}, g);
  const tq::Tensor w = tq::randn(tq::Shape{OC, C, K, K}, g);
  const tq::Tensor b = tq::randn(tq::Shape{OC}, g);
  const tq::Tensor gamma = tq::from_vector({1.5f, 0.0f, -0.7f, 0.02f, 3.0f}, tq::Shape{OC});  // channel 1: gamma = 0
  const tq::Tensor beta = tq::from_vector({0.1f, -0.4f, 0.0f, 2.0f, -1.0f}, tq::Shape{OC});
  const tq::Tensor mean = tq::from_vector({0.3f, -1.0f, 0.0f, 5.0f, 0.25f}, tq::Shape{OC});
  const tq::Tensor var = tq::from_vector({2.0f, 0.5f, 0.0f, 1e-3f, 9.0f}, tq::Shape{OC});  // channel 2: var = 0
  const double eps = 1e-5;
  const tq::quant::FoldedConv f = tq::quant::fold_batch_norm(w, b, gamma, beta, mean, var, eps);
  const auto xv = tq::to_vector(x), wv = tq::to_vector(w), bv = tq::to_vector(b);
  const auto gv = tq::to_vector(gamma), bev = tq::to_vector(beta), mv = tq::to_vector(mean), vv = tq::to_vector(var);
  const auto z = conv(xv, wv, bv, N, C, H, W, OC, K);
  const auto y = conv(xv, tq::to_vector(f.weight), tq::to_vector(f.bias), N, C, H, W, OC, K);
  double worst = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t p = 0; p < H * W; ++p) {
        const size_t i = static_cast<size_t>((n * OC + o) * H * W + p);
        const double bn = gv[o] * (z[i] - mv[o]) / std::sqrt(vv[o] + eps) + bev[o];
        REQUIRE(std::isfinite(y[i]));
        worst = std::max(worst, std::abs(y[i] - bn) / (1 + std::abs(bn)));
      }
  CHECK(worst < 1e-5);
  // gamma = 0: the filter is zero and the bias is beta.
  const auto fw = tq::to_vector(f.weight);
  for (int64_t k = 0; k < C * K * K; ++k) CHECK(fw[static_cast<size_t>(C * K * K + k)] == 0.0f);
  CHECK(tq::to_vector(f.bias)[1] == -0.4f);
  // Without bias / affine: b = 0, gamma = 1, beta = 0.
  const tq::quant::FoldedConv plain = tq::quant::fold_batch_norm(w, tq::Tensor(), tq::Tensor(), tq::Tensor(), mean, var, eps);
  CHECK(tq::to_vector(plain.bias)[0] == Approx(-0.3 / std::sqrt(2.0 + eps)));
}

TEST_CASE("BN folding rejects bad statistics by name", "[conv_bn]") {
  tq::Generator g(22);
  const tq::Tensor w = tq::randn(tq::Shape{2, 1, 3, 3}, g);
  const tq::Tensor ok = tq::from_vector({1.f, 1.f}, tq::Shape{2});
  CHECK_THROWS_WITH(tq::quant::fold_batch_norm(w, tq::Tensor(), ok, ok, ok, tq::from_vector({1.f, -1.f}, tq::Shape{2}), 1e-5),
                    Catch::Contains("running_var[1]"));
  CHECK_THROWS_WITH(tq::quant::fold_batch_norm(w, tq::Tensor(), ok, ok, ok, ok, 0.0), Catch::Contains("eps"));
  CHECK_THROWS_WITH(tq::quant::fold_batch_norm(w, tq::Tensor(), tq::from_vector({1.f}, tq::Shape{1}), ok, ok, ok, 1e-5),
                    Catch::Contains("gamma"));
}

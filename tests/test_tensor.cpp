// Tensor basics: storage, creation, dtypes, views (shared storage, strides),
// broadcasting, reductions, matmul (transposes without copies), printing,
// seeded random numbers and the error messages of bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <numeric>

#include "tinyqat.h"

using namespace tq;
namespace k = tq::kernels;
using Catch::Contains;

namespace {

// Kernels compute in f32; the references below in double.
constexpr double kF32Tol = 1e-5;   // elementwise results, relative
constexpr double kGemmTol = 1e-4;  // matrix products, relative to the row scale

bool shares_storage(const Tensor& a, const Tensor& b) { return a.impl()->storage == b.impl()->storage; }

// Element at a row-major flat index, read through the strides.
double flat_at(const Tensor& t, int64_t i) { return to_vector(t)[static_cast<size_t>(i)]; }

// A (2, 3, 4) tensor holding 0, 1, ..., 23: every element tells where it came from.
Tensor iota234() { return k::reshape(arange(24), {2, 3, 4}); }

std::vector<float> naive_matmul(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  std::vector<float> out(static_cast<size_t>(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t kk = 0; kk < K; ++kk) acc += a.at({i, kk}) * b.at({kk, j});
      out[static_cast<size_t>(i * N + j)] = static_cast<float>(acc);
    }
  return out;
}

double max_rel_diff(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return scale > 0 ? err / scale : err;
}

}  // namespace

TEST_CASE("storage is 64-byte aligned and shared by views", "[tensor]") {
  for (int64_t n : {1, 3, 17, 1000}) {
    for (DType dt : {DType::f32, DType::i32, DType::i8, DType::u8, DType::i64}) {
      Tensor t = zeros({n}, dt);
      CHECK(reinterpret_cast<uintptr_t>(t.impl()->storage->data()) % 64 == 0);
      CHECK(t.impl()->storage->nbytes() == static_cast<size_t>(n) * dtype_size(dt));
    }
  }
  Tensor a = zeros({4, 4});
  Tensor row = k::slice(a, 0, 1, 2);
  CHECK(shares_storage(a, row));
  CHECK(row.offset() == 4);
}

TEST_CASE("creation: zeros, ones, full, arange, scalars, from data", "[tensor]") {
  CHECK(to_vector(zeros({2, 2})) == std::vector<float>{0, 0, 0, 0});
  CHECK(to_vector(ones({3})) == std::vector<float>{1, 1, 1});
  CHECK(to_vector(full({2}, -2.5)) == std::vector<float>{-2.5f, -2.5f});
  CHECK(to_vector(arange(4)) == std::vector<float>{0, 1, 2, 3});

  const Tensor s = scalar_tensor(3.25);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item() == 3.25);

  const Tensor v = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(v.shape() == Shape{2, 3});
  CHECK(v.strides() == Shape{3, 1});
  CHECK(v.at({1, 2}) == 6);
  REQUIRE_THROWS_WITH(from_vector({1, 2, 3}, {2, 2}), Contains("from_vector") && Contains("3 values") && Contains("(2, 2)"));
  REQUIRE_THROWS_WITH(empty({2, -1}), Contains("negative dimension"));
  REQUIRE_THROWS_WITH(v.item(), Contains("item") && Contains("(2, 3)"));
  REQUIRE_THROWS_WITH(v.at({2, 0}), Contains("out of range"));
}

TEST_CASE("dtypes: f32 i32 i8 u8 i64, sizes, conversions and typed access", "[tensor]") {
  CHECK(dtype_size(DType::f32) == 4);
  CHECK(dtype_size(DType::i32) == 4);
  CHECK(dtype_size(DType::i8) == 1);
  CHECK(dtype_size(DType::u8) == 1);
  CHECK(dtype_size(DType::i64) == 8);

  const Tensor i = arange(5, DType::i64);
  CHECK(i.dtype() == DType::i64);
  CHECK(i.data<int64_t>()[4] == 4);
  REQUIRE_THROWS_WITH(i.data<float>(), Contains("dtype i64") && Contains("f32"));

  const Tensor f = from_vector({-1.7f, 0.f, 2.9f, 300.f}, {4});
  CHECK(to_vector(k::to_dtype(f, DType::i32)) == std::vector<float>{-1, 0, 2, 300});  // truncation, as a C cast
  CHECK(k::to_dtype(f, DType::i8).data<int8_t>()[1] == 0);
  CHECK(to_vector(full({2}, 200, DType::u8)) == std::vector<float>{200, 200});
  const Tensor bytes = from_bytes(std::vector<int8_t>{-3, 4}.data(), DType::i8, {2});
  CHECK(to_vector(bytes) == std::vector<float>{-3, 4});
  REQUIRE_THROWS_WITH(zeros({2}, DType::i32).requires_grad_(), Contains("only f32"));
}

TEST_CASE("views: reshape, transpose, slice, expand share storage with the right strides", "[tensor][views]") {
  const Tensor x = iota234();
  CHECK(x.strides() == Shape{12, 4, 1});

  SECTION("reshape of a contiguous tensor is a view; -1 is inferred") {
    const Tensor r = k::reshape(x, {6, -1});
    CHECK(r.shape() == Shape{6, 4});
    CHECK(r.strides() == Shape{4, 1});
    CHECK(shares_storage(r, x));
    CHECK(r.at({5, 3}) == 23);
    REQUIRE_THROWS_WITH(k::reshape(x, {5, -1}), Contains("reshape") && Contains("(2, 3, 4)") && Contains("(5, -1)"));
    REQUIRE_THROWS_WITH(k::reshape(x, {-1, -1}), Contains("only one dimension can be -1"));
  }
  SECTION("transpose swaps shape and strides, no copy") {
    const Tensor t = k::transpose(x, 0, 2);
    CHECK(t.shape() == Shape{4, 3, 2});
    CHECK(t.strides() == Shape{1, 4, 12});
    CHECK(shares_storage(t, x));
    CHECK_FALSE(t.is_contiguous());
    CHECK(t.at({3, 2, 1}) == x.at({1, 2, 3}));
    // Writing through the view writes the original.
    t.data<float>()[0] = 100;
    CHECK(x.at({0, 0, 0}) == 100);
  }
  SECTION("slice moves the offset and keeps the strides") {
    const Tensor s = k::slice(x, 1, 1, 3);
    CHECK(s.shape() == Shape{2, 2, 4});
    CHECK(s.strides() == x.strides());
    CHECK(s.offset() == 4);
    CHECK(shares_storage(s, x));
    CHECK(s.at({1, 0, 0}) == 16);  // 1*12 + 1*4
    CHECK(k::slice(x, 2, -2, 4).at({0, 0, 0}) == 2);  // negative start counts from the end
    REQUIRE_THROWS_WITH(k::slice(x, 0, 2, 1), Contains("slice") && Contains("[2, 1)"));
  }
  SECTION("expand broadcasts with stride 0") {
    const Tensor row = from_vector({1, 2, 3}, {1, 3});
    const Tensor e = k::expand(row, {4, 3});
    CHECK(e.strides() == Shape{0, 1});
    CHECK(shares_storage(e, row));
    CHECK(e.at({3, 2}) == 3);
  }
  SECTION("reshape of a non-contiguous tensor copies; reshape_view refuses") {
    const Tensor t = k::transpose(x, 0, 1);
    const Tensor r = k::reshape(t, {24});
    CHECK_FALSE(shares_storage(r, x));
    // The copy reads in the view's logical (row-major) order.
    CHECK(flat_at(r, 4) == x.at({1, 0, 0}));  // r[4] = t[0, 1, 0] = x[1, 0, 0]
    REQUIRE_THROWS_WITH(k::reshape_view(t, {24}), Contains("not contiguous"));
  }
  SECTION("contiguous and clone") {
    const Tensor t = k::transpose(k::reshape(x, {6, 4}), 0, 1);
    const Tensor c = k::contiguous(t);
    CHECK(c.is_contiguous());
    CHECK_FALSE(shares_storage(c, x));
    CHECK(to_vector(c) == to_vector(t));
    CHECK(k::contiguous(x).same(x));  // already contiguous: the same tensor
    CHECK_FALSE(shares_storage(k::clone(x), x));
  }
  SECTION("is_transposed_matrix") {
    const Tensor m = zeros({3, 5});
    CHECK_FALSE(m.is_transposed_matrix());
    CHECK(k::transpose(m, 0, 1).is_transposed_matrix());
  }
}

TEST_CASE("elementwise ops broadcast like NumPy", "[tensor][broadcast]") {
  const Tensor a = iota234();                                  // (2, 3, 4)
  const Tensor row = from_vector({10, 20, 30, 40}, {4});       // (4)
  const Tensor col = from_vector({100, 200, 300}, {3, 1});     // (3, 1)
  const Tensor s = scalar_tensor(0.5);                         // ()

  const Tensor r1 = k::add(a, row);
  CHECK(r1.shape() == Shape{2, 3, 4});
  CHECK(r1.at({1, 2, 3}) == 23 + 40);
  const Tensor r2 = k::mul(a, col);
  CHECK(r2.at({1, 2, 3}) == 23 * 300);
  const Tensor r3 = k::sub(col, row);  // (3, 1) - (4) -> (3, 4)
  CHECK(r3.shape() == Shape{3, 4});
  CHECK(r3.at({2, 0}) == 300 - 10);
  const Tensor r4 = k::div(a, s);
  CHECK(r4.at({0, 1, 1}) == 10);

  // Strided (transposed) operands go through the same rules.
  const Tensor at = k::transpose(k::reshape(arange(12), {3, 4}), 0, 1);  // (4, 3)
  const Tensor r5 = k::add(at, from_vector({1, 2, 3}, {3}));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j) CHECK(r5.at({i, j}) == (j * 4 + i) + (j + 1));

  // Unary ops on a view read through its strides.
  const Tensor n = k::neg(at);
  CHECK(n.at({3, 2}) == -11);
  CHECK(std::fabs(k::exp(from_vector({1}, {1})).item() - std::exp(1.0)) < kF32Tol);
  CHECK(to_vector(k::relu(from_vector({-1, 0, 2}, {3}))) == std::vector<float>{0, 0, 2});
  CHECK(to_vector(k::relu_backward(from_vector({5, 6, 7}, {3}), from_vector({-1, 0, 2}, {3}))) ==
        std::vector<float>{0, 0, 7});

  // In-place accumulation with broadcasting (used by gradient accumulation).
  Tensor acc = zeros({2, 4});
  k::add_(acc, row);
  k::axpy_(acc, 2.f, ones({4}));
  CHECK(to_vector(acc) == std::vector<float>{12, 22, 32, 42, 12, 22, 32, 42});

  // copy_ broadcasts and converts; fill_ works on views.
  Tensor dst = zeros({2, 3}, DType::i32);
  k::copy_(dst, from_vector({1.9f, 2.f, 3.f}, {3}));
  CHECK(to_vector(dst) == std::vector<float>{1, 2, 3, 1, 2, 3});
  Tensor m = zeros({3, 3});
  k::fill_(k::slice(m, 1, 1, 2), 7);
  CHECK(to_vector(m) == std::vector<float>{0, 7, 0, 0, 7, 0, 0, 7, 0});
}

TEST_CASE("bad input: incompatible shapes name the op and both shapes", "[tensor][errors]") {
  const Tensor a = zeros({2, 3}), b = zeros({4});
  REQUIRE_THROWS_WITH(k::add(a, b), Contains("add") && Contains("(2, 3)") && Contains("(4,)"));
  REQUIRE_THROWS_WITH(tq::add(a, b), Contains("add") && Contains("(2, 3)") && Contains("(4,)"));
  REQUIRE_THROWS_WITH(tq::mul(zeros({2, 3}), zeros({3, 2})), Contains("mul") && Contains("(2, 3)") && Contains("(3, 2)"));
  REQUIRE_THROWS_WITH(k::matmul(a, zeros({4, 5})), Contains("matmul") && Contains("(2, 3)") && Contains("(4, 5)"));
  REQUIRE_THROWS_WITH(tq::matmul(a, zeros({4, 5})), Contains("matmul") && Contains("(2, 3)") && Contains("(4, 5)"));
  REQUIRE_THROWS_WITH(tq::matmul(zeros({2, 3, 4}), zeros({4, 5})), Contains("matmul") && Contains("2-D"));
  REQUIRE_THROWS_WITH(tq::linear(zeros({2, 3}), zeros({5, 4}), Tensor()),
                      Contains("linear") && Contains("(2, 3)") && Contains("(5, 4)"));
  REQUIRE_THROWS_WITH(k::add(zeros({2}, DType::i32), zeros({2})), Contains("add") && Contains("f32") && Contains("i32"));
  REQUIRE_THROWS_WITH(k::sum(a, 2), Contains("sum") && Contains("dimension 2"));
  REQUIRE_THROWS_WITH(k::transpose(a, 0, -3), Contains("transpose") && Contains("dimension -3"));
}

TEST_CASE("reductions: sum, mean, max, argmax over all or one dimension", "[tensor][reduce]") {
  const Tensor x = iota234();
  CHECK(k::sum(x).item() == 276);  // 0 + ... + 23
  CHECK(k::mean(x).item() == 11.5);
  CHECK(k::max_all(x) == 23);
  CHECK(k::min_all(x) == 0);

  const Tensor s0 = k::sum(x, 0);
  CHECK(s0.shape() == Shape{3, 4});
  CHECK(s0.at({2, 3}) == 11 + 23);
  const Tensor s1 = k::sum(x, 1, true);
  CHECK(s1.shape() == Shape{2, 1, 4});
  CHECK(s1.at({1, 0, 0}) == 12 + 16 + 20);
  CHECK(k::sum(x, -1).at({1, 2}) == 20 + 21 + 22 + 23);
  CHECK(k::mean(x, 2).at({0, 0}) == 1.5);

  // Over a non-contiguous view.
  const Tensor t = k::transpose(x, 0, 2);  // (4, 3, 2)
  CHECK(k::sum(t, 2).at({3, 2}) == 11 + 23);

  const Tensor m = from_vector({1, 5, 5, 0, -2, -1, -3, -1}, {2, 4});
  CHECK(to_vector(k::max(m, 1)) == std::vector<float>{5, -1});
  CHECK(to_vector(k::argmax(m, 1)) == std::vector<float>{1, 1});  // ties: the first index, as PyTorch
  CHECK(to_vector(k::argmax(m, 0)) == std::vector<float>{0, 0, 0, 0});
  CHECK(k::argmax(m, 1, true).shape() == Shape{2, 1});
  CHECK(k::argmax(m, 1).dtype() == DType::i64);

  // sum_to: the backward of broadcasting.
  const Tensor g = ones({2, 3, 4});
  CHECK(to_vector(k::sum_to(g, {4})) == std::vector<float>{6, 6, 6, 6});
  CHECK(to_vector(k::sum_to(g, {3, 1})) == std::vector<float>{8, 8, 8});
  CHECK(k::sum_to(g, {}).item() == 24);
}

TEST_CASE("matmul matches a double-precision reference, on both the small and the BLAS path", "[tensor][matmul]") {
  Generator gen(5);
  for (auto [M, K, N] : {std::tuple{2, 3, 4}, {1, 10, 5}, {7, 1, 3}, {16, 32, 24}, {64, 100, 33}}) {
    const Tensor a = randn({M, K}, gen), b = randn({K, N}, gen);
    INFO("M " << M << " K " << K << " N " << N);
    CHECK(max_rel_diff(to_vector(k::matmul(a, b)), naive_matmul(a, b)) < kGemmTol);
  }
  // gemm with alpha and beta: out = 2 a b + 1 out.
  const Tensor a = randn({3, 4}, gen), b = randn({4, 2}, gen);
  Tensor out = ones({3, 2});
  k::gemm(a, false, b, false, 2.f, 1.f, out);
  std::vector<float> want = naive_matmul(a, b);
  for (float& v : want) v = 2 * v + 1;
  CHECK(max_rel_diff(to_vector(out), want) < kGemmTol);
}

TEST_CASE("matmul with one row or one column (the sgemv path), every transpose", "[tensor][matmul]") {
  Generator gen(8);
  // Above kSmallGemmMacs, so these go to BLAS: (1, K) x (K, N) and (M, K) x (K, 1).
  for (auto [M, K, N] : {std::tuple{1, 48, 40}, {40, 48, 1}, {1, 600, 1}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        INFO("M " << M << " K " << K << " N " << N << " trans_a " << ta << " trans_b " << tb);
        const Tensor a_stored = ta ? randn({K, M}, gen) : randn({M, K}, gen);
        const Tensor b_stored = tb ? randn({N, K}, gen) : randn({K, N}, gen);
        const Tensor a = ta ? k::transpose(a_stored, 0, 1) : a_stored;
        const Tensor b = tb ? k::transpose(b_stored, 0, 1) : b_stored;
        const std::vector<float> want = naive_matmul(a, b);
        // beta = 0 must ignore whatever the output held (here NaN).
        Tensor out = full({M, N}, NAN);
        k::gemm(a_stored, ta, b_stored, tb, 1.f, 0.f, out);
        CHECK(max_rel_diff(to_vector(out), want) < kGemmTol);
        CHECK(max_rel_diff(to_vector(k::matmul(a, b)), want) < kGemmTol);
        // beta = 1 accumulates.
        k::gemm(a_stored, ta, b_stored, tb, 1.f, 1.f, out);
        std::vector<float> twice = want;
        for (float& v : twice) v *= 2;
        CHECK(max_rel_diff(to_vector(out), twice) < kGemmTol);
      }
    }
  }
}

TEST_CASE("transposed matmul operands are read in place and equal an explicit copy", "[tensor][matmul]") {
  Generator gen(6);
  for (int64_t scale : {1, 8}) {  // small path and BLAS path
    const int64_t M = 3 * scale, K = 4 * scale, N = 5 * scale;
    const Tensor a_stored = randn({K, M}, gen), b_stored = randn({N, K}, gen);
    const Tensor at = k::transpose(a_stored, 0, 1), bt = k::transpose(b_stored, 0, 1);
    REQUIRE(shares_storage(at, a_stored));
    REQUIRE(at.is_transposed_matrix());
    const auto copy_result = to_vector(k::matmul(k::contiguous(at), k::contiguous(bt)));
    CHECK(max_rel_diff(to_vector(k::matmul(at, bt)), copy_result) < kGemmTol);
    CHECK(max_rel_diff(to_vector(k::matmul(at, k::contiguous(bt))), copy_result) < kGemmTol);
    CHECK(max_rel_diff(to_vector(k::matmul(k::contiguous(at), bt)), copy_result) < kGemmTol);
    // A row slice of a wider matrix is a strided operand BLAS reads with its leading dimension.
    const Tensor wide = randn({M, K + 3}, gen);
    const Tensor part = k::slice(wide, 1, 0, K);
    CHECK(max_rel_diff(to_vector(k::matmul(part, bt)), to_vector(k::matmul(k::contiguous(part), bt))) < kGemmTol);
  }
  // An operand BLAS cannot read in place (a broadcast view, stride 0) is copied first.
  const Tensor row = randn({1, 30}, gen);
  const Tensor rows = k::expand(row, {20, 30});
  const Tensor rhs = randn({30, 10}, gen);
  CHECK(max_rel_diff(to_vector(k::matmul(rows, rhs)), to_vector(k::matmul(k::contiguous(rows), rhs))) < kGemmTol);

  // linear = x W^T + b without copying W.
  const Tensor x = randn({4, 6}, gen), w = randn({3, 6}, gen), bias = randn({3}, gen);
  const Tensor y = k::linear(x, w, bias);
  const Tensor ref = k::add(k::matmul(x, k::transpose(w, 0, 1)), bias);
  CHECK(max_rel_diff(to_vector(y), to_vector(ref)) < kGemmTol);
}

TEST_CASE("softmax and log_softmax are stable for large logits", "[tensor]") {
  const Tensor x = from_vector({1000, 1001, 1002, -1000, -1001, -1002}, {2, 3});
  const Tensor ls = k::log_softmax(x);
  const Tensor sm = k::softmax(x);
  for (float v : to_vector(ls)) CHECK(std::isfinite(v));
  const double lse = std::log(1 + std::exp(-1.0) + std::exp(-2.0));
  CHECK(std::fabs(ls.at({0, 2}) - (-lse)) < kF32Tol);
  CHECK(std::fabs(ls.at({1, 0}) - (-lse)) < kF32Tol);
  CHECK(std::fabs(k::sum(sm, 1).at({0}) - 1) < kF32Tol);
  CHECK(std::fabs(k::sum(sm, 1).at({1}) - 1) < kF32Tol);
}

TEST_CASE("printing looks like PyTorch", "[tensor][print]") {
  CHECK(from_vector({1, 2, 3, 4}, {2, 2}).str() == "tensor([[1., 2.],\n        [3., 4.]])");
  CHECK(from_vector({0.5f, -1.25f}, {2}).str() == "tensor([ 0.5000, -1.2500])");
  CHECK(scalar_tensor(3.5).str() == "tensor(3.5000)");
  CHECK(arange(3, DType::i64).str() == "tensor([0, 1, 2], dtype=i64)");
  CHECK(zeros({0}).str() == "tensor([])");
  CHECK(from_vector({1e6f, 2.5f}, {2}).str() == "tensor([1.0000e+06, 2.5000e+00])");
  CHECK(zeros({2, 1, 2}).str() == "tensor([[[0., 0.]],\n\n        [[0., 0.]]])");
  Tensor p = ones({2}).requires_grad_();
  CHECK(p.str() == "tensor([1., 1.], requires_grad=True)");
  CHECK((p * 2.f).str() == "tensor([2., 2.], grad_fn=<MulBackward>)");
  // Large tensors are summarised with "...", three items at each end.
  CHECK(arange(2000).str() == "tensor([   0.,    1.,    2., ..., 1997., 1998., 1999.])");
  // A view prints its own (logical) elements.
  CHECK(k::transpose(from_vector({1, 2, 3, 4}, {2, 2}), 0, 1).str() == "tensor([[1., 3.],\n        [2., 4.]])");
}

TEST_CASE("seeded random numbers are reproducible", "[tensor][random]") {
  manual_seed(123);
  const auto a = to_vector(randn({100}));
  const auto u = to_vector(rand_uniform({100}, -2, 3));
  manual_seed(123);
  CHECK(to_vector(randn({100})) == a);
  CHECK(to_vector(rand_uniform({100}, -2, 3)) == u);
  manual_seed(124);
  CHECK(to_vector(randn({100})) != a);

  // A private generator does not disturb the global one.
  manual_seed(9);
  Generator g(9);
  CHECK(to_vector(randn({10}, g)) == to_vector(randn({10})));

  // Saving and restoring the state resumes the exact sequence.
  const Generator::State st = g.state();
  const auto next = to_vector(randn({5}, g));
  g.set_state(st);
  CHECK(to_vector(randn({5}, g)) == next);

  // Distributions: range and moments.
  Generator h(77);
  const auto un = to_vector(rand_uniform({10000}, -2, 3, h));
  CHECK(*std::min_element(un.begin(), un.end()) >= -2);
  CHECK(*std::max_element(un.begin(), un.end()) < 3);
  const auto no = to_vector(randn({20000}, h));
  const double mean = std::accumulate(no.begin(), no.end(), 0.0) / no.size();
  double var = 0;
  for (float v : no) var += (v - mean) * (v - mean);
  var /= no.size();
  CHECK(std::fabs(mean) < 0.03);          // 4 standard errors of the mean
  CHECK(std::fabs(var - 1) < 0.05);
  const Tensor ri = randint(3, 7, {1000}, h);
  CHECK(ri.dtype() == DType::i64);
  const auto rv = to_vector(ri);
  CHECK(*std::min_element(rv.begin(), rv.end()) == 3);
  CHECK(*std::max_element(rv.begin(), rv.end()) == 6);
  REQUIRE_THROWS_WITH(randint(3, 3, {1}, h), Contains("randint"));
}

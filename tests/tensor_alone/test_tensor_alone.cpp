// The tensor layer on its own: this program links tinyqat::tensor and nothing
// above it (tests/CMakeLists.txt), so it builds only while the tensor layer
// needs no other layer. It also checks what the layer does without autograd.
#define CATCH_CONFIG_MAIN
#define CATCH_CONFIG_NO_POSIX_SIGNALS  // as tests/main.cpp
#include <catch2/catch.hpp>

#include <stdexcept>

#include "tensor/ops.h"
#include "tensor/tensor.h"

using namespace tq;

TEST_CASE("tensor alone: creation, views and kernels work without autograd", "[layers]") {
  const Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor at = kernels::transpose(a, 0, 1);  // a view
  CHECK(at.shape() == Shape{3, 2});
  CHECK(at.at({2, 1}) == 6.0);
  const Tensor p = kernels::matmul(a, at);  // OpenBLAS, reached through the tensor layer only
  CHECK(to_vector(p) == std::vector<float>{14, 32, 32, 77});
  CHECK(kernels::argmax(a, 1).at({1}) == 2.0);
  CHECK(a.str() == "tensor([[1., 2., 3.],\n        [4., 5., 6.]])");
}

TEST_CASE("tensor alone: backward() without the autograd layer is a clear error", "[layers]") {
  Tensor w = scalar_tensor(2.0);
  w.requires_grad_();
  CHECK(w.requires_grad());
  CHECK(w.str() == "tensor(2., requires_grad=True)");
  CHECK_THROWS_WITH(w.backward(), Catch::Contains("autograd engine is not linked in"));
}

TEST_CASE("tensor alone: is_sole_owner sees every other holder of the memory", "[layers]") {
  Tensor t = zeros({4});
  CHECK(is_sole_owner(t));
  {
    const Tensor handle = t;  // a second handle on the same tensor
    CHECK_FALSE(is_sole_owner(t));
  }
  CHECK(is_sole_owner(t));
  {
    const Tensor view = kernels::slice(t, 0, 1, 3);  // another tensor on the same storage
    CHECK_FALSE(is_sole_owner(t));
  }
  CHECK(is_sole_owner(t));
  CHECK_FALSE(is_sole_owner(Tensor()));
}

// Every differentiable op, forward and input gradients, against PyTorch
// (tests/golden/autograd_ops.txt, written by tests/golden/generate.py).
//
// For a case "<op>/<variant>" the file holds the inputs "<case>/<arg>", the
// output "<case>/out", an upstream gradient "<case>/gout" and the input
// gradients "<case>/grad/<arg>" = d sum(out * gout) / d arg. Here the same op
// runs on the same inputs, backward() is seeded with gout, and everything is
// compared in the max-norm relative error (tests/golden_reader.h).
#include <catch2/catch.hpp>

#include <fstream>
#include <functional>
#include <set>

#include "golden_reader.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// The ops compute the same formulas as PyTorch in f32; only the order of
// additions (matmul, sums) and the libm behind exp / log / tanh differ, which
// moves results by a few units in the last place.
constexpr double kForwardRelTol = 1e-5;
constexpr double kGradientRelTol = 1e-5;

using Args = std::vector<Tensor>;
struct Case {
  std::string name;               // "add/row"
  std::vector<std::string> args;  // input names in call order
  std::function<Tensor(const Args&)> op;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  using BinaryOp = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, BinaryOp> binary[] = {
      {"add", [](const Tensor& a, const Tensor& b) { return tq::add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return tq::sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return tq::mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return tq::div(a, b); }},
  };
  for (auto [op, fn] : binary)
    for (const char* shape : {"same", "row", "col", "outer", "scalar"})
      cases.push_back({std::string(op) + "/" + shape, {"a", "b"}, [fn = fn](const Args& x) { return fn(x[0], x[1]); }});

  auto unary = [&](const std::string& name, std::function<Tensor(const Tensor&)> fn) {
    cases.push_back({name, {"x"}, [fn](const Args& x) { return fn(x[0]); }});
  };
  unary("neg", [](const Tensor& x) { return tq::neg(x); });
  unary("exp", [](const Tensor& x) { return tq::exp(x); });
  unary("log", [](const Tensor& x) { return tq::log(x); });
  unary("relu", [](const Tensor& x) { return tq::relu(x); });
  unary("sigmoid", [](const Tensor& x) { return tq::sigmoid(x); });
  unary("tanh", [](const Tensor& x) { return tq::tanh(x); });

  unary("sum/all", [](const Tensor& x) { return tq::sum(x); });
  unary("sum/dim0", [](const Tensor& x) { return tq::sum(x, 0); });
  unary("sum/dim0_keepdim", [](const Tensor& x) { return tq::sum(x, 0, true); });
  unary("sum/dim1", [](const Tensor& x) { return tq::sum(x, 1); });
  unary("sum/dim1_keepdim", [](const Tensor& x) { return tq::sum(x, 1, true); });
  unary("mean/all", [](const Tensor& x) { return tq::mean(x); });
  unary("mean/dim0", [](const Tensor& x) { return tq::mean(x, 0); });
  unary("mean/dim1", [](const Tensor& x) { return tq::mean(x, 1); });
  unary("mean/dim1_keepdim", [](const Tensor& x) { return tq::mean(x, 1, true); });
  unary("max/dim1", [](const Tensor& x) { return tq::max(x, 1); });
  unary("max/ties", [](const Tensor& x) { return tq::max(x, 1); });

  cases.push_back({"matmul/plain", {"a", "b"}, [](const Args& x) { return tq::matmul(x[0], x[1]); }});
  cases.push_back({"matmul/at_b", {"a", "b"}, [](const Args& x) { return tq::matmul(tq::t(x[0]), x[1]); }});
  cases.push_back({"matmul/a_bt", {"a", "b"}, [](const Args& x) { return tq::matmul(x[0], tq::t(x[1])); }});
  cases.push_back({"matmul/at_bt", {"a", "b"}, [](const Args& x) { return tq::matmul(tq::t(x[0]), tq::t(x[1])); }});
  cases.push_back({"linear/bias", {"x", "weight", "bias"}, [](const Args& x) { return tq::linear(x[0], x[1], x[2]); }});
  cases.push_back({"linear/nobias", {"x", "weight"}, [](const Args& x) { return tq::linear(x[0], x[1], Tensor()); }});

  unary("transpose/2d", [](const Tensor& x) { return tq::t(x); });
  unary("transpose/3d_0_2", [](const Tensor& x) { return tq::transpose(x, 0, 2); });
  unary("reshape/2x6", [](const Tensor& x) { return tq::reshape(x, {2, 6}); });
  unary("reshape/flat", [](const Tensor& x) { return tq::reshape(x, {12}); });
  unary("reshape/3d_to_2d", [](const Tensor& x) { return tq::reshape(x, {6, 4}); });

  // PyTorch's dim 1 is the last dimension of these (3, 5) inputs.
  unary("softmax/dim1", [](const Tensor& x) { return tq::softmax(x); });
  unary("softmax/large", [](const Tensor& x) { return tq::softmax(x); });
  unary("log_softmax/dim1", [](const Tensor& x) { return tq::log_softmax(x); });
  unary("log_softmax/large", [](const Tensor& x) { return tq::log_softmax(x); });

  cases.push_back({"cross_entropy/mean", {"logits", "target"}, [](const Args& x) { return tq::cross_entropy(x[0], x[1]); }});
  cases.push_back({"cross_entropy/sum", {"logits", "target"},
                   [](const Args& x) { return tq::cross_entropy(x[0], x[1], Reduction::sum); }});
  cases.push_back({"cross_entropy/none", {"logits", "target"},
                   [](const Args& x) { return tq::cross_entropy(x[0], x[1], Reduction::none); }});
  cases.push_back({"mse_loss/mean", {"pred", "target"}, [](const Args& x) { return tq::mse_loss(x[0], x[1]); }});

  cases.push_back({"composite/reuse", {"a", "b"}, [](const Args& x) { return x[0] * x[0] + tq::exp(x[0]) * x[1]; }});
  return cases;
}

}  // namespace

TEST_CASE("golden: every op's forward and input gradients match PyTorch", "[golden][autograd]") {
  const golden::File& g = golden::load("autograd_ops.txt");
  for (const Case& c : all_cases()) {
    SECTION(c.name) {
      Args inputs;
      for (const std::string& arg : c.args) {
        Tensor t = g.tensor(c.name + "/" + arg);
        if (t.dtype() == DType::f32) t.requires_grad_(true);
        inputs.push_back(t);
      }
      Tensor out = c.op(inputs);
      const golden::Comparison fwd = golden::compare(out, g.tensor(c.name + "/out"));
      INFO(fwd.describe(c.name + "/out"));
      CHECK(fwd.same_shape);
      CHECK(fwd.relative_error <= kForwardRelTol);

      backward(out, g.tensor(c.name + "/gout"));
      for (size_t i = 0; i < c.args.size(); ++i) {
        if (inputs[i].dtype() != DType::f32) continue;
        const std::string name = c.name + "/grad/" + c.args[i];
        REQUIRE(inputs[i].grad().defined());
        const golden::Comparison bwd = golden::compare(inputs[i].grad(), g.tensor(name));
        INFO(bwd.describe(name));
        CHECK(bwd.same_shape);
        CHECK(bwd.relative_error <= kGradientRelTol);
      }
    }
  }
}

TEST_CASE("golden: every op case in the file is covered", "[golden][autograd]") {
  // A case added to generate.py must get a C++ twin here (or a reason not to).
  std::set<std::string> covered;
  for (const Case& c : all_cases()) covered.insert(c.name);
  for (const std::string& name : golden::load("autograd_ops.txt").names()) {
    const auto slash = name.rfind("/out");
    if (slash == std::string::npos || slash + 4 != name.size()) continue;
    const std::string case_name = name.substr(0, slash);
    if (case_name.rfind("argmax/", 0) == 0) continue;  // checked in the argmax test below
    INFO("case " << case_name);
    CHECK(covered.count(case_name) == 1);
  }
}

TEST_CASE("golden: max and argmax return PyTorch's indices, first index on ties", "[golden][autograd]") {
  const golden::File& g = golden::load("autograd_ops.txt");
  for (const std::string c : {"dim1", "ties"}) {
    const Tensor x = g.tensor("max/" + c + "/x");
    const Tensor want = g.tensor("argmax/" + c + "/out");
    const Tensor got = kernels::argmax(x, 1);
    REQUIRE(got.dtype() == DType::i64);
    REQUIRE(got.shape() == want.shape());
    CHECK(to_vector(got) == to_vector(want));
    CHECK(to_vector(got) == to_vector(g.tensor("max/" + c + "/indices")));
  }
}

TEST_CASE("golden reader: parses the header, shapes and values, and names errors", "[golden]") {
  const golden::File& g = golden::load("autograd_ops.txt");
  REQUIRE(g.has("add/row/b"));
  const golden::Entry& e = g.entry("add/row/b");
  CHECK(e.dtype == "f32");
  CHECK(e.shape == std::vector<int64_t>{4});
  CHECK(g.tensor("sum/all/out").dim() == 0);
  CHECK(g.tensor("cross_entropy/mean/target").dtype() == DType::i64);
  REQUIRE_THROWS_WITH(g.entry("no/such/tensor"), Catch::Contains("no tensor named 'no/such/tensor'"));
  REQUIRE_THROWS_WITH(golden::File("does_not_exist.txt"), Catch::Contains("does_not_exist.txt") && Catch::Contains("cannot open"));

  // Malformed files: each error names the file, the line and the problem.
  auto write = [](const std::string& name, const std::string& text) {
    const std::string path = std::string(TINYQAT_BINARY_DIR) + "/" + name;
    std::ofstream(path) << text;
    return path;
  };
  REQUIRE_THROWS_WITH(golden::File(write("golden_bad_magic.txt", "hello\n")),
                      Catch::Contains("golden_bad_magic.txt:1") && Catch::Contains("header"));
  REQUIRE_THROWS_WITH(golden::File(write("golden_short.txt", "# tinyqat-golden 1\ntensor a f32 2 2 2\n1 2 3\n")),
                      Catch::Contains("golden_short.txt") && Catch::Contains("'a'") && Catch::Contains("3 values") &&
                          Catch::Contains("needs 4"));
  REQUIRE_THROWS_WITH(golden::File(write("golden_bad_value.txt", "# tinyqat-golden 1\ntensor a f32 1 2\n1 x\n")),
                      Catch::Contains("golden_bad_value.txt:3") && Catch::Contains("'x'"));
  REQUIRE_THROWS_WITH(golden::File(write("golden_bad_dtype.txt", "# tinyqat-golden 1\ntensor a f16 0\n1\n")),
                      Catch::Contains("golden_bad_dtype.txt:2") && Catch::Contains("f16"));
  const golden::File ok(write("golden_ok.txt", "# tinyqat-golden 1\n# comment\ntensor s f64 0\n0.5\ntensor i i64 1 3\n-1 0\n7\n"));
  CHECK(ok.scalar("s") == 0.5);
  CHECK(to_vector(ok.tensor("i")) == std::vector<float>{-1, 0, 7});
}

// LSQ, learned step size quantization (src/quant/learnable_fake_quantize.h,
// docs/lsq.md): the learnable fake-quant ops against PyTorch 1.13
// (tests/golden/lsq.txt), the gradient formulas against a plain reference
// and finite differences where those mean something, the module's
// switches, and QAT at 4 bits on a synthetic task against moving-average
// fake quant, then convert to int8.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <sstream>
#include <tuple>

#include "golden_reader.h"
#include "gradcheck.h"
#include "quant/learnable_fake_quantize.h"
#include "clusters.h"
#include "tinyqat.h"

using namespace tq;
using quant::LearnableFakeQuantize;
using quant::LearnableFakeQuantizeOptions;
using quant::LsqInit;
using golden::compare;

namespace {

// ---- Tolerances ----
// Forward outputs and x gradients are elementwise float math identical to
// PyTorch's: compared exactly.
// The scale / zero-point gradients are sums over the elements; PyTorch sums
// in float32, tinyqat in double. Their difference is bounded by float32
// rounding of the sum: this factor times the sum of the |elements|.
constexpr double kGradSumRelTol = 1e-6;
// Module trajectories (3-4 SGD steps on the learned scale / zero point): the
// summation differences above, carried through the steps.
constexpr double kTrajectoryRelTol = 1e-5;
// LSQ's initial scale: a mean computed in double in another order than numpy's.
constexpr double kInitRelTol = 1e-6;

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape())) return false;
  const std::vector<float> x = to_vector(a), y = to_vector(b);
  for (size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i]) && !(std::isnan(x[i]) && std::isnan(y[i]))) return false;
  return true;
}

// The case names ("lsq_tensor/u4_s0.5_z2.3") of a family, in file order.
std::vector<std::string> cases_of(const std::string& family) {
  std::vector<std::string> out;
  const std::string suffix = "/out";
  for (const std::string& name : golden::load("lsq.txt").names(family + "/"))
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(name.substr(0, name.size() - suffix.size()));
  return out;
}

// Runs one golden op case and checks the forward and the three gradients.
void check_op_case(const std::string& base, bool per_channel) {
  const golden::File& g = golden::load("lsq.txt");
  INFO(base);
  Tensor x = g.tensor(base + "/x");
  Tensor scale = g.tensor(base + "/scale");
  Tensor zero_point = g.tensor(base + "/zero_point");
  x.requires_grad_(true);
  scale.requires_grad_(true);
  zero_point.requires_grad_(true);
  const auto qmin = static_cast<int32_t>(g.scalar(base + "/quant_min"));
  const auto qmax = static_cast<int32_t>(g.scalar(base + "/quant_max"));
  const double grad_factor = g.scalar(base + "/grad_factor");
  const int axis = per_channel ? static_cast<int>(g.scalar(base + "/axis")) : -1;
  const Tensor y = per_channel ? quant::fake_quantize_learnable_per_channel_affine(x, scale, zero_point, axis, qmin,
                                                                                  qmax, grad_factor)
                               : quant::fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, qmin, qmax,
                                                                                 grad_factor);
  CHECK(bitwise_equal(y, g.tensor(base + "/out")));
  const Tensor gout = g.tensor(base + "/gout");
  tq::backward(y, gout);

  // Where PyTorch's backward is not the derivative of its own forward
  // (docs/lsq.md §5), the file also holds the derivative of the forward:
  // tinyqat computes that one.
  const bool differs = g.has(base + "/tinyqat/grad_x");
  const std::string want = differs ? base + "/tinyqat" : base;
  INFO((differs ? "compared with the derivative of the forward (PyTorch's backward differs here)" : "compared with PyTorch"));
  CHECK(bitwise_equal(x.grad(), g.tensor(want + "/grad_x")));

  // The bound on summation differences: sum over elements of |per-element gradient|.
  const std::vector<float> xv = to_vector(x), gv = to_vector(gout), sv = to_vector(scale), zv = to_vector(zero_point);
  const int64_t channels = static_cast<int64_t>(sv.size());
  int64_t inner = 1;
  if (per_channel)
    for (int d = axis + 1; d < x.dim(); ++d) inner *= x.shape()[d];
  std::vector<double> bound_s(static_cast<size_t>(channels), 0.0), bound_z(static_cast<size_t>(channels), 0.0);
  for (size_t i = 0; i < xv.size(); ++i) {
    const size_t c = per_channel ? static_cast<size_t>((static_cast<int64_t>(i) / inner) % channels) : 0;
    const auto z = static_cast<int32_t>(std::clamp(std::nearbyint(zv[c]), static_cast<float>(qmin), static_cast<float>(qmax)));
    const auto e = quant::fake_quantize_learnable_gradients_value(xv[i], gv[i], sv[c], z, qmin, qmax);
    bound_s[c] += std::fabs(e.scale) * grad_factor;
    bound_z[c] += std::fabs(e.zero_point) * grad_factor;
  }
  for (const char* which : {"scale", "zero_point"}) {
    const Tensor got = std::string(which) == "scale" ? scale.grad() : zero_point.grad();
    const std::vector<double>& bound = std::string(which) == "scale" ? bound_s : bound_z;
    const std::vector<float> got_v = to_vector(got), want_v = to_vector(g.tensor(want + "/grad_" + which));
    REQUIRE(got_v.size() == want_v.size());
    for (size_t c = 0; c < got_v.size(); ++c) {
      INFO("grad_" << which << "[" << c << "]: got " << got_v[c] << ", want " << want_v[c] << ", bound "
                   << kGradSumRelTol * bound[c]);
      CHECK(std::fabs(static_cast<double>(got_v[c]) - want_v[c]) <= kGradSumRelTol * bound[c] + 1e-30);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// The ops against PyTorch
// ---------------------------------------------------------------------------

TEST_CASE("golden: learnable per-tensor fake quant, forward and gradients of x, scale, zero point", "[lsq][golden]") {
  const auto cases = cases_of("lsq_tensor");
  REQUIRE(cases.size() == 10);
  for (const std::string& base : cases) check_op_case(base, false);
}

TEST_CASE("golden: learnable per-channel fake quant, forward and gradients of x, scale, zero point", "[lsq][golden]") {
  const auto cases = cases_of("lsq_channel");
  REQUIRE(cases.size() == 5);
  for (const std::string& base : cases) check_op_case(base, true);
}

TEST_CASE("golden: the forward of the learnable op equals plain fake quant with the rounded zero point", "[lsq]") {
  // eq. 1-2 are FakeQuantize's eq. 8 with z = clamp(nearbyint(zero_point)).
  const golden::File& g = golden::load("lsq.txt");
  for (const std::string& base : cases_of("lsq_tensor")) {
    INFO(base);
    const std::vector<float> x = to_vector(g.tensor(base + "/x")), out = to_vector(g.tensor(base + "/out"));
    const float s = static_cast<float>(g.scalar(base + "/scale"));
    const auto qmin = static_cast<int32_t>(g.scalar(base + "/quant_min"));
    const auto qmax = static_cast<int32_t>(g.scalar(base + "/quant_max"));
    const auto z = static_cast<int32_t>(std::clamp(std::nearbyint(static_cast<float>(g.scalar(base + "/zero_point"))),
                                                   static_cast<float>(qmin), static_cast<float>(qmax)));
    for (size_t i = 0; i < x.size(); ++i) CHECK(quant::fake_quantize_value(x[i], s, z, qmin, qmax) == out[i]);
  }
}

TEST_CASE("golden: the cases where PyTorch's backward is not the derivative of its forward are marked", "[lsq][golden]") {
  // docs/lsq.md §5: the file marks each case whose PyTorch gradients differ
  // from the derivative of the forward; the documented quirk cases all do.
  const golden::File& g = golden::load("lsq.txt");
  for (const char* base : {"lsq_tensor/quirk_odd_z_ties", "lsq_tensor/quirk_negative_z", "lsq_tensor/quirk_half_z",
                           "lsq_channel/quirk_axis0_odd_z_ties"}) {
    INFO(base);
    CHECK(g.has(std::string(base) + "/tinyqat/grad_x"));
  }
  // A case with no ties and an integer zero point matches PyTorch as is.
  CHECK_FALSE(g.has("lsq_tensor/i4_s0.3_z0/tinyqat/grad_x"));
}

// ---------------------------------------------------------------------------
// The gradient formulas
// ---------------------------------------------------------------------------

TEST_CASE("the op's scale and zero-point gradients are the sums of the per-element reference (eq. 3-5)", "[lsq]") {
  Generator gen(5);
  for (const auto& [qmin, qmax, z] : {std::tuple{0, 15, 4}, std::tuple{-8, 7, 0}, std::tuple{0, 255, 100},
                                      std::tuple{-128, 127, -3}, std::tuple{0, 3, 1}}) {
    INFO("range " << qmin << ".." << qmax << ", zero point " << z);
    const float s = 0.37f;
    Tensor x = mul(randn({7, 33}, gen), 0.6f * s * static_cast<float>(qmax - qmin));  // many outside
    const Tensor gout = randn({7, 33}, gen);
    x.requires_grad_(true);
    Tensor scale = full({1}, s), zero_point = full({1}, static_cast<double>(z) + 0.2);
    scale.requires_grad_(true);
    zero_point.requires_grad_(true);
    const double gf = 0.125;  // a power of two: scaling by it is exact
    tq::backward(quant::fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, qmin, qmax, gf), gout);
    const std::vector<float> xv = to_vector(x), gv = to_vector(gout), dx = to_vector(x.grad());
    double ds = 0, dz = 0;
    int64_t outside = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      const auto e = quant::fake_quantize_learnable_gradients_value(xv[i], gv[i], s, z, qmin, qmax);
      CHECK(dx[i] == e.x);
      ds += static_cast<double>(e.scale * static_cast<float>(gf));
      dz += static_cast<double>(e.zero_point * static_cast<float>(gf));
      outside += e.x == 0.f && gv[i] != 0.f;
    }
    CHECK(outside > 10);
    CHECK(scale.grad().item() == static_cast<float>(ds));
    CHECK(zero_point.grad().item() == static_cast<float>(dz));
  }
}

TEST_CASE("the scale gradient is LSQ's r - x/s inside and qmin - z / qmax - z outside (eq. 4)", "[lsq]") {
  // The analytic formula in double, independently of the op's float order.
  const float s = 0.25f;
  const int32_t qmin = 0, qmax = 15, z = 5;
  const std::vector<float> xs = {-3.f, -1.3f, -0.6f, 0.f, 0.11f, 0.62f, 1.4f, 2.2f, 2.49f, 2.8f, 9.f};
  Tensor x = from_vector(xs, {static_cast<int64_t>(xs.size())});
  Tensor scale = full({1}, s), zero_point = full({1}, z);
  scale.requires_grad_(true);
  zero_point.requires_grad_(true);
  tq::backward(sum(quant::fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, qmin, qmax, 1.0)));
  double want_s = 0, want_z = 0;
  for (float v : xs) {
    const double r = std::nearbyint(v / s), q = r + z;
    if (q < qmin) want_s += qmin - z, want_z += -s;
    else if (q > qmax) want_s += qmax - z, want_z += -s;
    else want_s += r - static_cast<double>(v) / s;
  }
  CHECK(scale.grad().item() == Approx(want_s).margin(1e-5));
  CHECK(zero_point.grad().item() == Approx(want_z).margin(1e-6));
}

TEST_CASE("gradcheck: outside the range the scale gradient is the true derivative, inside it is not", "[lsq][gradcheck]") {
  // y = (qmin - z) s below the range and (qmax - z) s above: smooth in s, so
  // central differences must agree with eq. 4 there. Inside, y = s * round(x/s)
  // is piecewise constant in x/s and the STE gradient r - x/s is not its
  // derivative: the same check must fail. (The x gradient is an STE
  // everywhere: nothing to check by differences.)
  constexpr int32_t qmin = 0, qmax = 15;
  const Tensor zero_point = full({1}, 3.0);
  const Tensor outside = from_vector({-4.f, -2.3f, 6.1f, 11.f}, {4});   // s = 0.3: x/s < -3 or > 12
  const Tensor inside = from_vector({-0.51f, 0.13f, 1.04f, 2.2f}, {4});
  auto f_of_scale = [&](const Tensor& x) {
    return [x, zero_point](const testing::Inputs& in) {
      return quant::fake_quantize_learnable_per_tensor_affine(x, in[0], zero_point, qmin, qmax, 1.0);
    };
  };
  testing::GradcheckOptions options;
  options.eps = 1e-4;
  options.atol = 1e-3;
  options.rtol = 1e-3;
  const auto ok = testing::gradcheck(f_of_scale(outside), {full({1}, 0.3)}, options);
  INFO(ok.message);
  CHECK(ok.ok);
  CHECK(ok.checked == 4);
  const auto fails = testing::gradcheck(f_of_scale(inside), {full({1}, 0.3)}, options);
  INFO(fails.message);
  CHECK_FALSE(fails.ok);
}

TEST_CASE("the learnable op checks its arguments and names itself", "[lsq]") {
  const Tensor x = ones({2, 3});
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message([&] { quant::fake_quantize_learnable_per_tensor_affine(x, full({1}, -1.0), zeros({1}), 0, 15); }),
             Catch::Contains("scale -1") && Catch::Contains("positive"));
  CHECK_THAT(message([&] { quant::fake_quantize_learnable_per_channel_affine(x, ones({2}), zeros({2}), 1, 0, 15); }),
             Catch::Contains("fake_quantize_learnable_per_channel_affine") && Catch::Contains("(3)"));
  CHECK_THAT(message([&] { quant::fake_quantize_learnable_per_tensor_affine(x, ones({1}), zeros({1}), 5, 5); }),
             Catch::Contains("quant_min (5) must be less than quant_max (5)"));
}

// ---------------------------------------------------------------------------
// The module
// ---------------------------------------------------------------------------

TEST_CASE("golden: LearnableFakeQuantize with observer init then learning follows PyTorch's module", "[lsq][golden]") {
  const golden::File& g = golden::load("lsq.txt");
  LearnableFakeQuantize fq(std::make_shared<quant::MovingAverageMinMaxObserver>(quant::activation_spec(4)),
                           {.init = LsqInit::observer});
  fq.train();
  nn::SGD optimizer(fq.parameters(), g.scalar("lsq_module/act/lr"));
  REQUIRE(fq.parameters().size() == 2);  // scale and zero point (affine)
  for (int i = 0; i < 4; ++i) {
    const std::string base = fmt::format("lsq_module/act/batch{}", i);
    INFO(base);
    optimizer.zero_grad();
    const Tensor y = fq(g.tensor(base + "/x"));
    if (i == 0) CHECK(bitwise_equal(fq.scale, g.tensor(base + "/scale_used")));  // the observer formula, exactly
    CHECK(compare(fq.scale, g.tensor(base + "/scale_used")).relative_error <= kTrajectoryRelTol);
    CHECK(compare(fq.zero_point, g.tensor(base + "/zero_point_used")).relative_error <= kTrajectoryRelTol);
    CHECK(compare(y, g.tensor(base + "/out")).relative_error == 0);
    sum(mul(y, g.tensor(base + "/gout"))).backward();
    CHECK(compare(fq.scale.grad(), g.tensor(base + "/grad_scale")).relative_error <= kTrajectoryRelTol);
    CHECK(compare(fq.zero_point.grad(), g.tensor(base + "/grad_zero_point")).relative_error <= kTrajectoryRelTol);
    optimizer.step();
    CHECK(compare(fq.scale, g.tensor(base + "/scale_after")).relative_error <= kTrajectoryRelTol);
    CHECK(compare(fq.zero_point, g.tensor(base + "/zero_point_after")).relative_error <= kTrajectoryRelTol);
  }
  const QParams q = fq.calculate_qparams();
  CHECK(q.scale[0] == Approx(g.scalar("lsq_module/act/final_scale")).epsilon(kTrajectoryRelTol));
  CHECK(q.zero_point[0] == static_cast<int32_t>(g.scalar("lsq_module/act/final_zero_point")));
}

TEST_CASE("golden: LearnableFakeQuantize per channel with LSQ init follows PyTorch's module", "[lsq][golden]") {
  const golden::File& g = golden::load("lsq.txt");
  LearnableFakeQuantize fq(quant::weight_spec(4), {.init = LsqInit::lsq});
  fq.train();
  nn::SGD optimizer(fq.parameters(), g.scalar("lsq_module/weight/lr"));
  REQUIRE(fq.parameters().size() == 1);  // symmetric: the zero point is a fixed buffer
  CHECK(fq.channels() == 0);             // sized by the first batch, in place
  const Tensor w = g.tensor("lsq_module/weight/w");
  for (int i = 0; i < 3; ++i) {
    const std::string base = fmt::format("lsq_module/weight/step{}", i);
    INFO(base);
    optimizer.zero_grad();
    const Tensor y = fq(w);
    if (i == 0) CHECK(compare(fq.scale, g.tensor("lsq_module/weight/init_scale")).relative_error <= kInitRelTol);
    CHECK(compare(y, g.tensor(base + "/out")).relative_error == 0);
    sum(mul(y, g.tensor(base + "/gout"))).backward();
    CHECK(compare(fq.scale.grad(), g.tensor(base + "/grad_scale")).relative_error <= kTrajectoryRelTol);
    optimizer.step();  // the optimizer holds the parameter made before it was sized
    CHECK(compare(fq.scale, g.tensor(base + "/scale_after")).relative_error <= kTrajectoryRelTol);
  }
  CHECK(fq.channels() == 4);
}

TEST_CASE("LearnableFakeQuantize: eval changes nothing, and fails clearly before any training batch", "[lsq]") {
  LearnableFakeQuantize fq(quant::activation_spec(4));
  fq.owner = "fc1.activation_post_process";
  CHECK_FALSE(fq.has_data());
  CHECK_THROWS_WITH(fq.calculate_qparams(), Catch::Contains("fc1.activation_post_process") &&
                                                Catch::Contains("has seen no data"));
  fq.eval();
  CHECK_THROWS_WITH(fq(ones({2, 3})), Catch::Contains("fc1.activation_post_process") && Catch::Contains("train mode"));
  fq.train();
  Generator gen(3);
  fq(randn({16, 8}, gen));
  CHECK(fq.has_data());
  const std::vector<float> s0 = to_vector(fq.scale), z0 = to_vector(fq.zero_point);
  fq.eval();
  fq(mul(randn({16, 8}, gen), 10.f));
  CHECK(to_vector(fq.scale) == s0);
  CHECK(to_vector(fq.zero_point) == z0);
}

TEST_CASE("LearnableFakeQuantize: the scale stays positive, calculate_qparams rounds and clamps", "[lsq]") {
  LearnableFakeQuantize fq(quant::activation_spec(4));
  fq.train();
  Generator gen(4);
  const Tensor x = randn({8, 8}, gen);
  fq(x);
  // An optimizer step drove the scale negative and the zero point off range.
  fq.scale.data<float>()[0] = -0.5f;
  fq.zero_point.data<float>()[0] = 17.6f;
  QParams q = fq.calculate_qparams();
  CHECK(q.scale[0] == quant::kScaleEps);
  CHECK(q.zero_point[0] == 15);
  fq.eval();
  const Tensor y = fq(x);  // uses eps, without writing it
  CHECK(fq.scale.data<float>()[0] == -0.5f);
  CHECK(std::isfinite(to_vector(y)[0]));
  fq.train();
  fq(x);  // PyTorch's clamp_(min=eps), in place, in training
  CHECK(fq.scale.data<float>()[0] == quant::kScaleEps);
  fq.zero_point.data<float>()[0] = 2.5f;  // half to even, as torch.round
  CHECK(fq.calculate_qparams().zero_point[0] == 2);
}

TEST_CASE("LearnableFakeQuantize: PyTorch's switches (static estimate, learning, fake quant)", "[lsq]") {
  LearnableFakeQuantize fq(quant::activation_spec(8), {.init = LsqInit::lsq});
  fq.train();
  Generator gen(6);
  fq.enable_static_estimate();
  CHECK_FALSE(fq.scale.requires_grad());
  const Tensor x = add(mul(randn({32, 4}, gen), 2.f), 1.f);
  Tensor xg = kernels::clone(x);
  xg.requires_grad_(true);
  sum(fq(xg)).backward();
  CHECK_FALSE(fq.scale.grad().defined());  // no learning
  const QParams observed = fq.observer().calculate_qparams();
  CHECK(fq.scale.item() == observed.scale[0]);
  CHECK(fq.zero_point.item() == observed.zero_point[0]);

  fq.enable_static_observation();  // observer only: y = x
  const Tensor y = fq(x);
  CHECK(y.same(x));

  fq.enable_param_learning();
  CHECK(fq.scale.requires_grad());
  CHECK_FALSE(fq.static_enabled());
  const float before = fq.scale.item();
  sum(fq(mul(x, 5.f))).backward();  // the observer no longer moves the scale
  CHECK(fq.scale.item() == before);
  CHECK(fq.scale.grad().defined());
  CHECK(fq.zero_point.grad().defined());
}

TEST_CASE("LearnableFakeQuantize: LSQ init is 2 mean|x| / sqrt(quant_max), per channel (eq. 8)", "[lsq]") {
  LearnableFakeQuantize fq(quant::weight_spec(3));  // -4..3, per channel
  fq.train();
  const Tensor w = from_vector({1.f, -1.f, 2.f, -2.f, 0.5f, 0.f, 0.f, -0.5f}, {2, 4});
  fq(w);
  CHECK(fq.scale.data<float>()[0] == static_cast<float>(2.0 * 1.5 / std::sqrt(3.0)));
  CHECK(fq.scale.data<float>()[1] == static_cast<float>(2.0 * 0.25 / std::sqrt(3.0)));
  CHECK(to_vector(fq.zero_point) == std::vector<float>{0.f, 0.f});
  // The gradient scale of eq. 6 uses the whole tensor's numel.
  CHECK(fq.grad_factor(8) == 1.0 / std::sqrt(8.0 * 3.0));
  LearnableFakeQuantize unscaled(quant::weight_spec(3), {.use_grad_scaling = false});
  CHECK(unscaled.grad_factor(8) == 1.0);
}

TEST_CASE("LearnableFakeQuantize per channel refuses an input with another number of channels", "[lsq]") {
  LearnableFakeQuantize fq(quant::weight_spec(4), {.channels = 3});
  fq.owner = "fc2.weight_fake_quant";
  fq.train();
  CHECK_THROWS_WITH(fq(ones({4, 5})), Catch::Contains("fc2.weight_fake_quant") && Catch::Contains("4 channels") &&
                                          Catch::Contains("has 3"));
  LearnableFakeQuantize lazy(quant::weight_spec(4));  // sized by its first batch
  lazy.train();
  lazy(ones({4, 5}));
  CHECK(lazy.channels() == 4);
  CHECK_THROWS_WITH(lazy(ones({6, 5})), Catch::Contains("6 channels"));
}

TEST_CASE("LearnableFakeQuantize: restores its parameters and state from another module's tensors", "[lsq]") {
  LearnableFakeQuantize a(quant::weight_spec(4), {.channels = 3});
  a.train();
  Generator gen(8);
  a(randn({3, 5}, gen));
  LearnableFakeQuantize b(quant::weight_spec(4), {.channels = 3});
  CHECK_FALSE(b.has_data());
  // What a model-file loader does: copy parameters, replace buffers, then notify.
  const auto a_params = a.named_parameters(false);
  for (auto& [name, p] : b.named_parameters(false))
    for (auto& [a_name, a_p] : a_params)
      if (a_name == name) kernels::copy_(p, a_p);
  for (auto& [name, t] : a.named_buffers(false)) b.set_buffer(name, kernels::clone(t));
  b.on_state_loaded();
  CHECK(b.has_data());
  const QParams qa = a.calculate_qparams(), qb = b.calculate_qparams();
  CHECK(qa.scale == qb.scale);
  CHECK(qa.zero_point == qb.zero_point);
}

TEST_CASE("LearnableFakeQuantize prints like PyTorch's module, with its learned qparams", "[lsq][print]") {
  LearnableFakeQuantize fq(quant::activation_spec(4));
  fq.train();
  fq(from_vector({0.f, 1.f, 2.f, 3.f}, {4}));
  const std::string s = fq.extra_repr();
  INFO(s);
  CHECK_THAT(s, Catch::StartsWith("fake_quant_enabled=1, static_enabled=0, learning_enabled=1, quant_min=0, "
                                  "quant_max=15, dtype=quint8, qscheme=per_tensor_affine, ch_axis=-1"));
  CHECK_THAT(s, Catch::Contains("use_grad_scaling=True, init=lsq, scale=["));
  CHECK_THAT(fq.repr(), Catch::StartsWith("LearnableFakeQuantize(") &&
                            Catch::Contains("(activation_post_process): MovingAverageMinMaxObserver"));
}

// ---------------------------------------------------------------------------
// QAT at 4 bits: LSQ against moving-average fake quant, then int8
// ---------------------------------------------------------------------------

namespace {

// LSQ at 4 bits must reach at least the moving-average accuracy minus this
// many percentage points on the 4000-point test set (measured: +1.5 points).
constexpr double kLsqMarginPoints = 0.5;
// The float model must have learnt the task (else the comparison means little).
constexpr double kMinFloatAccuracy = 80.0;
// Agreement of the int8 model's predictions with the fake-quant model's
// (QATLinear puts the bias on the int8 accumulator's grid, so they compute
// the same sums; measured: 100%).
constexpr double kMinAgreementPercent = 99.5;

constexpr int64_t kFeatures = 20, kClasses = 10, kBatch = 64;
constexpr int kFloatEpochs = 10, kQatEpochs = 5;
constexpr double kQatLr = 0.01;

struct MLP : tq_test::ClusterMLP {
  MLP() : ClusterMLP(kFeatures, kClasses) {}
};
using Dataset = tq_test::Clusters;

// Ten Gaussian clusters in 20-D, spread 1.5. They overlap: the float model
// reaches about 84%, and 4-bit quantization costs a few points, so the choice
// of quantizer shows.
const Dataset& train_set() {
  static const Dataset d = tq_test::make_clusters(4000, kClasses, kFeatures, 1.5f, 1);
  return d;
}
const Dataset& test_set() {
  static const Dataset d = tq_test::make_clusters(4000, kClasses, kFeatures, 1.5f, 2);
  return d;
}

void train(nn::Module& model, int epochs, double lr) { tq_test::train_sgd(model, train_set(), epochs, lr, kBatch); }

// The same seed and the same training give the same float model, bit for bit.
std::unique_ptr<MLP> trained_float_mlp() {
  manual_seed(7);
  auto model = std::make_unique<MLP>();
  train(*model, kFloatEpochs, 0.05);
  return model;
}

Tensor predictions(nn::Module& model) {
  NoGradGuard no_grad;
  return kernels::argmax(kernels::to_float(model(test_set().x)), 1);
}

double accuracy(const Tensor& pred) {
  int64_t correct = 0;
  for (int64_t i = 0; i < pred.numel(); ++i) correct += pred.at({i}) == test_set().y.at({i});
  return 100.0 * static_cast<double>(correct) / static_cast<double>(pred.numel());
}

double agreement(const Tensor& a, const Tensor& b) {
  int64_t same = 0;
  for (int64_t i = 0; i < a.numel(); ++i) same += a.at({i}) == b.at({i});
  return 100.0 * static_cast<double>(same) / static_cast<double>(a.numel());
}

struct QatResult {
  double fake_quant_accuracy = 0, int8_accuracy = 0, agreement = 0;
};

QatResult qat_then_convert(const quant::QConfigPtr& qconfig, const std::function<void(MLP&)>& check_trained = {}) {
  auto model = trained_float_mlp();
  model->qconfig = qconfig;
  quant::prepare_qat(*model);
  train(*model, kQatEpochs, kQatLr);  // the optimizer is made after prepare_qat
  model->eval();
  if (check_trained) check_trained(*model);
  QatResult r;
  const Tensor fake_quant = predictions(*model);
  r.fake_quant_accuracy = accuracy(fake_quant);
  quant::convert(*model);
  for (auto* name : {"fc1", "fc2", "fc3"}) {
    INFO(name);
    CHECK(model->get_submodule(name).type_name() == "QuantizedLinear");
  }
  const Tensor int8 = predictions(*model);
  r.int8_accuracy = accuracy(int8);
  r.agreement = agreement(fake_quant, int8);
  return r;
}

}  // namespace

TEST_CASE("QAT at 4 bits: LSQ reaches the accuracy of moving-average fake quant, int8 agrees", "[lsq][qat]") {
  auto float_model = trained_float_mlp();
  float_model->eval();
  const double float_acc = accuracy(predictions(*float_model));
  CHECK(float_acc >= kMinFloatAccuracy);

  const QatResult ma = qat_then_convert(quant::make_qat_qconfig(4, 4));
  const QatResult lsq = qat_then_convert(quant::make_lsq_qat_qconfig(4, 4), [](MLP& m) {
    // Every place holds a learnable fake quant; those that saw data were
    // trained, and their scales stayed positive. (fc2 and fc3 receive
    // fake-quantized input, so their input fake quants never run.)
    int learnable = 0, trained = 0;
    for (auto& [path, mod] : m.named_modules())
      if (auto* fq = dynamic_cast<LearnableFakeQuantize*>(mod)) {
        ++learnable;
        if (!fq->has_data()) continue;
        ++trained;
        INFO(path);
        for (float s : to_vector(fq->scale)) CHECK(s >= quant::kScaleEps);
        CHECK(fq->scale.grad().defined());
      }
    CHECK(learnable == 9);  // input, weight and output of three layers
    CHECK(trained == 7);
  });
  const std::string summary =
      fmt::format("float {:.2f}%; 4-bit moving average: fake quant {:.2f}%, int8 {:.2f}%; 4-bit LSQ: fake quant "
                  "{:.2f}%, int8 {:.2f}%; agreement int8 / fake quant: MA {:.2f}%, LSQ {:.2f}%",
                  float_acc, ma.fake_quant_accuracy, ma.int8_accuracy, lsq.fake_quant_accuracy, lsq.int8_accuracy,
                  ma.agreement, lsq.agreement);
  INFO(summary);
  WARN(summary);
  CHECK(lsq.fake_quant_accuracy >= ma.fake_quant_accuracy - kLsqMarginPoints);
  CHECK(lsq.int8_accuracy >= ma.int8_accuracy - kLsqMarginPoints);
  CHECK(lsq.agreement >= kMinAgreementPercent);
  CHECK(ma.agreement >= kMinAgreementPercent);
}

TEST_CASE("prepare_qat with the LSQ qconfig: the scales are model parameters the optimizer trains", "[lsq][qat]") {
  manual_seed(3);
  MLP model;
  model.qconfig = quant::make_lsq_qat_qconfig(4, 4);
  quant::prepare_qat(model);
  std::vector<std::string> names;
  for (auto& [name, p] : model.named_parameters()) names.push_back(name);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("fc1.weight_fake_quant.scale"));
  CHECK_FALSE(has("fc1.weight_fake_quant.zero_point"));  // symmetric: fixed
  CHECK(has("fc1.activation_post_process.scale"));
  CHECK(has("fc1.activation_post_process.zero_point"));
  CHECK(has("fc1.input_fake_quant.scale"));
  std::ostringstream printed;
  printed << model;
  INFO(printed.str());
  CHECK_THAT(printed.str(), Catch::Contains("(weight_fake_quant): LearnableFakeQuantize(") &&
                                Catch::Contains("qscheme=per_channel_symmetric, ch_axis=0"));
  CHECK(model.qconfig.value()->name == "W4A4 LSQ QAT");

  // An optimizer made now, before any batch sized the per-channel scales.
  nn::SGD optimizer(model.parameters(), 0.1);
  const Tensor x = kernels::slice(train_set().x, 0, 0, kBatch), y = kernels::slice(train_set().y, 0, 0, kBatch);
  nn::CrossEntropyLoss criterion;
  criterion(model(x), y).backward();
  auto& w_fq = dynamic_cast<LearnableFakeQuantize&>(model.get_submodule("fc1.weight_fake_quant"));
  CHECK(w_fq.channels() == 64);
  const std::vector<float> before = to_vector(w_fq.scale);
  optimizer.step();
  CHECK(to_vector(w_fq.scale) != before);
}

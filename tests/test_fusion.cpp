// Fusion (src/quant/fused.h, docs/ptq.md §4): Linear + ReLU -> LinearReLU.
// In float the fused module computes exactly what the pair computes; in int8
// the ReLU becomes the lower clamp of requantization (at the output zero
// point), so QuantizedLinearReLU equals QuantizedLinear followed by a
// quantized ReLU, integer for integer.
#include <catch2/catch.hpp>

#include <sstream>

#include "golden_reader.h"
#include "tinyqat.h"

using namespace tq;

namespace {

struct Net : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(12, 24));
  nn::Slot<nn::ReLU> relu1 = register_module("relu1", nn::ReLU());
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(24, 3));
  Tensor forward(const Tensor& x) override { return fc2(relu1(fc1(x))); }
};

QParams per_tensor_u8(float scale, int32_t zero_point, int32_t quant_max) {
  QParams q;
  q.scheme = QScheme::per_tensor_affine;
  q.scale = {scale};
  q.zero_point = {zero_point};
  q.quant_min = 0;
  q.quant_max = quant_max;
  return q;
}

// Per-channel symmetric weight qparams from the weight's own row ranges.
QParams weight_qparams(const Tensor& w) {
  quant::PerChannelMinMaxObserver obs(quant::weight_spec(8, QScheme::per_channel_symmetric, 0));
  obs.observe(w);
  return obs.calculate_qparams();
}

std::vector<std::string> types_of(const nn::Sequential& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size(); ++i) out.push_back(s[i].type_name());
  return out;
}

}  // namespace

TEST_CASE("LinearReLU in float equals Linear then ReLU exactly, and shares the parameters", "[fusion]") {
  manual_seed(1);
  nn::Linear linear(12, 24);
  quant::LinearReLU fused(linear);
  CHECK(fused.weight.same(linear.weight));
  CHECK(fused.bias.same(linear.bias));
  const Tensor x = randn({16, 12});
  NoGradGuard no_grad;
  const std::vector<float> pair = to_vector(relu(linear(x))), one = to_vector(fused(x));
  CHECK(pair == one);
}

TEST_CASE("fuse_modules({{\"fc1\", \"relu1\"}}) on a struct model", "[fusion]") {
  manual_seed(2);
  Net model;
  const Tensor x = randn({8, 12});
  std::vector<float> before;
  {
    NoGradGuard g;
    before = to_vector(model(x));
  }
  const Tensor w = model.fc1->weight;
  quant::fuse_modules(model, {{"fc1", "relu1"}});
  CHECK(model.fc1.module().type_name() == "LinearReLU");
  CHECK(model.relu1.module().type_name() == "Identity");
  CHECK(model.fc1->weight.same(w));  // LinearReLU is a Linear: the handle still reaches the weight
  // The user's forward is unchanged and gives the same numbers.
  NoGradGuard g;
  CHECK(to_vector(model(x)) == before);
  std::ostringstream printed;
  printed << model;
  CHECK(printed.str().find("(fc1): LinearReLU(in_features=12, out_features=24") != std::string::npos);
}

TEST_CASE("fuse_linear_relu fuses every Linear directly followed by a ReLU in a Sequential", "[fusion]") {
  manual_seed(3);
  nn::Sequential model(nn::Linear(12, 24), nn::ReLU(), nn::Linear(24, 16), nn::ReLU(), nn::Linear(16, 3), nn::ReLU(),
                       nn::ReLU());
  const Tensor x = randn({8, 12});
  std::vector<float> before;
  {
    NoGradGuard g;
    before = to_vector(model(x));
  }
  CHECK(quant::fuse_linear_relu(model) == 3);
  CHECK(types_of(model) == std::vector<std::string>{"LinearReLU", "Identity", "LinearReLU", "Identity", "LinearReLU",
                                                    "Identity", "ReLU"});
  NoGradGuard g;
  CHECK(to_vector(model(x)) == before);
  // Nothing left to fuse.
  CHECK(quant::fuse_linear_relu(model) == 0);
}

TEST_CASE("fuse_linear_relu reaches Sequentials nested in a struct model", "[fusion]") {
  struct Outer : nn::Module {
    nn::Slot<nn::Sequential> body = register_module("body", nn::Sequential(nn::Linear(4, 8), nn::ReLU()));
    nn::Slot<nn::Linear> head = register_module("head", nn::Linear(8, 2));
    Tensor forward(const Tensor& x) override { return head(body(x)); }
  };
  manual_seed(4);
  Outer model;
  CHECK(quant::fuse_linear_relu(model) == 1);
  CHECK(model.get_submodule("body.0").type_name() == "LinearReLU");
  CHECK(model.get_submodule("body.1").type_name() == "Identity");
}

TEST_CASE("bad input: fuse_modules names a group it cannot fuse", "[fusion][errors]") {
  manual_seed(5);
  Net model;
  CHECK_THROWS_WITH(quant::fuse_modules(model, {{"relu1", "fc2"}}),
                    Catch::Contains("relu1, fc2") && Catch::Contains("(ReLU, Linear)"));
  CHECK_THROWS_WITH(quant::fuse_modules(model, {{"fc1"}}), Catch::Contains("two modules"));
  CHECK_THROWS_WITH(quant::fuse_modules(model, {{"fc1", "relu9"}}), Catch::Contains("relu9"));
  // A good group before a bad one is not applied either: every group is checked first.
  CHECK_THROWS_WITH(quant::fuse_modules(model, {{"fc1", "relu1"}, {"fc2", "relu9"}}), Catch::Contains("relu9"));
  CHECK_THROWS_WITH(quant::fuse_modules(model, {{"fc1", "relu1"}, {"fc2", "relu1"}}),
                    Catch::Contains("'relu1' appears in more than one group"));
  // Nothing was changed by the failed calls.
  CHECK(model.fc1.module().type_name() == "Linear");
  CHECK(model.relu1.module().type_name() == "ReLU");
}

TEST_CASE("int8: QuantizedLinearReLU equals QuantizedLinear then a quantized ReLU on every element", "[fusion][ptq]") {
  // The SAME weights and the SAME output qparams for both; the output range
  // includes negatives (zero point 50 of 0..127), so the unfused layer does
  // produce integers below the zero point for the ReLU to clamp.
  manual_seed(6);
  nn::Linear linear(40, 32);
  const QParams wq = weight_qparams(linear.weight);
  const QParams out = per_tensor_u8(0.02f, 50, 127);
  auto in = std::make_shared<const QParams>(per_tensor_u8(0.03f, 60, 127));
  quant::QuantizedLinear unfused(linear.weight, linear.bias, wq, out, in, false, "unfused");
  quant::QuantizedLinear fused(linear.weight, linear.bias, wq, out, in, true, "fused");
  REQUIRE(golden::ints_of(unfused.weight()) == golden::ints_of(fused.weight()));

  const Tensor x = randn({64, 40});
  for (auto kernel : {Int8Kernel::reference, Int8Kernel::automatic}) {
    ScopedInt8Kernel scoped(kernel);
    INFO("kernel " << to_string(kernel));
    const Tensor y_unfused = unfused(x);
    const Tensor y_relu = relu(y_unfused);  // tq::relu on a quantized tensor stays quantized
    REQUIRE(y_relu.is_quantized());
    const Tensor y_fused = fused(x);
    const std::vector<int64_t> a = golden::ints_of(y_relu), b = golden::ints_of(y_fused), raw = golden::ints_of(y_unfused);
    REQUIRE(a.size() == b.size());
    int64_t mismatches = 0, clamped = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      mismatches += a[i] != b[i];
      clamped += raw[i] < 50;
    }
    CHECK(mismatches == 0);
    CHECK(clamped > 100);  // a real test: many elements were negative before the ReLU
    CHECK(y_fused.qparams().zero_point[0] == 50);
  }
}

TEST_CASE("fuse, prepare, calibrate, convert: QuantizedLinearReLU with a range that starts at 0", "[fusion][ptq]") {
  auto build = [] {
    manual_seed(7);
    return std::make_shared<nn::Sequential>(nn::Linear(12, 32), nn::ReLU(), nn::Linear(32, 16), nn::ReLU(),
                                            nn::Linear(16, 3));
  };
  Generator data(8);
  const Tensor calib = randn({256, 12}, data), x = randn({64, 12}, data);

  auto fused = build();
  auto unfused = build();
  auto reference = build();  // float, for accuracy of both
  CHECK(quant::fuse_linear_relu(*fused) == 2);
  for (auto& m : {fused, unfused}) {
    m->qconfig = quant::make_ptq_qconfig("minmax");
    quant::prepare(*m);
    NoGradGuard g;
    (*m)(calib);
    quant::convert(*m);
  }
  CHECK(types_of(*fused) == std::vector<std::string>{"QuantizedLinearReLU", "Identity", "QuantizedLinearReLU",
                                                     "Identity", "QuantizedLinear"});
  CHECK(types_of(*unfused) == std::vector<std::string>{"QuantizedLinear", "ReLU", "QuantizedLinear", "ReLU",
                                                       "QuantizedLinear"});

  // The fused layer's observer saw values after the ReLU: its range starts at
  // 0 (zero point 0), so it spends no levels on negatives and its step is finer.
  auto& f0 = dynamic_cast<quant::QuantizedLinear&>((*fused)[0]);
  auto& u0 = dynamic_cast<quant::QuantizedLinear&>((*unfused)[0]);
  INFO("fc1 output qparams: fused scale " << f0.output_qparams().scale[0] << " zero point "
                                          << f0.output_qparams().zero_point[0] << ", unfused scale "
                                          << u0.output_qparams().scale[0] << " zero point "
                                          << u0.output_qparams().zero_point[0]);
  CHECK(f0.output_qparams().zero_point[0] == 0);
  CHECK(u0.output_qparams().zero_point[0] > 0);
  CHECK(f0.output_qparams().scale[0] < u0.output_qparams().scale[0]);

  // Rebuilt from the fused layer's own int8 weights and qparams without the
  // ReLU, then followed by a quantized ReLU: the same integers.
  quant::QuantizedLinear plain(f0.weight(), f0.bias(), f0.weight().qparams(), f0.output_qparams(), f0.input_qparams(),
                               false, "plain");
  CHECK(golden::ints_of(relu(plain(x))) == golden::ints_of(f0(x)));

  // Both int8 models stay close to the float model.
  NoGradGuard g;
  reference->eval();
  const Tensor y_float = (*reference)(x);
  const double sqnr_fused = quant::sqnr_db(y_float, (*fused)(x)), sqnr_unfused = quant::sqnr_db(y_float, (*unfused)(x));
  INFO("output SQNR: fused " << sqnr_fused << " dB, unfused " << sqnr_unfused << " dB");
  CHECK(sqnr_fused > 25);
  CHECK(sqnr_unfused > 25);
}

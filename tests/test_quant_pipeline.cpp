// The eager QAT pipeline through its public API, as a user writes it
// (examples/simple_nn_qat.cpp): prepare_qat, train, convert, run int8, and
// the errors a user meets on the way, each naming the layer at fault.
#include <catch2/catch.hpp>

#include <string>
#include <typeindex>

#include "tinyqat.h"

using namespace tq;

namespace {

struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

// The seed, line for line: prepare, one SGD step (target class 1).
void seed_step(SimpleNN& model, const Tensor& input) {
  model.qconfig = quant::get_default_qat_qconfig("fbgemm");
  quant::prepare_qat(model);
  nn::SGD optimizer(model.parameters(), 0.01);
  nn::CrossEntropyLoss criterion;
  optimizer.zero_grad();
  const Tensor target = full({input.size(0)}, 1.0, DType::i64);
  Tensor loss = criterion(model(input), target);
  loss.backward();
  optimizer.step();
}

// Every buffer of the model, by dotted name, as values.
std::map<std::string, std::vector<float>> buffer_values(const nn::Module& m) {
  std::map<std::string, std::vector<float>> out;
  for (auto& [name, b] : m.named_buffers()) out[name] = to_vector(b);
  return out;
}

}  // namespace

TEST_CASE("the SimpleNN QAT lesson: prepare_qat, one SGD step, convert, print", "[quant][pipeline]") {
  manual_seed(0);
  SimpleNN model;
  const Tensor input = randn({1, 10});
  seed_step(model, input);

  const std::string prepared = model.repr();
  INFO(prepared);
  CHECK_THAT(prepared, Catch::Contains("(fc1): QATLinear("));
  CHECK_THAT(prepared, Catch::Contains("(weight_fake_quant): FakeQuantize("));
  CHECK_THAT(prepared, Catch::Contains("(activation_post_process): MovingAverageMinMaxObserver("));
  CHECK_THAT(prepared, Catch::Contains("qscheme=per_channel_symmetric"));

  quant::convert(model);
  const std::string printed = model.repr();
  INFO(printed);
  CHECK_THAT(printed, Catch::StartsWith("SimpleNN(\n  (fc1): QuantizedLinear(in_features=10, out_features=5, scale="));
  CHECK_THAT(printed, Catch::Contains("(fc2): QuantizedLinear(in_features=5, out_features=2, scale="));
  CHECK_THAT(printed, Catch::Contains("quant_min=0, quant_max=127, qscheme=per_channel_symmetric"));
  // fc1 saw the float input, so it knows how to quantize one; fc2 only ever
  // saw fc1's (fake-)quantized output.
  auto& fc1 = dynamic_cast<quant::QuantizedLinear&>(model.fc1.module());
  auto& fc2 = dynamic_cast<quant::QuantizedLinear&>(model.fc2.module());
  CHECK(fc1.input_qparams() != nullptr);
  CHECK(fc2.input_qparams() == nullptr);
  CHECK_THAT(printed, Catch::Contains("input_scale="));
  CHECK(fc1.weight().dtype() == DType::i8);
  CHECK(fc1.output_qparams().quant_max == 127);
  CHECK_FALSE(model.is_training());
}

TEST_CASE("the converted model runs int8 on a float input", "[quant][pipeline]") {
  manual_seed(0);
  SimpleNN model;
  const Tensor input = randn({1, 10});
  seed_step(model, input);
  model.eval();
  Tensor fake_quant_out;
  {
    NoGradGuard no_grad;
    fake_quant_out = model(input);
  }
  quant::convert(model);
  const Tensor out = model(input);
  REQUIRE(out.is_quantized());
  CHECK(out.dtype() == DType::u8);
  CHECK(out.shape() == Shape{1, 2});
  auto& fc2 = dynamic_cast<quant::QuantizedLinear&>(model.fc2.module());
  CHECK(out.qparams().scale == fc2.output_qparams().scale);
  // Within one output step of the fake-quant model it came from.
  const std::vector<float> a = to_vector(kernels::to_float(out)), b = to_vector(fake_quant_out);
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) <= fc2.output_qparams().scale[0] * 1.0001);
  // A batch works too, and a 1-D input.
  CHECK(model(randn({7, 10})).shape() == Shape{7, 2});
  CHECK(model.fc1(randn({10})).shape() == Shape{5});
}

TEST_CASE("a quantized layer that never saw float input refuses one, naming the layer", "[quant][pipeline]") {
  manual_seed(0);
  SimpleNN model;
  seed_step(model, randn({1, 10}));
  quant::convert(model);
  CHECK_THROWS_WITH(model.fc2(randn({1, 5})), Catch::Contains("fc2") && Catch::Contains("float"));
  // fc1 did see one, so it quantizes it itself.
  CHECK_NOTHROW(model.fc1(randn({1, 10})));
}

TEST_CASE("convert before prepare_qat names a float layer", "[quant][pipeline]") {
  SimpleNN model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  CHECK_THROWS_WITH(quant::convert(model), Catch::Contains("fc1") && Catch::Contains("prepare"));
}

TEST_CASE("convert after prepare_qat but without any forward names the layer, and changes nothing", "[quant][pipeline]") {
  SimpleNN model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(model);
  const std::string before = model.repr();
  CHECK_THROWS_WITH(quant::convert(model), Catch::Contains("fc1") && Catch::Contains("no data"));
  CHECK(model.repr() == before);
  CHECK(model.fc1.module().type_name() == "QATLinear");
}

TEST_CASE("prepare_qat twice is an error", "[quant][pipeline]") {
  SimpleNN model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(model);
  CHECK_THROWS_WITH(quant::prepare_qat(model), Catch::Contains("already prepared"));
}

TEST_CASE("prepare_qat or prepare of a converted model names the quantized layer", "[quant][pipeline][errors]") {
  SimpleNN model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(model);
  {
    NoGradGuard no_grad;
    model(randn({4, 10}));
  }
  quant::convert(model);
  model.qconfig = quant::get_default_qat_qconfig("x86");
  const std::string before = model.repr();
  CHECK_THROWS_WITH(quant::prepare_qat(model), Catch::Contains("already quantized") && Catch::Contains("'fc1' is a QuantizedLinear"));
  CHECK_THROWS_WITH(quant::prepare(model), Catch::StartsWith("prepare: the model is already quantized"));
  CHECK(model.repr() == before);
}

TEST_CASE("prepare_qat without any qconfig is an error that says what to do", "[quant][pipeline]") {
  SimpleNN model;
  CHECK_THROWS_WITH(quant::prepare_qat(model), Catch::Contains("qconfig"));
}

TEST_CASE("an eval() forward changes no observer and no fake-quant qparams", "[quant][pipeline]") {
  manual_seed(1);
  SimpleNN model;
  seed_step(model, randn({4, 10}));
  const auto trained = buffer_values(model);
  REQUIRE(trained.count("fc1.activation_post_process.scale"));
  REQUIRE(trained.count("fc1.activation_post_process.activation_post_process.min_val"));
  REQUIRE(trained.count("fc1.weight_fake_quant.activation_post_process.max_val"));

  model.eval();
  {
    NoGradGuard no_grad;
    model(mul(randn({16, 10}), 10.f));  // a very different range
  }
  model(randn({3, 10}));  // with grad too
  CHECK(buffer_values(model) == trained);

  // ... while a training forward does change them (so the check above can fail).
  model.train();
  model(mul(randn({16, 10}), 10.f));
  CHECK(buffer_values(model) != trained);
}

TEST_CASE("slot handles run whatever module the passes put in the slot", "[quant][pipeline]") {
  manual_seed(2);
  SimpleNN model;
  CHECK(model.fc1.module().type_name() == "Linear");
  const Tensor x = randn({2, 10});
  seed_step(model, x);
  CHECK(model.fc1.module().type_name() == "QATLinear");
  // model.fc1(x) runs the QATLinear: its output lies on the output fake-quant grid.
  const Tensor h = model.fc1(x);
  CHECK(h.impl()->fake_quant_grid != nullptr);
  CHECK(model.fc1->weight.same(model.fc1.get().weight));  // QATLinear is a Linear: the handle still reaches it
  quant::convert(model);
  CHECK(model.fc1.module().type_name() == "QuantizedLinear");
  const Tensor q = model.fc1(x);
  CHECK(q.is_quantized());
  // The typed handle says plainly that the slot holds another type now.
  CHECK_THROWS_WITH(model.fc1->weight, Catch::Contains("fc1") && Catch::Contains("QuantizedLinear"));
}

TEST_CASE("a child with qconfig = nullptr stays float through prepare_qat and convert", "[quant][pipeline]") {
  manual_seed(3);
  SimpleNN model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  model.fc2.module().qconfig = nullptr;
  const auto resolved = quant::propagate_qconfig(model);
  CHECK(resolved.at("fc1") != nullptr);
  CHECK(resolved.at("fc2") == nullptr);
  quant::prepare_qat(model);
  CHECK(model.fc1.module().type_name() == "QATLinear");
  CHECK(model.fc2.module().type_name() == "Linear");
  model(randn({4, 10}));
  quant::convert(model);
  CHECK(model.fc1.module().type_name() == "QuantizedLinear");
  CHECK(model.fc2.module().type_name() == "Linear");
  const Tensor out = model(randn({4, 10}));  // int8 fc1, then float fc2 on its dequantized output
  CHECK_FALSE(out.is_quantized());
  CHECK(out.shape() == Shape{4, 2});
}

namespace {
// A user's own layer type: exact-type mappings do not swap it by default.
struct MyLinear : nn::Linear {
  MyLinear(int64_t in, int64_t out) : nn::Linear(in, out) {}
};
struct MyNet : nn::Module {
  nn::Slot<MyLinear> fc = register_module("fc", MyLinear(4, 3));
  Tensor forward(const Tensor& x) override { return fc(x); }
};
}  // namespace

TEST_CASE("a user-added mapping entry is used by prepare_qat", "[quant][pipeline]") {
  {
    MyNet net;
    net.qconfig = quant::get_default_qat_qconfig("x86");
    CHECK_THROWS_WITH(quant::prepare_qat(net), Catch::Contains("mapping"));  // nothing to swap by default
  }
  MyNet net;
  net.qconfig = quant::get_default_qat_qconfig("x86");
  quant::ModuleMapping mapping = quant::default_qat_module_mappings();  // a copy: the defaults stay as they are
  int used = 0;
  mapping[std::type_index(typeid(MyLinear))] = [&used](nn::Module& m, const quant::QConfig* qc,
                                                        const std::string& path) -> std::shared_ptr<nn::Module> {
    ++used;
    auto qat = std::make_shared<quant::QATLinear>(static_cast<nn::Linear&>(m), *qc);
    qat->name = path;
    return qat;
  };
  quant::prepare_qat(net, mapping);
  CHECK(used == 1);
  CHECK(net.fc.module().type_name() == "QATLinear");
  CHECK(quant::default_qat_module_mappings().count(std::type_index(typeid(MyLinear))) == 0);
  net(randn({2, 4}));
  quant::convert(net);
  CHECK(net.fc.module().type_name() == "QuantizedLinear");
}

// The workflow pieces of the quantization library: quant::calibrate
// (calibrate.h), quant::evaluate / agreement / max_step_difference
// (evaluate.h), and the two recipes quantize_qat / quantize_static
// (recipe.h), each checked against the plain steps it stands for.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "tinyqat.h"

using namespace tq;

namespace {

// A fused-able MLP 8 -> 16 -> 3 with the same weights every call.
std::shared_ptr<nn::Sequential> seeded_mlp() {
  manual_seed(7);
  return nn::make_mlp({8, 16, 3});
}

std::vector<Tensor> input_batches(int n, uint64_t seed) {
  Generator g(seed);
  std::vector<Tensor> batches;
  for (int i = 0; i < n; ++i) batches.push_back(randn({4, 8}, g));
  return batches;
}

bool has_type(const nn::Module& model, const std::string& type) {
  for (auto& [path, m] : model.named_modules())
    if (m->type_name() == type) return true;
  return false;
}

// Returns its input: the inputs of a batch are its logits.
struct PassThrough : nn::Module {
  Tensor forward(const Tensor& x) override { return x; }
};

}  // namespace

TEST_CASE("quant::calibrate: at most max_batches batches, no more asked of the source, model left in eval mode",
          "[calibrate]") {
  auto model = seeded_mlp();
  model->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*model);
  model->train();
  const std::vector<Tensor> batches = input_batches(5, 1);
  int asked = 0;
  std::vector<int64_t> seen;
  const int64_t done = quant::calibrate(
      *model,
      [&](Tensor& x) {
        x = batches[static_cast<size_t>(asked++)];
        return true;
      },
      3, [&](int64_t n) { seen.push_back(n); });
  CHECK(done == 3);
  CHECK(asked == 3);
  CHECK(seen == std::vector<int64_t>{1, 2, 3});
  CHECK_FALSE(model->is_training());

  // A source that runs out first: the count says how many ran.
  size_t i = 0;
  CHECK(quant::calibrate(*model, [&](Tensor& x) { return i < 2 ? (x = batches[i++], true) : false; }, 10) == 2);
  CHECK_THROWS_WITH(quant::calibrate(*model, [&](Tensor&) { return false; }, -1), Catch::Contains("negative"));
}

TEST_CASE("quant::calibrate gives the qparams of the plain no-grad loop over the same batches", "[calibrate]") {
  const std::vector<Tensor> batches = input_batches(4, 2);
  auto by_hand = seeded_mlp(), by_library = seeded_mlp();
  for (auto* m : {by_hand.get(), by_library.get()}) {
    quant::fuse_linear_relu(*m);
    m->qconfig = quant::get_default_qconfig("x86");
    quant::prepare(*m);
  }
  {
    NoGradGuard no_grad;
    by_hand->eval();
    for (auto& b : batches) (*by_hand)(b);
  }
  CHECK(quant::calibrate(*by_library, batches) == 4);
  quant::convert(*by_hand);
  quant::convert(*by_library);
  const Tensor x = input_batches(1, 3)[0];
  CHECK(to_vector((*by_hand)(x)) == to_vector((*by_library)(x)));
  CHECK(by_hand->repr() == by_library->repr());  // the printed qparams
}

TEST_CASE("quant::evaluate: accuracy, predictions and outputs over all batches; training mode put back", "[evaluate]") {
  PassThrough model;
  model.train();
  // Four samples of three logits; labels 0, 2, 1, 1: the last prediction (0) is wrong.
  const std::vector<Tensor> inputs = {from_vector({3, 1, 0, 0, 1, 5}, {2, 3}), from_vector({0, 4, 1, 9, 2, 3}, {2, 3})};
  const std::vector<Tensor> labels = {from_vector_i64({0, 2}, {2}), from_vector_i64({1, 1}, {2})};
  size_t i = 0;
  const quant::Evaluation ev = quant::evaluate(model, [&](Tensor& x, Tensor& y) {
    if (i == inputs.size()) return false;
    x = inputs[i], y = labels[i];
    ++i;
    return true;
  });
  CHECK(ev.samples == 4);
  CHECK(ev.classes == 3);
  CHECK(ev.accuracy == Approx(75.0));
  CHECK(ev.predictions == std::vector<int64_t>{0, 2, 1, 0});
  CHECK(ev.outputs == std::vector<float>{3, 1, 0, 0, 1, 5, 0, 4, 1, 9, 2, 3});
  CHECK(model.is_training());

  // Labels that do not match the batch are named.
  bool once = false;
  CHECK_THROWS_WITH(quant::evaluate(model,
                                    [&](Tensor& x, Tensor& y) {
                                      if (once) return false;
                                      once = true;
                                      x = inputs[0], y = from_vector({0, 2}, {2});
                                      return true;
                                    }),
                    Catch::Contains("labels"));
}

TEST_CASE("quant::agreement and quant::max_step_difference", "[evaluate]") {
  quant::Evaluation a, b;
  a.predictions = {1, 2, 3, 4};
  b.predictions = {1, 2, 0, 4};
  CHECK(quant::agreement(a, b) == Approx(75.0));
  CHECK(quant::agreement(a, a) == Approx(100.0));
  b.predictions.pop_back();
  CHECK(quant::agreement(a, b) == 0);  // different lengths
  CHECK(quant::agreement({}, {}) == 0);

  a.outputs = {0.0f, 1.0f, -2.0f};
  b.outputs = {0.25f, 1.0f, -2.5f};
  CHECK(quant::max_step_difference(a, b, 0.25) == Approx(2.0));
  CHECK(quant::max_step_difference(a, b, 0) == 0);
  // One step computed in float, a hair over: rounded to 1e-3 steps, it is one step.
  b.outputs = {0.1f * 1.0000027f, 1.0f, -2.0f};
  CHECK(quant::max_step_difference(a, b, 0.1) == 1.0);
}

TEST_CASE("quant::quantize_qat runs fuse, qconfig, configure, prepare_qat, train, before_convert, convert in order",
          "[recipe]") {
  const std::vector<Tensor> batches = input_batches(3, 4);
  const Tensor target = from_vector_i64({0, 1, 2, 0}, {4});
  auto train = [&](nn::Module& m) {
    nn::SGD optimizer(m.parameters(), {.lr = 0.05, .momentum = 0.9});
    for (auto& b : batches) {
      optimizer.zero_grad();
      cross_entropy(m(b), target).backward();
      optimizer.step();
    }
  };
  // By hand.
  auto by_hand = seeded_mlp();
  quant::fuse_linear_relu(*by_hand);
  by_hand->qconfig = quant::get_default_qat_qconfig("x86");
  by_hand->get_submodule("fc2").qconfig = quant::QConfigPtr(nullptr);
  quant::prepare_qat(*by_hand);
  train(*by_hand);
  quant::convert(*by_hand);
  // The recipe.
  auto model = seeded_mlp();
  std::vector<std::string> steps;
  const bool converted = quant::quantize_qat(
      *model,
      [&](nn::Module& m) {
        steps.push_back(has_type(m, "QATLinearReLU") ? "train prepared" : "train unprepared");
        train(m);
        return true;
      },
      {.qconfig = quant::get_default_qat_qconfig("x86"),
       .configure =
           [&](nn::Module& m) {
             steps.push_back(has_type(m, "LinearReLU") ? "configure fused" : "configure unfused");
             m.get_submodule("fc2").qconfig = quant::QConfigPtr(nullptr);
           },
       .before_convert = [&](nn::Module& m) { steps.push_back(has_type(m, "QuantizedLinearReLU") ? "converted" : "before convert"); }});
  CHECK(converted);
  CHECK(steps == std::vector<std::string>{"configure fused", "train prepared", "before convert"});
  CHECK(has_type(*model, "QuantizedLinearReLU"));
  CHECK(has_type(*model, "Linear"));  // fc2 kept in float
  CHECK(model->repr() == by_hand->repr());
  const Tensor x = input_batches(1, 5)[0];
  CHECK(to_vector((*model)(x)) == to_vector((*by_hand)(x)));
}

TEST_CASE("quant::quantize_qat: a run stopped early stays prepared; prepared = true skips preparation", "[recipe]") {
  auto model = seeded_mlp();
  const bool converted = quant::quantize_qat(*model, [](nn::Module&) { return false; },
                                             {.qconfig = quant::get_default_qat_qconfig("x86")});
  CHECK_FALSE(converted);
  CHECK(has_type(*model, "QATLinearReLU"));
  CHECK_FALSE(has_type(*model, "QuantizedLinearReLU"));

  // Continue, as a resumed run does: no second fuse / prepare_qat (which would fail).
  const std::vector<Tensor> batches = input_batches(2, 6);
  CHECK(quant::quantize_qat(
      *model,
      [&](nn::Module& m) {
        for (auto& b : batches) m(b);
        return true;
      },
      {.prepared = true}));
  CHECK(has_type(*model, "QuantizedLinearReLU"));
  CHECK_THROWS_WITH(quant::quantize_qat(*seeded_mlp(), nullptr), Catch::Contains("no training function"));
}

TEST_CASE("quant::quantize_static equals fuse, prepare, calibrate, convert by hand", "[recipe]") {
  const std::vector<Tensor> batches = input_batches(4, 8);
  auto by_hand = seeded_mlp();
  quant::fuse_linear_relu(*by_hand);
  by_hand->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*by_hand);
  quant::calibrate(*by_hand, batches);
  quant::convert(*by_hand);

  auto model = seeded_mlp();
  std::string observed;
  quant::quantize_static(
      *model, [&](nn::Module& m) { quant::calibrate(m, batches); },
      {.qconfig = quant::get_default_qconfig("x86"), .before_convert = [&](nn::Module& m) { observed = m.repr(); }});
  CHECK(observed.find("ObservedLinearReLU") != std::string::npos);
  CHECK(model->repr() == by_hand->repr());
  const Tensor x = input_batches(1, 9)[0];
  CHECK(to_vector((*model)(x)) == to_vector((*by_hand)(x)));

  // Without fusion the ReLUs stay modules of their own.
  auto unfused = seeded_mlp();
  quant::quantize_static(*unfused, [&](nn::Module& m) { quant::calibrate(m, batches); },
                         {.fuse = false, .qconfig = quant::get_default_qconfig("x86")});
  CHECK(has_type(*unfused, "QuantizedLinear"));
  CHECK_FALSE(has_type(*unfused, "QuantizedLinearReLU"));
}

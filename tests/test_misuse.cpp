// Misuse of the API gets an error that names what is wrong (docs/design.md
// §5, docs/reliability.md §2): a converted layer fed the wrong dtype or
// width, quantization ranges that cannot work, a per-channel axis the tensor
// does not have. (Convert before prepare, prepare twice, loading into another
// structure and an optimizer step without gradients have their tests beside
// the passes, model files and SGD.)
#include <catch2/catch.hpp>

#include "tinyqat.h"

using namespace tq;
using Catch::Matchers::Contains;

namespace {

// Linear(10, 5) -> ReLU -> Linear(5, 2), QAT-prepared, one batch, converted.
std::shared_ptr<nn::Sequential> converted_model() {
  manual_seed(3);
  auto model = std::make_shared<nn::Sequential>();
  model->push_back("fc1", nn::Linear(10, 5));
  model->push_back("relu1", nn::ReLU());
  model->push_back("fc2", nn::Linear(5, 2));
  model->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*model);
  (*model)(randn({8, 10}));
  quant::convert(*model);
  return model;
}

}  // namespace

TEST_CASE("misuse: a converted model fed the wrong dtype or width names the layer and what it expected", "[errors][misuse]") {
  auto model = converted_model();
  NoGradGuard no_grad;
  REQUIRE_NOTHROW((*model)(randn({2, 10})));
  CHECK_THROWS_WITH((*model)(zeros({2, 10}, DType::i32)),
                    Contains("fc1") && Contains("expected a u8 quantized or f32 tensor, got i32"));
  CHECK_THROWS_WITH((*model)(randn({2, 7})), Contains("fc1") && Contains("(2, 7)") && Contains("10"));
  CHECK_THROWS_WITH((*model)(randn({2, 2, 10})), Contains("fc1") && Contains("(2, 2, 10)"));
  CHECK((*model)(randn({10})).shape() == Shape{2});  // one sample without a batch dimension is accepted
}

TEST_CASE("misuse: quantization ranges that cannot work are refused, naming the range", "[errors][misuse]") {
  quant::QuantSpec inverted = quant::activation_spec(8);
  inverted.quant_min = 100;
  inverted.quant_max = 10;
  CHECK_THROWS_WITH(quant::MinMaxObserver(inverted), Contains("quant_min (100) must be less than quant_max (10)"));
  quant::QuantSpec equal = quant::activation_spec(8);
  equal.quant_min = equal.quant_max = 7;
  CHECK_THROWS_WITH(quant::MovingAverageMinMaxObserver(equal), Contains("must be less than quant_max"));

  quant::QuantSpec wide = quant::activation_spec(8);
  wide.quant_max = 511;  // 9 bits in a u8
  CHECK_THROWS_WITH(quant::MinMaxObserver(wide), Contains("[0, 511]") && Contains("at most 8 bits"));
  CHECK_THROWS_WITH(quant::make_qat_qconfig(9, 8), Contains("bit width 9 is outside 2..8"));
  CHECK_THROWS_WITH(quant::make_qat_qconfig(8, 1), Contains("bit width 1 is outside 2..8"));
  CHECK_THROWS_WITH(quant::weight_spec(16), Contains("bit width 16"));
}

TEST_CASE("misuse: a per-channel axis the tensor does not have is named with the shape", "[errors][misuse]") {
  quant::PerChannelMinMaxObserver observer(quant::weight_spec(8, QScheme::per_channel_symmetric, 2));
  CHECK_THROWS_WITH(observer.observe(randn({4, 3})), Contains("per-channel axis 2 is out of range") && Contains("(4, 3)"));
  CHECK_FALSE(observer.has_data());  // nothing was recorded

  CHECK_THROWS_WITH(quant::PerChannelMinMaxObserver(quant::weight_spec(8, QScheme::per_channel_symmetric, -1)),
                    Contains("per-channel axis -1 is negative"));

  QParams per_channel = quant::make_qparams(quant::weight_spec(8, QScheme::per_channel_symmetric, 1),
                                            {{0.1f, 0}, {0.1f, 0}, {0.1f, 0}});
  CHECK_THROWS_WITH(quant::fake_quantize(randn({3}), per_channel), Contains("axis 1 is out of range"));
}

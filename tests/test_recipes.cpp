// Training-recipe helpers: the validation split, augmentation, the QAT
// schedule switches and the LSQ parameter groups.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <typeindex>
#include <vector>

#include "clusters.h"
#include "tinyqat.h"

using namespace tq;
using Catch::Contains;

namespace {

// n images (n, 2, 3) whose six pixels all hold the sample's index (mod 256),
// labelled index % 10: every sample can be recognised after a copy.
io::Dataset numbered(int64_t n) {
  io::Dataset d;
  d.images = empty({n, 2, 3}, DType::u8);
  d.labels = empty({n}, DType::u8);
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 6; ++k) d.images.data<uint8_t>()[i * 6 + k] = static_cast<uint8_t>(i % 256);
    d.labels.data<uint8_t>()[i] = static_cast<uint8_t>(i % 10);
  }
  return d;
}

std::vector<int64_t> ids(const io::Dataset& d) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < d.size(); ++i) {
    const uint8_t* img = d.images.data<uint8_t>() + i * 6;
    CHECK(std::all_of(img, img + 6, [&](uint8_t v) { return v == img[0]; }));
    CHECK(d.labels.data<uint8_t>()[i] == img[0] % 10);
    out.push_back(img[0]);
  }
  return out;
}

}  // namespace

TEST_CASE("split_validation: a seeded, disjoint split that covers the data, each part in order", "[recipes][data]") {
  const io::Dataset data = numbered(200);
  const io::TrainValidationSplit s = io::split_validation(data, 30, 5);
  REQUIRE(s.validation.size() == 30);
  REQUIRE(s.train.size() == 170);
  CHECK(s.train.images.shape() == Shape({170, 2, 3}));
  const std::vector<int64_t> v = ids(s.validation), t = ids(s.train);
  CHECK(std::is_sorted(v.begin(), v.end()));
  CHECK(std::is_sorted(t.begin(), t.end()));
  std::set<int64_t> all(v.begin(), v.end());
  all.insert(t.begin(), t.end());
  CHECK(all.size() == 200);  // disjoint and complete
  CHECK(ids(io::split_validation(data, 30, 5).validation) == v);  // the same seed, the same split
  CHECK(ids(io::split_validation(data, 30, 6).validation) != v);
  CHECK(v.back() > 100);  // drawn from the whole set, not its head
  // The split owns its memory: changing the source does not change it.
  data.images.data<uint8_t>()[v[0] * 6] = 255;
  CHECK(s.validation.images.data<uint8_t>()[0] == v[0]);
  REQUIRE_THROWS_WITH(io::split_validation(data, 0, 1), Contains("1 to 199") && Contains("got 0"));
  REQUIRE_THROWS_WITH(io::split_validation(data, 200, 1), Contains("got 200"));
}

TEST_CASE("Augmenter: crop with padding and flip, per sample, seeded and resumable", "[recipes][augment]") {
  const io::ImageShape shape{.channels = 2, .height = 3, .width = 4};
  // Image values 1..24: (c, y, x) -> 1 + 12c + 4y + x.
  std::vector<float> img(24);
  for (int k = 0; k < 24; ++k) img[k] = static_cast<float>(k + 1);

  io::Augmenter a(shape, {.crop_padding = 1, .horizontal_flip = true, .fill = -1.f}, 0);
  std::vector<float> out(24);
  // dy = dx = p and no flip: the image itself.
  a.augment_image(img.data(), out.data(), {.dy = 1, .dx = 1, .flip = false});
  CHECK(out == img);
  // dy = dx = 0: shifted down and right by one, the top row and left column filled.
  a.augment_image(img.data(), out.data(), {.dy = 0, .dx = 0, .flip = false});
  CHECK(std::vector<float>(out.begin(), out.begin() + 4) == std::vector<float>{-1, -1, -1, -1});
  CHECK(std::vector<float>(out.begin() + 4, out.begin() + 8) == std::vector<float>{-1, 1, 2, 3});
  CHECK(std::vector<float>(out.begin() + 20, out.end()) == std::vector<float>{-1, 17, 18, 19});
  // Flip only: each row reversed.
  a.augment_image(img.data(), out.data(), {.dy = 1, .dx = 1, .flip = true});
  CHECK(std::vector<float>(out.begin(), out.begin() + 4) == std::vector<float>{4, 3, 2, 1});
  // dx = 2 with the flip: crop first (2, 3, 4, fill), then mirror, as RandomCrop then RandomHorizontalFlip.
  a.augment_image(img.data(), out.data(), {.dy = 1, .dx = 2, .flip = true});
  CHECK(std::vector<float>(out.begin(), out.begin() + 4) == std::vector<float>{-1, 4, 3, 2});

  // apply_ on a batch = the reference with the same draws, sample by sample.
  const int64_t B = 16;
  std::vector<float> batch_values;
  for (int64_t b = 0; b < B; ++b)
    for (float v : img) batch_values.push_back(v + 100.f * static_cast<float>(b));
  Tensor batch = from_vector(batch_values, {B, 24});
  io::Augmenter twin(shape, a.options(), 0);
  const Generator::State start = a.state();
  a.apply_(batch);
  int changed = 0;
  for (int64_t b = 0; b < B; ++b) {
    const io::AugmentDraw d = twin.draw();
    CHECK(d.dy >= 0);
    CHECK(d.dy <= 2);
    std::vector<float> want(24);
    twin.augment_image(batch_values.data() + b * 24, want.data(), d);
    CHECK(std::vector<float>(batch.data<float>() + b * 24, batch.data<float>() + (b + 1) * 24) == want);
    changed += want != std::vector<float>(batch_values.begin() + b * 24, batch_values.begin() + (b + 1) * 24);
  }
  CHECK(changed > B / 2);  // (1 in 18 draws is the identity)
  // Restoring the state replays the same draws; (B, C, H, W) batches work too.
  a.set_state(start);
  Tensor again = from_vector(batch_values, {B, 2, 3, 4});
  a.apply_(again);
  CHECK(to_vector(again) == to_vector(batch));
  REQUIRE_THROWS_WITH(a.apply_(zeros({B, 23})), Contains("(B, 24)"));
  REQUIRE_THROWS_WITH(io::Augmenter(shape, {.crop_padding = -1}, 0), Contains("crop_padding"));
  // The fill for normalised data: the loader's value of a black pixel.
  CHECK(io::normalized_pixel(0, {}) == Approx(-io::kFashionMnistMean / io::kFashionMnistStd));
}

namespace {

// A module type with "batch statistics", to register in the freeze table.
struct FakeBatchNorm : nn::Module {
  bool frozen = false;
  Tensor forward(const Tensor& x) override { return x; }
};

// A layer that knows how to freeze itself: found through the interface,
// with nothing registered.
struct SelfFreezingBatchNorm : nn::Module, quant::FreezesBnStats {
  int freezes = 0;
  Tensor forward(const Tensor& x) override { return x; }
  void freeze_bn_stats() override { ++freezes; }
};

struct TwoSelfFreezing : tq_test::ClusterMLP {
  TwoSelfFreezing() : ClusterMLP(4, 3) {}
  nn::Slot<SelfFreezingBatchNorm> bn1 = register_module("bn1", SelfFreezingBatchNorm());
  nn::Slot<SelfFreezingBatchNorm> bn2 = register_module("bn2", SelfFreezingBatchNorm());
};

struct WithBatchNorm : tq_test::ClusterMLP {
  WithBatchNorm() : ClusterMLP(4, 3) {}
  nn::Slot<FakeBatchNorm> bn = register_module("bn", FakeBatchNorm());
};

}  // namespace

TEST_CASE("QAT schedule: observers off keeps a FakeQuantize model's qparams; the switches count modules",
          "[recipes][qat]") {
  manual_seed(4);
  const tq_test::Clusters a = tq_test::make_clusters(64, 3, 4, 1.0f, 1);
  const tq_test::Clusters far = tq_test::make_clusters(64, 3, 4, 8.0f, 2);  // a much wider input range
  tq_test::ClusterMLP model(4, 3);
  model.qconfig = quant::make_qat_qconfig(8, 8);
  quant::prepare_qat(model);
  model(a.x);
  auto& out_fq = dynamic_cast<quant::FakeQuantize&>(model.get_submodule("fc1.activation_post_process"));
  const float scale = out_fq.calculate_qparams().scale[0];
  // 3 QATLinear x (input, weight, output) fake quants.
  CHECK(quant::disable_observer(model) == 9);
  CHECK(quant::disable_observer(model) == 0);  // already off
  model(far.x);
  CHECK(out_fq.calculate_qparams().scale[0] == scale);
  CHECK(quant::enable_observer(model) == 9);
  model(far.x);
  CHECK(out_fq.calculate_qparams().scale[0] != scale);
  CHECK(quant::disable_fake_quant(model) == 9);
  CHECK_FALSE(out_fq.fake_quant_enabled);
  CHECK(quant::enable_fake_quant(model) == 9);

  const quant::QatSchedule schedule{.freeze_observers_epoch = 2};
  CHECK(quant::apply_qat_schedule(model, schedule, 1).observers_disabled == 0);
  CHECK(quant::apply_qat_schedule(model, schedule, 2).observers_disabled == 9);
  CHECK(quant::apply_qat_schedule(model, schedule, 3).observers_disabled == 0);
  CHECK_FALSE(out_fq.observer_enabled);
}

TEST_CASE("QAT schedule: LSQ parameter groups, and frozen step sizes that no optimizer moves", "[recipes][qat][lsq]") {
  manual_seed(5);
  const tq_test::Clusters data = tq_test::make_clusters(64, 3, 4, 1.0f, 1);
  tq_test::ClusterMLP model(4, 3);
  model.qconfig = quant::make_lsq_qat_qconfig(4, 4);
  quant::prepare_qat(model);

  const std::vector<std::string> names = quant::quantizer_parameter_names(model);
  CHECK(std::find(names.begin(), names.end(), "fc1.weight_fake_quant.scale") != names.end());
  CHECK(std::find(names.begin(), names.end(), "fc2.activation_post_process.zero_point") != names.end());
  CHECK(std::find(names.begin(), names.end(), "fc1.weight") == names.end());
  const std::vector<nn::ParamGroup> groups = quant::lsq_param_groups(model, 1e-3);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].name == "weights");
  CHECK(groups[0].params.size() == 6);  // 3 weights, 3 biases
  CHECK(groups[1].params.size() == names.size());
  CHECK(groups[1].lr == 1e-3);
  CHECK(groups[1].weight_decay == 0.0);
  // A float model has only the weights group.
  tq_test::ClusterMLP plain(4, 3);
  CHECK(quant::lsq_param_groups(plain).size() == 1);

  nn::AdamW opt(groups, {.lr = 1e-2, .weight_decay = 0.1});
  auto train_step = [&] {
    opt.zero_grad();
    cross_entropy(model(data.x), data.y).backward();
    opt.step();
  };
  train_step();
  train_step();
  auto& w_fq = dynamic_cast<quant::LearnableFakeQuantize&>(model.get_submodule("fc1.weight_fake_quant"));
  const std::vector<float> scale = to_vector(w_fq.scale), weight = to_vector(model.fc1->weight);
  CHECK(quant::freeze_qparams(model) == 9);
  CHECK_FALSE(w_fq.learning_enabled());
  train_step();  // Adam's moments would still move a parameter with a zero gradient
  CHECK(to_vector(w_fq.scale) == scale);
  CHECK(to_vector(model.fc1->weight) != weight);
}

TEST_CASE("QAT schedule: BatchNorm statistics freeze through the table of module types", "[recipes][qat]") {
  WithBatchNorm model;
  auto& table = quant::freeze_bn_stats_functions();
  CHECK(quant::freeze_bn_stats(model) == 0);  // nothing registered for FakeBatchNorm yet
  table[std::type_index(typeid(FakeBatchNorm))] = [](nn::Module& m) { dynamic_cast<FakeBatchNorm&>(m).frozen = true; };
  const quant::QatSchedule schedule{.freeze_bn_epoch = 1};
  CHECK(quant::apply_qat_schedule(model, schedule, 0).bn_frozen == 0);
  CHECK_FALSE(model.bn->frozen);
  CHECK(quant::apply_qat_schedule(model, schedule, 1).bn_frozen == 1);
  CHECK(model.bn->frozen);
  table.erase(std::type_index(typeid(FakeBatchNorm)));
  CHECK(quant::qat_fine_tune_lr(0.1) == Approx(0.001));
}

TEST_CASE("QAT schedule: a module with a freeze_bn_stats method is frozen without registering", "[recipes][qat]") {
  TwoSelfFreezing model;
  const quant::QatSchedule schedule{.freeze_bn_epoch = 2};
  CHECK(quant::apply_qat_schedule(model, schedule, 1).bn_frozen == 0);
  CHECK(model.bn1->freezes == 0);
  CHECK(quant::apply_qat_schedule(model, schedule, 2).bn_frozen == 2);
  CHECK(model.bn1->freezes == 1);
  CHECK(model.bn2->freezes == 1);
  // A table entry for the same type is not called as well: the method wins.
  auto& table = quant::freeze_bn_stats_functions();
  int table_calls = 0;
  table[std::type_index(typeid(SelfFreezingBatchNorm))] = [&](nn::Module&) { ++table_calls; };
  CHECK(quant::freeze_bn_stats(model) == 2);
  table.erase(std::type_index(typeid(SelfFreezingBatchNorm)));
  CHECK(table_calls == 0);
  CHECK(model.bn2->freezes == 2);
}

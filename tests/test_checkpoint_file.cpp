// Training checkpoints in the library (io/training_state.h): what
// io::parse_checkpoint accepts restores into a run and resumes; every field a
// damaged or hostile file can hold is refused where it is read, naming the
// field (docs/reliability.md, "Checkpoints").
#include <catch2/catch.hpp>

#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "../fuzz/fuzz_entry_points.h"

using namespace tq;
using nlohmann::json;

namespace {

std::shared_ptr<nn::Sequential> tiny_mlp() {
  manual_seed(11);
  return nn::make_mlp({4, 6, 3});
}

// A run of `steps` steps over 10 samples in batches of 4 (3 batches an epoch).
fuzzing::TinyRun run_of(std::shared_ptr<nn::Module> model, json command, int steps) {
  fuzzing::TinyRun run = fuzzing::make_tiny_run(std::move(model), command, 10, 4);
  for (int i = 0; i < steps; ++i) run.step();
  return run;
}

// A QAT model: prepared, its observers fed one batch.
std::shared_ptr<nn::Module> tiny_qat() {
  auto m = tiny_mlp();
  m->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*m);
  Generator g(2);
  (*m)(randn({4, 4}, g));
  return m;
}

const json kTrain = {{"command", "train"}, {"epochs", 3}, {"optimizer", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}};

// The file with its description edited.
io::SafetensorsFile edited(const io::SafetensorsFile& good, const std::function<void(json&, io::SafetensorsFile&)>& edit) {
  io::SafetensorsFile f = good;
  json j = json::parse(f.metadata.at("tinyqat_checkpoint"));
  edit(j, f);
  f.metadata["tinyqat_checkpoint"] = j.dump();
  return f;
}

}  // namespace

TEST_CASE("checkpoint file: a checkpoint parses to the run's state, restores and resumes bit for bit", "[checkpoint][io]") {
  // Straight: 7 steps. Resumed: 4 steps, checkpoint, a new run restored from it, 3 more.
  fuzzing::TinyRun straight = run_of(tiny_mlp(), kTrain, 7);
  fuzzing::TinyRun first = run_of(tiny_mlp(), kTrain, 4);
  const std::string bytes = io::serialize_safetensors(first.checkpoint());
  const io::Checkpoint c = io::parse_checkpoint(io::parse_safetensors(bytes, "ck"), "ck");
  CHECK(c.kind == "train");
  CHECK(c.epochs == 3);
  CHECK(c.state.epoch == 1);
  CHECK(c.state.step_in_epoch == 1);
  CHECK(c.state.global_step == 4);
  CHECK(c.state.history.size() == 1);
  fuzzing::TinyRun resumed = fuzzing::make_tiny_run(c.model, json::parse(c.command_json), 10, 4);
  io::restore_checkpoint(c, *resumed.optimizer, nullptr, nullptr, resumed.loader.get(), "ck");
  resumed.state = c.state;
  for (int i = 0; i < 3; ++i) resumed.step();
  const auto a = straight.model->named_parameters(), b = resumed.model->named_parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(fuzzing::same_tensor(a[i].second, b[i].second));
}

TEST_CASE("checkpoint file: every field of the description is checked, naming the field", "[checkpoint][io][errors]") {
  const io::SafetensorsFile good = run_of(tiny_mlp(), kTrain, 4).checkpoint();  // epoch 1, step 1 of 3
  REQUIRE_NOTHROW(io::parse_checkpoint(good, "ck"));
  using Edit = std::function<void(json&, io::SafetensorsFile&)>;
  const std::vector<std::tuple<const char*, Edit, const char*>> cases = {
      // A JSON float where an integer belongs was converted by a plain cast (undefined behaviour out of range).
      {"epoch 1e300", [](json& j, auto&) { j["epoch"] = 1e300; }, "field 'epoch' is 1e+300, not an integer"},
      {"epoch a string", [](json& j, auto&) { j["epoch"] = "1"; }, "field 'epoch'"},
      {"epoch 2^64-1", [](json& j, auto&) { j["epoch"] = std::numeric_limits<uint64_t>::max(); }, "field 'epoch' is 18446744073709551615, outside 0..2"},
      {"step beyond the epoch",
       [](json& j, auto&) {
         j["step_in_epoch"] = 9;
         j["loader"]["next_batch"] = 9;
         j["global_step"] = 12;
       },
       "field 'step_in_epoch' is 9, beyond the 3 batches"},
      {"global step ahead of the counters", [](json& j, auto&) { j["global_step"] = 400; }, "field 'global_step' is 400, but 1 epochs of 3 steps"},
      {"global step 1e19", [](json& j, auto&) { j["global_step"] = 1e19; }, "field 'global_step' is 1e+19, not an integer"},
      {"num_samples 1e300", [](json& j, auto&) { j["loader"]["num_samples"] = 1e300; }, "field 'loader.num_samples'"},
      {"drop_last with fewer samples than a batch",
       [](json& j, auto&) {
         j["loader"]["drop_last"] = true;
         j["loader"]["batch_size"] = 64;
       },
       "field 'loader' has 10 samples in batches of 64 with drop_last: no batch"},
      {"shuffle not a boolean", [](json& j, auto&) { j["loader"]["shuffle"] = 1; }, "field 'loader.shuffle'"},
      {"loader rng all zero", [](json& j, auto&) { j["loader"]["rng"]["s"] = {0, 0, 0, 0}; }, "field 'loader.rng' is the all-zero generator state"},
      {"global rng negative word", [](json& j, auto&) { j["global_rng"]["s"][2] = -5; }, "field 'global_rng.s'"},
      {"global rng spare null (NaN)", [](json& j, auto&) { j["global_rng"]["spare"] = nullptr; }, "field 'global_rng.spare'"},
      {"augment rng of three words", [](json& j, auto&) { j["augment_rng"] = {{"s", {1, 2, 3}}, {"has_spare", false}, {"spare", 0}}; }, "field 'augment_rng.s'"},
      {"history entry a string", [](json& j, auto&) { j["history"][0] = "fast"; }, "field 'history'"},
      {"history accuracy 250", [](json& j, auto&) { j["history"][0]["accuracy"] = 250; }, "field 'history'"},
      {"no command", [](json& j, auto&) { j.erase("command"); }, "field 'command' is missing"},
      {"command of another kind", [](json& j, auto&) { j["command"]["command"] = "ptq"; }, "field 'command.command' is \"ptq\""},
      {"parameters of another model", [](json& j, auto&) { j["parameters"] = 6; }, "field 'parameters' is 6, but the model has 4"},
      {"best epoch beyond the epochs done",
       [](json& j, auto&) { j["best"] = {{"epoch", 5}, {"val_accuracy", 50}, {"parameters", json::array()}, {"buffers", json::array()}}; },
       "field 'best' names epoch 5"},
      {"momentum buffer with an infinity",
       [](json&, io::SafetensorsFile& f) {
         Tensor& t = f.tensors.at("__optimizer__.param.0.momentum_buffer");
         t = kernels::clone(t);
         t.data<float>()[3] = std::numeric_limits<float>::infinity();
       },
       "field '__optimizer__.param.0.momentum_buffer' holds inf at element 3"},
  };
  for (const auto& [label, edit, expect] : cases) {
    INFO(label);
    const io::SafetensorsFile f = edited(good, edit);
    CHECK_THROWS_AS(io::parse_checkpoint(f, "ck.st"), io::FormatError);
    CHECK_THROWS_WITH(io::parse_checkpoint(f, "ck.st"), Catch::StartsWith("ck.st: ") && Catch::Contains(expect));
  }
  // A description nested deeper than any checkpoint is refused before it is parsed.
  io::SafetensorsFile deep = good;
  deep.metadata["tinyqat_checkpoint"] = std::string(5000, '[') + std::string(5000, ']');
  CHECK_THROWS_WITH(io::parse_checkpoint(deep, "ck.st"), Catch::StartsWith("ck.st: ") && Catch::Contains("nested"));
}

TEST_CASE("checkpoint file: the kind must match the model (train: float, qat: prepared for QAT)", "[checkpoint][io][errors]") {
  json qat_command = kTrain;
  qat_command["command"] = "qat";
  const io::SafetensorsFile qat = run_of(tiny_qat(), qat_command, 2).checkpoint();
  CHECK(io::parse_checkpoint(qat, "q").kind == "qat");
  // A QAT checkpoint relabelled "train" saved a QAT model announced as a float one.
  CHECK_THROWS_WITH(io::parse_checkpoint(edited(qat, [](json& j, auto&) { j["command"]["command"] = "train"; }), "q"),
                    Catch::Contains("field 'command.command' is \"train\", but the model holds 'fc1' (QATLinear"));
  const io::SafetensorsFile train = run_of(tiny_mlp(), kTrain, 2).checkpoint();
  CHECK_THROWS_WITH(io::parse_checkpoint(edited(train, [](json& j, auto&) { j["command"]["command"] = "qat"; }), "t"),
                    Catch::Contains("is \"qat\", but the model has no layer prepared for QAT"));
}

TEST_CASE("checkpoint file: the best epoch's weights are checked as a model file of the same model", "[checkpoint][io][errors]") {
  json qat_command = kTrain;
  qat_command["command"] = "qat";
  fuzzing::TinyRun run = run_of(tiny_qat(), qat_command, 4);  // into epoch 2
  run.state.best_epoch = 1;
  run.state.best_val_accuracy = 40;
  run.state.best = nn::ModelSnapshot::take(*run.model);
  const io::SafetensorsFile good = run.checkpoint();
  const io::Checkpoint c = io::parse_checkpoint(good, "b");
  CHECK(c.state.best_epoch == 1);
  CHECK(c.state.best.parameters().size() == run.model->named_parameters().size());
  // A fake-quant scale of 0 in the best weights (the model itself is fine):
  // it would have been restored at the end of the run.
  io::SafetensorsFile zero = good;
  zero.tensors["__best__.fc1.activation_post_process.scale"] = from_vector({0.f}, {1});
  CHECK_THROWS_WITH(io::parse_checkpoint(zero, "b"), Catch::Contains("checkpoint field 'best' holds weights the model "
                                                                     "cannot take") &&
                                                         Catch::Contains("scale"));
  io::SafetensorsFile shape = good;
  shape.tensors["__best__.fc1.activation_post_process.scale"] = from_vector({1.f, 1.f}, {2});
  CHECK_THROWS_WITH(io::parse_checkpoint(shape, "b"), Catch::Contains("field 'best.buffers'"));
  CHECK_THROWS_WITH(io::parse_checkpoint(edited(good, [](json& j, auto&) { j["best"]["parameters"][0] = "__optimizer__.x"; }), "b"),
                    Catch::Contains("field 'best"));
}

TEST_CASE("checkpoint file: optimizer and schedule states that cannot continue are refused when restored", "[checkpoint][io][errors]") {
  const json adam = {{"command", "train"}, {"epochs", 3}, {"optimizer", "adam"}, {"lr", 0.01},
                     {"lr_schedule", "cosine"}, {"warmup", 0.5}};
  const io::SafetensorsFile good = run_of(tiny_mlp(), adam, 4).checkpoint();
  auto restore = [&](const io::SafetensorsFile& f) {
    const io::Checkpoint c = io::parse_checkpoint(f, "a");
    fuzzing::TinyRun run = fuzzing::make_tiny_run(c.model, json::parse(c.command_json), 10, 4);
    io::restore_checkpoint(c, *run.optimizer, run.schedule.get(), nullptr, run.loader.get(), "a");
  };
  REQUIRE_NOTHROW(restore(good));
  // A negative second moment made the next step's square root NaN.
  io::SafetensorsFile negative = good;
  Tensor sq = kernels::clone(negative.tensors.at("__optimizer__.param.0.exp_avg_sq"));
  sq.data<float>()[1] = -1.f;
  negative.tensors["__optimizer__.param.0.exp_avg_sq"] = sq;
  CHECK_THROWS_WITH(restore(negative), Catch::StartsWith("a: checkpoint: ") && Catch::Contains("negative second moment"));
  // A negative base rate in the schedule.
  io::SafetensorsFile rate = good;
  json s = json::parse(rate.metadata.at("__lr_scheduler__"));
  s["scalars"]["base_lr.0"] = -0.5;
  rate.metadata["__lr_scheduler__"] = s.dump();
  CHECK_THROWS_WITH(restore(rate), Catch::StartsWith("a: checkpoint: ") && Catch::Contains("learning rate of -0.5"));
  // The run has a schedule, the checkpoint none.
  io::SafetensorsFile none = good;
  none.metadata.erase("__lr_scheduler__");
  CHECK_THROWS_WITH(restore(none), Catch::Contains("holds no learning-rate schedule"));
  // The loader of another data set.
  const io::Checkpoint c = io::parse_checkpoint(good, "a");
  fuzzing::TinyRun other = fuzzing::make_tiny_run(c.model, json::parse(c.command_json), 12, 4);
  CHECK_THROWS_WITH(io::restore_checkpoint(c, *other.optimizer, other.schedule.get(), nullptr, other.loader.get(), "a"),
                    Catch::StartsWith("a: checkpoint: ") && Catch::Contains("12 samples"));
}

TEST_CASE("checkpoint file: an optimizer refuses restored buffers that are not finite", "[checkpoint][optim][errors]") {
  auto model = tiny_mlp();
  nn::SGD sgd(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  nn::StateDict s = sgd.state_dict();
  s.tensors["param.1.momentum_buffer"] = from_vector({0.f, std::nanf(""), 0.f, 0.f, 0.f, 0.f}, {6});
  CHECK_THROWS_WITH(sgd.load_state_dict(s), Catch::Contains("'param.1.momentum_buffer' holds nan at element 1"));
}

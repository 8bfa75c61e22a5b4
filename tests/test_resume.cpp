// Checkpoint and exact resume through the tinyqat binary: a run interrupted
// and resumed ends with the same model file, byte for byte, as one that ran
// straight through (docs/reliability.md).
#include <catch2/catch.hpp>

#include "test_files.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace {

std::string binary() { return std::string(TINYQAT_BINARY_DIR) + "/tinyqat"; }

std::string read_all(const std::string& path) { return tq_test::read_bytes(path); }

int run(const std::string& args, const std::string& dir) {
  const std::string cmd = binary() + " " + args + " --threads 1 > " + dir + "/stdout.txt 2> " + dir + "/stderr.txt";
  const int status = std::system(cmd.c_str());
  return tq_test::exit_code(status);
}

}  // namespace

TEST_CASE("train: interrupted and resumed ends with the same weights, bit for bit", "[resume][cli]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_resume_train").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string common = "train --epochs 2 --hidden 16 --batch-size 128";
  REQUIRE(run(common + " --out " + dir + "/straight.st", dir) == 0);
  // Stop after 700 steps (the 469-step epoch boundary lies in between); the
  // last checkpoint is at step 600.
  REQUIRE(run(common + " --out " + dir + "/resumed.st --checkpoint-every 200 --stop-after 700", dir) == 0);
  REQUIRE(read_all(dir + "/stdout.txt").find("--resume") != std::string::npos);
  REQUIRE_FALSE(std::filesystem::exists(dir + "/resumed.st"));  // an interrupted run writes no model
  REQUIRE(run("train --out " + dir + "/resumed.st --resume " + dir + "/resumed.st.ckpt", dir) == 0);
  const std::string a = read_all(dir + "/straight.st"), b = read_all(dir + "/resumed.st");
  REQUIRE(a.size() > 1000);
  REQUIRE(a == b);
}

TEST_CASE("qat: interrupted and resumed ends with the same int8 model, bit for bit", "[resume][cli]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_resume_qat").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  REQUIRE(run("train --epochs 1 --hidden 16 --batch-size 128 --out " + dir + "/float.st", dir) == 0);
  const std::string common = "qat --from " + dir + "/float.st --batch-size 128";
  REQUIRE(run(common + " --out " + dir + "/straight.st", dir) == 0);
  REQUIRE(run(common + " --out " + dir + "/resumed.st --checkpoint-every 100 --stop-after 250", dir) == 0);
  REQUIRE(run("qat --out " + dir + "/resumed.st --resume " + dir + "/resumed.st.ckpt", dir) == 0);
  REQUIRE(read_all(dir + "/straight.st") == read_all(dir + "/resumed.st"));
}

TEST_CASE("resume: a file that is not a checkpoint is a one-line error, exit 1", "[resume][cli]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_resume_bad").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  REQUIRE(run("train --epochs 1 --hidden 8 --batch-size 256 --out " + dir + "/float.st", dir) == 0);
  REQUIRE(run("train --out " + dir + "/x.st --resume " + dir + "/float.st", dir) == 1);
  REQUIRE(read_all(dir + "/stderr.txt").find("not a checkpoint") != std::string::npos);
}

TEST_CASE("train and qat: a loss that turns NaN stops naming epoch and step, and the last checkpoint stays", "[resume][cli][errors]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_nan_guard").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // lr 1e6 makes the loss NaN at step 5 (deterministic at seed 0, one thread).
  const std::string common = "train --epochs 1 --hidden 16 --lr 1e6 --checkpoint-every 2";
  REQUIRE(run(common + " --out " + dir + "/nan.st", dir) == 1);
  const std::string err = read_all(dir + "/stderr.txt");
  CHECK(err.find("train epoch 1, step 5: the loss became nan") != std::string::npos);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  CHECK_FALSE(std::filesystem::exists(dir + "/nan.st"));
  // The checkpoint on disk is the one of step 4, the last good step: the same
  // bytes as a run told to stop after step 4.
  REQUIRE(run(common + " --stop-after 4 --out " + dir + "/stop.st", dir) == 0);
  const std::string kept = read_all(dir + "/nan.st.ckpt");
  REQUIRE(kept.size() > 1000);
  CHECK(kept == read_all(dir + "/stop.st.ckpt"));

  // In QAT an observer meets the infinite values before the loss does: the
  // run still stops naming the epoch and step, exit 1.
  REQUIRE(run("train --epochs 1 --hidden 16 --batch-size 256 --out " + dir + "/float.st", dir) == 0);
  REQUIRE(run("qat --from " + dir + "/float.st --lr 1e8 --checkpoint-every 3 --out " + dir + "/q.st", dir) == 1);
  const std::string qerr = read_all(dir + "/stderr.txt");
  CHECK(qerr.find("qat epoch 1, step ") != std::string::npos);
  CHECK(qerr.find("not finite") != std::string::npos);
  CHECK(std::filesystem::exists(dir + "/q.st.ckpt"));
  CHECK_FALSE(std::filesystem::exists(dir + "/q.st"));
}

TEST_CASE("resume: every checkpoint counter is checked where it is read, naming the file and field", "[resume][cli][errors]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_resume_hostile").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // A checkpoint at step 50 of the first of two epochs (no epoch completed yet).
  REQUIRE(run("train --epochs 2 --hidden 8 --batch-size 256 --checkpoint-every 50 --stop-after 50 --out " + dir +
                  "/m.st",
              dir) == 0);
  const tq::io::SafetensorsFile good = tq::io::load_safetensors(dir + "/m.st.ckpt");
  REQUIRE(good.metadata.count("tinyqat_checkpoint"));
  using Edit = std::function<void(nlohmann::json&, tq::io::SafetensorsFile&)>;
  const std::vector<std::tuple<const char*, Edit, const char*>> cases = {
      // epoch == the run's epoch count: the loop would not run and the empty history was read (a crash).
      {"epoch equals epochs", [](nlohmann::json& j, auto&) { j["epoch"] = 2; }, "field 'epoch' is 2"},
      {"negative epoch", [](nlohmann::json& j, auto&) { j["epoch"] = -1; }, "field 'epoch'"},
      {"history too short",
       [](nlohmann::json& j, auto&) {
         j["epoch"] = 1;
         j["loader"]["epoch"] = 1;
       },
       "field 'history'"},
      {"negative step", [](nlohmann::json& j, auto&) { j["step_in_epoch"] = -5; }, "field 'step_in_epoch'"},
      {"global step behind", [](nlohmann::json& j, auto&) { j["global_step"] = 3; }, "field 'global_step'"},
      {"negative loss sum", [](nlohmann::json& j, auto&) { j["loss_sum"] = -1.0; }, "field 'loss_sum'"},
      {"loader position", [](nlohmann::json& j, auto&) { j["loader"]["next_batch"] = 7; }, "field 'loader.next_batch'"},
      {"loader epoch", [](nlohmann::json& j, auto&) { j["loader"]["epoch"] = 9; }, "field 'loader.epoch'"},
      {"loader batch size", [](nlohmann::json& j, auto&) { j["loader"]["batch_size"] = 0; }, "field 'loader'"},
      {"epochs in the command", [](nlohmann::json& j, auto&) { j["command"]["epochs"] = -3; }, "field 'command.epochs'"},
      // The settings in the command: blamed on options the user never passed
      // ("--batch-size must be at least 1"), or a raw JSON library message.
      {"batch size in the command", [](nlohmann::json& j, auto&) { j["command"]["batch_size"] = 0; },
       "field 'command.batch_size' is 0"},
      {"NaN learning rate (null in JSON)", [](nlohmann::json& j, auto&) { j["command"]["lr"] = nullptr; },
       "field 'command.lr'"},
      {"huge hidden layers", [](nlohmann::json& j, auto&) { j["command"]["hidden"] = "65536,65536"; },
       "field 'command.hidden'"},
      {"seed of the wrong type", [](nlohmann::json& j, auto&) { j["command"]["seed"] = "zero"; }, "field 'command.seed'"},
      {"NaN momentum",
       [](nlohmann::json&, tq::io::SafetensorsFile& f) {
         auto it = f.tensors.find("__optimizer__.param.1.momentum_buffer");
         REQUIRE(it != f.tensors.end());
         it->second.template data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
       },
       "momentum"},
  };
  for (const auto& [label, edit, expect] : cases) {
    INFO(label);
    tq::io::SafetensorsFile f = tq::io::parse_safetensors(tq::io::serialize_safetensors(good), "copy");
    nlohmann::json j = nlohmann::json::parse(f.metadata["tinyqat_checkpoint"]);
    edit(j, f);
    f.metadata["tinyqat_checkpoint"] = j.dump();
    const std::string path = dir + "/bad.ckpt";
    tq::io::save_safetensors(path, f);
    CHECK(run("train --out " + dir + "/x.st --resume " + path, dir) == 1);
    const std::string err = read_all(dir + "/stderr.txt");
    INFO(err);
    CHECK(err.find(path) != std::string::npos);
    CHECK(err.find(expect) != std::string::npos);
    CHECK(std::count(err.begin(), err.end(), '\n') == 1);
    CHECK_FALSE(std::filesystem::exists(dir + "/x.st"));
  }
}

TEST_CASE("resume: options given with --resume must agree with the run, and --checkpoint-every is kept", "[resume][cli][errors]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_resume_relations").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string ckpt = dir + "/m.st.ckpt";
  REQUIRE(run("train --epochs 2 --hidden 8 --batch-size 256 --checkpoint-every 50 --stop-after 50 --out " + dir + "/m.st",
              dir) == 0);
  const std::string at_50 = read_all(ckpt);
  // A setting that differs from the checkpoint's was silently ignored.
  const std::vector<std::pair<std::string, std::string>> conflicts = {
      {"--lr 0.5", "--lr conflicts with --resume"},
      {"--hidden 16", "--hidden conflicts with --resume"},
      {"--epochs 3", "--epochs conflicts with --resume"},
      {"--batch-size 64", "--batch-size conflicts with --resume"},
  };
  for (const auto& [option, expect] : conflicts) {
    INFO(option);
    CHECK(run("train --out " + dir + "/m.st --resume " + ckpt + " " + option, dir) == 2);
    const std::string err = read_all(dir + "/stderr.txt");
    INFO(err);
    CHECK(err.find(expect) != std::string::npos);
    CHECK(err.find(ckpt) != std::string::npos);
    CHECK(read_all(ckpt) == at_50);
  }
  CHECK(run("qat --from " + dir + "/any.st --out " + dir + "/q.st --resume " + ckpt, dir) == 2);
  CHECK(read_all(dir + "/stderr.txt").find("--from is not read with --resume") != std::string::npos);
  // The same values are accepted; the resumed run goes on checkpointing every
  // 50 steps without being told again (it wrote none), into the checkpoint it
  // was resumed from (the same run's, replaced by its later state).
  REQUIRE(run("train --out " + dir + "/m.st --resume " + ckpt + " --hidden 8 --epochs 2 --stop-after 60", dir) == 0);
  const tq::io::SafetensorsFile later = tq::io::load_safetensors(ckpt);
  const nlohmann::json state = nlohmann::json::parse(later.metadata.at("tinyqat_checkpoint"));
  CHECK(state["global_step"] == 100);
  CHECK(state["command"]["checkpoint_every"] == 50);
}
